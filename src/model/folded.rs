//! The inference model of `evaluate`, `predict`, `explain` and `export`: a trained
//! [`Network`] with every BatchNorm that follows a convolution folded into it
//! (w' = w·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β, computed in f64), squeeze-excitation's
//! 1×1 convolutions run as linear layers on the pooled vector, and the weights laid out in
//! one memory format. Its tensors are plain (no `requires_grad`), so a forward pass records
//! no autograd graph (tch exposes no InferenceMode; callers also hold a no_grad guard).
//! Training keeps the unfolded network; this one is built from it after the weights load.

use tch::{nn, Kind, Tensor};

use super::blocks::{cat_shuffle, Block};
use super::densenet::{stem_pool, transition_pool, DenseNet121};
use super::layers::{
    act, channel_to_space, space_to_channel, split_apply_cat, Conv, MuxBranch, SpatialConv,
    SqueezeExcite, BN_EPS,
};
use super::layout::{to_format, MemoryFormat};
use super::muxnet::MuxNet;
use super::network::Network;
use super::spec::{Act, BlockType};

/// An eval-mode BatchNorm as a per-channel affine map: y = x·scale + shift (f64).
struct Affine {
    scale: Tensor,
    shift: Tensor,
}

impl Affine {
    fn of(bn: &nn::BatchNorm) -> Self {
        let d = |t: &Tensor| t.detach().to_kind(Kind::Double);
        let inv = (d(&bn.running_var) + BN_EPS).rsqrt();
        let scale = match &bn.ws {
            Some(g) => d(g) * inv,
            None => inv,
        };
        let shift = -d(&bn.running_mean) * &scale;
        let shift = match &bn.bs {
            Some(b) => shift + d(b),
            None => shift,
        };
        Affine { scale, shift }
    }

    /// Channels `start..start + len`.
    fn slice(&self, start: i64, len: i64) -> Affine {
        Affine {
            scale: self.scale.narrow(0, start, len),
            shift: self.shift.narrow(0, start, len),
        }
    }

    /// Each channel's values repeated `times` over consecutive channel blocks.
    fn tiled(&self, times: i64) -> Affine {
        Affine {
            scale: self.scale.repeat([times]),
            shift: self.shift.repeat([times]),
        }
    }
}

/// A convolution with its bias and geometry, BatchNorm already folded in.
#[derive(Debug)]
pub struct FoldedConv {
    w: Tensor,
    b: Option<Tensor>,
    stride: i64,
    padding: i64,
    groups: i64,
}

impl FoldedConv {
    fn new(c: &Conv, w: Tensor, b: Option<Tensor>, f: MemoryFormat) -> Self {
        let kind = c.weight().kind();
        FoldedConv {
            w: to_format(&w.to_kind(kind), f),
            b: b.map(|b| b.to_kind(kind)),
            stride: c.stride,
            padding: c.padding,
            groups: c.groups,
        }
    }

    /// The conv as it is (no BatchNorm after it).
    fn plain(c: &Conv, f: MemoryFormat) -> Self {
        let b = c.inner.bs.as_ref().map(Tensor::detach);
        FoldedConv::new(c, c.weight().detach(), b, f)
    }

    /// The conv followed by the affine map `a` (one entry per output channel).
    fn scaled(c: &Conv, a: &Affine, f: MemoryFormat) -> Self {
        let w = c.weight().detach().to_kind(Kind::Double) * a.scale.view([-1, 1, 1, 1]);
        let b = match &c.inner.bs {
            Some(b) => b.detach().to_kind(Kind::Double) * &a.scale + &a.shift,
            None => a.shift.shallow_clone(),
        };
        FoldedConv::new(c, w, Some(b), f)
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(
            &self.w,
            self.b.as_ref(),
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            self.groups,
        )
    }
}

/// A MUXConv branch with the BatchNorm that follows the layer folded in where the layout
/// allows (Sec. 3.1 of the paper): a coarser branch's conv channel `(i*2+j)*C + c` becomes
/// output channel `c`, so its scale is the channel's scale tiled 4 times; a finer branch
/// spreads one conv channel over 4 output channels with different BatchNorm scales, so its
/// BatchNorm stays an affine map after the rearrangement.
#[derive(Debug)]
enum FoldedBranch {
    Coarser(FoldedConv),
    Same(FoldedConv),
    Finer {
        conv: FoldedConv,
        scale: Tensor,
        shift: Tensor,
    },
}

/// A block's spatial conv with its BatchNorm folded in: per channel group (mixed kernels or
/// MUXConv branches), then concatenated.
#[derive(Debug)]
enum FoldedSpatial {
    Convs {
        convs: Vec<FoldedConv>,
        splits: Vec<i64>,
    },
    Mux {
        branches: Vec<FoldedBranch>,
        splits: Vec<i64>,
    },
}

impl FoldedSpatial {
    fn new(s: &SpatialConv, bn: &nn::BatchNorm, f: MemoryFormat) -> Self {
        let a = Affine::of(bn);
        match s {
            SpatialConv::Single(c) => FoldedSpatial::Convs {
                convs: vec![FoldedConv::scaled(c, &a, f)],
                splits: vec![c.weight().size()[1] * c.groups],
            },
            SpatialConv::Mixed(m) => {
                let mut start = 0;
                let convs = m
                    .convs
                    .iter()
                    .map(|c| {
                        let out = c.weight().size()[0];
                        let folded = FoldedConv::scaled(c, &a.slice(start, out), f);
                        start += out;
                        folded
                    })
                    .collect();
                FoldedSpatial::Convs {
                    convs,
                    splits: m.splits.clone(),
                }
            }
            SpatialConv::Mux(m) => {
                let mut start = 0;
                let branches = m
                    .branches
                    .iter()
                    .map(|b| {
                        let (branch, out) = FoldedBranch::new(b, &a, start, f);
                        start += out;
                        branch
                    })
                    .collect();
                FoldedSpatial::Mux {
                    branches,
                    splits: m.splits.clone(),
                }
            }
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            FoldedSpatial::Convs { convs, splits } => {
                split_apply_cat(x, splits, convs, |c, xi| c.forward(xi))
            }
            FoldedSpatial::Mux { branches, splits } => {
                split_apply_cat(x, splits, branches, FoldedBranch::forward)
            }
        }
    }
}

impl FoldedBranch {
    /// The folded branch and its number of output channels (after the rearrangement),
    /// taking BatchNorm channels from `start`.
    fn new(b: &MuxBranch, a: &Affine, start: i64, f: MemoryFormat) -> (Self, i64) {
        match b {
            MuxBranch::Same(c) => {
                let out = c.weight().size()[0];
                (
                    FoldedBranch::Same(FoldedConv::scaled(c, &a.slice(start, out), f)),
                    out,
                )
            }
            MuxBranch::Coarser(c) => {
                let out = c.weight().size()[0] / 4;
                let conv = FoldedConv::scaled(c, &a.slice(start, out).tiled(4), f);
                (FoldedBranch::Coarser(conv), out)
            }
            MuxBranch::Finer(c) => {
                let out = c.weight().size()[0] * 4;
                let s = a.slice(start, out);
                let kind = c.weight().kind();
                let branch = FoldedBranch::Finer {
                    conv: FoldedConv::plain(c, f),
                    scale: s.scale.to_kind(kind).view([1, out, 1, 1]),
                    shift: s.shift.to_kind(kind).view([1, out, 1, 1]),
                };
                (branch, out)
            }
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            FoldedBranch::Coarser(c) => channel_to_space(&c.forward(&space_to_channel(x))),
            FoldedBranch::Same(c) => c.forward(x),
            FoldedBranch::Finer { conv, scale, shift } => {
                space_to_channel(&conv.forward(&channel_to_space(x))) * scale + shift
            }
        }
    }
}

/// Squeeze-excitation on the pooled vector: two linear layers (the 1×1 convs' weights
/// reshaped) and a sigmoid gate broadcast over the map.
#[derive(Debug)]
struct FoldedSe {
    reduce_w: Tensor,
    reduce_b: Tensor,
    expand_w: Tensor,
    expand_b: Tensor,
    act: Act,
}

impl FoldedSe {
    fn new(se: &SqueezeExcite) -> Self {
        let linear = |c: &Conv| {
            let w = c.weight().detach();
            let (o, i) = (w.size()[0], w.size()[1]);
            let b = match &c.inner.bs {
                Some(b) => b.detach(),
                None => Tensor::zeros([o], (w.kind(), w.device())),
            };
            (w.reshape([o, i]), b)
        };
        let (reduce_w, reduce_b) = linear(&se.conv_reduce);
        let (expand_w, expand_b) = linear(&se.conv_expand);
        FoldedSe {
            reduce_w,
            reduce_b,
            expand_w,
            expand_b,
            act: se.act,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let c = x.size()[1];
        let s = x.mean_dim([2i64, 3].as_slice(), false, x.kind());
        let s = act(self.act, &s.linear(&self.reduce_w, Some(&self.reduce_b)));
        let gate = s.linear(&self.expand_w, Some(&self.expand_b)).sigmoid();
        x * gate.view([-1, c, 1, 1])
    }
}

fn folded_se(se: &Option<SqueezeExcite>) -> Option<FoldedSe> {
    se.as_ref().map(FoldedSe::new)
}

/// The body shared by the inverted residual (`ir`) and the MUX block (`sp`): conv_pw → act
/// → conv_dw → act → se → conv_pwl, BatchNorms folded, plus the input when the block has a
/// residual.
#[derive(Debug)]
struct FoldedInverted {
    conv_pw: FoldedConv,
    conv_dw: FoldedSpatial,
    se: Option<FoldedSe>,
    conv_pwl: FoldedConv,
    residual: bool,
    act: Act,
}

/// Folds the body of an `InvertedResidual` or a `MuxInvertedResidual` (same field names).
macro_rules! fold_inverted {
    ($b:expr, $f:expr) => {
        FoldedInverted {
            conv_pw: FoldedConv::scaled(&$b.conv_pw, &Affine::of(&$b.bn1), $f),
            conv_dw: FoldedSpatial::new(&$b.conv_dw, &$b.bn2, $f),
            se: folded_se(&$b.se),
            conv_pwl: FoldedConv::scaled(&$b.conv_pwl, &Affine::of(&$b.bn3), $f),
            residual: $b.plan.has_residual(),
            act: $b.plan.act,
        }
    };
}

impl FoldedInverted {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut y = act(self.act, &self.conv_pw.forward(x));
        y = act(self.act, &self.conv_dw.forward(&y));
        if let Some(se) = &self.se {
            y = se.forward(&y);
        }
        y = self.conv_pwl.forward(&y);
        if self.residual {
            y += x;
        }
        y
    }
}

/// The three block types of [`Block`], folded.
#[derive(Debug)]
enum FoldedBlock {
    Ds {
        conv_dw: FoldedSpatial,
        se: Option<FoldedSe>,
        conv_pw: FoldedConv,
        pw_act: bool,
        residual: bool,
        act: Act,
    },
    Ir(FoldedInverted),
    /// The inverted residual runs on the first `split` channels; the rest pass, and the
    /// two halves are concatenated and shuffled.
    Sp {
        body: FoldedInverted,
        split: i64,
        shuffle_groups: i64,
    },
}

impl FoldedBlock {
    fn new(b: &Block, f: MemoryFormat) -> Self {
        match b {
            Block::Ds(b) => FoldedBlock::Ds {
                conv_dw: FoldedSpatial::new(&b.conv_dw, &b.bn1, f),
                se: folded_se(&b.se),
                conv_pw: FoldedConv::scaled(&b.conv_pw, &Affine::of(&b.bn2), f),
                pw_act: matches!(b.plan.args.block_type, BlockType::Ds { pw_act: true }),
                residual: b.plan.has_residual(),
                act: b.plan.act,
            },
            Block::Ir(b) => FoldedBlock::Ir(fold_inverted!(b, f)),
            Block::Sp(b) => FoldedBlock::Sp {
                body: fold_inverted!(b, f),
                split: b.plan.split_chs(),
                shuffle_groups: b.plan.args.shuffle_groups,
            },
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            FoldedBlock::Ds {
                conv_dw,
                se,
                conv_pw,
                pw_act,
                residual,
                act: a,
            } => {
                let mut y = act(*a, &conv_dw.forward(x));
                if let Some(se) = se {
                    y = se.forward(&y);
                }
                y = conv_pw.forward(&y);
                if *pw_act {
                    y = act(*a, &y);
                }
                if *residual {
                    y += x;
                }
                y
            }
            FoldedBlock::Ir(body) => body.forward(x),
            FoldedBlock::Sp {
                body,
                split,
                shuffle_groups,
            } => {
                let c_all = x.size()[1];
                let processed = x.narrow(1, 0, *split);
                let passed = x.narrow(1, *split, c_all - split);
                cat_shuffle(&body.forward(&processed), &passed, *shuffle_groups)
            }
        }
    }
}

/// MUXNet folded for inference.
#[derive(Debug)]
pub struct FoldedMuxNet {
    stem: FoldedConv,
    blocks: Vec<Vec<FoldedBlock>>,
    head: FoldedConv,
    classifier_w: Tensor,
    classifier_b: Option<Tensor>,
    act: Act,
}

impl FoldedMuxNet {
    fn new(m: &MuxNet, f: MemoryFormat) -> Self {
        FoldedMuxNet {
            stem: FoldedConv::scaled(&m.conv_stem, &Affine::of(&m.bn1), f),
            blocks: m
                .blocks
                .iter()
                .map(|stage| stage.iter().map(|b| FoldedBlock::new(b, f)).collect())
                .collect(),
            head: FoldedConv::scaled(&m.conv_head, &Affine::of(&m.bn2), f),
            classifier_w: m.classifier.ws.detach(),
            classifier_b: m.classifier.bs.as_ref().map(Tensor::detach),
            act: m.act,
        }
    }

    /// The stem's output, each stage's output and the head's feature map (the stages of
    /// the reference's golden files), for parity checks.
    pub fn stages(&self, x: &Tensor) -> Vec<Tensor> {
        let mut y = act(self.act, &self.stem.forward(x));
        let mut out = vec![y.shallow_clone()];
        for stage in &self.blocks {
            for b in stage {
                y = b.forward(&y);
            }
            out.push(y.shallow_clone());
        }
        out.push(act(self.act, &self.head.forward(&y)));
        out
    }

    fn feature_map(&self, x: &Tensor) -> Tensor {
        let mut y = act(self.act, &self.stem.forward(x));
        for b in self.blocks.iter().flatten() {
            y = b.forward(&y);
        }
        act(self.act, &self.head.forward(&y))
    }
}

/// DenseNet-121 folded for inference: `norm0` into `conv0` and each dense layer's `norm2`
/// into its `conv1`. The BatchNorms that precede a convolution (`norm1`, the transitions'
/// `norm`, `norm5`) come before a ReLU, so they cannot fold and run in eval mode.
#[derive(Debug)]
pub struct FoldedDenseNet {
    conv0: FoldedConv,
    blocks: Vec<Vec<FoldedDenseLayer>>,
    transitions: Vec<(EvalBn, FoldedConv)>,
    norm5: EvalBn,
    classifier_w: Tensor,
    classifier_b: Option<Tensor>,
}

#[derive(Debug)]
struct FoldedDenseLayer {
    norm1: EvalBn,
    conv1: FoldedConv,
    conv2: FoldedConv,
}

/// A BatchNorm's eval-mode tensors (detached), for the ones that cannot fold.
#[derive(Debug)]
struct EvalBn {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    mean: Tensor,
    var: Tensor,
}

impl EvalBn {
    fn of(bn: &nn::BatchNorm) -> Self {
        EvalBn {
            weight: bn.ws.as_ref().map(Tensor::detach),
            bias: bn.bs.as_ref().map(Tensor::detach),
            mean: bn.running_mean.detach(),
            var: bn.running_var.detach(),
        }
    }

    /// BatchNorm in eval mode followed by ReLU.
    fn relu(&self, x: &Tensor) -> Tensor {
        x.batch_norm(
            self.weight.as_ref(),
            self.bias.as_ref(),
            Some(&self.mean),
            Some(&self.var),
            false,
            0.0,
            BN_EPS,
            false,
        )
        .relu_()
    }
}

impl FoldedDenseNet {
    fn new(d: &DenseNet121, f: MemoryFormat) -> Self {
        FoldedDenseNet {
            conv0: FoldedConv::scaled(&d.conv0, &Affine::of(&d.norm0), f),
            blocks: d
                .blocks
                .iter()
                .map(|block| {
                    block
                        .iter()
                        .map(|l| FoldedDenseLayer {
                            norm1: EvalBn::of(&l.norm1),
                            conv1: FoldedConv::scaled(&l.conv1, &Affine::of(&l.norm2), f),
                            conv2: FoldedConv::plain(&l.conv2, f),
                        })
                        .collect()
                })
                .collect(),
            transitions: d
                .transitions
                .iter()
                .map(|t| (EvalBn::of(&t.norm), FoldedConv::plain(&t.conv, f)))
                .collect(),
            norm5: EvalBn::of(&d.norm5),
            classifier_w: d.classifier.ws.detach(),
            classifier_b: d.classifier.bs.as_ref().map(Tensor::detach),
        }
    }

    fn feature_map(&self, x: &Tensor) -> Tensor {
        let mut y = stem_pool(&self.conv0.forward(x).relu_());
        for (i, block) in self.blocks.iter().enumerate() {
            for l in block {
                let z = l.conv1.forward(&l.norm1.relu(&y)).relu_();
                let z = l.conv2.forward(&z);
                y = Tensor::cat(&[&y, &z], 1);
            }
            if let Some((norm, conv)) = self.transitions.get(i) {
                y = transition_pool(&conv.forward(&norm.relu(&y)));
            }
        }
        self.norm5.relu(&y)
    }
}

/// The inference model of either architecture.
#[derive(Debug)]
pub enum FoldedNetwork {
    MuxNet(Box<FoldedMuxNet>),
    DenseNet121(Box<FoldedDenseNet>),
}

impl FoldedNetwork {
    /// Folds `net` (its weights loaded) for inference in memory format `f`.
    pub fn new(net: &Network, f: MemoryFormat) -> Self {
        tch::no_grad(|| match net {
            Network::MuxNet(m) => FoldedNetwork::MuxNet(Box::new(FoldedMuxNet::new(m, f))),
            Network::DenseNet121(d) => {
                FoldedNetwork::DenseNet121(Box::new(FoldedDenseNet::new(d, f)))
            }
        })
    }

    pub fn memory_format(&self) -> MemoryFormat {
        let w = match self {
            FoldedNetwork::MuxNet(m) => &m.stem.w,
            FoldedNetwork::DenseNet121(d) => &d.conv0.w,
        };
        super::layout::format_of(w)
    }

    /// The last feature map before global pooling, as [`Network::feature_map_t`] in eval
    /// mode. The input is brought to the weights' memory format first.
    pub fn feature_map(&self, x: &Tensor) -> Tensor {
        let x = to_format(x, self.memory_format());
        match self {
            FoldedNetwork::MuxNet(m) => m.feature_map(&x),
            FoldedNetwork::DenseNet121(d) => d.feature_map(&x),
        }
    }

    /// Global average pooling and the classifier (dropout is off in eval).
    pub fn logits_from_map(&self, map: &Tensor) -> Tensor {
        let (w, b) = match self {
            FoldedNetwork::MuxNet(m) => (&m.classifier_w, &m.classifier_b),
            FoldedNetwork::DenseNet121(d) => (&d.classifier_w, &d.classifier_b),
        };
        map.mean_dim([2i64, 3].as_slice(), false, map.kind())
            .linear(w, b.as_ref())
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.logits_from_map(&self.feature_map(x))
    }

    /// Pooled features (N, head channels).
    pub fn features(&self, x: &Tensor) -> Tensor {
        let map = self.feature_map(x);
        map.mean_dim([2i64, 3].as_slice(), false, map.kind())
    }
}
