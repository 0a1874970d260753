//! Metrics against scikit-learn's answers (`../shared/fixtures/metrics/auroc_cases.json`,
//! agreement 1e-12) and the bootstrap's behaviour.

use muxmed::metrics::{auroc, average_precision, bootstrap_auroc, mean_defined, micro_auroc};

fn close(a: Option<f64>, b: &serde_json::Value, what: &str) {
    match (a, b.as_f64()) {
        (None, None) => assert!(b.is_null(), "{what}: expected {b}"),
        (Some(a), Some(b)) => assert!((a - b).abs() < 1e-12, "{what}: {a} vs sklearn {b}"),
        (a, _) => panic!("{what}: ours {a:?}, sklearn {b}"),
    }
}

#[test]
fn every_fixture_case_agrees_with_sklearn() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/metrics/auroc_cases.json"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let y: Vec<Vec<bool>> = c["y_true"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() == 1.0)
                    .collect()
            })
            .collect();
        let s: Vec<Vec<f64>> = c["y_score"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect()
            })
            .collect();
        let k = y[0].len();
        let mut per = Vec::new();
        for j in 0..k {
            let yj: Vec<bool> = y.iter().map(|r| r[j]).collect();
            let sj: Vec<f64> = s.iter().map(|r| r[j]).collect();
            let a = auroc(&yj, &sj);
            close(a, &c["auroc"][j], &format!("{name} auroc[{j}]"));
            close(
                average_precision(&yj, &sj),
                &c["average_precision"][j],
                &format!("{name} ap[{j}]"),
            );
            per.push(a);
        }
        close(
            mean_defined(&per),
            &c["auroc_macro_over_defined"],
            &format!("{name} macro"),
        );
        close(
            micro_auroc(&y, &s),
            &c["auroc_micro"],
            &format!("{name} micro"),
        );
    }
}

/// 40 patients: 4 with 50 images each whose scores are random, 36 with one image each whose
/// scores separate the classes perfectly. Image-level resampling treats the 200 correlated
/// images as independent; resampling patients does not, so its interval is wider.
type Labels = Vec<Vec<bool>>;
type Scores = Vec<Vec<f64>>;

fn clustered() -> (Labels, Scores, Vec<usize>, Vec<usize>) {
    let (mut y, mut s, mut g) = (Vec::new(), Vec::new(), Vec::new());
    for p in 0..4 {
        for i in 0..50 {
            let pos = (p + i) % 2 == 0;
            y.push(vec![pos]);
            s.push(vec![((p * 50 + i) * 7919 % 1000) as f64 / 1000.0]);
            g.push(p);
        }
    }
    for p in 4..40 {
        let pos = p % 2 == 0;
        y.push(vec![pos]);
        s.push(vec![if pos {
            0.9 + p as f64 * 1e-3
        } else {
            0.1 - p as f64 * 1e-3
        }]);
        g.push(p);
    }
    let per_image: Vec<usize> = (0..y.len()).collect();
    (y, s, g, per_image)
}

#[test]
fn bootstrap_is_deterministic_for_a_seed_and_resamples_patients() {
    let (y, s, g, per_image) = clustered();
    let a = bootstrap_auroc(&y, &s, &g, 500, 7, 0.95);
    let b = bootstrap_auroc(&y, &s, &g, 500, 7, 0.95);
    assert_eq!(a, b);
    let c = bootstrap_auroc(&y, &s, &g, 500, 8, 0.95);
    assert_ne!(a, c);
    let by_patient = a.per_label[0].unwrap();
    let by_image = bootstrap_auroc(&y, &s, &per_image, 500, 7, 0.95).per_label[0].unwrap();
    let point = auroc(
        &y.iter().map(|r| r[0]).collect::<Vec<_>>(),
        &s.iter().map(|r| r[0]).collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(by_patient[0] < point && point < by_patient[1]);
    let (wp, wi) = (by_patient[1] - by_patient[0], by_image[1] - by_image[0]);
    assert!(
        wp > 1.5 * wi,
        "patient CI width {wp} vs image CI width {wi}"
    );
    assert_eq!(a.mean, Some(by_patient));
}
