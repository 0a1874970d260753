//! `muxmed evaluate --run` and `muxmed predict`: a trained run's model over one of the run's
//! own splits, or over new image files, with the run's own preprocessing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use tch::Device;

use super::calibrate::{apply, Calibration, Temperatures};
use super::join::Joined;
use super::predictions::write_predictions;
use super::scoring::{evaluate, ChosenThresholds, EvalOptions, Evaluation, Thresholds};
use crate::config::augment::Stage;
use crate::data::cache::Cache;
use crate::data::dataset::SplitData;
use crate::data::files::{gather, Failures};
use crate::data::loader::Source;
use crate::labels::Split;
use crate::model::device::pick_device;
use crate::model::export::{ExportManifest, Scripted};
use crate::model::folded::FoldedNetwork;
use crate::model::inference::{predict_split, Classifier};
use crate::model::layout::MemoryFormat;
use crate::run::checkpoint::load_checkpoint;
use crate::run::{Checkpoint, EvalKey, RunDir};

/// The `threshold_source` of an evaluation whose thresholds were chosen on the run's val split.
pub const VAL_THRESHOLDS: &str = "chosen on this run's val split (calibrated probabilities)";

pub(super) fn joined(split: &SplitData, probs: Vec<Vec<f64>>) -> Joined {
    let mut probs = probs.into_iter();
    super::join::join_split(split, |_, _| probs.next())
}

/// The outputs of `evaluate --run`.
pub struct RunEvaluation {
    /// The scored split's calibrated predictions with its labels.
    pub joined: Joined,
    /// The same before temperature scaling.
    pub uncalibrated: Joined,
    pub calibration: Calibration,
    pub temperatures: Temperatures,
    pub evaluation: Evaluation,
    pub predictions_csv: PathBuf,
    pub metrics_json: PathBuf,
    pub subgroups: super::subgroups::Subgroups,
    pub subgroups_json: PathBuf,
    /// Set when the manifest folder changed since the run started.
    pub notice: Option<String>,
}

/// Probabilities for a run's split averaged over its eval pipelines (and TTA pipelines).
pub(super) struct Scorer<'a> {
    pub net: &'a FoldedNetwork,
    pub cache: Arc<Cache>,
    pub pipelines: Vec<Vec<Stage>>,
    pub batch: usize,
    pub workers: usize,
    pub device: Device,
}

impl Scorer<'_> {
    pub fn predict(&self, split: &Arc<SplitData>, name: Split) -> Result<Vec<Vec<f64>>> {
        let slots: Vec<usize> = split
            .image_ids
            .iter()
            .map(|id| {
                self.cache.slot(id).ok_or_else(|| {
                    anyhow!("image {id} of the run's {name} split is not in the prepared cache: rerun `muxmed prepare` with the run's pipeline")
                })
            })
            .collect::<Result<_>>()?;
        let mut sum = vec![vec![0.0; split.label_names.len()]; split.len()];
        for stages in &self.pipelines {
            let p = predict_split(
                self.net,
                split.clone(),
                Source::Cache(self.cache.clone(), slots.clone()),
                Arc::new(stages.clone()),
                self.batch,
                self.workers,
                self.device,
                None,
            )
            .map_err(anyhow::Error::msg)?;
            for (acc, row) in sum.iter_mut().zip(&p.probs) {
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
        }
        let n = self.pipelines.len() as f64;
        if n > 1.0 {
            sum.iter_mut().flatten().for_each(|v| *v /= n);
        }
        Ok(sum)
    }
}

/// A run's config, its checkpoint folded for inference, and the device.
pub(super) struct Opened {
    pub run: RunDir,
    pub cfg: crate::config::PipelineConfig,
    pub folded: FoldedNetwork,
    pub labels: Vec<String>,
    pub device: Device,
}

pub(super) fn open_run(run_dir: &Path, key: &EvalKey, device: Option<&str>) -> Result<Opened> {
    let run = RunDir::open(run_dir)?;
    let cfg = run.config()?;
    let device = pick_device(device.unwrap_or(&cfg.runtime.device))?;
    let ck_path = run.checkpoint(key.checkpoint);
    if !ck_path.is_file() {
        bail!(
            "{} does not exist (was the run trained{}?)",
            ck_path.display(),
            if key.checkpoint == Checkpoint::Ema {
                " with train.ema_decay"
            } else {
                ""
            }
        );
    }
    let loaded = load_checkpoint(&ck_path, device)?;
    let folded = loaded.folded(cfg.runtime.memory_format);
    Ok(Opened {
        run,
        cfg,
        folded,
        labels: loaded.meta.labels,
        device,
    })
}

impl Opened {
    /// The eval pipeline, and with `tta` every `augment.tta` pipeline after it.
    pub fn pipelines(&self, tta: bool) -> Result<Vec<Vec<Stage>>> {
        let mut pipelines = vec![self.cfg.augment.eval.clone()];
        if tta {
            if self.cfg.augment.tta.is_empty() {
                bail!("--tta: the run's config has no augment.tta pipelines");
            }
            pipelines.extend(self.cfg.augment.tta.iter().cloned());
        }
        Ok(pipelines)
    }

    /// A scorer over the prepared cache of the manifest folder `mdir`.
    pub fn scorer(&self, mdir: &Path, tta: bool) -> Result<Scorer<'_>> {
        let cache = Arc::new(Cache::open(mdir, &self.cfg.augment).map_err(|e| anyhow!("{e}"))?);
        cache.check_sources()?;
        Ok(Scorer {
            net: &self.folded,
            cache,
            pipelines: self.pipelines(tta)?,
            batch: self.cfg.train.batch_size as usize,
            workers: self.cfg.runtime.data_workers as usize,
            device: self.device,
        })
    }
}

/// What the run's val split gives an evaluation: its temperatures, `opt` with operating
/// thresholds chosen on the calibrated val probabilities (unless `opt` has thresholds or
/// `thresholds` is false), and the val split with its raw probabilities.
pub(super) struct FromVal {
    pub opt: EvalOptions,
    pub temperatures: Temperatures,
    pub split: Arc<SplitData>,
    pub raw: Vec<Vec<f64>>,
}

/// Scores the run's val split with `scorer` (which reads the run's own cache), fits the
/// temperatures and, with `thresholds`, chooses the operating thresholds.
pub(super) fn from_val(
    run: &RunDir,
    scorer: &Scorer,
    opt: &EvalOptions,
    thresholds: bool,
) -> Result<FromVal> {
    let mut opt = opt.clone();
    let split = Arc::new(run.split(Split::Val)?);
    let raw = scorer.predict(&split, Split::Val)?;
    let temperatures = Temperatures::fit(&joined(&split, raw.clone()));
    if thresholds && opt.thresholds.is_none() {
        let cal = apply(&temperatures.map(), &split.label_names, &raw);
        let ve = evaluate(
            &joined(&split, cal),
            Split::Val.as_str(),
            &EvalOptions {
                resamples: 0,
                ..opt.clone()
            },
        );
        let t: Thresholds = ve
            .per_label
            .iter()
            .map(|m| (m.label.clone(), m.chosen.clone()))
            .collect::<std::collections::BTreeMap<String, ChosenThresholds>>();
        opt.thresholds = Some((t, VAL_THRESHOLDS.into()));
    }
    Ok(FromVal {
        opt,
        temperatures,
        split,
        raw,
    })
}

/// The manifest folder a run was trained from.
pub(super) fn run_manifest_dir(
    manifests_dir: &Path,
    cfg: &crate::config::PipelineConfig,
) -> PathBuf {
    crate::data::manifest_dir::ManifestDir::of(manifests_dir, &cfg.name)
        .root()
        .to_path_buf()
}

/// Evaluates a run's checkpoint on one of the run's own splits; for the test split,
/// operating thresholds are chosen on the run's val split first. With `key.tta`,
/// predictions are averaged over `eval` and every `augment.tta` pipeline.
pub fn evaluate_run(
    run_dir: &Path,
    manifests_dir: &Path,
    key: EvalKey,
    opt: &EvalOptions,
    device: Option<&str>,
) -> Result<RunEvaluation> {
    let o = open_run(run_dir, &key, device)?;
    let run = &o.run;
    let mdir = run_manifest_dir(manifests_dir, &o.cfg);
    let notice = run.manifest_notice(&mdir);
    let scorer = o.scorer(&mdir, key.tta)?;
    let val = from_val(run, &scorer, opt, key.split != Split::Val)?;
    let opt = val.opt;
    val.temperatures.write(&run.temperatures(&key))?;
    let (split, raw) = if key.split == Split::Val {
        (val.split, val.raw)
    } else {
        let split = Arc::new(run.split(key.split)?);
        let raw = scorer.predict(&split, key.split)?;
        (split, raw)
    };
    let temperatures = val.temperatures.map();
    let probs = apply(&temperatures, &split.label_names, &raw);
    let predictions_csv = run.predictions(&key);
    write_predictions(&predictions_csv, &split, &probs)?;
    let attrs = crate::data::dataset::load_split_attributes(&run.split_file(key.split))?;
    let sub = super::subgroups::subgroups(
        &attrs,
        &split,
        &probs,
        key.split.as_str(),
        &o.cfg.eval.subgroups,
        opt.resamples,
        opt.seed,
    );
    let subgroups_json = run.subgroups(&key);
    sub.write(&subgroups_json)?;
    let raw = joined(&split, raw);
    let j = joined(&split, probs);
    let calibration = Calibration::of(key.split.as_str(), &raw, &j, &temperatures);
    calibration.write(&run.calibration(&key))?;
    let ev = evaluate(&j, key.split.as_str(), &opt);
    let metrics_json = run.metrics(&key);
    ev.write(&metrics_json)?;
    Ok(RunEvaluation {
        joined: j,
        uncalibrated: raw,
        evaluation: ev,
        predictions_csv,
        metrics_json,
        subgroups: sub,
        subgroups_json,
        calibration,
        temperatures: val.temperatures,
        notice,
    })
}

/// What `predict` did: the files it wrote probabilities for, and each file that failed.
#[derive(Debug)]
pub struct PredictOutcome {
    pub written: usize,
    pub labels: Vec<String>,
    /// Each scored file with its probabilities, in label order.
    pub probs: Vec<(String, Vec<f64>)>,
    pub failed: Failures,
    /// Where the temperatures the probabilities were scaled with came from (None: raw).
    pub calibrated_with: Option<String>,
}

/// What `predict` scores with: a checkpoint, or a TorchScript export with its `model.json`.
#[derive(Debug, Clone, Copy)]
pub enum ModelSource<'a> {
    Checkpoint(&'a Path),
    Exported(&'a Path),
}

/// A loaded model with the preprocessing and label order it expects.
struct Ready {
    model: Box<dyn Classifier>,
    labels: Vec<String>,
    working_size: u32,
    cache_dtype: crate::config::augment::CacheDtype,
    eval_stages: Vec<Stage>,
    /// The model's temperatures and where they came from.
    temperatures: Option<(std::collections::BTreeMap<String, f64>, String)>,
}

fn ready(source: ModelSource, device: Device) -> Result<Ready> {
    match source {
        ModelSource::Checkpoint(path) => {
            let loaded = load_checkpoint(path, device)?;
            let net = loaded.folded(MemoryFormat::default());
            let meta = loaded.meta;
            let temperatures = super::calibrate::of_checkpoint(path, meta.checkpoint)?
                .map(|(t, f)| (t, f.display().to_string()));
            Ok(Ready {
                temperatures,
                model: Box::new(net),
                labels: meta.labels,
                working_size: meta.working_size,
                cache_dtype: meta.cache_dtype,
                eval_stages: meta.eval_stages,
            })
        }
        ModelSource::Exported(path) => {
            let module = Scripted::load(path, device)?;
            let spec = ExportManifest::path_for(path);
            let m = ExportManifest::read(&spec)?;
            Ok(Ready {
                temperatures: m
                    .temperatures
                    .map(|t| (t, format!("{} (temperatures)", spec.display()))),
                model: Box::new(module),
                labels: m.labels,
                working_size: m.working_size,
                cache_dtype: m.cache_dtype,
                eval_stages: m.eval_stages,
            })
        }
    }
}

/// Probabilities for image files (or folders of them) with a checkpoint's preprocessing.
/// A file that cannot be read is listed in the outcome and the others are still scored;
/// with `strict`, any failure stops before anything is written. It is an error when no
/// file could be scored. With `calibrated`, probabilities are scaled by the model's
/// temperatures (its run's `temperatures_val*.json`, or model.json's), and it is an error
/// when it has none.
pub fn predict_files(
    model: ModelSource,
    inputs: &[PathBuf],
    out: &Path,
    device: Option<&str>,
    (strict, calibrated): (bool, bool),
) -> Result<PredictOutcome> {
    use rayon::prelude::*;
    let device = pick_device(device.unwrap_or("auto"))?;
    let Ready {
        model,
        labels,
        working_size,
        cache_dtype,
        eval_stages,
        temperatures,
    } = ready(model, device)?;
    let temperatures = match (calibrated, temperatures) {
        (false, _) => None,
        (true, Some(t)) => Some(t),
        (true, None) => bail!(
            "no temperatures for this model, so its probabilities cannot be calibrated: `muxmed evaluate --run RUN` fits them on the run's val split (temperatures_val.json beside the checkpoint; `export` copies them into model.json); or pass --calibrated false for the raw sigmoid outputs"
        ),
    };
    let (candidates, mut failed) = gather(inputs)?;
    let checked: Vec<(PathBuf, Option<String>)> = candidates
        .into_par_iter()
        .map(|f| {
            let err = crate::data::image::decode_file(&f)
                .err()
                .map(|e| e.to_string());
            (f, err)
        })
        .collect();
    let mut files = Vec::new();
    for (f, err) in checked {
        match err {
            Some(e) => failed.push((f, e)),
            None => files.push(f),
        }
    }
    if strict && !failed.is_empty() {
        bail!(
            "--strict: {} input(s) failed, nothing written (first: {}: {})",
            failed.len(),
            failed[0].0.display(),
            failed[0].1
        );
    }
    if files.is_empty() {
        bail!(
            "no image could be read ({} failed{})",
            failed.len(),
            failed
                .first()
                .map(|(p, e)| format!("; first: {}: {e}", p.display()))
                .unwrap_or_default()
        );
    }
    let split = Arc::new(SplitData {
        label_names: labels.clone(),
        image_ids: files.iter().map(|f| f.display().to_string()).collect(),
        paths: files.iter().cloned().map(Some).collect(),
        patients: vec![String::new(); files.len()],
        datasets: vec![String::new(); files.len()],
        labels: vec![vec![0.0; labels.len()]; files.len()],
    });
    let p = predict_split(
        model.as_ref(),
        split.clone(),
        Source::Files(files.clone(), working_size, cache_dtype),
        Arc::new(eval_stages),
        16,
        2,
        device,
        None,
    )
    .map_err(anyhow::Error::msg)?;
    let probs = match &temperatures {
        Some((t, _)) => super::calibrate::apply(t, &labels, &p.probs),
        None => p.probs,
    };
    super::predictions::write_file_predictions(out, &split.image_ids, &labels, &probs)?;
    Ok(PredictOutcome {
        written: files.len(),
        labels,
        probs: split.image_ids.iter().cloned().zip(probs).collect(),
        failed,
        calibrated_with: temperatures.map(|(_, f)| f),
    })
}
