//! Temperature scaling of a run's probabilities: one temperature per label fitted on the
//! run's val split ([`crate::metrics::calibration::fit_temperature`]), applied to the scored
//! split, with Brier score, ECE (equal-width and equal-mass bins) and reliability curves
//! before and after.
//!
//! A run's temperatures (`temperatures_<val key>.json`, named by `RunDir`) are read by
//! `predict` and written into `export`'s `model.json`. Scaling keeps every score's order, so
//! it never changes an AUROC.

use std::collections::BTreeMap;
use std::path::Path;

use super::join::Joined;
use super::predictions::EvalError;
use crate::metrics::calibration::{
    brier, calibration, calibration_equal_mass, fit_temperature, scale, CalibrationBin,
};
use crate::metrics::known_column;

/// Label → temperature.
pub type TemperatureMap = BTreeMap<String, f64>;

/// Reliability bins per curve.
pub const BINS: usize = 10;

/// One label's fit on val.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelTemperature {
    pub label: String,
    /// None: the label keeps its raw probabilities (see `why_none`).
    pub temperature: Option<f64>,
    pub why_none: Option<String>,
    pub val_images: usize,
    pub val_positives: usize,
    pub nll_before: Option<f64>,
    pub nll_after: Option<f64>,
    /// The minimum is at the edge of the search (T = 1/100 or 100).
    pub at_bound: bool,
}

/// What `temperatures_<val key>.json` holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Temperatures {
    /// How they were fitted, for people reading the file.
    pub method: String,
    pub labels: Vec<LabelTemperature>,
}

impl Temperatures {
    /// Fits one temperature per label of `val` (its probabilities are the raw ones).
    pub fn fit(val: &Joined) -> Temperatures {
        let labels = val
            .labels
            .iter()
            .enumerate()
            .map(|(k, label)| {
                let (y, s, _) = known_column(&val.y, &val.s, k);
                let positives = y.iter().filter(|v| **v).count();
                let mut t = LabelTemperature {
                    label: label.clone(),
                    temperature: None,
                    why_none: None,
                    val_images: y.len(),
                    val_positives: positives,
                    nll_before: None,
                    nll_after: None,
                    at_bound: false,
                };
                match fit_temperature(&y, &s) {
                    Ok(f) => {
                        t.temperature = Some(f.temperature);
                        t.nll_before = Some(f.nll_before);
                        t.nll_after = Some(f.nll_after);
                        t.at_bound = f.at_bound;
                    }
                    Err(why) => t.why_none = Some(why.to_string()),
                }
                t
            })
            .collect();
        Temperatures {
            method: "per label, minimum mean negative log-likelihood on the val split of p_T = sigmoid(logit(p) / T), T in [0.01, 100], by safeguarded Newton steps on the convex NLL in 1/T".into(),
            labels,
        }
    }

    /// Label → temperature, for the labels that have one.
    pub fn map(&self) -> BTreeMap<String, f64> {
        self.labels
            .iter()
            .filter_map(|l| Some((l.label.clone(), l.temperature?)))
            .collect()
    }

    pub fn write(&self, path: &Path) -> Result<(), EvalError> {
        super::predictions::write_json(path, self)
    }

    pub fn read(path: &Path) -> Result<Temperatures, EvalError> {
        super::predictions::read_json(path, "a temperatures file")
    }
}

/// The temperatures of the run a checkpoint file sits in (fitted on val for that
/// checkpoint, without TTA), with the file they came from; None when there are none.
pub fn of_checkpoint(
    checkpoint: &Path,
    which: crate::run::Checkpoint,
) -> Result<Option<(TemperatureMap, std::path::PathBuf)>, EvalError> {
    let Some(dir) = checkpoint.parent() else {
        return Ok(None);
    };
    let file = crate::run::RunDir::new(dir).temperatures(&crate::run::EvalKey {
        split: crate::labels::Split::Val,
        checkpoint: which,
        tta: false,
    });
    if !file.is_file() {
        return Ok(None);
    }
    Ok(Some((Temperatures::read(&file)?.map(), file)))
}

/// `probs` (rows of probabilities in `labels` order) scaled by `temperatures` (label →
/// T); a label without a temperature keeps its values.
pub fn apply(
    temperatures: &BTreeMap<String, f64>,
    labels: &[String],
    probs: &[Vec<f64>],
) -> Vec<Vec<f64>> {
    let t: Vec<f64> = labels
        .iter()
        .map(|l| temperatures.get(l).copied().unwrap_or(1.0))
        .collect();
    probs
        .iter()
        .map(|row| row.iter().zip(&t).map(|(&p, &t)| scale(p, t)).collect())
        .collect()
}

/// One side (before or after scaling) of a label's calibration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Side {
    pub brier: f64,
    pub ece_equal_width: f64,
    pub ece_equal_mass: f64,
    pub reliability_equal_width: Vec<CalibrationBin>,
    pub reliability_equal_mass: Vec<CalibrationBin>,
}

impl Side {
    fn of(y: &[bool], p: &[f64]) -> Side {
        let (ece_equal_width, reliability_equal_width) = calibration(y, p, BINS);
        let (ece_equal_mass, reliability_equal_mass) = calibration_equal_mass(y, p, BINS);
        Side {
            brier: brier(y, p),
            ece_equal_width,
            ece_equal_mass,
            reliability_equal_width,
            reliability_equal_mass,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelCalibration {
    pub label: String,
    pub temperature: Option<f64>,
    pub n: usize,
    pub positives: usize,
    pub before: Side,
    pub after: Side,
}

/// What `calibration_<key>.json` holds: the scored split before and after scaling.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    pub split: String,
    pub bins: usize,
    pub per_label: Vec<LabelCalibration>,
}

impl Calibration {
    /// `raw` and `scaled` are the same images and labels, before and after scaling.
    pub fn of(
        split: &str,
        raw: &Joined,
        scaled: &Joined,
        temperatures: &BTreeMap<String, f64>,
    ) -> Calibration {
        let per_label = raw
            .labels
            .iter()
            .enumerate()
            .map(|(k, label)| {
                let (y, before, _) = known_column(&raw.y, &raw.s, k);
                let (_, after, _) = known_column(&scaled.y, &scaled.s, k);
                LabelCalibration {
                    label: label.clone(),
                    temperature: temperatures.get(label).copied(),
                    n: y.len(),
                    positives: y.iter().filter(|v| **v).count(),
                    before: Side::of(&y, &before),
                    after: Side::of(&y, &after),
                }
            })
            .collect();
        Calibration {
            split: split.into(),
            bins: BINS,
            per_label,
        }
    }

    pub fn write(&self, path: &Path) -> Result<(), EvalError> {
        super::predictions::write_json(path, self)
    }

    pub fn read(path: &Path) -> Result<Calibration, EvalError> {
        super::predictions::read_json(path, "a calibration file")
    }

    /// One line for the terminal: mean Brier and ECE over the labels, before → after.
    pub fn summary(&self) -> String {
        let n = self.per_label.len().max(1) as f64;
        let mean =
            |f: &dyn Fn(&LabelCalibration) -> f64| self.per_label.iter().map(f).sum::<f64>() / n;
        format!(
            "calibration on {} (mean over labels, before → after temperature scaling): Brier {:.4} → {:.4}, ECE equal-width {:.4} → {:.4}, equal-mass {:.4} → {:.4}",
            self.split,
            mean(&|l| l.before.brier),
            mean(&|l| l.after.brier),
            mean(&|l| l.before.ece_equal_width),
            mean(&|l| l.after.ece_equal_width),
            mean(&|l| l.before.ece_equal_mass),
            mean(&|l| l.after.ece_equal_mass),
        )
    }
}
