//! Calibration of probabilities: Brier score, expected calibration error over equal-width
//! and equal-mass bins with their reliability curves, and temperature scaling (one
//! temperature T per label, p_T = sigmoid(logit(p) / T), fitted by minimum negative
//! log-likelihood).
//!
//! The fit: with z = logit(p) and a = 1/T, the mean NLL is
//! L(a) = mean(softplus(a z) - y a z), whose derivative L'(a) = mean((sigmoid(a z) - y) z)
//! increases with a (L''(a) = mean(sigmoid(1 - sigmoid) z²) ≥ 0): L is convex and its
//! minimum is the one root of L'. [`fit_temperature`] brackets that root in
//! [`A_MIN`, `A_MAX`] and finds it by Newton steps, each kept inside the bracket (a
//! bisection step where Newton would leave it), until the bracket is a few ulps wide.
//! Dividing a logit by a positive T keeps the order of the scores, so no AUROC changes.

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalibrationBin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub mean_predicted: Option<f64>,
    pub observed: Option<f64>,
}

/// Expected calibration error over `bins` equal-width probability bins, and the bins.
pub fn calibration(y: &[bool], p: &[f64], bins: usize) -> (f64, Vec<CalibrationBin>) {
    let mut sum_p = vec![0.0; bins];
    let mut sum_y = vec![0.0; bins];
    let mut count = vec![0usize; bins];
    for (&yi, &pi) in y.iter().zip(p) {
        let b = ((pi.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sum_p[b] += pi;
        sum_y[b] += yi as u8 as f64;
        count[b] += 1;
    }
    let n = y.len().max(1) as f64;
    let mut ece = 0.0;
    let out = (0..bins)
        .map(|b| {
            let c = count[b] as f64;
            let (mp, ob) = if count[b] > 0 {
                (Some(sum_p[b] / c), Some(sum_y[b] / c))
            } else {
                (None, None)
            };
            if let (Some(mp), Some(ob)) = (mp, ob) {
                ece += c / n * (mp - ob).abs();
            }
            CalibrationBin {
                lower: b as f64 / bins as f64,
                upper: (b + 1) as f64 / bins as f64,
                count: count[b],
                mean_predicted: mp,
                observed: ob,
            }
        })
        .collect();
    (ece, out)
}

/// Expected calibration error over `bins` bins of (nearly) equal count: in order of p
/// (equal p in input order), bin b holds sorted positions ⌊b n / bins⌋ to
/// ⌊(b + 1) n / bins⌋ − 1. A bin's `lower` and `upper` are its smallest and largest p.
pub fn calibration_equal_mass(y: &[bool], p: &[f64], bins: usize) -> (f64, Vec<CalibrationBin>) {
    let n = y.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut ece = 0.0;
    let mut out = Vec::with_capacity(bins);
    for b in 0..bins {
        let idx = &order[(b * n) / bins..((b + 1) * n) / bins];
        if idx.is_empty() {
            continue;
        }
        let c = idx.len() as f64;
        let mp = idx.iter().map(|&i| p[i]).sum::<f64>() / c;
        let ob = idx.iter().filter(|&&i| y[i]).count() as f64 / c;
        ece += c / n as f64 * (mp - ob).abs();
        out.push(CalibrationBin {
            lower: p[idx[0]],
            upper: p[idx[idx.len() - 1]],
            count: idx.len(),
            mean_predicted: Some(mp),
            observed: Some(ob),
        });
    }
    (ece, out)
}

/// Mean squared difference between probability and outcome.
pub fn brier(y: &[bool], p: &[f64]) -> f64 {
    let n = y.len().max(1) as f64;
    y.iter()
        .zip(p)
        .map(|(&y, &p)| (p - y as u8 as f64).powi(2))
        .sum::<f64>()
        / n
}

/// The largest f64 below 1: probabilities of exactly 0 or 1 are moved this far inside
/// (0, 1) so that their logit is finite.
const ONE_BELOW: f64 = 1.0 - f64::EPSILON / 2.0;

/// ln(p / (1 − p)), with p clamped into (0, 1) (see [`ONE_BELOW`]).
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(f64::MIN_POSITIVE, ONE_BELOW);
    p.ln() - (-p).ln_1p()
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// ln(1 + e^x) without overflow.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// p scaled by temperature `t`: sigmoid(logit(p) / t); p itself when t is 1.
pub fn scale(p: f64, t: f64) -> f64 {
    if t == 1.0 {
        return p;
    }
    sigmoid(logit(p) / t)
}

/// Mean negative log-likelihood of `y` under the probabilities of logits `z` scaled by
/// a = 1/T.
pub fn nll(y: &[bool], z: &[f64], a: f64) -> f64 {
    let n = y.len().max(1) as f64;
    y.iter()
        .zip(z)
        .map(|(&y, &z)| softplus(a * z) - if y { a * z } else { 0.0 })
        .sum::<f64>()
        / n
}

/// The search interval for a = 1/T: temperatures from 1/100 to 100.
pub const A_MIN: f64 = 0.01;
pub const A_MAX: f64 = 100.0;

/// A fitted temperature.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TemperatureFit {
    pub temperature: f64,
    /// Mean NLL on the fitting data before (T = 1) and after.
    pub nll_before: f64,
    pub nll_after: f64,
    pub iterations: usize,
    /// The minimum lies at the edge of the search interval (T = 1/100 or 100): the scores
    /// carry almost no information about the label, or separate it perfectly.
    pub at_bound: bool,
}

/// Why a label gets no temperature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoTemperature {
    /// Every fitting image is negative (or there are none).
    NoPositives,
    /// Every fitting image is positive.
    NoNegatives,
}

impl std::fmt::Display for NoTemperature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoTemperature::NoPositives => "val has no positive image: the likelihood falls without end as T shrinks, so no temperature is fitted",
            NoTemperature::NoNegatives => "val has no negative image: the likelihood falls without end as T shrinks, so no temperature is fitted",
        })
    }
}

/// Derivative and second derivative of [`nll`] in a.
fn slopes(y: &[bool], z: &[f64], a: f64) -> (f64, f64) {
    let (mut g, mut h) = (0.0, 0.0);
    for (&y, &z) in y.iter().zip(z) {
        let s = sigmoid(a * z);
        g += (s - y as u8 as f64) * z;
        h += s * (1.0 - s) * z * z;
    }
    let n = y.len().max(1) as f64;
    (g / n, h / n)
}

/// The temperature of minimum NLL of `y` under `p` (see the module documentation).
pub fn fit_temperature(y: &[bool], p: &[f64]) -> Result<TemperatureFit, NoTemperature> {
    let positives = y.iter().filter(|v| **v).count();
    if positives == 0 {
        return Err(NoTemperature::NoPositives);
    }
    if positives == y.len() {
        return Err(NoTemperature::NoNegatives);
    }
    let z: Vec<f64> = p.iter().map(|&p| logit(p)).collect();
    let (mut lo, mut hi) = (A_MIN, A_MAX);
    let mut a = 1.0;
    let mut iterations = 0;
    let at_bound = if slopes(y, &z, lo).0 >= 0.0 {
        a = lo;
        true
    } else if slopes(y, &z, hi).0 <= 0.0 {
        a = hi;
        true
    } else {
        while iterations < 200 {
            iterations += 1;
            let (g, h) = slopes(y, &z, a);
            if g == 0.0 {
                break;
            }
            if g > 0.0 {
                hi = a;
            } else {
                lo = a;
            }
            let step = if h > 0.0 { g / h } else { f64::INFINITY };
            let newton = a - step;
            if step.abs() <= 2.0 * f64::EPSILON * a {
                // Converged: the last Newton step is below an ulp or two of a.
                a = newton.clamp(lo, hi);
                break;
            }
            a = if newton > lo && newton < hi {
                newton
            } else {
                0.5 * (lo + hi)
            };
            if hi - lo <= 4.0 * f64::EPSILON * hi {
                break;
            }
        }
        false
    };
    Ok(TemperatureFit {
        temperature: 1.0 / a,
        nll_before: nll(y, &z, 1.0),
        nll_after: nll(y, &z, a),
        iterations,
        at_bound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Half the images at logit +c, a fraction f of them positive; half at −c, a fraction
    /// 1 − f positive. L'(a) = c (sigmoid(a c) − f), zero at a = logit(f) / c: with c = 2
    /// and f = 0.8, T = 2 / ln 4 = 1 / ln 2.
    #[test]
    fn closed_form_temperature() {
        let pc = sigmoid(2.0);
        let mut y = Vec::new();
        let mut p = Vec::new();
        for i in 0..10 {
            y.push(i < 8);
            p.push(pc);
            y.push(i >= 8);
            p.push(1.0 - pc);
        }
        let f = fit_temperature(&y, &p).unwrap();
        let t = 1.0 / std::f64::consts::LN_2;
        // logit(sigmoid(2)) carries a few ulps of error; the root moves by as much.
        assert!((f.temperature - t).abs() < 1e-13, "{} {t}", f.temperature);
        assert!(!f.at_bound && f.nll_after < f.nll_before);
    }

    #[test]
    fn one_class_gets_no_temperature_and_unit_temperature_is_identity() {
        assert_eq!(
            fit_temperature(&[false, false], &[0.2, 0.3]),
            Err(NoTemperature::NoPositives)
        );
        assert_eq!(
            fit_temperature(&[true], &[0.2]),
            Err(NoTemperature::NoNegatives)
        );
        for p in [0.0, 1e-300, 0.3, 1.0] {
            assert_eq!(scale(p, 1.0).to_bits(), p.to_bits());
        }
        // A perfectly separating score: the optimum is the sharpest temperature allowed.
        let f = fit_temperature(&[false, true], &[0.4, 0.6]).unwrap();
        assert!(f.at_bound && f.temperature == 1.0 / A_MAX);
    }
}
