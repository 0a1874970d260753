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

    /// The mean over the (image, label) pairs of a batch whose label is known: a target
    /// of NaN (a missing label, or an uncertain one under `data.uncertain: ignore`) is
    /// masked out and contributes exactly zero gradient. A batch without missing labels
    /// takes the plain mean.
    pub fn compute(&self, logits: &Tensor, y: &Tensor) -> Tensor {
        let missing = y.isnan();
        let any_missing = missing.any().f_int64_value(&[]).map_or(true, |v| v != 0);
        if !any_missing {
            return match self.kind {
                LossKind::Bce => logits.binary_cross_entropy_with_logits::<&Tensor>(
                    y,
                    None,
                    self.pos_weight.as_ref(),
                    Reduction::Mean,
                ),
                LossKind::Focal => self.per_element(logits, y).mean(Kind::Float),
            };
        }
        let known = missing.logical_not().to_kind(Kind::Float);
        let y0 = y.nan_to_num(0.0, None::<f64>, None::<f64>);
        // Zero the logits of masked pairs too, so no NaN or gradient flows through them.
        let l0 = logits * &known;
        let per = self.per_element(&l0, &y0) * &known;
        per.sum(Kind::Float) / known.sum(Kind::Float).clamp_min(1.0)
    }

    /// The loss of every (image, label) pair.
    fn per_element(&self, logits: &Tensor, y: &Tensor) -> Tensor {
        let pw = self.pos_weight.as_ref();
        let ce = logits.binary_cross_entropy_with_logits::<&Tensor>(y, None, pw, Reduction::None);
        match self.kind {
            LossKind::Bce => ce,
            LossKind::Focal => {
                let p = logits.sigmoid();
                let p_t: Tensor = &p * y + (1.0 - &p) * (1.0 - y);
                let modulating = p_t
                    .neg()
                    .g_add_scalar(1.0)
                    .pow_tensor_scalar(self.focal_gamma);
                ce * modulating
            }
        }
    }
}

/// negatives / positives per label on the train split, counted on the images whose label
/// is known (1 where a label has no positives).
pub fn pos_weights(split: &SplitData) -> Vec<f64> {
    let k = split.label_names.len();
    (0..k)
        .map(|j| {
            let pos = split.labels.iter().filter(|l| l[j] > 0.5).count() as f64;
            let neg = split.labels.iter().filter(|l| l[j] <= 0.5).count() as f64;
            if pos > 0.0 {
                neg / pos
            } else {
                1.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(kind: LossKind, pos_weight: Option<Vec<f32>>) -> Loss {
        Loss {
            kind,
            focal_gamma: 2.0,
            pos_weight: pos_weight.map(|w| Tensor::from_slice(&w)),
        }
    }

    /// A missing label (NaN target) gives its logit exactly zero gradient, and the loss is
    /// the mean of the known pairs' losses, written out by hand:
    /// BCE(x, y) = max(x, 0) − x·y + ln(1 + e^−|x|), with pos_weight w on the positive term
    /// as w·y·ln(1 + e^−x) + (1 − y)·ln(1 + e^x).
    #[test]
    fn a_missing_label_contributes_exactly_zero_gradient() {
        let x = [0.3f32, -1.2, 2.0, 0.7, -0.4, 1.5];
        let y = [1.0f32, f32::NAN, 0.0, f32::NAN, 1.0, 0.0];
        let w = [2.0f32, 0.5, 3.0];
        for kind in [LossKind::Bce, LossKind::Focal] {
            let logits = Tensor::from_slice(&x).view([2, 3]).set_requires_grad(true);
            let target = Tensor::from_slice(&y).view([2, 3]);
            let l = loss(kind, Some(w.to_vec())).compute(&logits, &target);
            l.backward();
            let g: Vec<f32> = Vec::try_from(logits.grad().view([-1])).unwrap();
            assert_eq!(g[1], 0.0, "{kind:?}: gradient of a missing label");
            assert_eq!(g[3], 0.0, "{kind:?}: gradient of a missing label");
            for k in [0, 2, 4, 5] {
                assert!(g[k] != 0.0 && g[k].is_finite(), "{kind:?}: known label {k}");
            }
            let value = l.double_value(&[]);
            assert!(value.is_finite());
            if kind == LossKind::Bce {
                let sp = |v: f64| (1.0 + v.exp()).ln();
                let by_hand: f64 = [0usize, 2, 4, 5]
                    .iter()
                    .map(|&k| {
                        let (xv, yv, wv) = (x[k] as f64, y[k] as f64, w[k % 3] as f64);
                        wv * yv * sp(-xv) + (1.0 - yv) * sp(xv)
                    })
                    .sum::<f64>()
                    / 4.0;
                // Six float32 terms: a few ulps of 1.
                assert!((value - by_hand).abs() < 1e-6, "{value} vs {by_hand}");
            }
        }
    }

    /// Without missing labels the masked formula and the plain mean agree.
    #[test]
    fn the_masked_mean_over_all_known_labels_is_the_plain_mean() {
        let x = Tensor::from_slice(&[0.3f32, -1.2, 2.0, 0.7]).view([2, 2]);
        let y = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        for kind in [LossKind::Bce, LossKind::Focal] {
            let l = loss(kind, None);
            let plain = l.compute(&x, &y).double_value(&[]);
            let per = l.per_element(&x, &y).mean(Kind::Float).double_value(&[]);
            assert!((plain - per).abs() < 1e-6, "{kind:?}: {plain} vs {per}");
        }
    }
}
