//! The training loop from start (or resume) to the end: epochs, validation, checkpoints.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;

use super::best::{selection_score, BestCheckpoint, EarlyStopping};
use super::epoch::{train_one_epoch, EpochEnd, StopWhen};
use super::session::{Opened, Session};
use super::validate::{validate, Validation};
use crate::labels::Split;
use crate::run::{Checkpoint, EpochRow, RunDir, State, Status};

/// How `train` is asked to run.
#[derive(Debug, Clone, Default)]
pub struct TrainArgs {
    /// The pipeline of a new run (a resumed run uses its own config).
    pub pipeline: Option<crate::config::LoadedPipeline>,
    pub resume: Option<PathBuf>,
    pub run_name: Option<String>,
    pub overwrite: bool,
    pub device: Option<String>,
    /// Behave as if interrupted after this many optimiser steps (tests, smoke runs).
    pub stop_after_steps: Option<u64>,
    pub reports_dir: PathBuf,
    pub manifests_dir: PathBuf,
    /// Print progress (bars or periodic lines).
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A loss, gradient norm, val output or weight that is NaN or infinite.
    #[error("{0}")]
    NonFinite(String),
    #[error("image {image} of the run's {split} split is not in the prepared cache (skipped or stale): rerun `muxmed prepare` with the run's pipeline")]
    NotInCache { image: String, split: Split },
    #[error("{0}")]
    Data(String),
    #[error("{0}")]
    Io(String),
}

/// What a finished (or stopped) run reports.
#[derive(Debug)]
pub struct TrainOutcome {
    pub run: RunDir,
    pub state: State,
    pub labels: Vec<String>,
    /// Val AUROC per label of the best epoch.
    pub best_per_label: Vec<(String, Option<f64>)>,
    pub peak_rss_mb: f64,
    /// A resumed run that was already finished or early-stopped: nothing was trained.
    pub already_done: bool,
    /// Set when the manifest folder changed since the run started.
    pub notice: Option<String>,
    /// Things the user must know about the result (e.g. constant val outputs).
    pub warnings: Vec<String>,
}

impl TrainOutcome {
    fn new(run: RunDir, state: State, labels: Vec<String>, already_done: bool) -> Self {
        let best_per_label = state
            .best_epoch
            .and_then(|e| state.history.get(e as usize - 1))
            .map(|row| labels.iter().cloned().zip(row.val_auroc.clone()).collect())
            .unwrap_or_default();
        TrainOutcome {
            run,
            state,
            labels,
            best_per_label,
            peak_rss_mb: crate::process::peak_rss_mb(),
            already_done,
            notice: None,
            warnings: vec![],
        }
    }
}

/// Runs (or resumes) a training run.
pub fn train(args: &TrainArgs, stop: Arc<AtomicBool>) -> Result<TrainOutcome> {
    let (mut s, mut state) = match Session::open(args)? {
        Opened::AlreadyDone(run, state, labels) => {
            return Ok(TrainOutcome::new(run, state, labels, true))
        }
        Opened::Train(s, state) => (s, state),
    };
    let stop_when = StopWhen {
        signal: &stop,
        after_steps: args.stop_after_steps,
    };
    match run_epochs(&mut s, &mut state, &stop_when, args.progress) {
        Err(e) => match e.downcast::<super::TrainError>() {
            Ok(super::TrainError::NonFinite(what)) => {
                Err(fail_non_finite(&mut s, &mut state, &what))
            }
            Ok(other) => Err(other.into()),
            Err(other) => Err(other),
        },
        Ok(()) => {
            let notice = s.notice.take();
            let mut out = TrainOutcome::new(s.run.clone(), state, s.labels.clone(), false);
            out.notice = notice;
            out.warnings = std::mem::take(&mut s.warnings);
            Ok(out)
        }
    }
}

fn run_epochs(s: &mut Session, state: &mut State, stop: &StopWhen, progress: bool) -> Result<()> {
    let train_stages = Arc::new(s.cfg.augment.train.clone());
    let eval_stages = Arc::new(s.cfg.augment.eval.clone());
    let bar = progress.then(|| {
        crate::progress::TrainProgress::new(s.cfg.train.epochs as u64, s.plan.batches as u64)
    });
    while state.epoch < s.cfg.train.epochs {
        let frozen = state.epoch < s.cfg.train.freeze_backbone_epochs;
        if train_one_epoch(s, state, &train_stages, stop, bar.as_ref())? == EpochEnd::Interrupted {
            state.status = Status::Interrupted;
            s.save_last(state)?;
            s.log.line(&format!(
                "interrupted at epoch {} batch {} (step {})",
                state.epoch + 1,
                state.batch_in_epoch,
                state.opt_step
            ));
            break;
        }
        let (batch, workers) = (s.plan.batch, s.cfg.runtime.data_workers as usize);
        let score = |net| {
            validate(
                net,
                &s.val,
                &eval_stages,
                &s.recipe.loss,
                batch,
                workers,
                s.device,
            )
        };
        let live = score(&s.net)?;
        let ema = s.recipe.ema.as_ref().map(|e| score(&e.net)).transpose()?;
        if live.constant {
            let w = format!(
                "epoch {}: {}",
                state.epoch + 1,
                crate::metrics::CONSTANT_OUTPUTS_WARNING
            );
            s.log.line(&format!("warning: {w}"));
            s.warnings.push(w);
        }
        let row = epoch_row(s, state, &live, ema.as_ref(), frozen);
        state.history.push(row);
        s.run.write_metrics_csv(&state.history, &s.labels)?;
        if let Some(bar) = &bar {
            bar.epoch_done(state.epoch as u64 + 1, live.mean);
        }
        s.log.line(&format!(
            "epoch {} val mean AUROC {} loss {:.5}",
            state.epoch + 1,
            live.mean
                .map(|m| format!("{m:.4}"))
                .unwrap_or("undefined".into()),
            live.loss
        ));
        let epoch = state.epoch + 1;
        state.start_next_epoch();
        let by = s.cfg.train.select_by;
        let live_score = selection_score(by, live.mean, live.loss);
        let ema_score = ema
            .as_ref()
            .and_then(|v| selection_score(by, v.mean, v.loss));
        if BestCheckpoint(by).update(
            &mut state.best_score,
            &mut state.best_epoch,
            live_score,
            epoch,
        ) {
            s.checkpoints.save_weights(Checkpoint::Best, &s.vs)?;
        }
        if let Some(e) = &s.recipe.ema {
            if BestCheckpoint(by).update(
                &mut state.ema_best_score,
                &mut state.ema_best_epoch,
                ema_score,
                epoch,
            ) {
                s.checkpoints.save_weights(Checkpoint::Ema, &e.vs)?;
            }
        }
        // Patience follows the model meant to be kept: the EMA's when there is one.
        let watched = if s.recipe.ema.is_some() {
            ema_score
        } else {
            live_score
        };
        let early = EarlyStopping(s.cfg.train.early_stopping.clone(), by)
            .update(&mut state.patience, watched);
        state.status = if early {
            Status::EarlyStopped
        } else if state.epoch >= s.cfg.train.epochs {
            Status::Finished
        } else if stop.signal.load(Ordering::SeqCst) {
            Status::Interrupted
        } else {
            Status::Running
        };
        s.save_last(state)?;
        if early {
            s.log.line(&format!("early stop after epoch {epoch}"));
        }
        if state.status != Status::Running {
            break;
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    Ok(())
}

fn epoch_row(
    s: &Session,
    state: &State,
    live: &Validation,
    ema: Option<&Validation>,
    frozen: bool,
) -> EpochRow {
    let lr = s.recipe.sched.lr(state.opt_step.saturating_sub(1));
    let warm = s.recipe.unfreeze.factor(state.opt_step.saturating_sub(1));
    EpochRow {
        epoch: state.epoch + 1,
        train_loss: state.epoch_loss_sum / state.epoch_batches.max(1) as f64,
        val_loss: live.loss,
        val_mean_auroc: live.mean,
        val_mean_auroc_ema: ema.and_then(|v| v.mean),
        val_loss_ema: ema.map(|v| v.loss),
        val_auroc: live.per_label.clone(),
        lr_head: lr,
        lr_backbone: lr * s.cfg.train.backbone_lr_factor * warm,
        images_per_s: state.epoch_images as f64 / state.epoch_seconds.max(1e-9),
        epoch_time_s: state.epoch_seconds,
        peak_rss_mb: crate::process::peak_rss_mb(),
        frozen,
    }
}

/// Records the failure in `state.json` and says which checkpoint (if any) is good.
fn fail_non_finite(s: &mut Session, state: &mut State, what: &str) -> anyhow::Error {
    state.status = Status::FailedNonFinite;
    s.log.line(&format!("stopped: {what}"));
    if let Err(e) = s.run.write_state(state) {
        return e.into();
    }
    let last = s.run.checkpoint(Checkpoint::Last);
    let good = if last.is_file() {
        format!("the last good checkpoint is {}", last.display())
    } else {
        "no checkpoint was written before it".to_string()
    };
    anyhow::anyhow!("{what}: training stopped; {good} (try a lower train.lr)")
}
