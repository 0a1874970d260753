//! DeLong's paired test against R's pROC 1.18.0 (`../shared/fixtures/delong/delong_cases.json`):
//! AUCs, variances and covariance to 1e-9, z and p to 1e-7, as its README asks.

use muxmed::metrics::paired::delong;

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

#[test]
fn every_case_agrees_with_proc() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/delong/delong_cases.json"
    );
    let fx: Fixture = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(fx.cases.len(), 16);
    for c in &fx.cases {
        let y: Vec<bool> = c.y.iter().map(|&v| v == 1).collect();
        let d = delong(&y, &c.a, &c.b).unwrap_or_else(|| panic!("{}: undefined", c.name));
        let n = &c.name;
        within(d.auc_a, c.auc_a, 1e-9, &format!("{n} auc_a"));
        within(d.auc_b, c.auc_b, 1e-9, &format!("{n} auc_b"));
        within(d.var_a, c.var_a, 1e-9, &format!("{n} var_a"));
        within(d.var_b, c.var_b, 1e-9, &format!("{n} var_b"));
        within(d.cov_ab, c.cov_ab, 1e-9, &format!("{n} cov_ab"));
        within(d.z.unwrap(), c.z, 1e-7, &format!("{n} z"));
        within(d.p.unwrap(), c.p, 1e-7, &format!("{n} p"));
        // The AUCs are the same numbers the rest of muxmed reports (scikit-learn's).
        let auc = muxmed::metrics::auroc(&y, &c.a).unwrap();
        within(auc, c.auc_a, 1e-12, &format!("{n} auroc()"));
    }
}
