//! Scoring a predictions file against NIH labels: `muxmed evaluate --predictions`.
//! Works for any model's output: a CSV with an image id column (`Image Index` or
//! `image_id`) and one probability column per label, named as the label or `prob_<label>`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::data::nih::{self, NihError, Record};
use crate::io::CsvLine;
use crate::labels::Split;
use crate::labels::LABELS;
use crate::metrics::bootstrap::PatientIndex;
use crate::metrics::{
    bootstrap_auroc, calibration, mean_defined, micro_auroc, operating_point, CalibrationBin,
    Curve, OperatingPoint,
};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Nih(#[from] NihError),
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    #[error("no image of the predictions has labels: nothing to score")]
    Empty,
}

/// Predicted probabilities read from a CSV.
#[derive(Debug, Clone)]
pub struct Predictions {
    pub image_ids: Vec<String>,
    /// Label names in published order (a subset of [`LABELS`]).
    pub labels: Vec<String>,
    /// probs[i][k] for image i and label k of `labels`.
    pub probs: Vec<Vec<f64>>,
}

/// Columns a predictions file may carry besides the image id and the labels (muxmed's own
/// `predictions_<split>.csv` has `patient_id`).
const KNOWN_EXTRA_COLUMNS: [&str; 3] = ["patient_id", "Patient ID", "path"];

/// Reads a CSV file with a header through the one CSV reader; `Err` names the file and line.
fn for_each_line(
    path: &Path,
    on: impl FnMut(CsvLine<'_, '_>) -> Result<(), EvalError>,
) -> Result<(), EvalError> {
    let text = nih::read_text(path)?;
    crate::io::for_each_csv_line(&text, on, |line, message| row_error(path, line, message))
}

/// An error about `line` of the CSV file at `path`.
fn row_error(path: &Path, line: usize, message: String) -> EvalError {
    EvalError::Nih(NihError::Row {
        path: path.to_path_buf(),
        line,
        message,
    })
}

/// Where a predictions file keeps its image ids and each label's probabilities.
struct PredictionColumns {
    width: usize,
    id: usize,
    /// (index into [`LABELS`], column), in [`LABELS`] order.
    labels: Vec<(usize, usize)>,
}

impl PredictionColumns {
    fn of(header: &[&str], path: &Path) -> Result<Self, EvalError> {
        let row = |line: usize, message: String| row_error(path, line, message);
        let header: Vec<&str> = header.iter().map(|h| h.trim()).collect();
        let id = header
            .iter()
            .position(|&h| h == "Image Index" || h == "image_id")
            .ok_or_else(|| {
                row(
                    1,
                    "no image id column: expected `Image Index` or `image_id`".into(),
                )
            })?;
        let mut labels: Vec<(usize, usize)> = Vec::new();
        for (c, h) in header.iter().enumerate() {
            if c == id || KNOWN_EXTRA_COLUMNS.contains(h) {
                continue;
            }
            let name = h.strip_prefix("prob_").unwrap_or(h);
            match LABELS.iter().position(|l| *l == name) {
                Some(k) if labels.iter().any(|(kk, _)| *kk == k) => {
                    return Err(row(1, format!("label `{name}` has two columns")))
                }
                Some(k) => labels.push((k, c)),
                None => {
                    return Err(row(
                        1,
                        format!("column `{h}` is not a known label (expected one of {}, optionally prefixed prob_)", LABELS.join(", ")),
                    ))
                }
            }
        }
        if labels.is_empty() {
            return Err(row(1, "no label columns".into()));
        }
        labels.sort();
        Ok(PredictionColumns {
            width: header.len(),
            id,
            labels,
        })
    }

    /// One data row: its image id and probabilities in label order.
    fn parse(
        &self,
        r: &crate::io::CsvRow<'_>,
        path: &Path,
    ) -> Result<(String, Vec<f64>), EvalError> {
        let row = |message: String| row_error(path, r.line, message);
        if r.len() != self.width {
            return Err(row(format!(
                "expected {} fields, found {}",
                self.width,
                r.len()
            )));
        }
        let field = |c: usize| r.get(c).unwrap_or_default();
        let mut probs = Vec::with_capacity(self.labels.len());
        for &(k, c) in &self.labels {
            let v: f64 = field(c)
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| {
                    row(format!(
                        "{} value `{}` is not a number",
                        LABELS[k],
                        field(c)
                    ))
                })?;
            if !(0.0..=1.0).contains(&v) {
                return Err(row(format!("{} value {v} is not a probability in [0, 1]: if these are logits, apply a sigmoid first", LABELS[k])));
            }
            probs.push(v);
        }
        Ok((field(self.id).trim().to_string(), probs))
    }
}

pub fn read_predictions(path: &Path) -> Result<Predictions, EvalError> {
    let mut columns: Option<PredictionColumns> = None;
    let mut p = Predictions {
        image_ids: Vec::new(),
        labels: Vec::new(),
        probs: Vec::new(),
    };
    let mut seen = foldhash::HashSet::default();
    for_each_line(path, |line| match (line, &columns) {
        (CsvLine::Header(header), _) => {
            let c = PredictionColumns::of(header, path)?;
            p.labels = c
                .labels
                .iter()
                .map(|(k, _)| LABELS[*k].to_string())
                .collect();
            columns = Some(c);
            Ok(())
        }
        (CsvLine::Row(r), Some(c)) => {
            let (id, probs) = c.parse(r, path)?;
            if !seen.insert(id.clone()) {
                return Err(row_error(
                    path,
                    r.line,
                    format!("image `{id}` appears twice"),
                ));
            }
            p.image_ids.push(id);
            p.probs.push(probs);
            Ok(())
        }
        (CsvLine::Row(_), None) => unreachable!("for_each_line gives the header first"),
    })?;
    Ok(p)
}

/// Reads a run's `predictions_<key>.csv` (image_id, patient_id, one column per label of
/// `labels`), as [`write_predictions`] wrote it: image id → probabilities in label order.
pub fn read_run_predictions(
    path: &Path,
    labels: &[String],
) -> Result<HashMap<String, Vec<f64>>, EvalError> {
    let mut cols: Vec<usize> = Vec::new();
    let mut out = HashMap::new();
    for_each_line(path, |line| match line {
        CsvLine::Header(header) => {
            cols = labels
                .iter()
                .map(|l| {
                    header
                        .iter()
                        .position(|h| h.trim() == l)
                        .ok_or_else(|| row_error(path, 1, format!("no column `{l}`")))
                })
                .collect::<Result<_, _>>()?;
            Ok(())
        }
        CsvLine::Row(r) => {
            let probs = cols
                .iter()
                .map(|&c| {
                    r.get(c).and_then(|v| v.parse::<f64>().ok()).ok_or_else(|| {
                        row_error(path, r.line, format!("column {} is not a number", c + 1))
                    })
                })
                .collect::<Result<Vec<f64>, _>>()?;
            out.insert(r.get(0).unwrap_or_default().to_string(), probs);
            Ok(())
        }
    })?;
    Ok(out)
}

/// A probability written so that reading it back gives the same f64 (shortest round-trip
/// form in scientific notation): metrics recomputed from the CSV equal the original ones.
fn lossless(v: f64) -> String {
    format!("{v:e}")
}

fn write_csv(
    path: &Path,
    header: Vec<String>,
    rows: impl Iterator<Item = Vec<String>>,
) -> Result<(), EvalError> {
    let werr = |message: String| EvalError::Input {
        path: path.to_path_buf(),
        message,
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header).map_err(|e| werr(e.to_string()))?;
    for r in rows {
        w.write_record(&r).map_err(|e| werr(e.to_string()))?;
    }
    let bytes = w.into_inner().map_err(|e| werr(e.to_string()))?;
    crate::io::write_atomic(path, &bytes).map_err(|e| werr(e.to_string()))
}

/// Writes a run's `predictions_<key>.csv`: image_id, patient_id, one lossless probability
/// column per label.
pub fn write_predictions(
    path: &Path,
    image_ids: &[String],
    patients: &[String],
    labels: &[String],
    probs: &[Vec<f64>],
) -> Result<(), EvalError> {
    let mut header = vec!["image_id".to_string(), "patient_id".to_string()];
    header.extend(labels.iter().cloned());
    let rows = image_ids
        .iter()
        .zip(patients)
        .zip(probs)
        .map(|((id, p), pr)| {
            let mut r = vec![id.clone(), p.clone()];
            r.extend(pr.iter().map(|v| lossless(*v)));
            r
        });
    write_csv(path, header, rows)
}

/// Writes `predict`'s output: image_id (the file name), path, one `prob_<label>` column per
/// label; `evaluate --predictions` reads it.
pub fn write_file_predictions(
    path: &Path,
    files: &[String],
    labels: &[String],
    probs: &[Vec<f64>],
) -> Result<(), EvalError> {
    // image_id is the file name, which NIH's metadata (and `evaluate --predictions`) keys
    // images by; path says which file it was.
    let mut header = vec!["image_id".to_string(), "path".to_string()];
    header.extend(labels.iter().map(|l| format!("prob_{l}")));
    let rows = files.iter().zip(probs).map(|(f, pr)| {
        let name = Path::new(f)
            .file_name()
            .map_or_else(|| f.clone(), |n| n.to_string_lossy().into_owned());
        let mut r = vec![name, f.clone()];
        r.extend(pr.iter().map(|v| lossless(*v)));
        r
    });
    write_csv(path, header, rows)
}

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

/// Labels and patients of the scored images, aligned with the predictions.
pub struct Joined {
    pub y: Vec<Vec<bool>>,
    pub s: Vec<Vec<f64>>,
    /// Each image's patient as a dense index (see [`PatientIndex`]), the bootstrap's groups.
    pub patients: Vec<usize>,
    /// Distinct patients.
    pub n_patients: usize,
    pub labels: Vec<String>,
    pub predictions_without_labels: usize,
    pub labelled_without_predictions: usize,
}

/// Joins a split's labels and patients with probabilities: `probs_of(index, image id)`
/// gives an image's probabilities, or None when it has none (counted as unpredicted).
pub fn join_split(
    split: &crate::data::dataset::SplitData,
    mut probs_of: impl FnMut(usize, &str) -> Option<Vec<f64>>,
) -> Joined {
    let mut j = Joined {
        y: vec![],
        s: vec![],
        patients: vec![],
        n_patients: 0,
        labels: split.label_names.clone(),
        predictions_without_labels: 0,
        labelled_without_predictions: 0,
    };
    let mut index = PatientIndex::<&str>::default();
    let rows = split
        .image_ids
        .iter()
        .zip(&split.patients)
        .zip(&split.labels);
    for (i, ((id, p), l)) in rows.enumerate() {
        match probs_of(i, id) {
            Some(pr) => {
                j.y.push(l.iter().map(|v| *v > 0.5).collect());
                j.s.push(pr);
                j.patients.push(index.index(p.as_str()));
            }
            None => j.labelled_without_predictions += 1,
        }
    }
    j.n_patients = index.len();
    j
}

/// Joins predictions with metadata records, restricted to `split_list` when given.
pub fn join(
    p: &Predictions,
    records: &[Record],
    split_list: Option<&HashSet<String>>,
) -> Result<Joined, EvalError> {
    let by_id: foldhash::HashMap<&str, &Record> = records
        .iter()
        .filter(|r| split_list.is_none_or(|s| s.contains(&r.image_id)))
        .map(|r| (r.image_id.as_str(), r))
        .collect();
    let label_idx: Vec<usize> = p
        .labels
        .iter()
        .map(|l| LABELS.iter().position(|k| k == l).unwrap_or(0))
        .collect();
    let mut j = Joined {
        y: vec![],
        s: vec![],
        patients: vec![],
        n_patients: 0,
        labels: p.labels.clone(),
        predictions_without_labels: 0,
        labelled_without_predictions: 0,
    };
    // NIH's Patient ID column is an integer: equal numbers are one patient.
    let mut index = PatientIndex::<u32>::default();
    let mut matched = 0;
    for (id, probs) in p.image_ids.iter().zip(&p.probs) {
        match by_id.get(id.as_str()) {
            Some(r) => {
                j.y.push(label_idx.iter().map(|k| r.labels.contains(k)).collect());
                j.s.push(probs.clone());
                j.patients.push(index.index(r.patient_id));
                matched += 1;
            }
            None => j.predictions_without_labels += 1,
        }
    }
    j.labelled_without_predictions = by_id.len() - matched;
    j.n_patients = index.len();
    if j.y.is_empty() {
        return Err(EvalError::Empty);
    }
    Ok(j)
}

/// Every metric of one split.
pub fn evaluate(j: &Joined, split: &str, opt: &EvalOptions) -> Evaluation {
    let ci = bootstrap_auroc(&j.y, &j.s, &j.patients, opt.resamples, opt.seed, 0.95);
    let mut per_label = Vec::new();
    for (k, label) in j.labels.iter().enumerate() {
        let y: Vec<bool> = j.y.iter().map(|r| r[k]).collect();
        let s: Vec<f64> = j.s.iter().map(|r| r[k]).collect();
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
        let bad = |message: String| EvalError::Input {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
    }

    /// Writes it atomically.
    pub fn write(&self, path: &Path) -> Result<(), EvalError> {
        let bad = |message: String| EvalError::Input {
            path: path.to_path_buf(),
            message,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| bad(e.to_string()))?;
        crate::io::write_atomic(path, (text + "\n").as_bytes()).map_err(|e| bad(e.to_string()))
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

/// `muxmed evaluate --predictions`: scores any model's predictions CSV against NIH labels.
pub struct PredictionsJob<'a> {
    pub predictions: &'a Path,
    pub labels: &'a Path,
    pub split_list: Option<&'a Path>,
    pub split: Split,
    pub thresholds_from: Option<&'a Path>,
    /// Score a file that has columns for only some of the 14 labels (the macro mean is then
    /// over those labels only); without it, missing label columns are an error.
    pub labels_subset: bool,
}

impl PredictionsJob<'_> {
    /// The labels of [`LABELS`] the predictions have no column for.
    pub fn missing_labels(&self, p: &Predictions) -> Vec<String> {
        LABELS
            .iter()
            .filter(|l| !p.labels.iter().any(|x| x == *l))
            .map(|l| l.to_string())
            .collect()
    }

    /// Reads, joins and evaluates; returns the joined data and the evaluation.
    pub fn run(&self, opt: &EvalOptions) -> Result<(Joined, Evaluation), EvalError> {
        let mut opt = opt.clone();
        if !(0.0..=1.0).contains(&opt.sensitivity_target) {
            return Err(EvalError::Input {
                path: self.predictions.to_path_buf(),
                message: "--sensitivity must be between 0 and 1".into(),
            });
        }
        if let Some(t) = self.thresholds_from {
            opt.thresholds = Some((thresholds_from(t)?, format!("chosen in {}", t.display())));
        }
        let preds = read_predictions(self.predictions)?;
        let missing = self.missing_labels(&preds);
        if !missing.is_empty() && !self.labels_subset {
            return Err(EvalError::Input {
                path: self.predictions.to_path_buf(),
                message: format!(
                    "no column for {} of the 14 labels ({}): the mean AUROC would not be comparable; pass --labels-subset to score only the labels present",
                    missing.len(),
                    missing.join(", ")
                ),
            });
        }
        let records = nih::parse_metadata(&nih::read_text(self.labels)?, self.labels)?;
        let list: Option<HashSet<String>> = match self.split_list {
            Some(p) => Some(nih::read_list(p)?.into_iter().collect()),
            None => None,
        };
        let joined = join(&preds, &records, list.as_ref())?;
        let ev = evaluate(&joined, self.split.as_str(), &opt);
        Ok((joined, ev))
    }
}
