//! Scoring a network on the run's val split after an epoch.

use std::sync::Arc;

use tch::{Device, Tensor};

use super::loss::Loss;
use super::session::SplitSource;
use super::TrainError;
use crate::config::augment::Stage;
use crate::data::dataset::SplitData;
use crate::metrics::mean_defined;
use crate::model::folded::FoldedNetwork;
use crate::model::inference::predict_split;
use crate::model::network::Network;

/// One network's val scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    pub per_label: Vec<Option<f64>>,
    pub mean: Option<f64>,
    /// The training loss on val.
    pub loss: f64,
    /// The outputs rank nothing: training probably diverged.
    pub constant: bool,
}

/// AUROC of every label of a split for predicted probabilities (None where undefined).
pub fn label_aurocs(split: &SplitData, probs: &[Vec<f64>]) -> Vec<Option<f64>> {
    crate::metrics::label_aurocs(split.label_names.len(), &split.labels, probs)
}

/// Scores `net` on val with its folded inference model (what `evaluate` runs). Non-finite
/// outputs or a non-finite loss are an error: a NaN model is never scored (every NaN
/// probability would tie, and the AUROC would look like chance).
pub fn validate(
    net: &Network,
    val: &SplitSource,
    stages: &Arc<Vec<Stage>>,
    loss: &Loss,
    batch: usize,
    workers: usize,
    device: Device,
) -> Result<Validation, TrainError> {
    let f = |l: &Tensor, y: &Tensor| loss.compute(l, y);
    let folded = FoldedNetwork::new(net, net.memory_format());
    let p = predict_split(
        &folded,
        val.data.clone(),
        val.source.clone(),
        stages.clone(),
        batch,
        workers,
        device,
        Some(&f),
    )
    .map_err(TrainError::Data)?;
    let bad = p.probs.iter().flatten().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(TrainError::NonFinite(format!(
            "{bad} of {} val probabilities are not finite",
            p.probs.len() * val.data.label_names.len()
        )));
    }
    let l = p.loss.unwrap_or(f64::NAN);
    if !l.is_finite() {
        return Err(TrainError::NonFinite(format!("the val loss is {l}")));
    }
    let per_label = label_aurocs(&val.data, &p.probs);
    Ok(Validation {
        constant: crate::metrics::constant_outputs(&p.probs, &per_label),
        mean: mean_defined(&per_label),
        per_label,
        loss: l,
    })
}
