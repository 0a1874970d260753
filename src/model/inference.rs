//! Running a network over a split (no_grad, batched, through the loader).

use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::device::batch_tensor;
use super::export::Scripted;
use super::folded::FoldedNetwork;
use super::network::Network;
use crate::config::augment::Stage;
use crate::data::dataset::SplitData;
use crate::data::loader::{start_epoch, LoaderOptions, Source};

/// Sigmoid probabilities over a split, in split order, and the mean loss when asked for.
pub struct SplitPredictions {
    pub probs: Vec<Vec<f64>>,
    /// The mean over images of the given loss (a batch-mean loss weighted by batch size).
    pub loss: Option<f64>,
}

/// Turns a normalised [N, 3, R, R] batch into logits: a native network in eval mode, or an
/// exported TorchScript module.
pub trait Classifier {
    fn logits(&self, x: &Tensor) -> Result<Tensor, String>;
}

impl Classifier for Network {
    fn logits(&self, x: &Tensor) -> Result<Tensor, String> {
        Ok(self.forward_t(x, false))
    }
}

impl Classifier for FoldedNetwork {
    fn logits(&self, x: &Tensor) -> Result<Tensor, String> {
        Ok(self.forward(x))
    }
}

impl Classifier for Scripted {
    fn logits(&self, x: &Tensor) -> Result<Tensor, String> {
        self.forward(x).map_err(|e| e.to_string())
    }
}

/// A loss of (logits, targets) averaged over the batch, e.g. the training loss.
pub type BatchLoss<'a> = &'a dyn Fn(&Tensor, &Tensor) -> Tensor;

/// Predicts every image of `split` with the network in eval mode, without autograd.
#[allow(clippy::too_many_arguments)]
pub fn predict_split(
    net: &dyn Classifier,
    split: Arc<SplitData>,
    source: Source,
    stages: Arc<Vec<Stage>>,
    batch_size: usize,
    workers: usize,
    device: Device,
    loss: Option<BatchLoss>,
) -> Result<SplitPredictions, String> {
    let _guard = tch::no_grad_guard();
    let n = split.len();
    let k = split.label_names.len();
    let mut probs = vec![Vec::new(); n];
    let mut loss_sum = 0.0;
    let o = LoaderOptions {
        batch_size,
        shuffle: false,
        class_balanced: None,
        source_weights: Vec::new(),
        drop_last: false,
        seed: 0,
        epoch: 0,
        workers,
        prefetch: 2,
    };
    for b in start_epoch(split.clone(), source, stages, o)? {
        let b = b?;
        let x = batch_tensor(&b.images, b.shape, device);
        let logits = net.logits(&x)?.to_kind(Kind::Float);
        if let Some(f) = loss {
            let y = Tensor::from_slice(&b.targets)
                .view([b.indices.len() as i64, k as i64])
                .to_device(device);
            loss_sum += f(&logits, &y).double_value(&[]) * b.indices.len() as f64;
        }
        let p: Vec<f32> = Vec::try_from(logits.sigmoid().to_device(Device::Cpu).flatten(0, -1))
            .map_err(|e: tch::TchError| e.to_string())?;
        for (r, &i) in b.indices.iter().enumerate() {
            probs[i] = p[r * k..(r + 1) * k].iter().map(|v| *v as f64).collect();
        }
    }
    Ok(SplitPredictions {
        probs,
        loss: loss.map(|_| loss_sum / n.max(1) as f64),
    })
}
