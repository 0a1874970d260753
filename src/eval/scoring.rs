//! Scoring joined predictions: per-label AUROC with patient-bootstrap intervals, AP,
//! calibration and operating points (thresholds chosen on another split), the means, and the
//! typed `metrics_<key>.json` they are written to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::join::Joined;
use super::predictions::EvalError;
use crate::labels::Split;
use crate::metrics::{
    bootstrap_auroc, calibration, known_column, mean_defined, micro_auroc, operating_point,
    CalibrationBin, Curve, OperatingPoint,
};

/// Thresholds chosen on another split (normally val), per label.
pub type Thresholds = BTreeMap<String, ChosenThresholds>;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChosenThresholds {
    pub youden: Option<f64>,
    pub sensitivity_target: f64,
    pub at_sensitivity: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelMetrics {
    pub label: String,
    pub n: usize,
    pub positives: usize,
    pub auroc: Option<f64>,
    pub auroc_ci: Option<[f64; 2]>,
    pub average_precision: Option<f64>,
    pub expected_calibration_error: f64,
    pub chosen: ChosenThresholds,
    /// Operating points at the chosen thresholds, measured on this split.
    pub youden: Option<OperatingPoint>,
    pub at_sensitivity: Option<OperatingPoint>,
    pub reliability: Vec<CalibrationBin>,
}

/// What `metrics_<split>.json` holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    pub split: String,
    pub n_images: usize,
    pub n_patients: usize,
    pub mean_auroc: Option<f64>,
    pub mean_auroc_ci: Option<[f64; 2]>,
    pub micro_auroc: Option<f64>,
    pub bootstrap: BootstrapSettings,
    /// Where the operating thresholds come from.
    pub threshold_source: String,
    pub predictions_without_labels: usize,
    pub labelled_images_without_predictions: usize,
    /// The scores rank nothing (see [`crate::metrics::constant_outputs`]).
    #[serde(default)]
    pub constant_outputs: bool,
    pub per_label: Vec<LabelMetrics>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BootstrapSettings {
    pub resamples: usize,
    pub seed: u64,
    pub level: f64,
    pub unit: String,
}

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub resamples: usize,
    pub seed: u64,
    pub sensitivity_target: f64,
    pub thresholds: Option<(Thresholds, String)>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            resamples: 1000,
            seed: 0,
            sensitivity_target: 0.9,
            thresholds: None,
        }
    }
}

/// Every metric of one split.
pub fn evaluate(j: &Joined, split: &str, opt: &EvalOptions) -> Evaluation {
    let ci = bootstrap_auroc(&j.y, &j.s, &j.patients, opt.resamples, opt.seed, 0.95);
    let mut per_label = Vec::new();
    for (k, label) in j.labels.iter().enumerate() {
        let (y, s, _) = known_column(&j.y, &j.s, k);
        let curve = Curve::new(&y, &s);
        let chosen = match &opt.thresholds {
            Some((t, _)) => t.get(label).cloned().unwrap_or(ChosenThresholds {
                youden: None,
                sensitivity_target: opt.sensitivity_target,
                at_sensitivity: None,
            }),
            None => ChosenThresholds {
                youden: curve.youden_threshold(),
                sensitivity_target: opt.sensitivity_target,
                at_sensitivity: curve.sensitivity_threshold(opt.sensitivity_target),
            },
        };
        let (ece, reliability) = calibration(&y, &s, 10);
        per_label.push(LabelMetrics {
            label: label.clone(),
            n: y.len(),
            positives: y.iter().filter(|v| **v).count(),
            auroc: curve.auroc(),
            auroc_ci: ci.per_label[k],
            average_precision: curve.average_precision(),
            expected_calibration_error: ece,
            youden: chosen.youden.map(|t| operating_point(&y, &s, t)),
            at_sensitivity: chosen.at_sensitivity.map(|t| operating_point(&y, &s, t)),
            chosen,
            reliability,
        });
    }
    let aurocs: Vec<Option<f64>> = per_label.iter().map(|m| m.auroc).collect();
    Evaluation {
        constant_outputs: crate::metrics::constant_outputs(&j.s, &aurocs),
        split: split.to_string(),
        n_images: j.y.len(),
        n_patients: j.n_patients,
        mean_auroc: mean_defined(&aurocs),
        mean_auroc_ci: ci.mean,
        micro_auroc: micro_auroc(&j.y, &j.s),
        bootstrap: BootstrapSettings {
            resamples: opt.resamples,
            seed: opt.seed,
            level: 0.95,
            unit: "patient".into(),
        },
        threshold_source: match &opt.thresholds {
            Some((_, src)) => src.clone(),
            None => "chosen on this split itself (optimistic; choose them on val for a fair test)"
                .into(),
        },
        predictions_without_labels: j.predictions_without_labels,
        labelled_images_without_predictions: j.labelled_without_predictions,
        per_label,
    }
}

/// The thresholds chosen in a metrics file, to apply them to another split.
pub fn thresholds_from(metrics_json: &Path) -> Result<Thresholds, EvalError> {
    Ok(Evaluation::read(metrics_json)?.thresholds())
}

impl Evaluation {
    /// Reads a `metrics_<name>.json`.
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        super::predictions::read_json(path, "a metrics file")
    }

    /// Writes it atomically.
    pub fn write(&self, path: &Path) -> Result<(), EvalError> {
        super::predictions::write_json(path, self)
    }

    /// The thresholds it chose, per label.
    pub fn thresholds(&self) -> Thresholds {
        self.per_label
            .iter()
            .map(|m| (m.label.clone(), m.chosen.clone()))
            .collect()
    }

    /// The options that recompute exactly these numbers from the same predictions.
    pub fn options(&self) -> EvalOptions {
        EvalOptions {
            resamples: self.bootstrap.resamples,
            seed: self.bootstrap.seed,
            sensitivity_target: self
                .per_label
                .first()
                .map_or(0.9, |m| m.chosen.sensitivity_target),
            thresholds: Some((self.thresholds(), self.threshold_source.clone())),
        }
    }

    /// The per-label table printed after an evaluation.
    pub fn table(&self) -> String {
        let f = |v: Option<f64>| {
            v.map(|x| format!("{x:.4}"))
                .unwrap_or_else(|| "undefined".into())
        };
        let ci = |v: Option<[f64; 2]>| {
            v.map(|c| format!("[{:.3}, {:.3}]", c[0], c[1]))
                .unwrap_or_else(|| "-".into())
        };
        let mut out = format!(
            "{:<20} {:>6} {:>6} {:>9} {:>16} {:>8}\n",
            "label", "n", "pos", "AUROC", "95% CI (patient)", "AP"
        );
        for m in &self.per_label {
            out += &format!(
                "{:<20} {:>6} {:>6} {:>9} {:>16} {:>8}\n",
                m.label,
                m.n,
                m.positives,
                f(m.auroc),
                ci(m.auroc_ci),
                m.average_precision
                    .map(|x| format!("{x:.4}"))
                    .unwrap_or_else(|| "-".into())
            );
        }
        if self.constant_outputs {
            out += &format!("warning: {}\n", crate::metrics::CONSTANT_OUTPUTS_WARNING);
        }
        out += &format!(
            "{:<20} {:>6} {:>6} {:>9} {:>16}\nmicro AUROC {}\n",
            "mean (defined)",
            self.n_images,
            "",
            f(self.mean_auroc),
            ci(self.mean_auroc_ci),
            f(self.micro_auroc)
        );
        out
    }
}

/// Where `evaluate --predictions` and `report --predictions` write the metrics of `split`.
/// A run folder is refused: its `metrics_<split>.json` is the run's own evaluation (with
/// thresholds chosen on val), which another file's numbers must not replace.
/// `subgroups_<split>.json` beside [`metrics_file`]'s file in `dir`.
pub fn subgroups_file(dir: &Path, split: Split) -> PathBuf {
    dir.join(format!("subgroups_{split}.json"))
}

/// `truth_google2019_<split>.json` beside [`metrics_file`]'s file in `dir`.
pub fn adjudicated_file(dir: &Path, split: Split) -> PathBuf {
    dir.join(format!("truth_google2019_{split}.json"))
}

pub fn metrics_file(dir: &Path, split: Split) -> Result<PathBuf, EvalError> {
    if crate::run::RunDir::open(dir).is_ok() {
        return Err(EvalError::Input {
            path: dir.to_path_buf(),
            message: format!(
                "is a training run's folder: scoring a predictions CSV here would replace the run's own metrics_{split}.json; give --out another folder (`evaluate --run` re-scores the run itself)"
            ),
        });
    }
    Ok(dir.join(format!("metrics_{split}.json")))
}
