//! `muxmed export`: a checkpoint as a TorchScript module plus `model.json`, with the
//! thresholds its run chose on the validation split when it has them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::run_eval::VAL_THRESHOLDS;
use super::scoring::Evaluation;
use crate::labels::Split;
use crate::model::device::pick_device;
use crate::model::export::{
    flat_preprocessing, trace, ExportManifest, LabelThreshold, EXPORT_FORMAT,
};
use crate::model::layout::MemoryFormat;
use crate::run::checkpoint::load_checkpoint;
use crate::run::{EvalKey, RunDir};

/// What `export` wrote.
#[derive(Debug)]
pub struct Exported {
    pub model: PathBuf,
    pub manifest: PathBuf,
    pub manifest_data: ExportManifest,
}

/// The val-split thresholds of the run the checkpoint sits in, as `model.json` lists them,
/// with the file they came from: `metrics_val*.json` (chosen on val itself), else
/// `metrics_test*.json`, whose thresholds `evaluate --run --split test` chose on val.
fn run_thresholds(
    checkpoint: &Path,
    which: crate::run::Checkpoint,
) -> Option<(Vec<LabelThreshold>, String)> {
    let run = RunDir::new(checkpoint.parent()?);
    let chosen_on_val = |split: Split| {
        let file = run.metrics(&EvalKey {
            split,
            checkpoint: which,
            tta: false,
        });
        let e = Evaluation::read(&file).ok()?;
        let on_val = split == Split::Val || e.threshold_source == VAL_THRESHOLDS;
        on_val.then_some((e, file))
    };
    let (e, file) = chosen_on_val(Split::Val).or_else(|| chosen_on_val(Split::Test))?;
    let t = e
        .thresholds()
        .into_iter()
        .map(|(label, c)| LabelThreshold {
            label,
            youden: c.youden,
            at_sensitivity: c.at_sensitivity,
            sensitivity_target: c.sensitivity_target,
        })
        .collect();
    Some((t, file.display().to_string()))
}

/// Where the module goes: `out`, or `out/<checkpoint stem>.pt` when `out` is a folder (or
/// ends with a separator). Checked before anything is written: neither the module nor its
/// spec may be the checkpoint itself or an existing folder.
fn module_path(checkpoint: &Path, out: &Path) -> Result<PathBuf> {
    let as_folder = out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/');
    let out = if as_folder {
        let stem = checkpoint.file_stem().unwrap_or_default().to_string_lossy();
        out.join(format!("{stem}.pt"))
    } else {
        out.to_path_buf()
    };
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    for target in [out.clone(), ExportManifest::path_for(&out)] {
        if target.is_dir() {
            anyhow::bail!(
                "{} is a folder: give --out a file name or a folder to write into",
                target.display()
            );
        }
        if same(&target, checkpoint) {
            anyhow::bail!(
                "{} is the checkpoint being exported: choose another --out",
                target.display()
            );
        }
    }
    Ok(out)
}

/// Traces the checkpoint's network and writes `out` and `model.json` beside it.
pub fn export(checkpoint: &Path, out: &Path, device: Option<&str>) -> Result<Exported> {
    let out = &module_path(checkpoint, out)?;
    let device = pick_device(device.unwrap_or("cpu"))?;
    let loaded = load_checkpoint(checkpoint, device)?;
    let net = loaded.folded(MemoryFormat::default());
    let meta = loaded.meta;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    tch::no_grad(|| trace(&net, device, meta.resolution as i64, out))?;
    let sha = crate::io::sha256_file(checkpoint)
        .with_context(|| format!("hashing {}", checkpoint.display()))?;
    let thresholds = run_thresholds(checkpoint, meta.checkpoint);
    let temperatures = super::calibrate::of_checkpoint(checkpoint, meta.checkpoint)?;
    let manifest_data = ExportManifest {
        format: EXPORT_FORMAT.to_string(),
        arch: meta.arch.clone(),
        resolution: meta.resolution,
        working_size: meta.working_size,
        cache_dtype: meta.cache_dtype,
        preprocessing: flat_preprocessing(&meta.eval_stages),
        eval_stages: meta.eval_stages,
        labels: meta.labels,
        thresholds_source: thresholds.as_ref().map(|(_, s)| s.clone()),
        thresholds: thresholds.map(|(t, _)| t),
        temperatures_source: temperatures.as_ref().map(|(_, f)| f.display().to_string()),
        temperatures: temperatures.map(|(t, _)| t),
        checkpoint: checkpoint.display().to_string(),
        checkpoint_sha256: sha,
        muxmed_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let manifest = ExportManifest::path_for(out);
    manifest_data.write(&manifest)?;
    Ok(Exported {
        model: out.to_path_buf(),
        manifest,
        manifest_data,
    })
}
