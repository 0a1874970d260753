//! Proxy training, the expensive objective of the search: a candidate is trained from scratch
//! on whole patients of the run's train split at `search.proxy.resolution`, for
//! `search.proxy.epochs`, and scored by mean AUROC on (a patient subset of) the val split;
//! the test split is never read. The images are taken from the prepared cache once, shrunk by
//! area averaging and kept in memory, so each candidate pays only for its own training.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Reduction, Tensor};

use super::engine::{Evaluator, Outcome};
use super::space::Candidate;
use crate::config::augment::{IMAGENET_MEAN, IMAGENET_STD};
use crate::config::search::ProxyConfig;
use crate::config::{MemoryFormat, PipelineConfig};
use crate::data::cache::Cache;
use crate::data::dataset::{load_split, SplitData};
use crate::data::Split;
use crate::metrics::{label_aurocs, mean_defined};
use crate::model::muxnet::HeadInit;
use crate::model::network::Network;

/// One split's images at the proxy resolution (grey, [0, 1]) and labels.
struct Images {
    x: Tensor,
    y: Tensor,
    /// Rows of the split's 0/1 labels.
    labels: Vec<Vec<f32>>,
}

/// The proxy's data, loaded once per search.
pub struct ProxyData {
    train: Images,
    val: Images,
    pub train_patients: usize,
    pub val_patients: usize,
}

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

/// Images are read from the cache and shrunk in chunks of this many, so the working-size
/// copies never all sit in memory at once.
const LOAD_CHUNK: usize = 256;

fn load_images(
    cache: &Cache,
    split: &SplitData,
    which: &[usize],
    resolution: i64,
    name: Split,
) -> Result<Images, String> {
    let mut parts = vec![];
    for chunk in which.chunks(LOAD_CHUNK) {
        let mut pixels = Vec::new();
        let mut side = 0;
        for &i in chunk {
            let id = &split.image_ids[i];
            let slot = cache.slot(id).ok_or_else(|| {
                format!("image {id} of the {name} split is not in the prepared cache: run `muxmed prepare` with this pipeline")
            })?;
            let img = cache.image(slot);
            side = img.w as i64;
            pixels.extend_from_slice(&img.data);
        }
        let x = Tensor::from_slice(&pixels).view([chunk.len() as i64, 1, side, side]);
        parts.push(if side == resolution {
            x
        } else {
            x.adaptive_avg_pool2d([resolution, resolution])
        });
    }
    let labels: Vec<Vec<f32>> = which.iter().map(|&i| split.labels[i].clone()).collect();
    let flat: Vec<f32> = labels.concat();
    let k = split.label_names.len() as i64;
    Ok(Images {
        x: Tensor::cat(&parts, 0),
        y: Tensor::from_slice(&flat).view([which.len() as i64, k]),
        labels,
    })
}

/// Grey [N,1,H,W] in [0, 1] → the network's input: three channels, ImageNet-normalised.
fn to_input(x: &Tensor, device: Device) -> Tensor {
    let s = x.size();
    let mean = Tensor::from_slice(&IMAGENET_MEAN.map(|v| v as f32)).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&IMAGENET_STD.map(|v| v as f32)).view([1, 3, 1, 1]);
    ((x.expand([s[0], 3, s[2], s[3]], false) - mean) / std).to_device(device)
}

impl ProxyData {
    /// Reads the train and val splits of the pipeline's manifest from its prepared cache.
    pub fn load(cfg: &PipelineConfig, manifest_dir: &Path, seed: u64) -> Result<Self, String> {
        let p = &cfg.search.proxy;
        let cache = Cache::open(manifest_dir, &cfg.augment).map_err(|e| e.to_string())?;
        let train = load_split(manifest_dir, Split::Train).map_err(|e| e.to_string())?;
        let val = load_split(manifest_dir, Split::Val).map_err(|e| e.to_string())?;
        let (ti, train_patients) = patient_subset(&train, Some(p.train_images), seed);
        let (vi, val_patients) = patient_subset(&val, p.val_images, seed ^ 1);
        let res = i64::from(p.resolution);
        Ok(ProxyData {
            train: load_images(&cache, &train, &ti, res, Split::Train)?,
            val: load_images(&cache, &val, &vi, res, Split::Val)?,
            train_patients,
            val_patients,
        })
    }

    pub fn train_images(&self) -> usize {
        self.train.labels.len()
    }

    pub fn val_images(&self) -> usize {
        self.val.labels.len()
    }
}

/// Trains candidates on [`ProxyData`]; `stop` (Ctrl-C) abandons the candidate in training.
pub struct ProxyTrainer {
    pub data: ProxyData,
    pub cfg: ProxyConfig,
    pub stop: Arc<AtomicBool>,
    pub device: Device,
    /// `runtime.memory_format` of the search's pipeline.
    pub memory_format: MemoryFormat,
}

impl Evaluator for ProxyTrainer {
    fn evaluate(&mut self, c: &Candidate, seed: u64) -> Outcome {
        // libtorch reports bad shapes and allocation failures by panicking through tch: they
        // are a failed candidate, not a failed search.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| self.train(c, seed)));
        std::panic::set_hook(hook);
        match r {
            Ok(out) => out,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "libtorch error".into());
                Outcome::Failed(msg.lines().next().unwrap_or("libtorch error").to_string())
            }
        }
    }
}

impl ProxyTrainer {
    fn train(&self, c: &Candidate, seed: u64) -> Outcome {
        tch::manual_seed(seed as i64);
        let p = &self.cfg;
        let vs = nn::VarStore::new(self.device);
        let k = self.data.train.y.size()[1];
        let net = match Network::muxnet(&vs.root(), &c.spec, k, p.drop_rate, HeadInit::Reference) {
            Ok(n) => n,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        net.set_memory_format(&vs, self.memory_format);
        let adamw = nn::AdamW {
            wd: p.weight_decay,
            ..Default::default()
        };
        let mut opt = match adamw.build(&vs, p.lr) {
            Ok(o) => o,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let n = self.data.train_images();
        let batch = p.batch_size.min(n).max(1);
        let per_epoch = n / batch;
        let total = (per_epoch * p.epochs as usize).max(1);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut step = 0;
        for epoch in 0..p.epochs {
            let mut order: Vec<i64> = (0..n as i64).collect();
            order.shuffle(&mut rng);
            for b in 0..per_epoch {
                if self.stop.load(Ordering::SeqCst) {
                    return Outcome::Abandoned;
                }
                // Cosine decay from the peak to zero over the proxy's steps.
                let lr =
                    0.5 * p.lr * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos());
                opt.set_lr(lr);
                let idx = Tensor::from_slice(&order[b * batch..(b + 1) * batch]);
                let x = to_input(&self.data.train.x.index_select(0, &idx), self.device);
                let y = self
                    .data
                    .train
                    .y
                    .index_select(0, &idx)
                    .to_device(self.device);
                let loss = net
                    .forward_t(&x, true)
                    .binary_cross_entropy_with_logits::<Tensor>(&y, None, None, Reduction::Mean);
                let l = loss.double_value(&[]);
                if !l.is_finite() {
                    return Outcome::Failed(format!(
                        "non-finite loss ({l}) at epoch {} step {step}",
                        epoch + 1
                    ));
                }
                opt.backward_step(&loss);
                step += 1;
            }
        }
        self.score(&net)
    }

    fn score(&self, net: &Network) -> Outcome {
        let v = &self.data.val;
        let n = v.labels.len() as i64;
        let chunk = 128;
        let mut probs: Vec<Tensor> = vec![];
        tch::no_grad(|| {
            for s in (0..n).step_by(chunk) {
                let len = chunk.min((n - s) as usize) as i64;
                let x = to_input(&v.x.narrow(0, s, len), self.device);
                probs.push(net.forward_t(&x, false).sigmoid().to_device(Device::Cpu));
            }
        });
        let p = Tensor::cat(&probs, 0).to_kind(Kind::Double);
        let k = v.labels.first().map_or(0, Vec::len);
        let flat: Vec<f64> = match Vec::<f64>::try_from(p.flatten(0, -1)) {
            Ok(f) => f,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if flat.iter().any(|x| !x.is_finite()) {
            return Outcome::Failed("non-finite val outputs".into());
        }
        let rows: Vec<Vec<f64>> = flat.chunks(k.max(1)).map(<[f64]>::to_vec).collect();
        let aurocs = label_aurocs(k, &v.labels, &rows);
        match mean_defined(&aurocs) {
            Some(m) => Outcome::Scored(m),
            None => Outcome::Failed(
                "val AUROC undefined: no label has both classes in the val subset".into(),
            ),
        }
    }
}
