//! Predictions joined with the labels they are scored against: NIH's metadata (optionally
//! restricted to a split list) or a manifest split, image by image, with patients for the
//! bootstrap.

use std::collections::HashSet;

use super::predictions::{EvalError, Predictions};
use crate::data::nih::Record;
use crate::labels::LABELS;
use crate::metrics::bootstrap::PatientIndex;

/// Labels and patients of the scored images, aligned with the predictions.
pub struct Joined {
    /// `y[i][k]`: None where image i's label k is missing (left out of label k's metrics).
    pub y: Vec<Vec<Option<bool>>>,
    pub s: Vec<Vec<f64>>,
    /// Each image's patient as a dense index (see [`PatientIndex`]), the bootstrap's groups.
    pub patients: Vec<usize>,
    /// Each row's image id.
    pub image_ids: Vec<String>,
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
        image_ids: vec![],
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
                j.y.push(l.iter().map(|v| crate::metrics::truth_of(*v)).collect());
                j.s.push(pr);
                j.patients.push(index.index(p.as_str()));
                j.image_ids.push(id.clone());
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
        image_ids: vec![],
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
                j.y.push(
                    label_idx
                        .iter()
                        .map(|k| Some(r.labels.contains(k)))
                        .collect(),
                );
                j.s.push(probs.clone());
                j.patients.push(index.index(r.patient_id));
                j.image_ids.push(id.clone());
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
