//! `muxmed evaluate --run R --on PIPELINE`: a trained run scored on another pipeline's data
//! (another hospital, another dataset). The run's own preprocessing applies (its working
//! size, cache dtype and eval stages: the other manifest's cache is prepared for them if it
//! is not yet). Labels meet by concept: only the concepts both sides know are scored, and
//! the rest are listed in `external_<key>.json`. Operating thresholds are the ones chosen on
//! the run's own val split, as for its internal test evaluation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::predictions::{read_run_predictions, write_predictions};
use super::run_eval::{from_val, joined, open_run, run_manifest_dir};
use super::scoring::{evaluate, EvalOptions, Evaluation};
use super::shift::Shift;
use crate::config::PipelineConfig;
use crate::data::dataset::{load_split_file, manifest_labels, split_path, SplitData};
use crate::data::manifest_dir::{ManifestDir, ManifestInfo};
use crate::labels::Split;
use crate::run::{EvalKey, ExternalInfo, ExternalKey};

/// The outputs of one external evaluation.
pub struct ExternalEvaluation {
    pub evaluation: Evaluation,
    /// Internal (the run's test split) against external, per shared concept.
    pub shift: Shift,
    pub shift_json: PathBuf,
    pub info: ExternalInfo,
    pub predictions_csv: PathBuf,
    pub metrics_json: PathBuf,
    /// Per-label AUROC within subgroups of the other data (`subgroups_<key>.json`).
    pub subgroups: super::subgroups::Subgroups,
    pub subgroups_json: PathBuf,
}

/// The other manifest's splits (`test`, or all three) read with its own labels, then laid
/// out in the run's label order: a concept the other data does not label is NaN (missing).
fn other_data(dir: &Path, all: bool, run_labels: &[String]) -> Result<SplitData> {
    let labels = manifest_labels(dir)?;
    let splits: &[Split] = if all { &Split::ALL } else { &[Split::Test] };
    let mut out = SplitData {
        label_names: run_labels.to_vec(),
        image_ids: Vec::new(),
        paths: Vec::new(),
        patients: Vec::new(),
        datasets: Vec::new(),
        labels: Vec::new(),
    };
    let index: Vec<Option<usize>> = run_labels
        .iter()
        .map(|l| labels.iter().position(|x| x == l))
        .collect();
    for &s in splits {
        let p = split_path(dir, s);
        let d = load_split_file(&p, &labels)?;
        out.image_ids.extend(d.image_ids);
        out.paths.extend(d.paths);
        out.patients.extend(d.patients);
        out.datasets.extend(d.datasets);
        out.labels.extend(d.labels.iter().map(|row| {
            index
                .iter()
                .map(|k| k.map_or(f32::NAN, |k| row[k]))
                .collect::<Vec<f32>>()
        }));
    }
    Ok(out)
}

/// `data` and `probs` restricted to the label columns `keep`.
fn columns(data: &SplitData, probs: &[Vec<f64>], keep: &[usize]) -> (SplitData, Vec<Vec<f64>>) {
    let pick_f32 = |row: &Vec<f32>| keep.iter().map(|&k| row[k]).collect();
    let pick_f64 = |row: &Vec<f64>| keep.iter().map(|&k| row[k]).collect();
    let sub = SplitData {
        label_names: keep.iter().map(|&k| data.label_names[k].clone()).collect(),
        labels: data.labels.iter().map(pick_f32).collect(),
        ..data.clone()
    };
    (sub, probs.iter().map(pick_f64).collect())
}

/// The run's own test split with its predictions for `labels` (same checkpoint and TTA),
/// evaluating the run first when it has not been.
fn internal_joined(
    run: &crate::run::RunDir,
    manifests_dir: &Path,
    key: &ExternalKey,
    labels: &[String],
    opt: &EvalOptions,
    device: Option<&str>,
) -> Result<super::join::Joined> {
    let ikey = EvalKey {
        split: Split::Test,
        ..key.eval
    };
    let pred = run.predictions(&ikey);
    if !pred.is_file() {
        super::run_eval::evaluate_run(run.root(), manifests_dir, ikey, opt, device)?;
    }
    let probs = read_run_predictions(&pred, labels)?;
    let test = run.split(Split::Test)?;
    let index: Vec<usize> = labels
        .iter()
        .map(|l| test.label_names.iter().position(|x| x == l))
        .collect::<Option<_>>()
        .context("the run's test split lacks one of its own labels")?;
    let (sub, _) = columns(&test, &[], &index);
    Ok(super::join::join_split(&sub, |_, id| {
        probs.get(id).cloned()
    }))
}

/// Refuses an "external" set built from a file the run's own manifest was built from (the
/// same label file, by SHA-256): its images may be among those the run trained on.
pub(crate) fn not_trained_on(own: &ManifestInfo, other: &ManifestInfo, name: &str) -> Result<()> {
    for f in other.sources.values() {
        if let Some(g) = own.sources.values().find(|g| g.sha256 == f.sha256) {
            bail!(
                "pipeline `{name}` is not external to this run: its {} is the run's own {} (same SHA-256), so its images may be among those the run trained on",
                f.path,
                g.path
            );
        }
    }
    Ok(())
}

/// What `external_<key>.json` says about one external evaluation.
fn external_info(
    o: &super::run_eval::Opened,
    (other, odir, minfo): (&PipelineConfig, &ManifestDir, &ManifestInfo),
    key: ExternalKey,
    data: &SplitData,
    scored: &[String],
) -> Result<ExternalInfo> {
    let other_labels = &minfo.labels;
    Ok(ExternalInfo {
        muxmed_version: env!("CARGO_PKG_VERSION").into(),
        pipeline: other.name.clone(),
        dataset: minfo
            .dataset
            .map_or("nih".to_string(), |d| d.key().to_string()),
        scored_split: if key.all { "all" } else { "test" }.into(),
        images: data.len(),
        patients: {
            let mut p: Vec<&String> = data.patients.iter().collect();
            p.sort();
            p.dedup();
            p.len()
        },
        checkpoint: key.eval.checkpoint,
        tta: key.eval.tta,
        scored: scored.to_vec(),
        not_in_other: o
            .labels
            .iter()
            .filter(|l| !other_labels.contains(l))
            .cloned()
            .collect(),
        not_in_run: other_labels
            .iter()
            .filter(|l| !o.labels.contains(l))
            .cloned()
            .collect(),
        manifest_sha256: crate::io::sha256_file(&odir.manifest_json())?,
    })
}

/// The other pipeline's manifest info and the run's labels it also has (indices into the
/// run's labels); refuses a manifest the run trained on and one sharing no concept.
fn scored_concepts(
    o: &super::run_eval::Opened,
    odir: &ManifestDir,
    other: &PipelineConfig,
) -> Result<(ManifestInfo, Vec<usize>)> {
    let minfo = ManifestInfo::read(odir.root())?;
    not_trained_on(&o.run.manifest()?, &minfo, &other.name)?;
    let other_labels = &minfo.labels;
    let scored: Vec<usize> = (0..o.labels.len())
        .filter(|&k| other_labels.contains(&o.labels[k]))
        .collect();
    if scored.is_empty() {
        bail!(
            "the run's labels ({}) and pipeline `{}`'s ({}) share no concept: nothing to score",
            o.labels.join(", "),
            other.name,
            other_labels.join(", ")
        );
    }
    Ok((minfo, scored))
}

/// Scores the run at `run_dir` on the manifest of pipeline `other` and writes
/// `external/<other.name>/` in the run.
pub fn evaluate_external(
    run_dir: &Path,
    manifests_dir: &Path,
    other: &PipelineConfig,
    key: ExternalKey,
    opt: &EvalOptions,
    device: Option<&str>,
    progress: &dyn Fn(usize, usize),
) -> Result<ExternalEvaluation> {
    if key.eval.split != Split::Test {
        bail!(
            "--split {} with --on: an external evaluation scores the other pipeline's test split (every split with --all-splits), set beside the run's own test split",
            key.eval.split
        );
    }
    let o = open_run(run_dir, &key.eval, device)?;
    let odir = ManifestDir::of(manifests_dir, &other.name);
    if !odir.manifest_json().is_file() {
        bail!(
            "no manifest for pipeline `{}` at {}: run `muxmed manifest --pipeline <its yaml>` first",
            other.name,
            odir.root().display()
        );
    }
    if other.name == o.cfg.name {
        bail!(
            "pipeline `{}` is the run's own: use `muxmed evaluate --run` without --on",
            other.name
        );
    }
    let (minfo, scored) = scored_concepts(&o, &odir, other)?;
    crate::data::cache::prepare(odir.root(), &o.cfg.augment, progress).with_context(|| {
        format!(
            "preparing {} at the run's working size {}",
            odir.root().display(),
            o.cfg.augment.working_size
        )
    })?;
    let ext_scorer = o.scorer(odir.root(), key.eval.tta)?;
    let mut data = other_data(odir.root(), key.all, &o.labels)?;
    let keep: Vec<bool> = data
        .image_ids
        .iter()
        .map(|id| !ext_scorer.cache.was_skipped(id))
        .collect();
    data = data.select(&keep);
    if data.is_empty() {
        bail!("pipeline `{}`'s scored split has no image", other.name);
    }
    let own_scorer = o.scorer(&run_manifest_dir(manifests_dir, &o.cfg), key.eval.tta)?;
    // The run's temperatures and thresholds, both from its own val split, as for its test.
    let val = from_val(&o.run, &own_scorer, opt, true)?;
    let opt = val.opt;
    let data = Arc::new(data);
    let probs = super::calibrate::apply(
        &val.temperatures.map(),
        &data.label_names,
        &ext_scorer.predict(&data, Split::Test)?,
    );
    let ext = o.run.external(&other.name);
    std::fs::create_dir_all(ext.root())
        .with_context(|| format!("creating {}", ext.root().display()))?;
    let predictions_csv = ext.predictions(&key);
    write_predictions(&predictions_csv, &data, &probs)?;
    let (sub, sub_probs) = columns(&data, &probs, &scored);
    let name = format!("external {}", other.name);
    let evaluation = evaluate(&joined(&sub, sub_probs.clone()), &name, &opt);
    let metrics_json = ext.metrics(&key);
    evaluation.write(&metrics_json)?;
    let info = external_info(&o, (other, &odir, &minfo), key, &data, &sub.label_names)?;
    let internal = internal_joined(&o.run, manifests_dir, &key, &sub.label_names, &opt, device)?;
    let external = joined(&sub, sub_probs.clone());
    let shift = super::shift::shift(&internal, &external, opt.resamples, opt.seed);
    let shift_json = ext.shift(&key);
    shift
        .write(&shift_json)
        .with_context(|| format!("writing {}", shift_json.display()))?;
    ext.write_info(&key, &info)?;
    let splits: &[Split] = if key.all { &Split::ALL } else { &[Split::Test] };
    let attrs = crate::data::dataset::load_attributes_of(odir.root(), splits)?;
    let subgroups = super::subgroups::subgroups(
        &attrs,
        &sub,
        &sub_probs,
        &format!("external {}", other.name),
        &o.cfg.eval.subgroups,
        opt.resamples,
        opt.seed,
    );
    let subgroups_json = ext.subgroups(&key);
    subgroups.write(&subgroups_json)?;
    Ok(ExternalEvaluation {
        evaluation,
        shift,
        shift_json,
        info,
        predictions_csv,
        metrics_json,
        subgroups,
        subgroups_json,
    })
}
