//! The training loss, also used for the validation loss so both curves mean the same thing.

use tch::{Kind, Reduction, Tensor};

use crate::config::{LossKind, TrainConfig};
use crate::data::dataset::SplitData;

/// BCE with logits or the focal loss (Lin et al. 2017), optionally weighting positives.
pub struct Loss {
    pub kind: LossKind,
    pub focal_gamma: f64,
    /// Per-label weight of positives (`train.pos_weight`), computed on the train split.
    pub pos_weight: Option<Tensor>,
}

impl Loss {
    pub fn new(t: &TrainConfig, train: &SplitData, device: tch::Device) -> Self {
        let pos_weight = t.pos_weight.then(|| {
            let w: Vec<f32> = pos_weights(train).iter().map(|v| *v as f32).collect();
            Tensor::from_slice(&w).to_device(device)
        });
        Loss {
            kind: t.loss,
            focal_gamma: t.focal_gamma,
            pos_weight,
        }
    }

    /// The mean over images and labels of a batch.
    pub fn compute(&self, logits: &Tensor, y: &Tensor) -> Tensor {
        let pw = self.pos_weight.as_ref();
        match self.kind {
            LossKind::Bce => {
                logits.binary_cross_entropy_with_logits::<&Tensor>(y, None, pw, Reduction::Mean)
            }
            LossKind::Focal => {
                let ce = logits.binary_cross_entropy_with_logits::<&Tensor>(
                    y,
                    None,
                    pw,
                    Reduction::None,
                );
                let p = logits.sigmoid();
                let p_t: Tensor = &p * y + (1.0 - &p) * (1.0 - y);
                let modulating = p_t
                    .neg()
                    .g_add_scalar(1.0)
                    .pow_tensor_scalar(self.focal_gamma);
                (ce * modulating).mean(Kind::Float)
            }
        }
    }
}

/// negatives / positives per label on the train split (1 where a label has no positives).
pub fn pos_weights(split: &SplitData) -> Vec<f64> {
    let k = split.label_names.len();
    (0..k)
        .map(|j| {
            let pos = split.labels.iter().filter(|l| l[j] > 0.5).count() as f64;
            let neg = split.len() as f64 - pos;
            if pos > 0.0 {
                neg / pos
            } else {
                1.0
            }
        })
        .collect()
}
