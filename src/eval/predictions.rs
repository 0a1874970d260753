//! Predictions files: reading any model's output (a CSV with an image id column, `Image Index`
//! or `image_id`, and one probability column per label, named as the label or
//! `prob_<label>`) and a run's own `predictions_<key>.csv`, and writing them losslessly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::data::dataset::SplitData;
use crate::data::nih::{self, NihError};
use crate::io::CsvLine;
use crate::labels::LABELS;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Nih(#[from] NihError),
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    #[error("no image of the predictions has labels: nothing to score")]
    Empty,
}

/// Writes `v` as pretty JSON with a final newline to `path`, atomically; errors name the
/// file.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<(), EvalError> {
    let err = |message: String| EvalError::Input {
        path: path.to_path_buf(),
        message,
    };
    let text = serde_json::to_string_pretty(v).map_err(|e| err(e.to_string()))? + "\n";
    crate::io::write_atomic(path, text.as_bytes()).map_err(|e| err(e.to_string()))
}

/// Reads a JSON file `muxmed` wrote; `what` names its kind in the error ("not a `what`").
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> Result<T, EvalError> {
    let err = |message: String| EvalError::Input {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(format!("not {what}: {e}")))
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
/// `predictions_<split>.csv` has `patient_id` and, from a manifest naming datasets, `dataset`).
const KNOWN_EXTRA_COLUMNS: [&str; 4] = ["patient_id", "Patient ID", "path", "dataset"];

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

/// Writes a run's `predictions_<key>.csv`: image_id, patient_id, dataset (only where the
/// manifest names one: every image keeps its source), one lossless probability column per
/// label of `split`.
pub fn write_predictions(
    path: &Path,
    split: &SplitData,
    probs: &[Vec<f64>],
) -> Result<(), EvalError> {
    let with_dataset = split.datasets.iter().any(|d| !d.is_empty());
    let mut header = vec!["image_id".to_string(), "patient_id".to_string()];
    if with_dataset {
        header.push("dataset".to_string());
    }
    header.extend(split.label_names.iter().cloned());
    let rows = (0..split.len()).zip(probs).map(|(i, pr)| {
        let mut r = vec![split.image_ids[i].clone(), split.patients[i].clone()];
        if with_dataset {
            r.push(split.datasets[i].clone());
        }
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
