//! One pass over the train split: forward, loss, backward, accumulated optimiser steps, EMA.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tch::Tensor;

use super::session::Session;
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

/// The number of batches in the accumulation group of batch `bi`: `accum`, except for a
/// shorter last group at the end of the epoch. Each batch's loss is divided by it, so every
/// optimiser step averages its own batches.
pub fn accum_group_len(bi: usize, accum: usize, batches: usize) -> usize {
    let start = bi / accum * accum;
    (start + accum).min(batches) - start
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
    s.opt.zero_grad();
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
        let loss = s.loss.compute(&s.net.forward_train(&x, frozen), &y);
        let lv = loss.double_value(&[]);
        if !lv.is_finite() {
            return Err(TrainError::NonFinite(format!(
                "the loss became {lv} at epoch {} batch {bi} (step {})",
                epoch + 1,
                state.opt_step
            )));
        }
        (&loss / accum_group_len(bi, plan.accum, plan.batches) as f64).backward();
        state.epoch_loss_sum += lv;
        state.epoch_batches += 1;
        state.epoch_images += b.indices.len();
        let end_of_group = (bi + 1).is_multiple_of(plan.accum) || bi + 1 == plan.batches;
        if end_of_group {
            let lr = s.sched.lr(state.opt_step);
            let gnorm = s.opt.clip_grad_norm(s.cfg.train.grad_clip_norm);
            if !gnorm.is_finite() {
                return Err(TrainError::NonFinite(format!(
                    "the gradient norm became {gnorm} at epoch {} batch {bi} (step {})",
                    epoch + 1,
                    state.opt_step
                )));
            }
            s.opt.step(lr, s.unfreeze.factor(state.opt_step));
            s.opt.zero_grad();
            state.opt_step += 1;
            if let Some(e) = &s.ema {
                e.update(&s.vs, state.ema_updates);
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

#[cfg(test)]
mod tests {
    use super::accum_group_len;

    #[test]
    fn the_last_accumulation_group_is_weighted_by_its_real_size() {
        // 7 batches, accum 3: groups of 3, 3 and 1.
        let lens: Vec<usize> = (0..7).map(|b| accum_group_len(b, 3, 7)).collect();
        assert_eq!(lens, vec![3, 3, 3, 3, 3, 3, 1]);
        assert_eq!(accum_group_len(4, 1, 7), 1);
        // 8 batches, accum 4: two full groups.
        assert!((0..8).all(|b| accum_group_len(b, 4, 8) == 4));
    }
}
