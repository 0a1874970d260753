//! The three MUXNet block types, one struct each, with the reference's module names.

use tch::nn::{self, Module};
use tch::Tensor;

use super::layers::{act, bn, bn_t, conv, drop_path, Conv, SpatialConv, SqueezeExcite};
use super::layout::is_channels_last;
use super::spec::{BlockPlan, BlockType};

/// Depthwise-separable block (`ds`/`dsa`): conv_dw → bn1 → act → se → conv_pw → bn2
/// [→ act for `dsa`] (+ input when stride 1 and widths match).
#[derive(Debug)]
pub struct DepthwiseSeparable {
    pub(super) conv_dw: SpatialConv,
    pub(super) bn1: nn::BatchNorm,
    pub(super) se: Option<SqueezeExcite>,
    pub(super) conv_pw: Conv,
    pub(super) bn2: nn::BatchNorm,
    pub(super) plan: BlockPlan,
    /// Stochastic depth on the residual branch in training (see [`Block::set_drop_path`]).
    pub(super) drop_path: f64,
}

/// Inverted residual (`ir`): conv_pw → bn1 → act → conv_dw (mixed kernels allowed) → bn2 →
/// act → se → conv_pwl → bn3 (+ input when stride 1 and widths match).
#[derive(Debug)]
pub struct InvertedResidual {
    pub(super) conv_pw: Conv,
    pub(super) bn1: nn::BatchNorm,
    pub(super) conv_dw: SpatialConv,
    pub(super) bn2: nn::BatchNorm,
    pub(super) se: Option<SqueezeExcite>,
    pub(super) conv_pwl: Conv,
    pub(super) bn3: nn::BatchNorm,
    pub(super) plan: BlockPlan,
    /// Stochastic depth on the residual branch in training (see [`Block::set_drop_path`]).
    pub(super) drop_path: f64,
}

/// Channel-multiplexed inverted residual (`sp`, the MUX block; Lu et al. 2020, Sec. 3.2):
/// split the channels, run an inverted residual on the first part only (its spatial conv is
/// grouped with `dwg` channels per group, or a MUXConv layer when the block has scales),
/// concatenate the untouched part back and shuffle the channels so the next block processes
/// a mix of both halves.
#[derive(Debug)]
pub struct MuxInvertedResidual {
    pub(super) conv_pw: Conv,
    pub(super) bn1: nn::BatchNorm,
    pub(super) conv_dw: SpatialConv,
    pub(super) bn2: nn::BatchNorm,
    pub(super) se: Option<SqueezeExcite>,
    pub(super) conv_pwl: Conv,
    pub(super) bn3: nn::BatchNorm,
    pub(super) plan: BlockPlan,
}

#[derive(Debug)]
pub enum Block {
    Ds(DepthwiseSeparable),
    Ir(InvertedResidual),
    Sp(MuxInvertedResidual),
}

fn se_for(p: &nn::Path, plan: &BlockPlan) -> Option<SqueezeExcite> {
    plan.se_chs()
        .map(|r| SqueezeExcite::new(p / "se", plan.mid_chs(), r, plan.act))
}

impl Block {
    pub fn new(p: nn::Path, plan: &BlockPlan) -> Self {
        let a = &plan.args;
        let scales = a.scales.as_deref();
        match a.block_type {
            BlockType::Ds { .. } => Block::Ds(DepthwiseSeparable {
                conv_dw: SpatialConv::new(
                    &p / "conv_dw",
                    plan.in_chs,
                    plan.in_chs,
                    &a.kernels,
                    plan.stride,
                    None,
                    scales,
                ),
                bn1: bn(&p / "bn1", plan.in_chs),
                se: se_for(&p, plan),
                conv_pw: conv(&p / "conv_pw", plan.in_chs, plan.out_chs, 1, 1, 1, false),
                bn2: bn(&p / "bn2", plan.out_chs),
                plan: plan.clone(),
                drop_path: 0.0,
            }),
            BlockType::Ir => {
                let mid = plan.mid_chs();
                Block::Ir(InvertedResidual {
                    conv_pw: conv(&p / "conv_pw", plan.in_chs, mid, 1, 1, 1, false),
                    bn1: bn(&p / "bn1", mid),
                    conv_dw: SpatialConv::new(
                        &p / "conv_dw",
                        mid,
                        mid,
                        &a.kernels,
                        plan.stride,
                        None,
                        scales,
                    ),
                    bn2: bn(&p / "bn2", mid),
                    se: se_for(&p, plan),
                    conv_pwl: conv(&p / "conv_pwl", mid, plan.out_chs, 1, 1, 1, false),
                    bn3: bn(&p / "bn3", plan.out_chs),
                    plan: plan.clone(),
                    drop_path: 0.0,
                })
            }
            BlockType::Sp => {
                let c = plan.split_chs();
                let mid = plan.mid_chs();
                let groups = Some(mid / a.dw_group_factor);
                Block::Sp(MuxInvertedResidual {
                    conv_pw: conv(&p / "conv_pw", c, mid, 1, 1, 1, false),
                    bn1: bn(&p / "bn1", mid),
                    conv_dw: SpatialConv::new(
                        &p / "conv_dw",
                        mid,
                        mid,
                        &a.kernels,
                        plan.stride,
                        groups,
                        scales,
                    ),
                    bn2: bn(&p / "bn2", mid),
                    se: se_for(&p, plan),
                    conv_pwl: conv(&p / "conv_pwl", mid, c, 1, 1, 1, false),
                    bn3: bn(&p / "bn3", c),
                    plan: plan.clone(),
                })
            }
        }
    }

    /// Sets the stochastic-depth rate of the block's residual branch. As in the reference,
    /// only `ds` and `ir` blocks apply it (and only where they have a residual); `sp` blocks
    /// ignore it.
    pub fn set_drop_path(&mut self, rate: f64) {
        match self {
            Block::Ds(b) => b.drop_path = rate,
            Block::Ir(b) => b.drop_path = rate,
            Block::Sp(_) => {}
        }
    }

    /// The block's type as its block string spells it (`ds`, `ir`, `sp`).
    pub fn kind(&self) -> &'static str {
        match self {
            Block::Ds(_) => "ds",
            Block::Ir(_) => "ir",
            Block::Sp(_) => "sp",
        }
    }

    pub fn plan(&self) -> &BlockPlan {
        match self {
            Block::Ds(b) => &b.plan,
            Block::Ir(b) => &b.plan,
            Block::Sp(b) => &b.plan,
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Block::Ds(b) => b.forward_t(x, train),
            Block::Ir(b) => b.forward_t(x, train),
            Block::Sp(b) => b.forward_t(x, train),
        }
    }
}

impl DepthwiseSeparable {
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let a = self.plan.act;
        let mut y = act(a, &bn_t(&self.bn1, &self.conv_dw.forward(x), train));
        if let Some(se) = &self.se {
            y = se.forward(&y);
        }
        y = bn_t(&self.bn2, &self.conv_pw.forward(&y), train);
        if matches!(self.plan.args.block_type, BlockType::Ds { pw_act: true }) {
            y = act(a, &y);
        }
        if self.plan.has_residual() {
            y = drop_path(&y, self.drop_path, train) + x;
        }
        y
    }
}

impl InvertedResidual {
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let a = self.plan.act;
        let mut y = act(a, &bn_t(&self.bn1, &self.conv_pw.forward(x), train));
        y = act(a, &bn_t(&self.bn2, &self.conv_dw.forward(&y), train));
        if let Some(se) = &self.se {
            y = se.forward(&y);
        }
        y = bn_t(&self.bn3, &self.conv_pwl.forward(&y), train);
        if self.plan.has_residual() {
            y = drop_path(&y, self.drop_path, train) + x;
        }
        y
    }
}

impl MuxInvertedResidual {
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let a = self.plan.act;
        let c_all = self.plan.in_chs;
        let c = self.plan.split_chs();
        let processed = x.narrow(1, 0, c);
        let passed = x.narrow(1, c, c_all - c);
        let mut y = act(
            a,
            &bn_t(&self.bn1, &self.conv_pw.forward(&processed), train),
        );
        y = act(a, &bn_t(&self.bn2, &self.conv_dw.forward(&y), train));
        if let Some(se) = &self.se {
            y = se.forward(&y);
        }
        y = bn_t(&self.bn3, &self.conv_pwl.forward(&y), train);
        if self.plan.has_residual() {
            y += &processed;
        }
        cat_shuffle(&y, &passed, self.plan.args.shuffle_groups)
    }
}

/// (N, g, C/g, H, W) → swap the group axes → (N, C, H, W): with g = 2 the order becomes
/// A0, B0, A1, B1, ... The batch axis is left free (-1) so a traced export takes any N.
/// Keeps the input's memory format (a channels-last input is shuffled in its NHWC view).
pub fn channel_shuffle(x: &Tensor, groups: i64) -> Tensor {
    let (_, c, h, w) = x.size4().expect("NCHW input");
    if is_channels_last(x) {
        x.permute([0, 2, 3, 1])
            .view([-1, h, w, groups, c / groups])
            .transpose(3, 4)
            .contiguous()
            .view([-1, h, w, c])
            .permute([0, 3, 1, 2])
    } else {
        x.view([-1, groups, c / groups, h, w])
            .transpose(1, 2)
            .contiguous()
            .view([-1, c, h, w])
    }
}

/// `channel_shuffle(cat([a, b]), groups)` in one copy when the shuffle interleaves the two
/// equal halves (groups 2, the MUX block's case): stacking along a new axis just inside the
/// channels writes A0, B0, A1, B1, ... directly. Otherwise a concatenation, then the shuffle.
pub fn cat_shuffle(a: &Tensor, b: &Tensor, groups: i64) -> Tensor {
    let (_, ca, h, w) = a.size4().expect("NCHW input");
    if groups != 2 || b.size()[1] != ca {
        return channel_shuffle(&Tensor::cat(&[a, b], 1), groups);
    }
    if is_channels_last(a) {
        let (a, b) = (a.permute([0, 2, 3, 1]), b.permute([0, 2, 3, 1]));
        Tensor::stack(&[a, b], 4)
            .view([-1, h, w, 2 * ca])
            .permute([0, 3, 1, 2])
    } else {
        Tensor::stack(&[a, b], 2).view([-1, 2 * ca, h, w])
    }
}
