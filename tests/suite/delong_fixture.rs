//! DeLong's paired test against R's pROC 1.18.0 (`../shared/fixtures/delong/delong_cases.json`):
//! AUCs, variances and covariance to 1e-9, z and p to 1e-7, as its README asks; and the
//! patient-clustered test, which with one image per patient must give pROC's numbers too.

use muxmed::metrics::paired::{clustered, delong, AucTest, DeLong};

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    y: Vec<u8>,
    a: Vec<f64>,
    b: Vec<f64>,
    auc_a: f64,
    auc_b: f64,
    var_a: f64,
    var_b: f64,
    cov_ab: f64,
    z: f64,
    p: f64,
}

fn within(ours: f64, theirs: f64, tol: f64, what: &str) {
    assert!(
        (ours - theirs).abs() <= tol,
        "{what}: ours {ours:e}, pROC {theirs:e} (tolerance {tol:e})"
    );
}

fn cases() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/delong/delong_cases.json"
    );
    let fx: Fixture = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(fx.cases.len(), 16);
    fx.cases
}

fn agrees_with_proc(d: &DeLong, c: &Case, n: &str) {
    within(d.auc_a, c.auc_a, 1e-9, &format!("{n} auc_a"));
    within(d.auc_b, c.auc_b, 1e-9, &format!("{n} auc_b"));
    within(d.var_a, c.var_a, 1e-9, &format!("{n} var_a"));
    within(d.var_b, c.var_b, 1e-9, &format!("{n} var_b"));
    within(d.cov_ab, c.cov_ab, 1e-9, &format!("{n} cov_ab"));
    within(
        d.z.unwrap(),
        c.z,
        1e-9 * c.z.abs().max(1.0),
        &format!("{n} z"),
    );
    within(d.p.unwrap(), c.p, 1e-7, &format!("{n} p"));
}

/// With every image its own patient, Obuchowski's sums reduce to DeLong's: pROC's numbers.
#[test]
fn clustered_test_with_one_image_per_patient_is_procs_delong() {
    for c in &cases() {
        let y: Vec<bool> = c.y.iter().map(|&v| v == 1).collect();
        let patients: Vec<usize> = (0..y.len()).collect();
        let d =
            clustered(&y, &c.a, &c.b, &patients).unwrap_or_else(|| panic!("{}: undefined", c.name));
        agrees_with_proc(&d, c, &format!("{} (clustered)", c.name));
        let plain = delong(&y, &c.a, &c.b).unwrap();
        within(
            d.z.unwrap(),
            plain.z.unwrap(),
            1e-9,
            &format!("{} z", c.name),
        );
        assert_eq!(AucTest::default(), AucTest::Clustered);
    }
}

/// Every image duplicated k times under its own patient: the clustered z stays (to 1e-9),
/// DeLong's z grows by √k up to its n − 1 denominators (a factor between
/// √((kN−1)/(k(N−1))) and √((kM−1)/(k(M−1))) for M ≤ N images of the two classes).
#[test]
fn duplicating_every_image_leaves_the_clustered_z_and_grows_delongs_by_root_k() {
    for c in cases().iter().filter(|c| c.z.abs() > 1e-6) {
        let y: Vec<bool> = c.y.iter().map(|&v| v == 1).collect();
        let patients: Vec<usize> = (0..y.len()).collect();
        let base = clustered(&y, &c.a, &c.b, &patients).unwrap().z.unwrap();
        let m = y.iter().filter(|t| **t).count() as f64;
        let n = y.len() as f64 - m;
        for k in [3usize, 9] {
            let rep = |v: &[f64]| -> Vec<f64> {
                v.iter().flat_map(|x| std::iter::repeat_n(*x, k)).collect()
            };
            let yk: Vec<bool> = y.iter().flat_map(|t| std::iter::repeat_n(*t, k)).collect();
            let gk: Vec<usize> = patients
                .iter()
                .flat_map(|p| std::iter::repeat_n(*p, k))
                .collect();
            let zc = clustered(&yk, &rep(&c.a), &rep(&c.b), &gk)
                .unwrap()
                .z
                .unwrap();
            within(
                zc,
                base,
                1e-9 * base.abs().max(1.0),
                &format!("{} k={k} clustered z", c.name),
            );
            let zd = delong(&yk, &rep(&c.a), &rep(&c.b)).unwrap().z.unwrap();
            let ratio = zd / c.z / (k as f64).sqrt();
            let kf = k as f64;
            let f = |c: f64| ((kf * c - 1.0) / (kf * (c - 1.0))).sqrt();
            let (lo, hi) = (f(m.max(n)), f(m.min(n)));
            assert!(
                ratio >= lo - 1e-9 && ratio <= hi + 1e-9,
                "{} k={k}: DeLong z grew {ratio}·√k, outside [{lo}, {hi}]",
                c.name
            );
        }
    }
}

#[test]
fn every_case_agrees_with_proc() {
    for c in &cases() {
        let y: Vec<bool> = c.y.iter().map(|&v| v == 1).collect();
        let d = delong(&y, &c.a, &c.b).unwrap_or_else(|| panic!("{}: undefined", c.name));
        let n = &c.name;
        agrees_with_proc(&d, c, n);
        // The AUCs are the same numbers the rest of muxmed reports (scikit-learn's).
        let auc = muxmed::metrics::auroc(&y, &c.a).unwrap();
        within(auc, c.auc_a, 1e-12, &format!("{n} auroc()"));
    }
}
