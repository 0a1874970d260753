//! Classification metrics, written to agree with scikit-learn: ROC AUC (ties averaged via
//! the trapezoid over distinct thresholds), average precision, micro averaging, plus
//! patient-level bootstrap confidence intervals, operating thresholds and calibration.
//! A label with only one class present has no AUROC (`None`), never a number.

pub mod bootstrap;
pub mod calibration;
pub mod localization;
pub mod paired;
pub mod subgroups;

pub use bootstrap::{bootstrap_auroc, BootstrapCi};
pub use calibration::{calibration, CalibrationBin};

/// Points of the ROC curve at every distinct score, highest first, starting at (0, 0).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Roc {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    /// Score threshold of each point (`>=` counts as positive); the first is +inf.
    pub thresholds: Vec<f64>,
}

/// One label's scores sorted once, highest first, with the cumulative true and false
/// positives at each distinct score (scikit-learn's `_binary_clf_curve`). The ROC and PR
/// curves, the AUROC, the average precision and the operating thresholds of the label are
/// all read from it, so a label is sorted once for all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    tps: Vec<f64>,
    fps: Vec<f64>,
    thresholds: Vec<f64>,
}

impl Curve {
    /// `y` and `s` of the same length.
    pub fn new(y: &[bool], s: &[f64]) -> Self {
        debug_assert_eq!(y.len(), s.len());
        // (score, truth) pairs sort faster than indices into the scores; the order inside a
        // tie does not matter, as only the counts at each tie's end are kept.
        let mut pairs: Vec<(f64, bool)> = s.iter().copied().zip(y.iter().copied()).collect();
        pairs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let mut c = Curve {
            tps: Vec::new(),
            fps: Vec::new(),
            thresholds: Vec::new(),
        };
        let (mut tp, mut fp) = (0.0, 0.0);
        for (k, &(score, positive)) in pairs.iter().enumerate() {
            if positive {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            if k + 1 == pairs.len() || pairs[k + 1].0 != score {
                c.tps.push(tp);
                c.fps.push(fp);
                c.thresholds.push(score);
            }
        }
        c
    }

    /// Positives and negatives, when both are present.
    fn classes(&self) -> Option<(f64, f64)> {
        let (p, n) = (*self.tps.last()?, *self.fps.last()?);
        (p > 0.0 && n > 0.0).then_some((p, n))
    }

    /// The ROC curve with collinear points dropped (scikit-learn's `drop_intermediate=True`);
    /// None with one class.
    pub fn roc(&self) -> Option<Roc> {
        let (p, nn) = self.classes()?;
        let (tps, fps) = (&self.tps, &self.fps);
        let n = tps.len();
        let mut roc = Roc {
            fpr: vec![0.0],
            tpr: vec![0.0],
            thresholds: vec![f64::INFINITY],
        };
        let keep = (0..n).filter(|&i| {
            i == 0
                || i + 1 == n
                || (fps[i + 1] - 2.0 * fps[i] + fps[i - 1]) != 0.0
                || (tps[i + 1] - 2.0 * tps[i] + tps[i - 1]) != 0.0
        });
        for i in keep {
            roc.fpr.push(fps[i] / nn);
            roc.tpr.push(tps[i] / p);
            roc.thresholds.push(self.thresholds[i]);
        }
        Some(roc)
    }

    /// Area under the ROC curve; None with one class.
    pub fn auroc(&self) -> Option<f64> {
        self.roc().map(|r| trapezoid(&r.fpr, &r.tpr))
    }

    /// Precision and recall at each distinct score; None with one class.
    pub fn pr(&self) -> Option<PrCurve> {
        let (p, _) = self.classes()?;
        Some(PrCurve {
            precision: self
                .tps
                .iter()
                .zip(&self.fps)
                .map(|(t, f)| t / (t + f))
                .collect(),
            recall: self.tps.iter().map(|t| t / p).collect(),
        })
    }

    /// Average precision, `sum (R_i - R_{i-1}) P_i` as scikit-learn defines it; None with
    /// one class.
    pub fn average_precision(&self) -> Option<f64> {
        let c = self.pr()?;
        let mut prev = 0.0;
        let mut ap = 0.0;
        for (p, r) in c.precision.iter().zip(&c.recall) {
            ap += (r - prev) * p;
            prev = *r;
        }
        Some(ap)
    }

    /// The threshold maximising Youden's J = sensitivity + specificity - 1.
    pub fn youden_threshold(&self) -> Option<f64> {
        let r = self.roc()?;
        let (mut best, mut best_j) = (None, f64::NEG_INFINITY);
        for i in 1..r.tpr.len() {
            let j = r.tpr[i] - r.fpr[i];
            if j > best_j {
                best_j = j;
                best = Some(r.thresholds[i]);
            }
        }
        best
    }

    /// The highest threshold whose sensitivity reaches `target`; None without positives.
    pub fn sensitivity_threshold(&self, target: f64) -> Option<f64> {
        let p = *self.tps.last()?;
        if p == 0.0 {
            return None;
        }
        self.tps
            .iter()
            .zip(&self.thresholds)
            .find(|(t, _)| **t / p >= target)
            .map(|(_, th)| *th)
    }
}

/// The curve of (y, s), None when their lengths differ.
fn curve(y: &[bool], s: &[f64]) -> Option<Curve> {
    (y.len() == s.len()).then(|| Curve::new(y, s))
}

/// The ROC curve with collinear points dropped (scikit-learn's `drop_intermediate=True`).
pub fn roc_curve(y: &[bool], s: &[f64]) -> Option<Roc> {
    curve(y, s)?.roc()
}

fn trapezoid(x: &[f64], y: &[f64]) -> f64 {
    x.windows(2)
        .zip(y.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[1] + y[0]) / 2.0)
        .sum()
}

/// Area under the ROC curve; `None` when only one class is present.
pub fn auroc(y: &[bool], s: &[f64]) -> Option<f64> {
    curve(y, s)?.auroc()
}

/// Precision-recall points at each distinct score, highest score first.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PrCurve {
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
}

pub fn pr_curve(y: &[bool], s: &[f64]) -> Option<PrCurve> {
    curve(y, s)?.pr()
}

/// Average precision, `sum (R_i - R_{i-1}) P_i` as scikit-learn defines it; `None` with one class.
pub fn average_precision(y: &[bool], s: &[f64]) -> Option<f64> {
    curve(y, s)?.average_precision()
}

/// AUROC of each of `k` labels: `labels[i][j]` 1 or 0 (positive above 0.5, NaN missing:
/// left out of label j) against `probs[i][j]`; None where a label is undefined (one class
/// only).
pub fn label_aurocs(k: usize, labels: &[Vec<f32>], probs: &[Vec<f64>]) -> Vec<Option<f64>> {
    let y: Vec<Vec<Option<bool>>> = labels
        .iter()
        .map(|l| l.iter().map(|v| truth_of(*v)).collect())
        .collect();
    (0..k)
        .map(|j| {
            let (y, s, _) = known_column(&y, probs, j);
            auroc(&y, &s)
        })
        .collect()
}

/// Kendall's τ-b between two paired samples (ties in either handled as in τ-b); `None` when
/// fewer than two pairs or when one sample is constant.
pub fn kendall_tau(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len().min(y.len());
    let (mut concordant, mut discordant, mut ties_x, mut ties_y) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let (dx, dy) = (x[i] - x[j], y[i] - y[j]);
            if dx == 0.0 {
                ties_x += 1;
            }
            if dy == 0.0 {
                ties_y += 1;
            }
            if dx != 0.0 && dy != 0.0 {
                if (dx > 0.0) == (dy > 0.0) {
                    concordant += 1;
                } else {
                    discordant += 1;
                }
            }
        }
    }
    let pairs = (n * n.saturating_sub(1) / 2) as i64;
    let denom = (((pairs - ties_x) * (pairs - ties_y)) as f64).sqrt();
    (denom > 0.0).then(|| (concordant - discordant) as f64 / denom)
}

/// Mean over the labels whose value is defined; `None` if none is.
pub fn mean_defined(values: &[Option<f64>]) -> Option<f64> {
    let d: Vec<f64> = values.iter().flatten().copied().collect();
    (!d.is_empty()).then(|| d.iter().sum::<f64>() / d.len() as f64)
}

/// Below this many positives, or negatives, a label's AUROC (and a model choice resting on
/// it) is unreliable: each rank among so few images moves the AUROC by more than 1/n.
pub const FEW_OF_A_CLASS: usize = 10;

/// The spread of a label's log-odds across a split below which its probabilities count as
/// constant: the odds move by less than 1% from the least to the most suspicious image, e.g.
/// 0.7985 to 0.7992 (log-odds 1.3769 to 1.3813). Log-odds measure the spread next to the
/// level: 1e-4 to 3e-4 for a rare label is a real ranking (a spread of ln 3).
pub const CONSTANT_LOG_ODDS_SPREAD: f64 = 0.01;

/// Outputs that carry no ranking (a diverged or dead model): every label's probabilities
/// spread less than [`CONSTANT_LOG_ODDS_SPREAD`] in log-odds (exact constants included), or
/// every defined AUROC exactly 0.5. `s[i][k]`.
pub fn constant_outputs(s: &[Vec<f64>], aurocs: &[Option<f64>]) -> bool {
    let k = s.first().map_or(0, Vec::len);
    let log_odds = |p: f64| {
        let p = p.clamp(1e-12, 1.0 - 1e-12);
        (p / (1.0 - p)).ln()
    };
    let flat = (0..k).all(|j| {
        let (lo, hi) = s
            .iter()
            .map(|r| log_odds(r[j]))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        hi - lo < CONSTANT_LOG_ODDS_SPREAD
    });
    let defined: Vec<f64> = aurocs.iter().flatten().copied().collect();
    !s.is_empty() && (flat || (!defined.is_empty() && defined.iter().all(|a| *a == 0.5)))
}

/// What reports and commands say about constant outputs.
pub const CONSTANT_OUTPUTS_WARNING: &str = "the model's outputs are constant or nearly so (every label's probabilities vary by less than 1% in odds across the split, or every AUROC is exactly 0.5): training probably diverged (try a lower train.lr); these AUROCs mean nothing";

/// One image's truth for one label, as the metrics read it: `bool` where every label is
/// known, `Option<bool>` where some are missing (a concept the image's dataset does not
/// annotate, or an uncertain label under `data.uncertain: ignore`). A missing label leaves
/// the image out of that label's metrics only.
pub trait Truth: Copy + Send + Sync {
    fn known(self) -> Option<bool>;
}

impl Truth for bool {
    fn known(self) -> Option<bool> {
        Some(self)
    }
}

impl Truth for Option<bool> {
    fn known(self) -> Option<bool> {
        self
    }
}

/// Column `k` of the images whose label `k` is known: their truth, their scores and their
/// row indices (to pick their patients).
pub fn known_column<T: Truth>(
    y: &[Vec<T>],
    s: &[Vec<f64>],
    k: usize,
) -> (Vec<bool>, Vec<f64>, Vec<usize>) {
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    for (i, (yr, sr)) in y.iter().zip(s).enumerate() {
        if let Some(v) = yr[k].known() {
            out.0.push(v);
            out.1.push(sr[k]);
            out.2.push(i);
        }
    }
    out
}

/// A manifest label value as a truth: 1 positive, 0 negative, NaN missing.
pub fn truth_of(v: f32) -> Option<bool> {
    (!v.is_nan()).then_some(v > 0.5)
}

/// Micro-averaged AUROC: every (image, label) pair whose label is known pooled into one
/// binary problem. `y[i][k]`, `s[i][k]` for image i and label k.
pub fn micro_auroc<T: Truth>(y: &[Vec<T>], s: &[Vec<f64>]) -> Option<f64> {
    let (mut yf, mut sf) = (Vec::new(), Vec::new());
    for (yr, sr) in y.iter().zip(s) {
        for (t, v) in yr.iter().zip(sr) {
            if let Some(t) = t.known() {
                yf.push(t);
                sf.push(*v);
            }
        }
    }
    auroc(&yf, &sf)
}

/// Linear-interpolated percentile of sorted data (numpy's default), `q` in [0, 1].
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Confusion-matrix rates at a threshold (score >= threshold is positive).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OperatingPoint {
    pub threshold: f64,
    pub sensitivity: Option<f64>,
    pub specificity: Option<f64>,
    pub ppv: Option<f64>,
    pub npv: Option<f64>,
    pub f1: Option<f64>,
}

pub fn operating_point(y: &[bool], s: &[f64], threshold: f64) -> OperatingPoint {
    let (mut tp, mut fp, mut tn, mut fn_) = (0.0, 0.0, 0.0, 0.0);
    for (&yi, &si) in y.iter().zip(s) {
        match (si >= threshold, yi) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, false) => tn += 1.0,
            (false, true) => fn_ += 1.0,
        }
    }
    let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    let sens = ratio(tp, tp + fn_);
    let ppv = ratio(tp, tp + fp);
    OperatingPoint {
        threshold,
        sensitivity: sens,
        specificity: ratio(tn, tn + fp),
        ppv,
        npv: ratio(tn, tn + fn_),
        f1: ratio(2.0 * tp, 2.0 * tp + fp + fn_),
    }
}

/// The threshold maximising Youden's J = sensitivity + specificity - 1 on (y, s).
pub fn youden_threshold(y: &[bool], s: &[f64]) -> Option<f64> {
    curve(y, s)?.youden_threshold()
}

/// The highest threshold whose sensitivity on (y, s) reaches `target`.
pub fn sensitivity_threshold(y: &[bool], s: &[f64], target: f64) -> Option<f64> {
    curve(y, s)?.sensitivity_threshold(target)
}

#[cfg(test)]
mod tests {

    #[test]
    fn kendall_tau_b_by_hand() {
        // One discordant pair of six: (5 - 1) / 6.
        let t = kendall_tau(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((t - 4.0 / 6.0).abs() < 1e-15);
        // One tie in each: 4 concordant, none discordant, 4 / sqrt(5 * 5).
        let t = kendall_tau(&[1.0, 1.0, 2.0, 3.0], &[1.0, 2.0, 2.0, 3.0]).unwrap();
        assert!((t - 0.8).abs() < 1e-15);
        assert_eq!(kendall_tau(&[1.0, 2.0], &[3.0, 3.0]), None);
        assert_eq!(kendall_tau(&[3.0, 2.0, 1.0], &[1.0, 2.0, 3.0]), Some(-1.0));
    }

    use super::*;

    #[test]
    fn constant_outputs_are_recognised() {
        let flat = vec![vec![0.3, 0.7]; 5];
        assert!(constant_outputs(&flat, &[Some(0.5), Some(0.5)]));
        let varied: Vec<Vec<f64>> = (0..5).map(|i| vec![i as f64 / 10.0, 0.7]).collect();
        assert!(!constant_outputs(&varied, &[Some(0.8), Some(0.5)]));
        // Varied scores that rank nothing: every AUROC exactly 0.5.
        assert!(constant_outputs(&varied, &[Some(0.5), None]));
        assert!(!constant_outputs(&[], &[]));
        // Nearly constant, as a real best checkpoint gave: 0.7985 to 0.7992 on every image
        // (log-odds 1.3769 to 1.3813, a spread of 0.0044).
        let near: Vec<Vec<f64>> = (0..8)
            .map(|i| vec![0.7985 + 0.0001 * i as f64; 2])
            .collect();
        assert!(constant_outputs(&near, &[Some(0.61), Some(0.55)]));
        // A rare label's small but real spread, 1e-4 to 3e-4 (ln 3 in log-odds), ranks.
        let rare: Vec<Vec<f64>> = (0..8).map(|i| vec![1e-4 + 2e-4 * i as f64 / 7.0]).collect();
        assert!(!constant_outputs(&rare, &[Some(0.7)]));
    }

    fn b(v: &[u8]) -> Vec<bool> {
        v.iter().map(|&x| x == 1).collect()
    }

    #[test]
    fn sklearn_doc_example() {
        let y = b(&[0, 0, 1, 1]);
        let s = [0.1, 0.4, 0.35, 0.8];
        assert_eq!(auroc(&y, &s), Some(0.75));
        assert!((average_precision(&y, &s).unwrap() - 0.8333333333333333).abs() < 1e-15);
    }

    #[test]
    fn one_class_is_undefined() {
        assert_eq!(auroc(&b(&[1, 1, 1]), &[0.1, 0.2, 0.3]), None);
        assert_eq!(average_precision(&b(&[0, 0]), &[0.1, 0.2]), None);
    }

    #[test]
    fn thresholds_and_operating_points() {
        let y = b(&[0, 0, 0, 1, 1, 1]);
        let s = [0.1, 0.2, 0.6, 0.15, 0.7, 0.9];
        // J: 1/3 at 0.9, 2/3 at 0.7, 1/3 at 0.6, 0 at 0.2, 1/3 at 0.15.
        assert_eq!(youden_threshold(&y, &s), Some(0.7));
        assert_eq!(sensitivity_threshold(&y, &s, 1.0), Some(0.15));
        assert_eq!(sensitivity_threshold(&y, &s, 0.5), Some(0.7));
        let op = operating_point(&y, &s, 0.15);
        assert_eq!(op.sensitivity, Some(1.0));
        assert!((op.specificity.unwrap() - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(op.ppv, Some(0.6));
        assert_eq!(op.npv, Some(1.0));
        assert_eq!(op.f1, Some(0.75));
    }

    #[test]
    fn calibration_of_a_perfectly_calibrated_bin() {
        let y = b(&[1, 0, 1, 0]);
        let p = [0.5, 0.5, 0.5, 0.5];
        let (ece, bins) = calibration(&y, &p, 10);
        assert_eq!(ece, 0.0);
        assert_eq!(bins[5].count, 4);
        let (ece, _) = calibration(&b(&[1, 1]), &[0.2, 0.2], 10);
        assert!((ece - 0.8).abs() < 1e-15);
    }
}
