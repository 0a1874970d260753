//! One pass over the train split: batches from the loader through the recipe's step
//! ([`super::step`]), with events, mid-epoch checkpoints, stops and progress.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tch::Tensor;

use super::session::Session;
use super::step::StepError;
use super::TrainError;
use crate::config::augment::Stage;
use crate::data::loader::{start_epoch_at, Balance, LoaderOptions};
use crate::model::device::batch_tensor;
use crate::progress::TrainProgress;
use crate::run::{Event, State};

/// How an epoch's pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochEnd {
    Completed,
    Interrupted,
}

/// When to stop early: a signal, or a step limit (tests, smoke runs).
pub struct StopWhen<'a> {
    pub signal: &'a AtomicBool,
    pub after_steps: Option<u64>,
}

/// A seed for libtorch's generator per (run seed, batch), so dropout and stochastic depth
/// of a resumed run draw what an uninterrupted run draws.
fn mix(a: u64, b: u64) -> i64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// A step's non-finite value, with where it happened.
fn non_finite(e: StepError, epoch: u32, bi: usize, opt_step: u64) -> TrainError {
    let (what, v) = match e {
        StepError::NonFiniteLoss(v) => ("the loss", v),
        StepError::NonFiniteGradNorm(v) => ("the gradient norm", v),
    };
    TrainError::NonFinite(format!(
        "{what} became {v} at epoch {} batch {bi} (step {opt_step})",
        epoch + 1
    ))
}

/// Runs the rest of epoch `state.epoch` from batch `state.batch_in_epoch`.
pub fn train_one_epoch(
    s: &mut Session,
    state: &mut State,
    stages: &Arc<Vec<Stage>>,
    stop: &StopWhen,
    bar: Option<&TrainProgress>,
) -> Result<EpochEnd, TrainError> {
    let epoch = state.epoch;
    let frozen = epoch < s.cfg.train.freeze_backbone_epochs;
    crate::model::network::set_backbone_trainable(&s.vs, !frozen);
    let started = Instant::now();
    let plan = s.plan;
    let o = LoaderOptions {
        batch_size: plan.batch,
        shuffle: true,
        class_balanced: s.cfg.train.class_balanced.then_some(Balance {
            weighting: s.cfg.train.balance_weighting,
            max_repeat: s.cfg.train.max_repeat,
        }),
        drop_last: plan.drop_last,
        seed: s.cfg.train.seed,
        epoch: epoch as u64,
        workers: s.cfg.runtime.data_workers as usize,
        prefetch: s.cfg.runtime.prefetch as usize,
    };
    let first = state.batch_in_epoch;
    let mut batches = start_epoch_at(
        s.train.data.clone(),
        s.train.source.clone(),
        stages.clone(),
        o,
        first,
    )
    .map_err(TrainError::Data)?;
    let k = s.labels.len() as i64;
    let mut end = EpochEnd::Completed;
    s.recipe.opt.zero_grad();
    for bi in first..plan.batches {
        let b = batches
            .next()
            .ok_or_else(|| TrainError::Data("the loader ended early".into()))?
            .map_err(TrainError::Data)?;
        let global_batch = epoch as u64 * plan.batches as u64 + bi as u64;
        tch::manual_seed(mix(s.cfg.train.seed, global_batch));
        let x = batch_tensor(&b.images, b.shape, s.device);
        let y = Tensor::from_slice(&b.targets)
            .view([b.indices.len() as i64, k])
            .to_device(s.device);
        let lv = s
            .recipe
            .accumulate(&s.net, &x, &y, frozen, plan.group_len(bi), &mut ())
            .map_err(|e| non_finite(e, epoch, bi, state.opt_step))?;
        state.epoch_loss_sum += lv;
        state.epoch_batches += 1;
        state.epoch_images += b.indices.len();
        if plan.ends_group(bi) {
            let applied = s
                .recipe
                .apply(&s.vs, state.opt_step, state.ema_updates, &mut ())
                .map_err(|e| non_finite(e, epoch, bi, state.opt_step))?;
            let (lr, gnorm) = (applied.lr, applied.grad_norm);
            state.opt_step += 1;
            if s.recipe.ema.is_some() {
                state.ema_updates += 1;
            }
            if state.opt_step.is_multiple_of(s.cfg.train.log_every as u64) {
                s.run
                    .append_event(&Event {
                        time: super::timestamp(),
                        epoch: epoch + 1,
                        step: state.opt_step,
                        loss: lv,
                        mean_loss: state.epoch_loss_sum / state.epoch_batches as f64,
                        lr,
                        grad_norm: gnorm,
                        frozen,
                    })
                    .map_err(|e| TrainError::Io(e.to_string()))?;
            }
            state.batch_in_epoch = bi + 1;
            if bi + 1 < plan.batches && s.checkpoint_due(state.opt_step) {
                // Mid-epoch: the position and the time spent so far in this epoch.
                let mut at = state.clone();
                at.epoch_seconds += started.elapsed().as_secs_f64();
                s.save_last(&at)
                    .map_err(|e| match e.downcast::<TrainError>() {
                        Ok(t) => t,
                        Err(e) => TrainError::Io(format!("{e:#}")),
                    })?;
            }
            let hit_limit = stop.after_steps.is_some_and(|n| state.opt_step >= n);
            if stop.signal.load(Ordering::SeqCst) || hit_limit {
                end = EpochEnd::Interrupted;
                break;
            }
        }
        if let Some(bar) = bar {
            let secs = state.epoch_seconds + started.elapsed().as_secs_f64();
            bar.step(
                epoch as u64 + 1,
                s.cfg.train.epochs as u64,
                (bi + 1) as u64,
                plan.batches as u64,
                state.epoch_loss_sum / state.epoch_batches.max(1) as f64,
                state.epoch_images as f64 / secs.max(1e-9),
            );
        }
    }
    drop(batches);
    state.epoch_seconds += started.elapsed().as_secs_f64();
    Ok(end)
}
