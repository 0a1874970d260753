//! Proxy training, the expensive objective of the search: a candidate is trained from scratch
//! by muxmed's own recipe (the epoch loop and step of `muxmed train`, [`crate::train::epoch`])
//! under a small training config made from the pipeline and its `search.proxy` settings: on
//! whole patients of the train split, with the pipeline's augment stages at
//! `search.proxy.resolution`, for `search.proxy.epochs`; it is scored by mean AUROC on (a
//! patient subset of) the val split, as `train` validates. The test split is never read.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{nn, Device};

use super::engine::{Evaluator, Outcome};
use super::space::Candidate;
use crate::config::augment::Stage;
use crate::config::PipelineConfig;
use crate::data::cache::Cache;
use crate::data::dataset::{load_split, SplitData};
use crate::labels::Split;
use crate::model::network::Network;
use crate::model::ArchSpec;
use crate::run::State;
use crate::train::epoch::{run_epoch, EpochEnd, EpochSetup, Learner, Parts, Stepped};
use crate::train::loss::Loss;
use crate::train::session::{cached, fresh_network, SplitSource};
use crate::train::step::{EpochPlan, Recipe};
use crate::train::validate::validate;
use crate::train::TrainError;

/// Whole patients of `split`, in a seeded order, until `limit` images are reached.
fn patient_subset(split: &SplitData, limit: Option<usize>, seed: u64) -> (Vec<usize>, usize) {
    let mut by_patient: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in split.patients.iter().enumerate() {
        by_patient.entry(p).or_default().push(i);
    }
    let mut groups: Vec<Vec<usize>> = by_patient.into_values().collect();
    groups.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let limit = limit.unwrap_or(usize::MAX);
    let mut out = vec![];
    let mut patients = 0;
    for g in groups {
        if out.len() >= limit {
            break;
        }
        out.extend(g);
        patients += 1;
    }
    out.sort_unstable();
    (out, patients)
}

/// `stages` with every output size scaled from `from` to `to` pixels (rounded), so a
/// pipeline's crops and resizes for its training resolution give the proxy's. Stages that
/// set no size (the working image is the model's input) get a resize of the square working
/// image to `to` × `to` first.
pub fn stages_at(stages: &[Stage], working: u32, from: u32, to: u32) -> Vec<Stage> {
    let scale = |v: u32| ((f64::from(v) * f64::from(to) / f64::from(from)).round() as u32).max(1);
    let mut out = scaled(stages, scale);
    let side = crate::config::augment::output_shape(&out, working).map(|(_, h, w)| (h, w));
    if side != Ok((to, to)) {
        out.insert(
            0,
            Stage::Resize {
                size: to,
                mode: crate::config::augment::ResizeMode::Exact,
                filter: Default::default(),
            },
        );
    }
    out
}

fn scaled(stages: &[Stage], scale: impl Fn(u32) -> u32) -> Vec<Stage> {
    stages
        .iter()
        .map(|st| match st.clone() {
            Stage::Resize { size, mode, filter } => Stage::Resize {
                size: scale(size),
                mode,
                filter,
            },
            Stage::CenterCrop { size } => Stage::CenterCrop { size: scale(size) },
            Stage::RandomResizedCrop {
                size,
                scale: s,
                ratio,
            } => Stage::RandomResizedCrop {
                size: scale(size),
                scale: s,
                ratio,
            },
            other => other,
        })
        .collect()
}

/// The training config a candidate's proxy training runs: the pipeline's `train:` recipe
/// (optimiser, schedule shape, loss, clipping, sampling) with `search.proxy`'s resolution,
/// epochs, batch size, learning rate, weight decay and dropout; from scratch, so nothing is
/// frozen, the backbone learns at the full rate and there is no EMA; the augment stages at
/// the proxy's resolution.
pub fn proxy_pipeline(cfg: &PipelineConfig) -> PipelineConfig {
    let p = &cfg.search.proxy;
    let mut c = cfg.clone();
    let from = cfg.train.resolution;
    let ws = cfg.augment.working_size;
    c.augment.train = stages_at(&cfg.augment.train, ws, from, p.resolution);
    c.augment.eval = stages_at(&cfg.augment.eval, ws, from, p.resolution);
    c.train.resolution = p.resolution;
    c.train.epochs = p.epochs;
    c.train.batch_size = p.batch_size as u32;
    c.train.accum_steps = 1;
    c.train.lr = p.lr;
    c.train.weight_decay = p.weight_decay;
    c.train.freeze_backbone_epochs = 0;
    c.train.backbone_lr_factor = 1.0;
    c.train.ema_decay = None;
    c.model.drop_rate = Some(p.drop_rate);
    c.model.from_scratch = true;
    c.model.weights = None;
    c
}

/// The proxy's data and training config, made once per search.
pub struct ProxyData {
    pub pipeline: PipelineConfig,
    train: SplitSource,
    val: SplitSource,
    pub train_patients: usize,
    pub val_patients: usize,
}

/// Whole patients `which` of a split, from the cache.
fn subset(
    cache: &Arc<Cache>,
    split: &SplitData,
    which: &[usize],
    name: Split,
) -> Result<SplitSource, String> {
    let mut keep = vec![false; split.len()];
    which.iter().for_each(|&i| keep[i] = true);
    cached(cache, split.select(&keep), name).map_err(|e| e.to_string())
}

impl ProxyData {
    /// Reads the train and val splits of the pipeline's manifest from its prepared cache.
    pub fn load(cfg: &PipelineConfig, manifest_dir: &Path, seed: u64) -> Result<Self, String> {
        let p = &cfg.search.proxy;
        let cache = Arc::new(Cache::open(manifest_dir, &cfg.augment).map_err(|e| e.to_string())?);
        let train = load_split(manifest_dir, Split::Train).map_err(|e| e.to_string())?;
        let val = load_split(manifest_dir, Split::Val).map_err(|e| e.to_string())?;
        let (ti, train_patients) = patient_subset(&train, Some(p.train_images), seed);
        let (vi, val_patients) = patient_subset(&val, p.val_images, seed ^ 1);
        let pipeline = proxy_pipeline(cfg);
        pipeline
            .validate()
            .map_err(|(key, why)| format!("the proxy's training config: {key}: {why}"))?;
        Ok(ProxyData {
            pipeline,
            train: subset(&cache, &train, &ti, Split::Train)?,
            val: subset(&cache, &val, &vi, Split::Val)?,
            train_patients,
            val_patients,
        })
    }

    pub fn train_images(&self) -> usize {
        self.train.data.len()
    }

    pub fn val_images(&self) -> usize {
        self.val.data.len()
    }
}

/// Trains candidates on [`ProxyData`]; `stop` (Ctrl-C) abandons the candidate in training.
pub struct ProxyTrainer {
    pub data: ProxyData,
    pub stop: Arc<AtomicBool>,
    pub device: Device,
}

impl Evaluator for ProxyTrainer {
    fn evaluate(&mut self, c: &Candidate, seed: u64) -> Outcome {
        // libtorch reports bad shapes and allocation failures by panicking through tch: they
        // are a failed candidate, not a failed search.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| self.train(&c.spec, seed)));
        std::panic::set_hook(hook);
        match r {
            Ok(t) => t.outcome,
            Err(p) => Outcome::Failed(crate::model::device::panic_message(p.as_ref())),
        }
    }
}

/// A proxy training's result and the loss of the last batch of every optimiser step.
pub struct ProxyRun {
    pub outcome: Outcome,
    pub losses: Vec<f64>,
}

/// The proxy's side of the shared loop: the loss trace and Ctrl-C.
struct ProxyLearner<'a> {
    vs: nn::VarStore,
    net: Network,
    recipe: Recipe,
    losses: Vec<f64>,
    stop: &'a AtomicBool,
}

impl Learner for ProxyLearner<'_> {
    fn parts(&mut self) -> Parts<'_> {
        Parts {
            vs: &self.vs,
            net: &self.net,
            recipe: &mut self.recipe,
        }
    }

    fn stepped(&mut self, _state: &State, step: &Stepped) -> Result<bool, TrainError> {
        self.losses.push(step.loss);
        Ok(self.stop.load(Ordering::SeqCst))
    }
}

impl ProxyTrainer {
    /// Trains `spec` from scratch with seed `seed` and scores it on the val subset.
    pub fn train(&self, spec: &ArchSpec, seed: u64) -> ProxyRun {
        let mut cfg = self.data.pipeline.clone();
        cfg.train.seed = seed;
        let failed = |e: String, losses| ProxyRun {
            outcome: Outcome::Failed(e),
            losses,
        };
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(self.device);
        let k = self.data.train.data.label_names.len() as i64;
        let net = match fresh_network(&cfg, &vs, k, Some(spec)) {
            Ok(n) => n,
            Err(e) => return failed(e.to_string(), vec![]),
        };
        let plan = EpochPlan::new(self.data.train_images(), cfg.train.batch_size as usize, 1);
        let loss = Loss::new(&cfg.train, &self.data.train.data, self.device);
        let recipe = Recipe::new(&cfg.train, &vs, loss, None, &plan);
        let mut l = ProxyLearner {
            vs,
            net,
            recipe,
            losses: vec![],
            stop: &self.stop,
        };
        let train_stages = Arc::new(cfg.augment.train.clone());
        let setup = EpochSetup {
            train: &cfg.train,
            runtime: &cfg.runtime,
            plan,
            source_weights: cfg.data.source_weights(),
            data: &self.data.train,
            stages: &train_stages,
            device: self.device,
        };
        let mut state = State::new(seed);
        while state.epoch < cfg.train.epochs {
            match run_epoch(&mut l, &setup, &mut state) {
                Ok(EpochEnd::Completed) => state.start_next_epoch(),
                Ok(EpochEnd::Interrupted) => {
                    return ProxyRun {
                        outcome: Outcome::Abandoned,
                        losses: l.losses,
                    }
                }
                Err(e) => return failed(e.to_string(), l.losses),
            }
        }
        let eval = Arc::new(cfg.augment.eval.clone());
        let workers = cfg.runtime.data_workers as usize;
        let batch = cfg.train.batch_size as usize;
        let scored = validate(
            &l.net,
            &self.data.val,
            &eval,
            &l.recipe.loss,
            batch,
            workers,
            self.device,
        );
        let outcome = match scored {
            Ok(v) => match v.mean {
                Some(m) => Outcome::Scored(m),
                None => Outcome::Failed(
                    "val AUROC undefined: no label has both classes in the val subset".into(),
                ),
            },
            Err(e) => Outcome::Failed(e.to_string()),
        };
        ProxyRun {
            outcome,
            losses: l.losses,
        }
    }
}
