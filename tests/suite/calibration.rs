//! Temperature scaling and calibration metrics against `tests/fixtures/calibration/cases.json`,
//! made outside muxmed by `make.py` (numpy draws the cases, scipy's brentq finds the NLL
//! minimum, scikit-learn gives the Brier score and the reliability curve).

use muxmed::metrics::calibration::{
    brier, calibration, calibration_equal_mass, fit_temperature, scale,
};

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    y: Vec<bool>,
    p: Vec<f64>,
    temperature: f64,
    nll_before: f64,
    nll_after: f64,
    brier_before: f64,
    brier_after: f64,
    ece_width_before: f64,
    ece_width_after: f64,
    ece_mass_before: f64,
    ece_mass_after: f64,
    reliability_before_observed: Vec<f64>,
    reliability_before_predicted: Vec<f64>,
}

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

fn cases() -> Vec<Case> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/calibration/cases.json");
    serde_json::from_str::<Fixture>(&std::fs::read_to_string(p).unwrap())
        .unwrap()
        .cases
}

fn close(what: &str, ours: f64, reference: f64, tol: f64) {
    assert!(
        (ours - reference).abs() <= tol,
        "{what}: {ours} vs {reference} (|diff| {:e} > {tol:e})",
        (ours - reference).abs()
    );
}

/// Tolerances. Sums of n ≤ 3000 terms in f64 carry at most about n·ε ≈ 7e-13 of relative
/// error, so values computed the same way on both sides (NLL, Brier, ECE before) agree to
/// 1e-12. The temperature is a root of L'(a), a sum of n terms of size up to |z| ≤ 17 (f32
/// probabilities): L' is known to about n·ε·17/n, and the root to that over L''(a) ≥ 0.01 in
/// these cases, ≈ 4e-13 relative; scipy's brentq stops within 1e-15 + 4ε. 1e-9 relative leaves
/// room for both. Values after scaling use each side's own temperature, so they may differ
/// by the temperature's error times |z| ≤ 17 with a slope ≤ 1/4: 1e-8.
#[test]
fn temperature_scaling_matches_scipy_and_sklearn() {
    for c in cases() {
        let n = &c.name;
        let f = fit_temperature(&c.y, &c.p).unwrap();
        assert!(!f.at_bound, "{n}");
        close(
            &format!("{n} temperature"),
            f.temperature / c.temperature,
            1.0,
            1e-9,
        );
        close(
            &format!("{n} nll before"),
            f.nll_before,
            c.nll_before,
            1e-12,
        );
        close(&format!("{n} nll after"), f.nll_after, c.nll_after, 1e-12);
        let after: Vec<f64> = c.p.iter().map(|&p| scale(p, f.temperature)).collect();
        close(
            &format!("{n} brier before"),
            brier(&c.y, &c.p),
            c.brier_before,
            1e-12,
        );
        close(
            &format!("{n} brier after"),
            brier(&c.y, &after),
            c.brier_after,
            1e-8,
        );
        let (ece_w, bins) = calibration(&c.y, &c.p, 10);
        close(&format!("{n} ece width"), ece_w, c.ece_width_before, 1e-12);
        close(
            &format!("{n} ece width after"),
            calibration(&c.y, &after, 10).0,
            c.ece_width_after,
            1e-8,
        );
        let mass = calibration_equal_mass(&c.y, &c.p, 10).0;
        close(&format!("{n} ece mass"), mass, c.ece_mass_before, 1e-12);
        let mass_after = calibration_equal_mass(&c.y, &after, 10).0;
        close(
            &format!("{n} ece mass after"),
            mass_after,
            c.ece_mass_after,
            1e-8,
        );
        // sklearn's calibration_curve lists the non-empty equal-width bins.
        let full: Vec<_> = bins.iter().filter(|b| b.count > 0).collect();
        assert_eq!(full.len(), c.reliability_before_observed.len(), "{n}");
        for ((b, o), p) in full
            .iter()
            .zip(&c.reliability_before_observed)
            .zip(&c.reliability_before_predicted)
        {
            close(&format!("{n} observed"), b.observed.unwrap(), *o, 1e-12);
            close(
                &format!("{n} predicted"),
                b.mean_predicted.unwrap(),
                *p,
                1e-12,
            );
        }
        // Calibration lowers what it minimises, and the fixture's cases are miscalibrated.
        assert!(
            c.nll_after < c.nll_before && c.ece_width_after < c.ece_width_before,
            "{n}"
        );
    }
}

/// Dividing logits by a positive temperature keeps every pair's order, so the AUROC of the
/// scaled probabilities is the AUROC of the raw ones to the last bit.
#[test]
fn scaling_never_changes_an_auroc() {
    for c in cases() {
        let f = fit_temperature(&c.y, &c.p).unwrap();
        for t in [f.temperature, 0.5, 3.0] {
            let after: Vec<f64> = c.p.iter().map(|&p| scale(p, t)).collect();
            let raw = muxmed::metrics::Curve::new(&c.y, &c.p).auroc().unwrap();
            let cal = muxmed::metrics::Curve::new(&c.y, &after).auroc().unwrap();
            assert_eq!(raw.to_bits(), cal.to_bits(), "{} T={t}", c.name);
        }
    }
}
