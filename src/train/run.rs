//! `muxmed train`: the fine-tuning loop and its run directory.
//!
//! A run directory holds `config.resolved.yaml`, `manifest.json` (copy), `run.json` (model,
//! weights source and hash, device, versions), `metrics.csv` (one row per epoch),
//! `events.jsonl` (every `log_every` steps), `last.safetensors` (weights + optimiser state +
//! EMA + position, one file so one atomic rename), `best.safetensors`, optionally
//! `ema_best.safetensors`, `state.json` and `train.log`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use tch::{nn, Device, Kind, Reduction, Tensor};

use super::optim::Optimizer;
use super::schedule::WarmupCosine;
use crate::config::{self, DeviceRequest, LossKind, PipelineConfig};
use crate::data::cache::Cache;
use crate::data::dataset::{load_split, SplitData};
use crate::data::loader::{start_epoch_at, LoaderOptions, Source};
use crate::eval::inference::{batch_tensor, predict_split};
use crate::eval::metrics::{auroc, mean_defined};
use crate::model::muxnet::HeadInit;
use crate::model::network::{param_groups, set_backbone_trainable, Network};
use crate::model::weights::{self, load_backbone, read_safetensors, write_safetensors};

/// How `train` is asked to run.
#[derive(Debug, Clone, Default)]
pub struct TrainArgs {
    /// The pipeline of a new run (ignored when resuming: the run's own config is used).
    pub pipeline: Option<config::LoadedPipeline>,
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

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Finished,
    EarlyStopped,
    Interrupted,
    FailedNonFinite,
}

/// Position and bookkeeping saved in `state.json` and in `last.safetensors`' metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub status: Status,
    /// Epoch in progress (0-based) and the next batch of it to run.
    pub epoch: u32,
    pub batch_in_epoch: usize,
    pub opt_step: u64,
    pub best_score: Option<f64>,
    pub best_epoch: Option<u32>,
    pub stale_epochs: u32,
    /// Partial sums of the epoch in progress, so a resumed epoch reports the same loss.
    pub epoch_loss_sum: f64,
    pub epoch_batches: usize,
    pub epoch_images: usize,
    pub epoch_seconds: f64,
    pub seed: u64,
    pub checkpoint: String,
    pub optimizer_state: String,
    /// One entry per finished epoch (the rows of metrics.csv).
    pub history: Vec<BTreeMap<String, f64>>,
}

/// What a finished (or stopped) run reports.
#[derive(Debug)]
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    pub state: State,
    pub labels: Vec<String>,
    /// Val AUROC per label of the best epoch.
    pub best_per_label: Vec<(String, Option<f64>)>,
    pub peak_rss_mb: f64,
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn now_utc() -> (i64, u32, u32, u32, u32, u32) {
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

fn default_run_name(cfg: &PipelineConfig) -> String {
    let (y, mo, d, h, mi, s) = now_utc();
    let arch = Path::new(&cfg.model.arch)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}-{arch}-{}",
        cfg.train.resolution
    )
}

pub fn pick_device(req: &str) -> Result<Device> {
    Ok(
        match config::parse_device(req).map_err(anyhow::Error::msg)? {
            DeviceRequest::Auto => Device::cuda_if_available(),
            DeviceRequest::Cpu => Device::Cpu,
            DeviceRequest::Cuda(i) => {
                if !tch::Cuda::is_available() {
                    bail!("--device {req}: CUDA is not available here (see `muxmed doctor`)");
                }
                Device::Cuda(i)
            }
        },
    )
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

fn loss_fn(
    cfg: &PipelineConfig,
    logits: &Tensor,
    y: &Tensor,
    pos_weight: Option<&Tensor>,
) -> Tensor {
    match cfg.train.loss {
        LossKind::Bce => {
            logits.binary_cross_entropy_with_logits::<&Tensor>(y, None, pos_weight, Reduction::Mean)
        }
        LossKind::Focal => {
            let ce = logits.binary_cross_entropy_with_logits::<&Tensor>(
                y,
                None,
                pos_weight,
                Reduction::None,
            );
            let p = logits.sigmoid();
            let p_t: Tensor = &p * y + (1.0 - &p) * (1.0 - y);
            let modulating: Tensor = p_t
                .neg()
                .g_add_scalar(1.0)
                .pow_tensor_scalar(cfg.train.focal_gamma);
            (ce * modulating).mean(Kind::Float)
        }
    }
}

/// negatives / positives per label on the train split (1 where a label has no positives).
pub fn pos_weights(split: &SplitData) -> Vec<f64> {
    let k = split.label_names.len();
    (0..k)
        .map(|j| {
            let pos = split.labels.iter().filter(|l| l[j] > 0.5).count() as f64;
            let neg = split.len() as f64 - pos;
            if pos > 0.0 {
                neg / pos
            } else {
                1.0
            }
        })
        .collect()
}

fn mix(a: u64, b: u64) -> i64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

struct Log {
    file: std::fs::File,
}

impl Log {
    fn line(&mut self, s: &str) {
        let _ = writeln!(self.file, "{} {s}", timestamp());
    }
}

fn append(path: &Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))
}

fn write_metrics_csv(
    path: &Path,
    history: &[BTreeMap<String, f64>],
    labels: &[String],
) -> Result<()> {
    let mut cols = vec!["epoch", "train_loss", "val_loss", "val_mean_auroc"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    if history.iter().any(|h| h.contains_key("val_mean_auroc_ema")) {
        cols.push("val_mean_auroc_ema".into());
    }
    cols.extend(labels.iter().map(|l| format!("val_auroc_{l}")));
    cols.extend(
        [
            "lr_head",
            "lr_backbone",
            "images_per_s",
            "epoch_time_s",
            "peak_rss_mb",
            "frozen",
        ]
        .map(String::from),
    );
    let mut out = cols.join(",") + "\n";
    for h in history {
        let row: Vec<String> = cols
            .iter()
            .map(|c| {
                h.get(c)
                    .map(|v| {
                        if v.is_nan() {
                            String::new()
                        } else {
                            format!("{v}")
                        }
                    })
                    .unwrap_or_default()
            })
            .collect();
        out += &(row.join(",") + "\n");
    }
    crate::io::write_atomic(path, out.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Metadata stored in every checkpoint so `evaluate` and `predict` need nothing else.
fn checkpoint_meta(
    cfg: &PipelineConfig,
    labels: &[String],
    kind: &str,
    state: &State,
    from_scratch: bool,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("muxmed_checkpoint".into(), kind.into());
    m.insert("arch".into(), cfg.model.arch.clone());
    // A custom architecture travels inside the checkpoint, so `predict` needs no other file.
    if cfg.model.arch.ends_with(".json") {
        if let Ok(spec) = crate::model::ArchSpec::from_json_file(Path::new(&cfg.model.arch)) {
            m.insert(
                "arch_json".into(),
                serde_json::to_string(&spec).unwrap_or_default(),
            );
        }
    }
    m.insert(
        "labels".into(),
        serde_json::to_string(labels).unwrap_or_default(),
    );
    m.insert(
        "eval_stages".into(),
        serde_json::to_string(&cfg.augment.eval).unwrap_or_default(),
    );
    m.insert("working_size".into(), cfg.augment.working_size.to_string());
    m.insert("resolution".into(), cfg.train.resolution.to_string());
    m.insert("from_scratch".into(), from_scratch.to_string());
    m.insert(
        "state".into(),
        serde_json::to_string(state).unwrap_or_default(),
    );
    m.insert("muxmed_version".into(), env!("CARGO_PKG_VERSION").into());
    m
}

fn model_tensors(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Copies the tensors named like `vs`'s variables (optionally under `prefix`) into it.
pub fn load_into(vs: &nn::VarStore, t: &BTreeMap<String, Tensor>, prefix: &str) -> Result<()> {
    tch::no_grad(|| {
        for (name, var) in vs.variables() {
            let src = t
                .get(&format!("{prefix}{name}"))
                .ok_or_else(|| anyhow!("checkpoint has no {prefix}{name}"))?;
            let mut var = var;
            var.copy_(&src.to_device(var.device()).to_kind(var.kind()));
        }
        Ok(())
    })
}

/// AUROC of every label of a split for predicted probabilities (None where undefined).
fn label_aurocs(split: &SplitData, probs: &[Vec<f64>]) -> Vec<Option<f64>> {
    (0..split.label_names.len())
        .map(|j| {
            let y: Vec<bool> = split.labels.iter().map(|l| l[j] > 0.5).collect();
            let s: Vec<f64> = probs.iter().map(|p| p[j]).collect();
            auroc(&y, &s)
        })
        .collect()
}

/// Runs (or resumes) a training run.
pub fn train(args: &TrainArgs, stop: Arc<AtomicBool>) -> Result<TrainOutcome> {
    // --- Run directory and config ------------------------------------------------------
    let (cfg, run_dir, resuming) = match &args.resume {
        Some(dir) => {
            let p = dir.join("config.resolved.yaml");
            let c = config::load(&p, &[])
                .with_context(|| format!("{} is not a muxmed run directory", dir.display()))?
                .config;
            if !dir.join("last.safetensors").is_file() {
                bail!("{} has no last.safetensors to resume from", dir.display());
            }
            (c, dir.clone(), true)
        }
        None => {
            let p = args
                .pipeline
                .as_ref()
                .ok_or_else(|| anyhow!("no pipeline given"))?;
            let cfg = p.config.clone();
            let name = args
                .run_name
                .clone()
                .unwrap_or_else(|| default_run_name(&cfg));
            let dir = args.reports_dir.join(name);
            (cfg, dir, false)
        }
    };
    let manifest_dir = args.manifests_dir.join(&cfg.name);
    if !manifest_dir.join("manifest.json").is_file() {
        let src = args
            .pipeline
            .as_ref()
            .map(|p| p.source.clone())
            .unwrap_or_else(|| run_dir.join("config.resolved.yaml"));
        bail!("{}", missing_data_message(&cfg, &src, &manifest_dir));
    }
    let cache = Arc::new(Cache::open(&manifest_dir, &cfg.augment).map_err(|e| anyhow!("{e}"))?);
    let labels = crate::data::dataset::manifest_labels(&manifest_dir)?;
    let train_split = Arc::new(load_split(&manifest_dir, "train")?);
    let val_split = Arc::new(load_split(&manifest_dir, "val")?);
    if train_split.is_empty() || val_split.is_empty() {
        bail!(
            "the train and val splits of {} must not be empty",
            manifest_dir.display()
        );
    }
    let slots = |s: &SplitData| -> Result<Vec<usize>> {
        s.image_ids.iter().map(|id| cache.slot(id).ok_or_else(|| anyhow!("{id} is not in the prepared cache (skipped or stale): rerun `muxmed prepare`"))).collect()
    };
    let train_src = Source::Cache(cache.clone(), slots(&train_split)?);
    let val_src = Source::Cache(cache.clone(), slots(&val_split)?);

    if !resuming {
        if run_dir.exists() {
            if !args.overwrite {
                bail!("{} already exists: choose another --run-name, resume it with --resume, or pass --overwrite", run_dir.display());
            }
            std::fs::remove_dir_all(&run_dir)
                .with_context(|| format!("removing {}", run_dir.display()))?;
        }
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        crate::io::write_atomic(
            &run_dir.join("config.resolved.yaml"),
            cfg.to_yaml().as_bytes(),
        )?;
        std::fs::copy(
            manifest_dir.join("manifest.json"),
            run_dir.join("manifest.json"),
        )
        .context("copying manifest.json")?;
    }
    let mut log = Log {
        file: std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run_dir.join("train.log"))
            .context("opening train.log")?,
    };

    // --- Device, threads, model ----------------------------------------------------------
    let device_req = args
        .device
        .clone()
        .unwrap_or_else(|| cfg.runtime.device.clone());
    let device = pick_device(&device_req)?;
    let threads = if cfg.runtime.torch_threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as i32
    } else {
        cfg.runtime.torch_threads as i32
    };
    tch::set_num_threads(threads);
    tch::manual_seed(cfg.train.seed as i64);
    let vs = nn::VarStore::new(device);
    let k = labels.len() as i64;
    let net = Network::build(
        &vs.root(),
        &cfg.model.arch,
        k,
        cfg.model.drop_rate,
        HeadInit::PytorchDefault,
    )?;
    let mut weights_info = serde_json::json!({"from_scratch": cfg.model.from_scratch});
    if !resuming && !cfg.model.from_scratch {
        let w = cfg.model.weights.clone().unwrap_or_default();
        if !w.is_file() {
            bail!(
                "model.weights = {} does not exist.\n\
                 Get the authors' ImageNet checkpoint for {} (linked from the README of github.com/human-analysis/MUXConv), then\n  \
                 muxmed model import muxnet_m.pth --arch {} --out {}\n\
                 or set model.from_scratch: true to train without pretrained weights (every report of the run will say so).",
                w.display(),
                cfg.model.arch,
                cfg.model.arch,
                w.display()
            );
        }
        let r = load_backbone(&vs, &w)?;
        log.line(&format!(
            "loaded {} tensors from {}; fresh: {:?}",
            r.loaded,
            w.display(),
            r.replaced
        ));
        weights_info = serde_json::json!({"from_scratch": false, "path": w.display().to_string(), "sha256": weights::sha256_file(&w)?, "replaced": r.replaced});
    }
    let ema_vs = cfg.train.ema_decay.map(|_| {
        let e = nn::VarStore::new(device);
        let n = Network::build(
            &e.root(),
            &cfg.model.arch,
            k,
            cfg.model.drop_rate,
            HeadInit::PytorchDefault,
        );
        (e, n)
    });
    let ema = match ema_vs {
        Some((e, Ok(n))) => {
            tch::no_grad(|| {
                let src = vs.variables();
                for (name, mut v) in e.variables() {
                    v.copy_(&src[&name]);
                }
            });
            Some((e, n))
        }
        Some((_, Err(e))) => return Err(e.into()),
        None => None,
    };

    // --- Optimiser -------------------------------------------------------------------------
    let groups = param_groups(&vs);
    let bb = cfg.train.backbone_lr_factor;
    let wd = cfg.train.weight_decay;
    let mut params = Vec::new();
    for (n, t) in groups.backbone {
        params.push((n, t, bb, wd));
    }
    for (n, t) in groups.head {
        params.push((n, t, 1.0, wd));
    }
    for (n, t) in groups.no_decay {
        let f = if n.starts_with("classifier.") {
            1.0
        } else {
            bb
        };
        params.push((n, t, f, 0.0));
    }
    let mut opt = Optimizer::new(cfg.train.optimizer, params);

    let batch = cfg.train.batch_size as usize;
    let drop_last = train_split.len() >= 2 * batch;
    let batches_per_epoch = if drop_last {
        train_split.len() / batch
    } else {
        train_split.len().div_ceil(batch)
    };
    let accum = cfg.train.accum_steps as usize;
    let steps_per_epoch = batches_per_epoch.div_ceil(accum) as u64;
    let sched = WarmupCosine {
        base_lr: cfg.train.lr,
        min_lr: cfg.train.min_lr,
        warmup_steps: (cfg.train.warmup_epochs * steps_per_epoch as f64).round() as u64,
        total_steps: steps_per_epoch * cfg.train.epochs as u64,
    };
    let pw: Option<Tensor> = cfg.train.pos_weight.then(|| {
        Tensor::from_slice(
            &pos_weights(&train_split)
                .iter()
                .map(|v| *v as f32)
                .collect::<Vec<_>>(),
        )
        .to_device(device)
    });

    // --- State -----------------------------------------------------------------------------
    let mut state = State {
        status: Status::Running,
        epoch: 0,
        batch_in_epoch: 0,
        opt_step: 0,
        best_score: None,
        best_epoch: None,
        stale_epochs: 0,
        epoch_loss_sum: 0.0,
        epoch_batches: 0,
        epoch_images: 0,
        epoch_seconds: 0.0,
        seed: cfg.train.seed,
        checkpoint: "last.safetensors".into(),
        optimizer_state: "last.safetensors (tensors optim.*)".into(),
        history: vec![],
    };
    if resuming {
        let last = run_dir.join("last.safetensors");
        let meta = weights::read_metadata(&last)?;
        state = serde_json::from_str(
            meta.get("state")
                .ok_or_else(|| anyhow!("{} has no training state", last.display()))?,
        )?;
        let t = read_safetensors(&last)?;
        load_into(&vs, &t, "")?;
        opt.load_state(&t).map_err(anyhow::Error::msg)?;
        if let Some((e, _)) = &ema {
            load_into(e, &t, "ema.")?;
        }
        log.line(&format!(
            "resumed at epoch {} batch {} (step {})",
            state.epoch + 1,
            state.batch_in_epoch,
            state.opt_step
        ));
        state.status = Status::Running;
    } else {
        let counts = match &net {
            Network::MuxNet(m) => {
                crate::model::count::count(&m.spec, k, cfg.train.resolution as i64).ok()
            }
            Network::DenseNet121(_) => None,
        };
        let params_total: i64 = vs
            .variables()
            .iter()
            .filter(|(n, _)| !n.contains("running_"))
            .map(|(_, t)| t.numel() as i64)
            .sum();
        let run_json = serde_json::json!({
            "muxmed_version": env!("CARGO_PKG_VERSION"),
            "started": timestamp(),
            "arch": cfg.model.arch,
            "labels": labels,
            "params": params_total,
            "madds": counts.map(|c| c.madds),
            "weights": weights_info,
            "device": format!("{device:?}"),
            "torch_threads": threads,
            "pipeline": args.pipeline.as_ref().map(|p| p.source.display().to_string()),
            "overrides": args.pipeline.as_ref().map(|p| p.overrides.clone()),
            "manifest_sha256": crate::io::sha256_file(&manifest_dir.join("manifest.json")).ok(),
            "train_images": train_split.len(),
            "val_images": val_split.len(),
        });
        crate::io::write_atomic(
            &run_dir.join("run.json"),
            (serde_json::to_string_pretty(&run_json)? + "\n").as_bytes(),
        )?;
        log.line(&format!(
            "new run: {} on {device:?}, {} train / {} val images",
            cfg.model.arch,
            train_split.len(),
            val_split.len()
        ));
    }

    let save_last = |state: &State, opt: &Optimizer| -> Result<()> {
        let mut t = model_tensors(&vs);
        t.extend(opt.state_tensors());
        if let Some((e, _)) = &ema {
            t.extend(
                model_tensors(e)
                    .into_iter()
                    .map(|(n, v)| (format!("ema.{n}"), v)),
            );
        }
        write_safetensors(
            &run_dir.join("last.safetensors"),
            &t,
            &checkpoint_meta(&cfg, &labels, "last", state, cfg.model.from_scratch),
        )?;
        crate::io::write_atomic(
            &run_dir.join("state.json"),
            (serde_json::to_string_pretty(state)? + "\n").as_bytes(),
        )?;
        Ok(())
    };

    let train_stages = Arc::new(cfg.augment.train.clone());
    let eval_stages = Arc::new(cfg.augment.eval.clone());
    let workers = cfg.runtime.data_workers as usize;
    let events = run_dir.join("events.jsonl");
    let bar = args.progress.then(|| {
        crate::progress::TrainProgress::new(cfg.train.epochs as u64, batches_per_epoch as u64)
    });

    // --- The loop ----------------------------------------------------------------------------
    while state.epoch < cfg.train.epochs {
        let epoch = state.epoch;
        let frozen = epoch < cfg.train.freeze_backbone_epochs;
        set_backbone_trainable(&vs, !frozen);
        let epoch_start = Instant::now();
        let o = LoaderOptions {
            batch_size: batch,
            shuffle: true,
            class_balanced: cfg.train.class_balanced,
            drop_last,
            seed: cfg.train.seed,
            epoch: epoch as u64,
            workers,
            prefetch: cfg.runtime.prefetch as usize,
        };
        // A resumed epoch starts at the next batch to run.
        let first = state.batch_in_epoch;
        let mut batches = start_epoch_at(
            train_split.clone(),
            train_src.clone(),
            train_stages.clone(),
            o,
            first,
        )
        .map_err(anyhow::Error::msg)?;
        let mut interrupted = false;
        opt.zero_grad();
        for bi in first..batches_per_epoch {
            let b = batches
                .next()
                .ok_or_else(|| anyhow!("the loader ended early"))?
                .map_err(anyhow::Error::msg)?;
            let global_batch = epoch as u64 * batches_per_epoch as u64 + bi as u64;
            tch::manual_seed(mix(cfg.train.seed, global_batch));
            let x = batch_tensor(&b.images, b.shape, device);
            let y = Tensor::from_slice(&b.targets)
                .view([b.indices.len() as i64, k])
                .to_device(device);
            let logits = match (&net, frozen) {
                (Network::MuxNet(m), true) => m.forward_frozen_backbone(&x, true),
                (n, true) => n.forward_t(&x, false),
                (n, false) => n.forward_t(&x, true),
            };
            let loss = loss_fn(&cfg, &logits, &y, pw.as_ref());
            let lv = loss.double_value(&[]);
            if !lv.is_finite() {
                state.status = Status::FailedNonFinite;
                log.line(&format!(
                    "non-finite loss {lv} at epoch {} batch {bi}",
                    epoch + 1
                ));
                crate::io::write_atomic(
                    &run_dir.join("state.json"),
                    (serde_json::to_string_pretty(&state)? + "\n").as_bytes(),
                )?;
                bail!(
                    "the loss became {lv} at epoch {} batch {bi} (step {}): training stopped; the last good checkpoint is {} (try a lower train.lr)",
                    epoch + 1,
                    state.opt_step,
                    run_dir.join("last.safetensors").display()
                );
            }
            (&loss / accum as f64).backward();
            state.epoch_loss_sum += lv;
            state.epoch_batches += 1;
            state.epoch_images += b.indices.len();
            let end_of_accum = (bi + 1).is_multiple_of(accum) || bi + 1 == batches_per_epoch;
            if end_of_accum {
                let lr = sched.lr(state.opt_step);
                let gnorm = opt.clip_grad_norm(cfg.train.grad_clip_norm);
                opt.step(lr);
                opt.zero_grad();
                state.opt_step += 1;
                if let (Some((e, _)), Some(d)) = (&ema, cfg.train.ema_decay) {
                    tch::no_grad(|| {
                        let src = vs.variables();
                        for (name, mut v) in e.variables() {
                            let s = &src[&name];
                            if name.ends_with("running_mean") || name.ends_with("running_var") {
                                v.copy_(s);
                            } else {
                                let _ = v.g_mul_scalar_(d);
                                let _ = v.g_add_(&(s * (1.0 - d)));
                            }
                        }
                    });
                }
                if state.opt_step.is_multiple_of(cfg.train.log_every as u64) {
                    let ev = serde_json::json!({
                        "time": timestamp(), "epoch": epoch + 1, "step": state.opt_step, "loss": lv,
                        "mean_loss": state.epoch_loss_sum / state.epoch_batches as f64, "lr": lr,
                        "grad_norm": gnorm, "frozen": frozen,
                    });
                    append(&events, &ev.to_string())?;
                }
                state.batch_in_epoch = bi + 1;
                let hit_limit = args.stop_after_steps.is_some_and(|n| state.opt_step >= n);
                if stop.load(Ordering::SeqCst) || hit_limit {
                    interrupted = true;
                    break;
                }
            }
            if let Some(bar) = &bar {
                let secs = state.epoch_seconds + epoch_start.elapsed().as_secs_f64();
                bar.step(
                    epoch as u64 + 1,
                    cfg.train.epochs as u64,
                    (bi + 1) as u64,
                    batches_per_epoch as u64,
                    state.epoch_loss_sum / state.epoch_batches.max(1) as f64,
                    state.epoch_images as f64 / secs.max(1e-9),
                );
            }
        }
        drop(batches);
        state.epoch_seconds += epoch_start.elapsed().as_secs_f64();
        if interrupted {
            state.status = Status::Interrupted;
            save_last(&state, &opt)?;
            log.line(&format!(
                "interrupted at epoch {} batch {} (step {})",
                epoch + 1,
                state.batch_in_epoch,
                state.opt_step
            ));
            break;
        }

        // --- Validation ------------------------------------------------------------------------
        let preds = predict_split(
            &net,
            val_split.clone(),
            val_src.clone(),
            eval_stages.clone(),
            batch,
            workers,
            device,
        )
        .map_err(anyhow::Error::msg)?;
        let per_label = label_aurocs(&val_split, &preds.probs);
        let mean = mean_defined(&per_label);
        let mut row = BTreeMap::new();
        row.insert("epoch".to_string(), (epoch + 1) as f64);
        row.insert(
            "train_loss".into(),
            state.epoch_loss_sum / state.epoch_batches.max(1) as f64,
        );
        row.insert("val_loss".into(), preds.loss);
        // Undefined values (a label with one class in val) are left out: an empty CSV cell.
        if let Some(m) = mean {
            row.insert("val_mean_auroc".into(), m);
        }
        for (l, a) in labels.iter().zip(&per_label) {
            if let Some(a) = a {
                row.insert(format!("val_auroc_{l}"), *a);
            }
        }
        if let Some((_, en)) = &ema {
            let ep = predict_split(
                en,
                val_split.clone(),
                val_src.clone(),
                eval_stages.clone(),
                batch,
                workers,
                device,
            )
            .map_err(anyhow::Error::msg)?;
            let pl = label_aurocs(&val_split, &ep.probs);
            row.insert(
                "val_mean_auroc_ema".into(),
                mean_defined(&pl).unwrap_or(f64::NAN),
            );
        }
        let step_lr = sched.lr(state.opt_step.saturating_sub(1));
        row.insert("lr_head".into(), step_lr);
        row.insert("lr_backbone".into(), step_lr * bb);
        row.insert(
            "images_per_s".into(),
            state.epoch_images as f64 / state.epoch_seconds.max(1e-9),
        );
        row.insert("epoch_time_s".into(), state.epoch_seconds);
        row.insert("peak_rss_mb".into(), peak_rss_mb());
        row.insert("frozen".into(), frozen as u8 as f64);
        state.history.push(row);
        write_metrics_csv(&run_dir.join("metrics.csv"), &state.history, &labels)?;
        if let Some(bar) = &bar {
            bar.epoch_done(epoch as u64 + 1, mean);
        }
        log.line(&format!(
            "epoch {} val mean AUROC {} loss {:.5}",
            epoch + 1,
            mean.map(|m| format!("{m:.4}"))
                .unwrap_or("undefined".into()),
            preds.loss
        ));

        state.epoch += 1;
        state.batch_in_epoch = 0;
        state.epoch_loss_sum = 0.0;
        state.epoch_batches = 0;
        state.epoch_images = 0;
        state.epoch_seconds = 0.0;
        let improved = match (mean, state.best_score) {
            (Some(m), Some(b)) => {
                m > b + cfg
                    .train
                    .early_stopping
                    .as_ref()
                    .map_or(0.0, |e| e.min_delta)
            }
            (Some(_), None) => true,
            _ => false,
        };
        if improved {
            state.best_score = mean;
            state.best_epoch = Some(epoch + 1);
            state.stale_epochs = 0;
            write_safetensors(
                &run_dir.join("best.safetensors"),
                &model_tensors(&vs),
                &checkpoint_meta(&cfg, &labels, "best", &state, cfg.model.from_scratch),
            )?;
            if let Some((e, _)) = &ema {
                write_safetensors(
                    &run_dir.join("ema_best.safetensors"),
                    &model_tensors(e),
                    &checkpoint_meta(&cfg, &labels, "ema", &state, cfg.model.from_scratch),
                )?;
            }
        } else {
            state.stale_epochs += 1;
        }
        let early = cfg
            .train
            .early_stopping
            .as_ref()
            .is_some_and(|e| state.stale_epochs >= e.patience);
        if early {
            state.status = Status::EarlyStopped;
        } else if state.epoch >= cfg.train.epochs {
            state.status = Status::Finished;
        }
        save_last(&state, &opt)?;
        if early {
            log.line(&format!("early stop after epoch {}", epoch + 1));
            break;
        }
        if stop.load(Ordering::SeqCst) {
            state.status = Status::Interrupted;
            save_last(&state, &opt)?;
            break;
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    let best_per_label = match state
        .best_epoch
        .and_then(|e| state.history.get(e as usize - 1))
    {
        Some(row) => labels
            .iter()
            .map(|l| {
                (
                    l.clone(),
                    row.get(&format!("val_auroc_{l}"))
                        .copied()
                        .filter(|v| !v.is_nan()),
                )
            })
            .collect(),
        None => vec![],
    };
    Ok(TrainOutcome {
        run_dir,
        state,
        labels,
        best_per_label,
        peak_rss_mb: peak_rss_mb(),
    })
}
