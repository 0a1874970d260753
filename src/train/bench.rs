//! `muxmed bench model`: inference and training-step throughput of an architecture on
//! random inputs, with the product's own pieces: the folded inference model of
//! `evaluate`/`predict`, and the training step of `muxmed train` itself ([`super::step`],
//! under the `train:` defaults: forward in training mode, BCE, backward, clipping at 5, AdamW,
//! no EMA) with a per-phase time breakdown lapped inside the step.
//! Figures are medians of `iters` timed runs after one warm-up.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use tch::{nn, Device, Kind, Tensor};

use super::loss::Loss;
use super::step::{EpochPlan, Laps, Phase, Recipe};
use crate::config::{Arch, MemoryFormat, TrainConfig};
use crate::model::export::trace;
use crate::model::folded::FoldedNetwork;
use crate::model::muxnet::{HeadInit, MuxNet};
use crate::model::network::Network;

/// Where a training step's time goes, in milliseconds (medians over the timed steps).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepBreakdown {
    pub forward_ms: f64,
    pub loss_ms: f64,
    pub backward_ms: f64,
    pub clip_ms: f64,
    pub optimizer_ms: f64,
    pub zero_grad_ms: f64,
    pub ema_ms: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct BenchResult {
    pub arch: String,
    pub batch: i64,
    pub resolution: i64,
    pub memory_format: MemoryFormat,
    pub threads: i32,
    /// The folded inference model (what evaluate, predict, explain and export run).
    pub infer_images_per_s: f64,
    /// The training network in eval mode under no_grad (BatchNorm not folded).
    pub infer_unfolded_images_per_s: f64,
    pub train_images_per_s: f64,
    pub train_step: StepBreakdown,
    /// With `per_block`: each part of a MUXNet timed alone (see [`profile_blocks`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartTiming>,
}

/// One part of a MUXNet's training step (stem, a block, or the head with pooling and
/// classifier), timed alone on its real input shape: forward in training mode, then backward
/// from a fixed random output gradient (which adds one multiply and a sum to `backward_ms`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartTiming {
    /// `stem`, the block's state-dict prefix (`blocks.3.1`), or `head`.
    pub name: String,
    /// `stem`, `ds`, `ir`, `sp` or `head`.
    pub kind: &'static str,
    /// The block string's geometry: kernels, expansion, channels in → out, stride.
    pub detail: String,
    /// Input shape (N, C, H, W).
    pub input: Vec<i64>,
    pub forward_ms: f64,
    pub backward_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Images per second of `f` on a batch of `batch`, median of `iters` runs after a warm-up.
fn throughput(batch: i64, iters: usize, f: impl Fn() -> Tensor) -> f64 {
    let mut v = Vec::with_capacity(iters);
    for i in 0..=iters {
        let t = Instant::now();
        let _ = f().sum(Kind::Float).double_value(&[]);
        if i > 0 {
            v.push(batch as f64 / t.elapsed().as_secs_f64());
        }
    }
    median(v)
}

/// Milliseconds per [`Phase`] of one step, lapped by the step itself.
struct PhaseTimer {
    ms: [f64; Phase::ALL.len()],
    at: Instant,
}

impl Laps for PhaseTimer {
    fn lap(&mut self, phase: Phase) {
        let i = Phase::ALL.iter().position(|p| *p == phase).unwrap_or(0);
        self.ms[i] = self.at.elapsed().as_secs_f64() * 1e3;
        self.at = Instant::now();
    }
}

/// `iters` timed steps of muxmed's training recipe (the defaults of `train:`) after one
/// warm-up: each step's per-phase milliseconds, and the images per second of each.
fn time_steps(
    vs: &nn::VarStore,
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    iters: usize,
) -> Result<(Vec<[f64; Phase::ALL.len()]>, Vec<f64>)> {
    let t = TrainConfig::default();
    let batch = x.size()[0] as usize;
    let plan = EpochPlan::new(batch * (iters + 1), batch, 1);
    let loss = Loss {
        kind: t.loss,
        focal_gamma: t.focal_gamma,
        pos_weight: None,
    };
    let mut recipe = Recipe::new(&t, vs, loss, None, &plan);
    let (mut phases, mut train) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    for i in 0..=iters {
        let start = Instant::now();
        let mut timer = PhaseTimer {
            ms: [0.0; Phase::ALL.len()],
            at: start,
        };
        let failed = |e| anyhow::anyhow!("bench step {i}: {e:?}");
        recipe
            .accumulate(net, x, y, false, 1, &mut timer)
            .map_err(failed)?;
        recipe.apply(vs, i as u64, 0, &mut timer).map_err(failed)?;
        if i > 0 {
            train.push(batch as f64 / start.elapsed().as_secs_f64());
            phases.push(timer.ms);
        }
    }
    Ok((phases, train))
}

/// What `bench model` measures.
pub struct BenchOptions<'a> {
    pub arch: &'a Arch,
    pub batch: i64,
    pub resolution: i64,
    pub iters: usize,
    pub memory_format: MemoryFormat,
    /// Also trace the folded model to TorchScript here (for timing it in PyTorch).
    pub export: Option<&'a Path>,
    /// Also time each part of a MUXNet's training step alone ([`profile_blocks`]).
    pub per_block: bool,
}

pub fn bench(o: &BenchOptions) -> Result<BenchResult> {
    let BenchOptions {
        arch,
        batch,
        resolution,
        iters,
        memory_format,
        export,
        per_block,
    } = *o;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::build(&vs.root(), arch, 14, 0.0, HeadInit::PytorchDefault)?;
    net.set_memory_format(&vs, memory_format);
    let x = Tensor::randn([batch, 3, resolution, resolution], tch::kind::FLOAT_CPU);
    let y = Tensor::rand([batch, 14], tch::kind::FLOAT_CPU).round();

    let folded = FoldedNetwork::new(&net, memory_format);
    if let Some(path) = export {
        tch::no_grad(|| trace(&folded, Device::Cpu, resolution, path))?;
    }
    let infer = tch::no_grad(|| throughput(batch, iters, || folded.forward(&x)));
    let infer_unfolded = tch::no_grad(|| throughput(batch, iters, || net.forward_t(&x, false)));

    let (phases, train) = time_steps(&vs, &net, &x, &y, iters)?;
    let phase = |k: usize| median(phases.iter().map(|p| p[k]).collect());
    let parts = match (&net, per_block) {
        (Network::MuxNet(m), true) => profile_blocks(m, &x, iters),
        _ => Vec::new(),
    };
    Ok(BenchResult {
        arch: arch.to_string(),
        batch,
        resolution,
        memory_format,
        threads: tch::get_num_threads(),
        infer_images_per_s: infer,
        infer_unfolded_images_per_s: infer_unfolded,
        train_images_per_s: median(train),
        train_step: StepBreakdown {
            forward_ms: phase(0),
            loss_ms: phase(1),
            backward_ms: phase(2),
            clip_ms: phase(3),
            optimizer_ms: phase(4),
            zero_grad_ms: phase(5),
            ema_ms: phase(6),
        },
        parts,
    })
}

/// Forward and backward milliseconds (medians of `iters` after a warm-up) of `part` on
/// `input`, and its output (detached) for the next part.
fn time_part(input: &Tensor, iters: usize, part: impl Fn(&Tensor) -> Tensor) -> (f64, f64, Tensor) {
    let (mut fwd, mut bwd) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    let mut out = Tensor::new();
    let mut grad: Option<Tensor> = None;
    for i in 0..=iters {
        let t = Instant::now();
        let y = part(input);
        let f = t.elapsed().as_secs_f64() * 1e3;
        let g = grad.get_or_insert_with(|| y.randn_like());
        let t = Instant::now();
        (&y * &*g).sum(Kind::Float).backward();
        let b = t.elapsed().as_secs_f64() * 1e3;
        if i > 0 {
            fwd.push(f);
            bwd.push(b);
        }
        out = y.detach();
    }
    (median(fwd), median(bwd), out)
}

/// Each part of `net`'s training step timed alone, in forward order: the stem on `x`, every
/// block on the previous part's output (a leaf that requires grad, so backward computes the
/// input gradient as in the whole network), the head (conv, BN, activation, pooling,
/// classifier). Gradients accumulate in the parameters between runs, as they would without
/// zero_grad; stochastic depth is off (the bench network has none).
pub fn profile_blocks(net: &MuxNet, x: &Tensor, iters: usize) -> Vec<PartTiming> {
    let shape = |t: &Tensor| t.size();
    let mut parts = Vec::new();
    let (f, b, mut y) = time_part(x, iters, |x| net.stem_t(x, true));
    parts.push(PartTiming {
        name: "stem".into(),
        kind: "stem",
        detail: format!("k3 s2 3 → {}", y.size()[1]),
        input: shape(x),
        forward_ms: f,
        backward_ms: b,
    });
    for (name, block) in net.blocks() {
        let input = y.set_requires_grad(true);
        let (f, b, out) = time_part(&input, iters, |x| block.forward_t(x, true));
        let p = block.plan();
        let kernels: Vec<String> = p.args.kernels.iter().map(i64::to_string).collect();
        parts.push(PartTiming {
            name,
            kind: block.kind(),
            detail: format!(
                "k{} e{} {} → {} s{}",
                kernels.join("."),
                p.args.exp_ratio,
                p.in_chs,
                p.out_chs,
                p.stride
            ),
            input: shape(&input),
            forward_ms: f,
            backward_ms: b,
        });
        y = out;
    }
    let input = y.set_requires_grad(true);
    let (f, b, _) = time_part(&input, iters, |y| {
        let map = net.head_map_t(y, true);
        let pooled = map.mean_dim([2i64, 3].as_slice(), false, map.kind());
        net.forward_head_t(&pooled, true)
    });
    parts.push(PartTiming {
        name: "head".into(),
        kind: "head",
        detail: format!(
            "1x1 {} → {}, pool, classifier",
            input.size()[1],
            net.spec.head_channels()
        ),
        input: shape(&input),
        forward_ms: f,
        backward_ms: b,
    });
    parts
}
