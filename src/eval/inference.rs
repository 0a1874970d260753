//! Running a network over a split (no_grad, batched, through the loader).

use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use crate::config::augment::Stage;
use crate::data::dataset::SplitData;
use crate::data::loader::{start_epoch, LoaderOptions, Source};
use crate::model::network::Network;

/// Turns a loader batch into an (N, C, H, W) tensor on `device`.
pub fn batch_tensor(images: &[f32], shape: [usize; 4], device: Device) -> Tensor {
    let s: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Tensor::from_slice(images)
        .view(s.as_slice())
        .to_device(device)
}

/// Sigmoid probabilities and the mean BCE loss over a split, in split order.
pub struct SplitPredictions {
    pub probs: Vec<Vec<f64>>,
    pub loss: f64,
}

/// Predicts every image of `split` with the network in eval mode.
pub fn predict_split(
    net: &Network,
    split: Arc<SplitData>,
    source: Source,
    stages: Arc<Vec<Stage>>,
    batch_size: usize,
    workers: usize,
    device: Device,
) -> Result<SplitPredictions, String> {
    let _guard = tch::no_grad_guard();
    let n = split.len();
    let k = split.label_names.len();
    let mut probs = vec![Vec::new(); n];
    let (mut loss_sum, mut count) = (0.0, 0usize);
    let o = LoaderOptions {
        batch_size,
        shuffle: false,
        class_balanced: false,
        drop_last: false,
        seed: 0,
        epoch: 0,
        workers,
        prefetch: 2,
    };
    for b in start_epoch(split.clone(), source, stages, o)? {
        let b = b?;
        let x = batch_tensor(&b.images, b.shape, device);
        let logits = net.forward_t(&x, false).to_kind(Kind::Float);
        let y = Tensor::from_slice(&b.targets)
            .view([b.indices.len() as i64, k as i64])
            .to_device(device);
        let l =
            logits.binary_cross_entropy_with_logits::<Tensor>(&y, None, None, tch::Reduction::Sum);
        loss_sum += l.double_value(&[]);
        count += b.indices.len() * k;
        let p: Vec<f32> = Vec::try_from(logits.sigmoid().to_device(Device::Cpu).flatten(0, -1))
            .map_err(|e: tch::TchError| e.to_string())?;
        for (r, &i) in b.indices.iter().enumerate() {
            probs[i] = p[r * k..(r + 1) * k].iter().map(|v| *v as f64).collect();
        }
    }
    Ok(SplitPredictions {
        probs,
        loss: loss_sum / count.max(1) as f64,
    })
}
