//! `muxmed train`: the fine-tuning loop and the run directory it writes.
//!
//! [`train`] orchestrates; each part has its own module: [`session`] (opening a new or
//! resumed run), [`epoch`] (one pass over the train split), [`step`] (the recipe: one
//! optimiser step, shared with `bench model` and the search's proxy), [`validate`], [`best`] (the best
//! checkpoint rule and early stopping), [`ema`], [`loss`], [`optim`], and [`schedule`]; checkpoints
//! are [`crate::run::checkpoint`]'s.

pub mod schedule;

#[cfg(feature = "torch")]
pub mod bench;
#[cfg(feature = "torch")]
pub mod best;
#[cfg(feature = "torch")]
pub mod ema;
#[cfg(feature = "torch")]
pub mod epoch;
#[cfg(feature = "torch")]
pub mod loss;
#[cfg(feature = "torch")]
pub mod optim;
#[cfg(feature = "torch")]
pub mod session;
#[cfg(feature = "torch")]
pub mod step;
#[cfg(feature = "torch")]
pub mod validate;

#[cfg(feature = "torch")]
mod orchestrate;
#[cfg(feature = "torch")]
pub use orchestrate::{train, TrainArgs, TrainError, TrainOutcome};

use std::path::Path;

use crate::config::PipelineConfig;
pub(crate) fn now_utc() -> (i64, u32, u32, u32, u32, u32) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

pub fn timestamp() -> String {
    let (y, mo, d, h, mi, s) = now_utc();
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// The data message a user without the NIH download sees.
pub fn missing_data_message(cfg: &PipelineConfig, source: &Path, manifest_dir: &Path) -> String {
    let root = &cfg.data.root;
    if cfg.data.generic.is_none() && !root.is_dir() {
        format!(
            "ChestX-Ray14 is not at {root} (data.root in {src}).\n\
             - Download it from https://nihcc.app.box.com/v/ChestXray-NIHCC (images_001..012, Data_Entry_2017_v2020.csv, train_val_list.txt, test_list.txt).\n\
             - Put it at {root}, or point the pipeline at it: --set data.root=/path/to/nih\n\
             - Then: muxmed manifest --pipeline {name} --set data.root=... and muxmed prepare --pipeline {name} --set data.root=...\n\
             To see the whole job on the built-in synthetic dataset instead, run `make demo`.",
            root = root.display(),
            src = source.display(),
            name = cfg.name
        )
    } else {
        format!(
            "no manifest at {}: run `muxmed manifest --pipeline {}` then `muxmed prepare --pipeline {}` (with the same --set options)",
            manifest_dir.display(),
            cfg.name,
            cfg.name
        )
    }
}
