//! `muxmed evaluate --run` and `muxmed predict`: a trained run's model over a split or over
//! new image files, with the run's own preprocessing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use tch::{nn, Device};

use super::inference::predict_split;
use super::predictions::{evaluate, ChosenThresholds, EvalOptions, Evaluation, Joined, Thresholds};
use crate::config::augment::Stage;
use crate::config::{self, PipelineConfig};
use crate::data::cache::Cache;
use crate::data::dataset::{load_split, SplitData};
use crate::data::loader::Source;
use crate::model::muxnet::HeadInit;
use crate::model::network::Network;
use crate::model::weights::{read_metadata, read_safetensors};
use crate::model::ArchSpec;
use crate::train::run::{load_into, pick_device};

/// Which weights of a run to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Checkpoint {
    Best,
    Last,
    Ema,
}

impl Checkpoint {
    pub fn file(self) -> &'static str {
        match self {
            Checkpoint::Best => "best.safetensors",
            Checkpoint::Last => "last.safetensors",
            Checkpoint::Ema => "ema_best.safetensors",
        }
    }
}

/// A trained network with what is needed to feed it.
pub struct LoadedCheckpoint {
    pub vs: nn::VarStore,
    pub net: Network,
    pub labels: Vec<String>,
    pub eval_stages: Vec<Stage>,
    pub working_size: u32,
}

/// Builds the network described by a checkpoint's metadata and loads its weights
/// (optimiser and EMA tensors in `last.safetensors` are ignored).
pub fn load_checkpoint(path: &Path, device: Device) -> Result<LoadedCheckpoint> {
    let meta = read_metadata(path)?;
    let get = |k: &str| {
        meta.get(k).cloned().ok_or_else(|| {
            anyhow!(
                "{} has no `{k}` metadata: not a muxmed checkpoint",
                path.display()
            )
        })
    };
    let labels: Vec<String> = serde_json::from_str(&get("labels")?)?;
    let stages: Vec<Stage> = serde_json::from_str(&get("eval_stages")?)?;
    let working: u32 = get("working_size")?.parse()?;
    let arch = get("arch")?;
    let vs = nn::VarStore::new(device);
    let net = match meta.get("arch_json") {
        Some(j) => {
            let spec: ArchSpec = serde_json::from_str(j)?;
            Network::MuxNet(Box::new(crate::model::muxnet::MuxNet::new(
                &vs.root(),
                &spec,
                labels.len() as i64,
                0.0,
                HeadInit::Reference,
            )?))
        }
        None => Network::build(
            &vs.root(),
            &arch,
            labels.len() as i64,
            0.0,
            HeadInit::Reference,
        )?,
    };
    let t = read_safetensors(path)?;
    load_into(&vs, &t, "").with_context(|| format!("loading {}", path.display()))?;
    Ok(LoadedCheckpoint {
        vs,
        net,
        labels,
        eval_stages: stages,
        working_size: working,
    })
}

fn joined(split: &SplitData, probs: Vec<Vec<f64>>) -> Joined {
    Joined {
        y: split
            .labels
            .iter()
            .map(|l| l.iter().map(|v| *v > 0.5).collect())
            .collect(),
        s: probs,
        patients: split
            .patients
            .iter()
            .map(|p| super::predictions::patient_key(p))
            .collect(),
        labels: split.label_names.clone(),
        predictions_without_labels: 0,
        labelled_without_predictions: 0,
    }
}

/// The outputs of `evaluate --run`.
pub struct RunEvaluation {
    pub evaluation: Evaluation,
    pub predictions_csv: PathBuf,
    pub metrics_json: PathBuf,
}

fn write_predictions(path: &Path, split: &SplitData, probs: &[Vec<f64>]) -> Result<()> {
    let mut out = format!("image_id,patient_id,{}\n", split.label_names.join(","));
    for ((id, p), pr) in split.image_ids.iter().zip(&split.patients).zip(probs) {
        let cells: Vec<String> = pr.iter().map(|v| format!("{v:.6}")).collect();
        out += &format!("{id},{p},{}\n", cells.join(","));
    }
    crate::io::write_atomic(path, out.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Evaluates a run's checkpoint on a split; for the test split, operating thresholds are
/// chosen on val first. With `tta`, predictions are averaged over `eval` and every
/// `augment.tta` pipeline and written under separate `_tta` names.
pub fn evaluate_run(
    run_dir: &Path,
    manifests_dir: &Path,
    split_name: &str,
    ck: Checkpoint,
    tta: bool,
    opt: &EvalOptions,
    device: Option<&str>,
) -> Result<RunEvaluation> {
    let cfg: PipelineConfig = config::load(&run_dir.join("config.resolved.yaml"), &[])
        .with_context(|| format!("{} is not a muxmed run directory", run_dir.display()))?
        .config;
    let device = pick_device(device.unwrap_or(&cfg.runtime.device))?;
    let ck_path = run_dir.join(ck.file());
    if !ck_path.is_file() {
        bail!(
            "{} does not exist (was the run trained{}?)",
            ck_path.display(),
            if ck == Checkpoint::Ema {
                " with train.ema_decay"
            } else {
                ""
            }
        );
    }
    let net = load_checkpoint(&ck_path, device)?.net;
    let mdir = manifests_dir.join(&cfg.name);
    let cache = Arc::new(Cache::open(&mdir, &cfg.augment).map_err(|e| anyhow!("{e}"))?);
    let mut pipelines = vec![cfg.augment.eval.clone()];
    if tta {
        if cfg.augment.tta.is_empty() {
            bail!("--tta: the run's config has no augment.tta pipelines");
        }
        pipelines.extend(cfg.augment.tta.iter().cloned());
    }
    let predict = |split: &Arc<SplitData>| -> Result<Vec<Vec<f64>>> {
        let slots: Vec<usize> = split
            .image_ids
            .iter()
            .map(|id| {
                cache
                    .slot(id)
                    .ok_or_else(|| anyhow!("{id} is not in the prepared cache"))
            })
            .collect::<Result<_>>()?;
        let mut sum: Option<Vec<Vec<f64>>> = None;
        for stages in &pipelines {
            let p = predict_split(
                &net,
                split.clone(),
                Source::Cache(cache.clone(), slots.clone()),
                Arc::new(stages.clone()),
                cfg.train.batch_size as usize,
                cfg.runtime.data_workers as usize,
                device,
            )
            .map_err(anyhow::Error::msg)?;
            sum = Some(match sum {
                None => p.probs,
                Some(s) => s
                    .iter()
                    .zip(&p.probs)
                    .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y).collect())
                    .collect(),
            });
        }
        let n = pipelines.len() as f64;
        Ok(sum
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.into_iter().map(|v| v / n).collect())
            .collect())
    };
    let mut opt = opt.clone();
    if split_name != "val" && opt.thresholds.is_none() {
        let val = Arc::new(load_split(&mdir, "val")?);
        let vj = joined(&val, predict(&val)?);
        let ve = evaluate(
            &vj,
            "val",
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
        opt.thresholds = Some((t, "chosen on this run's val split".into()));
    }
    let split = Arc::new(load_split(&mdir, split_name)?);
    let probs = predict(&split)?;
    let suffix = if tta { "_tta" } else { "" };
    let ck_tag = if ck == Checkpoint::Best {
        String::new()
    } else {
        format!("_{}", format!("{ck:?}").to_lowercase())
    };
    let predictions_csv = run_dir.join(format!("predictions_{split_name}{ck_tag}{suffix}.csv"));
    write_predictions(&predictions_csv, &split, &probs)?;
    let ev = evaluate(&joined(&split, probs), split_name, &opt);
    let metrics_json = run_dir.join(format!("metrics_{split_name}{ck_tag}{suffix}.json"));
    crate::io::write_atomic(
        &metrics_json,
        (serde_json::to_string_pretty(&ev)? + "\n").as_bytes(),
    )?;
    Ok(RunEvaluation {
        evaluation: ev,
        predictions_csv,
        metrics_json,
    })
}

/// Probabilities for image files (or folders of them) with a checkpoint's preprocessing.
pub fn predict_files(
    checkpoint: &Path,
    inputs: &[PathBuf],
    out: &Path,
    device: Option<&str>,
) -> Result<usize> {
    let device = pick_device(device.unwrap_or("auto"))?;
    let LoadedCheckpoint {
        net,
        labels,
        eval_stages: stages,
        working_size: working,
        ..
    } = load_checkpoint(checkpoint, device)?;
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = crate::data::nih::scan_images(p)?.into_values().collect();
            found.sort();
            files.extend(found);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    let mut seen = HashSet::new();
    files.retain(|f| seen.insert(f.clone()));
    if files.is_empty() {
        bail!("no images given");
    }
    let split = Arc::new(SplitData {
        split: "predict".into(),
        label_names: labels.clone(),
        image_ids: files.iter().map(|f| f.display().to_string()).collect(),
        paths: files.iter().cloned().map(Some).collect(),
        patients: vec![String::new(); files.len()],
        labels: vec![vec![0.0; labels.len()]; files.len()],
    });
    let p = predict_split(
        &net,
        split,
        Source::Files(files.clone(), working),
        Arc::new(stages),
        16,
        2,
        device,
    )
    .map_err(anyhow::Error::msg)?;
    let mut csv = format!(
        "path,{}\n",
        labels
            .iter()
            .map(|l| format!("prob_{l}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    for (f, pr) in files.iter().zip(&p.probs) {
        csv += &format!(
            "{},{}\n",
            f.display(),
            pr.iter()
                .map(|v| format!("{v:.6}"))
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    crate::io::write_atomic(out, csv.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(files.len())
}
