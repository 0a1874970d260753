//! A run: the directory `muxmed train` writes, every file name in it, and typed structs for
//! what each file holds. Train writes these types; evaluate, report and the CLI read them.
//!
//! ```text
//! reports/<run>/
//!   config.resolved.yaml   the exact config (PipelineConfig)
//!   manifest.json          copy of the manifest's description at the start
//!   splits/<split>.parquet the run's own split membership and labels, copied at the start:
//!                          resume, evaluate and report use these, never the manifest folder
//!   run.json               RunInfo: model, weights and their hash, device, manifest hash
//!   state.json             State: position, best epochs, patience, one EpochRow per epoch
//!   metrics.csv            the EpochRows as a table (for people and pandas)
//!   events.jsonl           one Event every `train.log_every` optimiser steps
//!   train.log              human-readable log
//!   last.safetensors       weights + optimiser state (`optim.*`) + EMA (`ema.*`) + State
//!   best.safetensors       the weights of the epoch with the best val score (train.select_by)
//!   ema_best.safetensors   the EMA weights of the epoch with the highest EMA val mean AUROC
//!   predictions_<key>.csv  per-image probabilities of one evaluation (see EvalKey)
//!   metrics_<key>.json     the metrics of that evaluation
//!   localization_<split>.json / .csv   the box benchmark (`muxmed localize`)
//!   localization_<split>/  its figures: accuracy per threshold, best and worst cases
//!   report/                figures, report.md, report.html
//! ```

pub mod checkpoint;
mod files;
mod types;

pub use checkpoint::CheckpointMeta;
pub use files::{ExternalDir, ExternalKey, LocalizationFiles, RunDir, RunError};
pub use types::{
    EpochRow, Event, ExternalInfo, FindingAccuracy, Localization, MapSource, Patience, RunInfo,
    SkippedImage, SourceAccuracy, State, Status, WeightsInfo,
};

use crate::labels::Split;

/// Which weights of a run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Checkpoint {
    /// The epoch with the best val score (`train.select_by`).
    Best,
    /// The end of the last finished step (with optimiser state, for resuming).
    Last,
    /// The EMA weights of the epoch with the highest EMA val mean AUROC.
    Ema,
}

impl Checkpoint {
    pub fn file_name(self) -> &'static str {
        match self {
            Checkpoint::Best => "best.safetensors",
            Checkpoint::Last => "last.safetensors",
            Checkpoint::Ema => "ema_best.safetensors",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Checkpoint::Best => "best",
            Checkpoint::Last => "last",
            Checkpoint::Ema => "ema",
        }
    }
}

/// One evaluation of a run: which split, which weights, with or without TTA. It names the
/// `predictions_<key>.csv` and `metrics_<key>.json` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EvalKey {
    pub split: Split,
    pub checkpoint: Checkpoint,
    pub tta: bool,
}

impl EvalKey {
    /// `test`, `test_ema`, `val_last_tta`, ...: the best checkpoint without TTA is the plain
    /// split name.
    pub fn suffix(&self) -> String {
        let mut s = self.split.to_string();
        if self.checkpoint != Checkpoint::Best {
            s += "_";
            s += self.checkpoint.as_str();
        }
        if self.tta {
            s += "_tta";
        }
        s
    }

    /// For people: "test split, checkpoint ema_best.safetensors, with TTA".
    pub fn describe(&self) -> String {
        format!(
            "{} split, checkpoint {}{}",
            self.split,
            self.checkpoint.file_name(),
            if self.tta {
                ", averaged over the eval and TTA pipelines"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_after_the_checkpoint_are_dropped_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        for step in 1..=10 {
            run.append_event(&Event {
                time: "t".into(),
                epoch: 1,
                step,
                loss: 0.5,
                mean_loss: 0.5,
                lr: 1e-3,
                grad_norm: 1.0,
                frozen: false,
            })
            .unwrap();
        }
        // A torn line, as a SIGKILL can leave.
        let mut text = std::fs::read_to_string(run.events_file()).unwrap();
        text += "{\"time\":\"t\",\"ep";
        std::fs::write(run.events_file(), &text).unwrap();
        run.trim_events(6).unwrap();
        let steps: Vec<u64> = std::fs::read_to_string(run.events_file())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Event>(l).unwrap().step)
            .collect();
        assert_eq!(steps, (1..=6).collect::<Vec<_>>());
    }

    #[test]
    fn eval_keys_name_distinct_files() {
        let mut seen = std::collections::HashSet::new();
        for split in Split::ALL {
            for checkpoint in [Checkpoint::Best, Checkpoint::Last, Checkpoint::Ema] {
                for tta in [false, true] {
                    assert!(seen.insert(
                        EvalKey {
                            split,
                            checkpoint,
                            tta
                        }
                        .suffix()
                    ));
                }
            }
        }
        let k = EvalKey {
            split: Split::Test,
            checkpoint: Checkpoint::Ema,
            tta: true,
        };
        assert_eq!(k.suffix(), "test_ema_tta");
        let d = RunDir::new("reports/r");
        assert!(d.predictions(&k).ends_with("predictions_test_ema_tta.csv"));
        assert!(d.metrics(&k).ends_with("metrics_test_ema_tta.json"));
    }
}
