//! One pass over the train split: batches from the loader through the recipe's step
//! ([`super::step`]), with events, mid-epoch checkpoints, stops and progress.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tch::{nn, Device, Tensor};

use super::session::{Session, SplitSource};
use super::step::{Applied, EpochPlan, Recipe, StepError};
use super::TrainError;
use crate::config::augment::Stage;
use crate::config::{RuntimeConfig, TrainConfig};
use crate::data::loader::{start_epoch_at, Balance, LoaderOptions};
use crate::model::device::batch_tensor;
use crate::model::network::Network;
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

/// The parts of a training the loop steps (borrowed only during a step).
pub struct Parts<'a> {
    pub vs: &'a nn::VarStore,
    pub net: &'a Network,
    pub recipe: &'a mut Recipe,
}

/// An optimiser step just taken.
#[derive(Debug, Clone, Copy)]
pub struct Stepped {
    pub epoch: u32,
    /// The last batch of the step, within the epoch.
    pub batch: usize,
    /// The loss of that batch.
    pub loss: f64,
    pub applied: Applied,
    pub frozen: bool,
    /// Seconds spent in this pass of the epoch so far (`state.epoch_seconds` excludes them).
    pub seconds: f64,
}

/// What a training run does around the shared loop: `muxmed train` logs, checkpoints and
/// shows progress; the search's proxy records its loss trace.
pub trait Learner {
    fn parts(&mut self) -> Parts<'_>;
    /// After each optimiser step (`state` already counts it): whether to stop now.
    fn stepped(&mut self, state: &State, step: &Stepped) -> Result<bool, TrainError>;
    /// After each batch, `seconds` into this pass of the epoch.
    fn batch_done(&mut self, _state: &State, _batch: usize, _seconds: f64) {}
}

/// What one epoch trains on and how: the `train:` and `runtime:` settings, the epoch's plan,
/// the split and its stages.
pub struct EpochSetup<'a> {
    pub train: &'a TrainConfig,
    pub runtime: &'a RuntimeConfig,
    pub plan: EpochPlan,
    /// `data.sources`' sampling weights ([`crate::config::DataConfig::source_weights`]).
    pub source_weights: Vec<(String, f64)>,
    pub data: &'a SplitSource,
    pub stages: &'a Arc<Vec<Stage>>,
    pub device: Device,
}

/// Runs the rest of epoch `state.epoch` from batch `state.batch_in_epoch`: the loader's
/// batches, each through the recipe's step, seeded per batch so a resumed run draws what an
/// uninterrupted one draws. The time spent is added to `state.epoch_seconds`.
pub fn run_epoch(
    l: &mut dyn Learner,
    e: &EpochSetup,
    state: &mut State,
) -> Result<EpochEnd, TrainError> {
    let (t, plan, epoch) = (e.train, e.plan, state.epoch);
    let frozen = epoch < t.freeze_backbone_epochs;
    crate::model::network::set_backbone_trainable(l.parts().vs, !frozen);
    let started = Instant::now();
    let o = LoaderOptions {
        batch_size: plan.batch,
        shuffle: true,
        class_balanced: t.class_balanced.then_some(Balance {
            weighting: t.balance_weighting,
            max_repeat: t.max_repeat,
        }),
        source_weights: e.source_weights.clone(),
        drop_last: plan.drop_last,
        seed: t.seed,
        epoch: epoch as u64,
        workers: e.runtime.data_workers as usize,
        prefetch: e.runtime.prefetch as usize,
    };
    let first = state.batch_in_epoch;
    let mut batches = start_epoch_at(
        e.data.data.clone(),
        e.data.source.clone(),
        e.stages.clone(),
        o,
        first,
    )
    .map_err(TrainError::Data)?;
    let k = e.data.data.label_names.len() as i64;
    let mut end = EpochEnd::Completed;
    l.parts().recipe.opt.zero_grad();
    for bi in first..plan.batches {
        let b = batches
            .next()
            .ok_or_else(|| TrainError::Data("the loader ended early".into()))?
            .map_err(TrainError::Data)?;
        let global_batch = epoch as u64 * plan.batches as u64 + bi as u64;
        tch::manual_seed(mix(t.seed, global_batch));
        let x = batch_tensor(&b.images, b.shape, e.device);
        let y = Tensor::from_slice(&b.targets)
            .view([b.indices.len() as i64, k])
            .to_device(e.device);
        let p = l.parts();
        let loss = p
            .recipe
            .accumulate(p.net, &x, &y, frozen, plan.group_len(bi), &mut ())
            .map_err(|err| non_finite(err, epoch, bi, state.opt_step))?;
        state.epoch_loss_sum += loss;
        state.epoch_batches += 1;
        state.epoch_images += b.indices.len();
        if plan.ends_group(bi) {
            let applied = p
                .recipe
                .apply(p.vs, state.opt_step, state.ema_updates, &mut ())
                .map_err(|err| non_finite(err, epoch, bi, state.opt_step))?;
            if p.recipe.ema.is_some() {
                state.ema_updates += 1;
            }
            state.opt_step += 1;
            state.batch_in_epoch = bi + 1;
            let step = Stepped {
                epoch,
                batch: bi,
                loss,
                applied,
                frozen,
                seconds: started.elapsed().as_secs_f64(),
            };
            if l.stepped(state, &step)? {
                end = EpochEnd::Interrupted;
                break;
            }
        }
        l.batch_done(state, bi, started.elapsed().as_secs_f64());
    }
    drop(batches);
    state.epoch_seconds += started.elapsed().as_secs_f64();
    Ok(end)
}

/// `muxmed train`'s side of the loop: events every `log_every` steps, mid-epoch checkpoints,
/// stops, progress.
struct RunLearner<'a> {
    s: &'a mut Session,
    stop: &'a StopWhen<'a>,
    bar: Option<&'a TrainProgress>,
}

impl Learner for RunLearner<'_> {
    fn parts(&mut self) -> Parts<'_> {
        Parts {
            vs: &self.s.vs,
            net: &self.s.net,
            recipe: &mut self.s.recipe,
        }
    }

    fn stepped(&mut self, state: &State, step: &Stepped) -> Result<bool, TrainError> {
        let s = &mut *self.s;
        if state.opt_step.is_multiple_of(s.cfg.train.log_every as u64) {
            s.run
                .append_event(&Event {
                    time: crate::process::timestamp(),
                    epoch: step.epoch + 1,
                    step: state.opt_step,
                    loss: step.loss,
                    mean_loss: state.epoch_loss_sum / state.epoch_batches as f64,
                    lr: step.applied.lr,
                    grad_norm: step.applied.grad_norm,
                    frozen: step.frozen,
                })
                .map_err(|e| TrainError::Io(e.to_string()))?;
        }
        if step.batch + 1 < s.plan.batches && s.checkpoint_due(state.opt_step) {
            // Mid-epoch: the position and the time spent so far in this epoch.
            let mut at = state.clone();
            at.epoch_seconds += step.seconds;
            s.save_last(&at)
                .map_err(|e| match e.downcast::<TrainError>() {
                    Ok(t) => t,
                    Err(e) => TrainError::Io(format!("{e:#}")),
                })?;
        }
        let hit_limit = self.stop.after_steps.is_some_and(|n| state.opt_step >= n);
        Ok(self.stop.signal.load(Ordering::SeqCst) || hit_limit)
    }

    fn batch_done(&mut self, state: &State, batch: usize, seconds: f64) {
        if let Some(bar) = self.bar {
            let secs = state.epoch_seconds + seconds;
            bar.step(
                state.epoch as u64 + 1,
                self.s.cfg.train.epochs as u64,
                (batch + 1) as u64,
                self.s.plan.batches as u64,
                state.epoch_loss_sum / state.epoch_batches.max(1) as f64,
                state.epoch_images as f64 / secs.max(1e-9),
            );
        }
    }
}

/// Runs the rest of epoch `state.epoch` of a `muxmed train` session.
pub fn train_one_epoch(
    s: &mut Session,
    state: &mut State,
    stages: &Arc<Vec<Stage>>,
    stop: &StopWhen,
    bar: Option<&TrainProgress>,
) -> Result<EpochEnd, TrainError> {
    let (train, runtime) = (s.cfg.train.clone(), s.cfg.runtime.clone());
    let data = SplitSource {
        data: s.train.data.clone(),
        source: s.train.source.clone(),
    };
    let setup = EpochSetup {
        train: &train,
        runtime: &runtime,
        plan: s.plan,
        source_weights: s.cfg.data.source_weights(),
        data: &data,
        stages,
        device: s.device,
    };
    run_epoch(&mut RunLearner { s, stop, bar }, &setup, state)
}
