//! Everything a training run needs in memory, opened from a new pipeline or a run directory.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use tch::{nn, Device, Kind};

use super::ema::Ema;
use super::loss::Loss;
use super::step::{EpochPlan, Recipe};
use super::{TrainArgs, TrainError};
use crate::config::PipelineConfig;
use crate::data::cache::Cache;
use crate::data::dataset::{load_split, SplitData};
use crate::data::loader::Source;
use crate::data::manifest_dir::missing_data_message;
use crate::labels::Split;
use crate::model::device::pick_device;
use crate::model::muxnet::HeadInit;
use crate::model::network::Network;
use crate::model::weights::{self, load_backbone};
use crate::model::ArchSpec;
use crate::run::checkpoint::{restore_for_resume, resume_state, Checkpoints};
use crate::run::{Checkpoint, CheckpointMeta, RunDir, RunInfo, State, WeightsInfo};

/// Without `train.checkpoint_every_steps`, a mid-epoch checkpoint this often.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// A split of the run with where its images come from.
pub struct SplitSource {
    pub data: Arc<SplitData>,
    pub source: Source,
}

/// The human-readable `train.log`.
pub struct Log {
    file: std::fs::File,
}

impl Log {
    pub fn line(&mut self, s: &str) {
        let _ = writeln!(self.file, "{} {s}", crate::process::timestamp());
    }
}

pub struct Session {
    pub cfg: PipelineConfig,
    pub run: RunDir,
    pub labels: Vec<String>,
    pub device: Device,
    pub vs: nn::VarStore,
    pub net: Network,
    /// Optimiser, loss, schedules and EMA: the one training step ([`super::step`]).
    pub recipe: Recipe,
    pub plan: EpochPlan,
    pub train: SplitSource,
    pub val: SplitSource,
    pub log: Log,
    pub checkpoints: Checkpoints,
    /// Set when the manifest folder changed since the run started.
    pub notice: Option<String>,
    /// Said at the end (e.g. constant val outputs).
    pub warnings: Vec<String>,
    /// When last.safetensors was last written (for time-based mid-epoch checkpoints).
    pub last_save: std::time::Instant,
    /// Held while this process trains the run.
    _lock: crate::io::Lock,
}

/// What opening a run gives: a session to train, or a run with nothing left to do.
pub enum Opened {
    Train(Box<Session>, State),
    AlreadyDone(RunDir, State, Vec<String>),
}

fn threads(cfg: &PipelineConfig) -> i32 {
    if cfg.runtime.torch_threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as i32
    } else {
        cfg.runtime.torch_threads as i32
    }
}

/// The weights file of a new run, checked before anything is written.
fn weights_file(cfg: &PipelineConfig) -> Result<Option<std::path::PathBuf>> {
    if cfg.model.from_scratch {
        return Ok(None);
    }
    let w = cfg.model.weights.clone().unwrap_or_default();
    if w.is_dir() {
        bail!(
            "model.weights = {} is a folder, not a weights file (a .safetensors written by `muxmed model import`)",
            w.display()
        );
    }
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
    Ok(Some(w))
}

/// Removes a run directory created by a start that failed before its first step, so a bad
/// start leaves nothing that blocks the name.
struct NewRunGuard(Option<std::path::PathBuf>);

impl Drop for NewRunGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// A run name must be one plain folder name under the reports folder.
fn check_run_name(name: &str) -> Result<()> {
    let ok = !name.trim().is_empty()
        && !name.contains(['/', '\\'])
        && !name.starts_with('.')
        && name.chars().all(|c| !c.is_control());
    if !ok {
        bail!("--run-name `{name}` is not usable: give one folder name (no `/`, no leading `.`), it is created under the reports folder");
    }
    Ok(())
}

/// Creates a new run directory (refusing an existing one unless `overwrite`), with the
/// config and the run's own copy of the manifest's splits.
fn create_run(
    args: &TrainArgs,
    cfg: &PipelineConfig,
    manifest_dir: &Path,
    cache: &Cache,
) -> Result<(RunDir, crate::io::Lock)> {
    let name = args
        .run_name
        .clone()
        .unwrap_or_else(|| default_run_name(cfg));
    let run = RunDir::new(args.reports_dir.join(name));
    let root = run.root();
    let lock = if root.exists() {
        if !args.overwrite {
            if !run.checkpoint(Checkpoint::Last).is_file() {
                bail!("{}", before_first_checkpoint(&run));
            }
            bail!("{} already exists: choose another --run-name, resume it with --resume, or pass --overwrite", root.display());
        }
        // The old run's lock first: refused while its holder lives (naming the pid), and
        // held from here on, so nothing else trains in the folder while it is replaced.
        let lock = run.lock()?;
        clear_except(root, &run.lock_file())?;
        lock
    } else {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        run.lock()?
    };
    crate::io::write_atomic(&run.config_file(), cfg.to_yaml().as_bytes())?;
    run.keep_splits(manifest_dir, &skipped_ids(cache))?;
    Ok((run, lock))
}

/// What to say of a run folder without `last.safetensors`: a run stopped (SIGKILL, a full
/// disk, a power cut) before its first checkpoint has nothing to resume from.
fn before_first_checkpoint(run: &RunDir) -> String {
    let name = run
        .root()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "{} was interrupted before its first checkpoint (it has no last.safetensors): start it again with `muxmed train --pipeline <pipeline> --run-name {name} --overwrite`",
        run.root().display()
    )
}

/// Appends one timestamped line to a run's train.log.
fn append_log(run: &RunDir, line: &str) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.log_file())?;
    Log { file }.line(line);
    Ok(())
}

/// Removes everything in `dir` but the file `keep`.
fn clear_except(dir: &Path, keep: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = entry?.path();
        if p == keep {
            continue;
        }
        let removed = if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        removed.with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// The images `prepare` skipped as unreadable.
fn skipped_ids(cache: &Cache) -> std::collections::HashSet<String> {
    cache.skipped().map(|e| e.image_id.clone()).collect()
}

/// The same, as run.json lists them.
fn skipped_images(cache: &Cache) -> Vec<crate::run::SkippedImage> {
    cache
        .skipped()
        .map(|e| crate::run::SkippedImage {
            image_id: e.image_id.clone(),
            split: e.split.clone(),
            error: e.error.clone().unwrap_or_default(),
        })
        .collect()
}

/// The cache slots of a split's images, without those `prepare` skipped as unreadable; any
/// other image missing from the cache is a named error.
/// A split's images in the cache, leaving out those `prepare` skipped.
pub fn cached(
    cache: &Arc<Cache>,
    data: SplitData,
    split: Split,
) -> Result<SplitSource, TrainError> {
    let keep: Vec<bool> = data
        .image_ids
        .iter()
        .map(|id| !cache.was_skipped(id))
        .collect();
    let data = data.select(&keep);
    let slots = data
        .image_ids
        .iter()
        .map(|id| {
            cache.slot(id).ok_or_else(|| TrainError::NotInCache {
                image: id.clone(),
                split,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SplitSource {
        data: Arc::new(data),
        source: Source::Cache(cache.clone(), slots),
    })
}

/// What a start is about: the config, and for a resume the run (locked) and its state.
struct Target {
    cfg: PipelineConfig,
    resume: Option<(RunDir, crate::io::Lock, State)>,
}

/// The config of a new run, or the locked run and its state for a resume; a resumed run
/// with nothing left to do comes back as [`Opened::AlreadyDone`].
fn target(args: &TrainArgs) -> Result<Result<Target, Opened>> {
    let Some(dir) = &args.resume else {
        let p = args
            .pipeline
            .as_ref()
            .ok_or_else(|| anyhow!("no pipeline given"))?;
        if let Some(n) = &args.run_name {
            check_run_name(n)?;
        }
        return Ok(Ok(Target {
            cfg: p.config.clone(),
            resume: None,
        }));
    };
    let run = RunDir::open(dir)?;
    // Refused while another process trains the run.
    let lock = run.lock()?;
    let last = run.checkpoint(Checkpoint::Last);
    if !last.is_file() {
        let why = before_first_checkpoint(&run);
        let _ = append_log(&run, &format!("resume refused: {why}"));
        bail!("{why}");
    }
    // The state inside last.safetensors says where to go on.
    let state = resume_state(&run)?;
    if state.status.is_done() {
        let labels = run.manifest()?.labels;
        return Ok(Err(Opened::AlreadyDone(run, state, labels)));
    }
    Ok(Ok(Target {
        cfg: run.config()?,
        resume: Some((run, lock, state)),
    }))
}

/// Everything a new run is checked for before its directory exists, so a bad start leaves
/// nothing behind: the device, the weights file, the data and its prepared cache.
struct Checked {
    device: Device,
    weights: Option<std::path::PathBuf>,
    cache: Arc<Cache>,
    /// The MUXNet spec (None for DenseNet-121), stored in every checkpoint.
    arch_spec: Option<ArchSpec>,
}

fn check_start(
    args: &TrainArgs,
    cfg: &PipelineConfig,
    manifest_dir: &Path,
    resuming: bool,
) -> Result<Checked> {
    if !resuming
        && !crate::data::manifest_dir::ManifestDir::new(manifest_dir)
            .manifest_json()
            .is_file()
    {
        let src = args
            .pipeline
            .as_ref()
            .map(|p| p.source.clone())
            .unwrap_or_default();
        bail!("{}", missing_data_message(cfg, &src, manifest_dir));
    }
    let device_req = args
        .device
        .clone()
        .unwrap_or_else(|| cfg.runtime.device.clone());
    let device = pick_device(&device_req)?;
    let weights = if resuming { None } else { weights_file(cfg)? };
    let arch_spec = match &cfg.model.arch {
        crate::config::Arch::Densenet121 => None,
        a => Some(ArchSpec::of(a)?),
    };
    if !resuming {
        let k = crate::data::dataset::manifest_labels(manifest_dir)?.len() as i64;
        let r = i64::from(cfg.train.resolution);
        crate::model::network::check_runs(&cfg.model.arch, k, r).map_err(|e| {
            anyhow!(
                "model.arch = {}: the network cannot run on {r}x{r} images (train.resolution): {e}",
                cfg.model.arch
            )
        })?;
    }
    let cache = Arc::new(Cache::open(manifest_dir, &cfg.augment).map_err(|e| anyhow!("{e}"))?);
    cache.check_sources()?;
    if !resuming {
        // A new run's images must be cached before its directory is created.
        for s in [Split::Train, Split::Val] {
            let d = load_split(manifest_dir, s)?;
            if d.is_empty() {
                bail!("the {s} split of {} is empty", manifest_dir.display());
            }
            cached(&cache, d, s)?;
        }
    }
    Ok(Checked {
        device,
        weights,
        cache,
        arch_spec,
    })
}

/// A new network of the pipeline's architecture (or `spec`, a MUXNet the search made) with
/// its dropout and stochastic depth, in the pipeline's memory format: what every training
/// (`train`, the search's proxy) starts from.
pub fn fresh_network(
    cfg: &PipelineConfig,
    vs: &nn::VarStore,
    k: i64,
    spec: Option<&ArchSpec>,
) -> Result<Network, crate::model::spec::SpecError> {
    let mut net = match spec {
        Some(s) => Network::muxnet(&vs.root(), s, k, cfg.model.drop(), HeadInit::PytorchDefault)?,
        None => Network::build(
            &vs.root(),
            &cfg.model.arch,
            k,
            cfg.model.drop(),
            HeadInit::PytorchDefault,
        )?,
    };
    net.set_drop_path_rate(cfg.model.drop_path());
    net.set_memory_format(vs, cfg.runtime.memory_format);
    Ok(net)
}

/// The network (with stochastic depth and, for a new run, its starting weights) and the EMA.
fn build_model(
    cfg: &PipelineConfig,
    vs: &nn::VarStore,
    k: i64,
    weights_path: Option<&Path>,
    log: &mut Log,
) -> Result<(Network, WeightsInfo, Option<Ema>)> {
    let net = fresh_network(cfg, vs, k, None)?;
    let mut info = WeightsInfo {
        from_scratch: cfg.model.from_scratch,
        path: None,
        sha256: None,
        replaced: vec![],
    };
    if let Some(w) = weights_path {
        let r = load_backbone(vs, w)?;
        log.line(&format!(
            "loaded {} tensors from {}; fresh: {:?}",
            r.loaded,
            w.display(),
            r.replaced
        ));
        info.path = Some(w.display().to_string());
        info.sha256 = Some(weights::sha256_file(w)?);
        info.replaced = r.replaced;
    }
    let ema = match cfg.train.ema_decay {
        Some(d) => Some(Ema::new(vs, &net, &cfg.model.arch, k, d)?),
        None => None,
    };
    Ok((net, info, ema))
}

impl Session {
    /// Opens a new run (`args.pipeline`) or an existing one (`args.resume`).
    pub fn open(args: &TrainArgs) -> Result<Opened> {
        let Target { cfg, resume } = match target(args)? {
            Ok(t) => t,
            Err(done) => return Ok(done),
        };
        let manifest_dir =
            crate::data::manifest_dir::ManifestDir::of(&args.manifests_dir, &cfg.name)
                .root()
                .to_path_buf();
        let Checked {
            device,
            weights: weights_path,
            cache,
            arch_spec,
        } = check_start(args, &cfg, &manifest_dir, resume.is_some())?;
        let (run, lock, resumed_state, mut guard) = match resume {
            Some((run, lock, state)) => (run, lock, Some(state), NewRunGuard(None)),
            None => {
                let (run, lock) = create_run(args, &cfg, &manifest_dir, &cache)?;
                let guard = NewRunGuard(Some(run.root().to_path_buf()));
                (run, lock, None, guard)
            }
        };
        let notice = resumed_state
            .as_ref()
            .and_then(|_| run.manifest_notice(&manifest_dir));
        let labels = run.manifest()?.labels;
        let train = cached(&cache, run.split(Split::Train)?, Split::Train)?;
        let val = cached(&cache, run.split(Split::Val)?, Split::Val)?;
        let warnings: Vec<String> = crate::data::dataset::thin_val_warning(&val.data)
            .into_iter()
            .collect();
        let mut log = Log {
            file: std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(run.log_file())
                .context("opening train.log")?,
        };
        if let Some(n) = &notice {
            log.line(n);
        }
        for w in &warnings {
            log.line(&format!("warning: {w}"));
        }

        let threads = threads(&cfg);
        tch::set_num_threads(threads);
        tch::manual_seed(cfg.train.seed as i64);
        let vs = nn::VarStore::new(device);
        let k = labels.len() as i64;
        let (net, weights, ema) = build_model(&cfg, &vs, k, weights_path.as_deref(), &mut log)?;
        let plan = EpochPlan::new(
            train.data.len(),
            cfg.train.batch_size as usize,
            cfg.train.accum_steps as usize,
        );
        let loss = Loss::new(&cfg.train, &train.data, device);
        let recipe = Recipe::new(&cfg.train, &vs, loss, ema, &plan);
        let checkpoints = Checkpoints::new(
            run.clone(),
            CheckpointMeta {
                checkpoint: Checkpoint::Last,
                arch: cfg.model.arch.clone(),
                arch_spec: arch_spec.clone(),
                labels: labels.clone(),
                eval_stages: cfg.augment.eval.clone(),
                working_size: cfg.augment.working_size,
                cache_dtype: cfg.augment.cache_dtype,
                resolution: cfg.train.resolution,
                from_scratch: cfg.model.from_scratch,
                muxmed_version: env!("CARGO_PKG_VERSION").into(),
                state: None,
            },
        );
        let mut session = Session {
            cfg,
            run,
            labels,
            device,
            vs,
            net,
            recipe,
            plan,
            train,
            val,
            log,
            checkpoints,
            notice,
            warnings,
            last_save: std::time::Instant::now(),
            _lock: lock,
        };
        let state = match resumed_state {
            Some(s) => session.restore(s)?,
            None => {
                let skipped = skipped_images(&cache);
                session.write_info(
                    weights,
                    arch_spec.as_ref(),
                    threads,
                    args,
                    &manifest_dir,
                    skipped,
                )?;
                State::new(session.cfg.train.seed)
            }
        };
        guard.0 = None;
        Ok(Opened::Train(Box::new(session), state))
    }

    /// Loads weights, optimiser state and EMA from last.safetensors.
    fn restore(&mut self, mut state: State) -> Result<State> {
        let ema = self.recipe.ema.as_ref().map(|e| &e.vs);
        let t = restore_for_resume(&self.run, &self.vs, ema)?;
        self.recipe.opt.load_state(&t).map_err(anyhow::Error::msg)?;
        self.log.line(&format!(
            "resumed at epoch {} batch {} (step {})",
            state.epoch + 1,
            state.batch_in_epoch,
            state.opt_step
        ));
        self.run.trim_events(state.opt_step)?;
        state.status = crate::run::Status::Running;
        Ok(state)
    }

    fn write_info(
        &mut self,
        weights: WeightsInfo,
        spec: Option<&ArchSpec>,
        threads: i32,
        args: &TrainArgs,
        manifest_dir: &Path,
        skipped_images: Vec<crate::run::SkippedImage>,
    ) -> Result<()> {
        let k = self.labels.len() as i64;
        let resolution = self.cfg.train.resolution as i64;
        let madds = match spec {
            Some(s) => crate::model::count::count(s, k, resolution).ok(),
            None => crate::model::count::count_arch(&self.cfg.model.arch, k, resolution).ok(),
        }
        .map(|c| c.madds);
        let params: i64 = self
            .vs
            .variables()
            .iter()
            .filter(|(n, _)| !n.contains("running_"))
            .map(|(_, t)| t.numel() as i64)
            .sum();
        let test_images = self.run.split(Split::Test).map(|s| s.len()).unwrap_or(0);
        let info = RunInfo {
            muxmed_version: env!("CARGO_PKG_VERSION").into(),
            started: crate::process::timestamp(),
            arch: self.cfg.model.arch.clone(),
            labels: self.labels.clone(),
            params,
            madds,
            weights,
            device: format!("{:?}", self.device),
            torch_threads: threads,
            pipeline: args
                .pipeline
                .as_ref()
                .map(|p| p.source.display().to_string()),
            overrides: args
                .pipeline
                .as_ref()
                .map(|p| p.overrides.clone())
                .unwrap_or_default(),
            manifest_dir: manifest_dir.display().to_string(),
            manifest_sha256: crate::io::sha256_file(&self.run.manifest_json())?,
            train_images: self.train.data.len(),
            val_images: self.val.data.len(),
            test_images,
            skipped_images,
        };
        if !info.skipped_images.is_empty() {
            self.log.line(&format!(
                "left out {} image(s) that prepare could not read (skip_bad_images): {}",
                info.skipped_images.len(),
                info.skipped_images
                    .iter()
                    .map(|s| format!("{} ({} split: {})", s.image_id, s.split, s.error))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        self.run.write_info(&info)?;
        self.log.line(&format!(
            "new run: {} on {:?}, {} train / {} val images",
            self.cfg.model.arch,
            self.device,
            self.train.data.len(),
            self.val.data.len()
        ));
        Ok(())
    }

    /// Saves `last.safetensors` and `state.json` unless a weight is not finite (then the
    /// last good checkpoint stays).
    pub fn save_last(&mut self, state: &State) -> Result<()> {
        if !self.weights_finite() {
            return Err(TrainError::NonFinite(format!(
                "a weight became non-finite by step {}",
                state.opt_step
            ))
            .into());
        }
        self.checkpoints.save_last(
            &self.vs,
            self.recipe.opt.state_tensors(),
            self.recipe.ema.as_ref().map(|e| &e.vs),
            state,
        )?;
        self.last_save = std::time::Instant::now();
        Ok(())
    }

    /// Whether a mid-epoch checkpoint is due after optimiser step `step`.
    pub fn checkpoint_due(&self, step: u64) -> bool {
        match self.cfg.train.checkpoint_every_steps {
            Some(n) => step.is_multiple_of(n),
            None => self.last_save.elapsed() >= CHECKPOINT_INTERVAL,
        }
    }

    /// Whether every weight (and EMA weight) is finite.
    pub fn weights_finite(&self) -> bool {
        let all = |vs: &nn::VarStore| {
            vs.variables()
                .values()
                .all(|t| t.isfinite().all().to_kind(Kind::Int64).int64_value(&[]) == 1)
        };
        all(&self.vs) && self.recipe.ema.as_ref().is_none_or(|e| all(&e.vs))
    }
}

fn default_run_name(cfg: &PipelineConfig) -> String {
    let (y, mo, d, h, mi, s) = crate::process::now_utc();
    format!(
        "{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}-{}-{}",
        cfg.model.arch.short_name(),
        cfg.train.resolution
    )
}
