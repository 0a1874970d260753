//! muxmed's training recipe, once: how an epoch is cut into batches and optimiser steps, and
//! one step of it. `train` (through [`super::epoch`]), `bench model` and the search's proxy
//! all call [`Recipe::accumulate`] for each batch and [`Recipe::apply`] at the end of each
//! accumulation group:
//! forward in training mode → the configured loss (BCE or focal, `pos_weight`) → backward of
//! the loss over the group's length → non-finite checks → gradient-norm clipping → the
//! optimiser step under the warmup/cosine schedule and the backbone's unfreeze warmup → EMA.

use tch::{nn, Tensor};

use super::ema::Ema;
use super::loss::Loss;
use super::optim::Optimizer;
use super::schedule::{UnfreezeWarmup, WarmupCosine};
use crate::config::TrainConfig;
use crate::model::network::{param_groups, Network};

/// How the epoch is cut into batches and optimiser steps.
#[derive(Debug, Clone, Copy)]
pub struct EpochPlan {
    pub batch: usize,
    pub drop_last: bool,
    pub batches: usize,
    pub accum: usize,
    pub steps: u64,
}

impl EpochPlan {
    /// Batches of `batch` (the last partial one dropped when there are at least two full
    /// ones), grouped by `accum` into optimiser steps.
    pub fn new(train_images: usize, batch: usize, accum: usize) -> Self {
        let drop_last = train_images >= 2 * batch;
        let batches = if drop_last {
            train_images / batch
        } else {
            train_images.div_ceil(batch)
        };
        EpochPlan {
            batch,
            drop_last,
            batches,
            accum,
            steps: batches.div_ceil(accum) as u64,
        }
    }

    /// The number of batches in the accumulation group of batch `bi`: `accum`, except for a
    /// shorter last group at the end of the epoch. Each batch's loss is divided by it, so
    /// every optimiser step averages its own batches.
    pub fn group_len(&self, bi: usize) -> usize {
        let start = bi / self.accum * self.accum;
        (start + self.accum).min(self.batches) - start
    }

    /// Whether batch `bi` ends its accumulation group (an optimiser step follows it).
    pub fn ends_group(&self, bi: usize) -> bool {
        (bi + 1).is_multiple_of(self.accum) || bi + 1 == self.batches
    }
}

/// The phases of a step, in order, for `bench model`'s breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Forward,
    Loss,
    Backward,
    Clip,
    Optimizer,
    ZeroGrad,
    Ema,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Forward,
        Phase::Loss,
        Phase::Backward,
        Phase::Clip,
        Phase::Optimizer,
        Phase::ZeroGrad,
        Phase::Ema,
    ];
}

/// Told when each phase of a step ends (`bench model` times them; training passes `()`).
pub trait Laps {
    fn lap(&mut self, _phase: Phase) {}
}

impl Laps for () {}

/// A step that cannot go on: the caller adds where it happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepError {
    NonFiniteLoss(f64),
    NonFiniteGradNorm(f64),
}

/// What an optimiser step used and found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied {
    pub lr: f64,
    pub grad_norm: f64,
}

/// The optimiser, loss, schedules and EMA of one training.
pub struct Recipe {
    pub opt: Optimizer,
    pub loss: Loss,
    pub sched: WarmupCosine,
    pub unfreeze: UnfreezeWarmup,
    pub ema: Option<Ema>,
    pub grad_clip_norm: Option<f64>,
}

impl Recipe {
    /// The recipe of `t` for the network in `vs` trained under `plan`.
    pub fn new(
        t: &TrainConfig,
        vs: &nn::VarStore,
        loss: Loss,
        ema: Option<Ema>,
        plan: &EpochPlan,
    ) -> Self {
        let opt = Optimizer::new(
            t.optimizer,
            param_groups(vs, t.backbone_lr_factor, t.weight_decay),
        );
        Recipe {
            opt,
            loss,
            sched: WarmupCosine {
                base_lr: t.lr,
                min_lr: t.min_lr,
                warmup_steps: (t.warmup_epochs * plan.steps as f64).round() as u64,
                total_steps: plan.steps * t.epochs as u64,
            },
            unfreeze: UnfreezeWarmup {
                unfreeze_step: t.freeze_backbone_epochs as u64 * plan.steps,
                warmup_steps: (t.unfreeze_warmup_epochs * plan.steps as f64).round() as u64,
            },
            ema,
            grad_clip_norm: t.grad_clip_norm,
        }
    }

    /// One batch of an accumulation group of `group_len` batches: forward in training mode
    /// (the backbone without gradients while `frozen`), the loss, and the backward pass of
    /// loss / `group_len`. Returns the batch's loss.
    pub fn accumulate(
        &self,
        net: &Network,
        x: &Tensor,
        y: &Tensor,
        frozen: bool,
        group_len: usize,
        laps: &mut dyn Laps,
    ) -> Result<f64, StepError> {
        let logits = net.forward_train(x, frozen);
        laps.lap(Phase::Forward);
        let loss = self.loss.compute(&logits, y);
        let value = loss.double_value(&[]);
        laps.lap(Phase::Loss);
        if !value.is_finite() {
            return Err(StepError::NonFiniteLoss(value));
        }
        (&loss / group_len as f64).backward();
        laps.lap(Phase::Backward);
        Ok(value)
    }

    /// The optimiser step `opt_step` (counted from 0) on the accumulated gradients: clipping,
    /// the step at the scheduled learning rate, zeroing, and the EMA's `ema_updates`-th
    /// update from the weights in `vs`.
    pub fn apply(
        &mut self,
        vs: &nn::VarStore,
        opt_step: u64,
        ema_updates: u64,
        laps: &mut dyn Laps,
    ) -> Result<Applied, StepError> {
        let lr = self.sched.lr(opt_step);
        let grad_norm = self.opt.clip_grad_norm(self.grad_clip_norm);
        laps.lap(Phase::Clip);
        if !grad_norm.is_finite() {
            return Err(StepError::NonFiniteGradNorm(grad_norm));
        }
        self.opt.step(lr, self.unfreeze.factor(opt_step));
        laps.lap(Phase::Optimizer);
        self.opt.zero_grad();
        laps.lap(Phase::ZeroGrad);
        if let Some(e) = &self.ema {
            e.update(vs, ema_updates);
        }
        laps.lap(Phase::Ema);
        Ok(Applied { lr, grad_norm })
    }
}

#[cfg(test)]
mod tests {
    use super::EpochPlan;

    #[test]
    fn the_last_accumulation_group_is_weighted_by_its_real_size() {
        // 7 batches, accum 3: groups of 3, 3 and 1.
        let p = EpochPlan {
            batch: 4,
            drop_last: true,
            batches: 7,
            accum: 3,
            steps: 3,
        };
        let lens: Vec<usize> = (0..7).map(|b| p.group_len(b)).collect();
        assert_eq!(lens, vec![3, 3, 3, 3, 3, 3, 1]);
        let ends: Vec<usize> = (0..7).filter(|&b| p.ends_group(b)).collect();
        assert_eq!(ends, vec![2, 5, 6]);
        assert_eq!(EpochPlan { accum: 1, ..p }.group_len(4), 1);
        // 8 batches, accum 4: two full groups.
        let q = EpochPlan::new(32, 4, 4);
        assert_eq!((q.batches, q.steps), (8, 2));
        assert!((0..8).all(|b| q.group_len(b) == 4));
    }
}
