//! Layers of MUXNet below the block level: convs with the reference's initialisation,
//! BatchNorm, activations, squeeze-excitation, MixNet's mixed-kernel conv and the MUXConv
//! layer (spatial multiplexing, Lu, Deb, Boddeti, CVPR 2020, Sec. 3.1).

use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use super::layout::is_channels_last;
use super::spec::{split_channels, Act};

/// The reference's padding rule (`_get_padding`): ((stride - 1) + (k - 1)) / 2.
fn padding(k: i64, stride: i64) -> i64 {
    ((stride - 1) + (k - 1)) / 2
}

/// A 2-D convolution with its geometry kept beside tch's module (whose config is private),
/// so that the inference model can fold BatchNorm into it ([`super::folded`]).
#[derive(Debug)]
pub struct Conv {
    pub inner: nn::Conv2D,
    pub stride: i64,
    pub padding: i64,
    pub groups: i64,
}

impl Conv {
    /// A conv with tch's module under `p` (keys `weight`, `bias`).
    pub fn new(p: nn::Path, cin: i64, cout: i64, k: i64, c: nn::ConvConfig) -> Self {
        let (stride, padding, groups) = (c.stride, c.padding, c.groups);
        Conv {
            inner: nn::conv2d(p, cin, cout, k, c),
            stride,
            padding,
            groups,
        }
    }

    pub fn weight(&self) -> &Tensor {
        &self.inner.ws
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.inner.forward(x)
    }
}

/// A conv initialised as the reference's `_initialize_weight_goog`: weights from
/// N(0, sqrt(2 / (kh * kw * out_channels))) (fan-out, not divided by groups), bias 0.
pub fn conv(
    p: nn::Path,
    cin: i64,
    cout: i64,
    k: i64,
    stride: i64,
    groups: i64,
    bias: bool,
) -> Conv {
    let stdev = (2.0 / (k * k * cout) as f64).sqrt();
    Conv::new(
        p,
        cin,
        cout,
        k,
        nn::ConvConfig {
            stride,
            padding: padding(k, stride),
            groups,
            bias,
            ws_init: nn::Init::Randn { mean: 0.0, stdev },
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        },
    )
}

/// BatchNorm's ε, PyTorch's default, in every BatchNorm of both architectures.
pub const BN_EPS: f64 = 1e-5;

/// PyTorch's BatchNorm2d defaults (eps 1e-5, momentum 0.1), gamma 1 and beta 0 as the
/// reference initialises them (tch's own default draws gamma from U(0, 1)).
pub fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        c,
        nn::BatchNormConfig {
            eps: BN_EPS,
            momentum: 0.1,
            ws_init: nn::Init::Const(1.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        },
    )
}

pub fn act(a: Act, x: &Tensor) -> Tensor {
    match a {
        Act::Relu => x.relu(),
        Act::Relu6 => x.clamp(0.0, 6.0),
        // swish(x) = x * sigmoid(x): the reference's custom autograd function computes exactly silu.
        Act::Swish => x.silu(),
        Act::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
    }
}

/// Squeeze-and-excitation with 1x1 convs (with bias), the block's activation in between and a
/// sigmoid gate. Keys: `conv_reduce`, `conv_expand`.
#[derive(Debug)]
pub struct SqueezeExcite {
    pub(super) conv_reduce: Conv,
    pub(super) conv_expand: Conv,
    pub(super) act: Act,
}

impl SqueezeExcite {
    pub fn new(p: nn::Path, chs: i64, reduced: i64, act: Act) -> Self {
        SqueezeExcite {
            conv_reduce: conv(&p / "conv_reduce", chs, reduced, 1, 1, 1, true),
            conv_expand: conv(&p / "conv_expand", reduced, chs, 1, 1, 1, true),
            act,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.mean_dim([2i64, 3].as_slice(), true, x.kind());
        let s = act(self.act, &self.conv_reduce.forward(&s));
        x * self.conv_expand.forward(&s).sigmoid()
    }
}

/// Space-to-channel with factor 2 in the reference's channel order: output channel
/// `(i*2 + j)*C + c` holds input pixel `(2h+i, 2w+j)` of channel `c` (offset-major; not
/// `pixel_unshuffle`'s `c*4 + i*2 + j`). The output keeps the input's memory format: a
/// channels-last input is rearranged in its NHWC view, so the copy lands in NHWC order.
pub fn space_to_channel(x: &Tensor) -> Tensor {
    let (_, c, h, w) = x.size4().expect("NCHW input");
    if is_channels_last(x) {
        x.permute([0, 2, 3, 1])
            .view([-1, h / 2, 2, w / 2, 2, c])
            .permute([0, 1, 3, 2, 4, 5])
            .contiguous()
            .view([-1, h / 2, w / 2, c * 4])
            .permute([0, 3, 1, 2])
    } else {
        x.view([-1, c, h / 2, 2, w / 2, 2])
            .permute([0, 3, 5, 1, 2, 4])
            .contiguous()
            .view([-1, c * 4, h / 2, w / 2])
    }
}

/// The exact inverse of [`space_to_channel`]: input channel `(i*2 + j)*C' + c` goes to pixel
/// `(2h+i, 2w+j)` of output channel `c`. Keeps the input's memory format.
pub fn channel_to_space(x: &Tensor) -> Tensor {
    let (_, c, h, w) = x.size4().expect("NCHW input");
    if is_channels_last(x) {
        x.permute([0, 2, 3, 1])
            .view([-1, h, w, 2, 2, c / 4])
            .permute([0, 1, 3, 2, 4, 5])
            .contiguous()
            .view([-1, h * 2, w * 2, c / 4])
            .permute([0, 3, 1, 2])
    } else {
        x.view([-1, 2, 2, c / 4, h, w])
            .permute([0, 3, 4, 1, 5, 2])
            .contiguous()
            .view([-1, c / 4, h * 2, w * 2])
    }
}

/// Splits the channels into `splits`, applies one part each, concatenates the results; a
/// single part runs on `x` whole (no split, no copy).
pub(super) fn split_apply_cat<P>(
    x: &Tensor,
    splits: &[i64],
    parts: &[P],
    f: impl Fn(&P, &Tensor) -> Tensor,
) -> Tensor {
    if let [part] = parts {
        return f(part, x);
    }
    let chunks = x.split_with_sizes(splits, 1);
    let outs: Vec<Tensor> = chunks.iter().zip(parts).map(|(xi, p)| f(p, xi)).collect();
    Tensor::cat(&outs, 1)
}

/// One branch of a MUXConv layer, by the sign of its scale.
#[derive(Debug)]
pub(super) enum MuxBranch {
    /// scale < 0: space-to-channel -> depthwise conv -> channel-to-space.
    Coarser(Conv),
    /// scale = 0: a plain depthwise conv.
    Same(Conv),
    /// scale > 0: channel-to-space -> depthwise conv -> space-to-channel.
    Finer(Conv),
}

/// Spatial multiplexing (the MUXConv layer): the channels are split into one group per scale
/// (first group takes the remainder) and each group is seen at a coarser, the same or a finer
/// resolution by rearranging pixels and channels, with a depthwise conv in between.
/// Keys: `convs.<i>.weight` for scale 0, `convs.<i>.1.weight` for a nonzero scale (the conv
/// sits between the two rearrangements in the reference's Sequential).
#[derive(Debug)]
pub struct MuxConv {
    pub(super) branches: Vec<MuxBranch>,
    pub(super) splits: Vec<i64>,
}

impl MuxConv {
    pub fn new(
        p: nn::Path,
        cin: i64,
        cout: i64,
        kernels: &[i64],
        stride: i64,
        scales: &[i64],
    ) -> Self {
        let n = scales.len();
        let in_splits = split_channels(cin, n);
        let out_splits = split_channels(cout, n);
        let convs = &p / "convs";
        let branches = (0..n)
            .map(|i| {
                let k = if kernels.len() == 1 {
                    kernels[0]
                } else {
                    kernels[i]
                };
                let (ci, co) = (in_splits[i], out_splits[i]);
                let bp = &convs / i;
                match scales[i].signum() {
                    -1 => {
                        MuxBranch::Coarser(conv(&bp / 1, ci * 4, co * 4, k, stride, ci * 4, false))
                    }
                    0 => MuxBranch::Same(conv(bp, ci, co, k, stride, co, false)),
                    _ => MuxBranch::Finer(conv(&bp / 1, ci / 4, co / 4, k, stride, ci / 4, false)),
                }
            })
            .collect();
        MuxConv {
            branches,
            splits: in_splits,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        split_apply_cat(x, &self.splits, &self.branches, |b, xi| match b {
            MuxBranch::Coarser(c) => channel_to_space(&c.forward(&space_to_channel(xi))),
            MuxBranch::Same(c) => c.forward(xi),
            MuxBranch::Finer(c) => space_to_channel(&c.forward(&channel_to_space(xi))),
        })
    }
}

/// MixNet's mixed-kernel conv: channel groups (remainder in the first) each with their own
/// kernel size. Keys `<j>.weight`.
#[derive(Debug)]
pub struct MixedConv {
    pub(super) convs: Vec<Conv>,
    pub(super) splits: Vec<i64>,
}

impl MixedConv {
    /// `groups` is the total group count to spread over the kernels; `None` means depthwise.
    pub fn new(
        p: nn::Path,
        cin: i64,
        cout: i64,
        kernels: &[i64],
        stride: i64,
        groups: Option<i64>,
    ) -> Self {
        let n = kernels.len();
        let in_splits = split_channels(cin, n);
        let out_splits = split_channels(cout, n);
        let conv_groups = match groups {
            None => out_splits.clone(),
            Some(g) if g > 1 => split_channels(g, n),
            Some(_) => vec![1; n],
        };
        let convs = (0..n)
            .map(|j| {
                conv(
                    &p / j,
                    in_splits[j],
                    out_splits[j],
                    kernels[j],
                    stride,
                    conv_groups[j],
                    false,
                )
            })
            .collect();
        MixedConv {
            convs,
            splits: in_splits,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        split_apply_cat(x, &self.splits, &self.convs, |c, xi| c.forward(xi))
    }
}

/// The spatial (kxk) conv of a block: one conv, a mixed-kernel conv or a MUXConv layer.
#[derive(Debug)]
pub enum SpatialConv {
    Single(Conv),
    Mixed(MixedConv),
    Mux(MuxConv),
}

impl SpatialConv {
    /// Chooses like the reference's `select_conv2d`: scales → MUXConv; several kernels →
    /// mixed conv; otherwise one conv with `groups` (None: depthwise).
    pub fn new(
        p: nn::Path,
        cin: i64,
        cout: i64,
        kernels: &[i64],
        stride: i64,
        groups: Option<i64>,
        scales: Option<&[i64]>,
    ) -> Self {
        if let Some(sc) = scales {
            SpatialConv::Mux(MuxConv::new(p, cin, cout, kernels, stride, sc))
        } else if kernels.len() > 1 {
            SpatialConv::Mixed(MixedConv::new(p, cin, cout, kernels, stride, groups))
        } else {
            SpatialConv::Single(conv(
                p,
                cin,
                cout,
                kernels[0],
                stride,
                groups.unwrap_or(cout),
                false,
            ))
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            SpatialConv::Single(c) => c.forward(x),
            SpatialConv::Mixed(m) => m.forward(x),
            SpatialConv::Mux(m) => m.forward(x),
        }
    }
}

/// Applies BatchNorm in training or eval mode.
pub fn bn_t(b: &nn::BatchNorm, x: &Tensor, train: bool) -> Tensor {
    b.forward_t(x, train)
}

/// Stochastic depth on a residual branch (Huang et al. 2016; the reference's
/// `drop_connect`): in training each sample's branch is zeroed with probability `rate` and
/// the survivors are scaled by 1 / (1 - rate); in eval the branch is unchanged.
pub fn drop_path(x: &Tensor, rate: f64, train: bool) -> Tensor {
    if !train || rate <= 0.0 {
        return x.shallow_clone();
    }
    let keep = 1.0 - rate;
    let n = x.size()[0];
    let mask = Tensor::rand([n, 1, 1, 1], (x.kind(), x.device()))
        .g_add_scalar(keep)
        .floor();
    x / keep * mask
}
