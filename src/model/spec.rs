//! MUXNet architectures as data: the block-string grammar of the authors' code
//! (`human-analysis/MUXConv`, `muxnet.py`, commit eb63b14), the built-in `muxnet_m` and
//! `muxnet_l`, arch JSON files, and the expanded per-block plan that both the tch model and
//! the parameter/multiply-add counter are built from. Needs no libtorch.
//!
//! Grammar: `<type>_<opt>_<opt>...` with type `ds`, `dsa`, `ir` or `sp`; options `r` repeats,
//! `k` kernel (a dot-list such as `k3.5.7` means mixed kernels), `s` stride, `e` expansion,
//! `c` output channels, `se` squeeze-excitation ratio, `n` activation (`nre`, `nr6`, `nhs`,
//! `nsw`), `noskip`, and for `sp` blocks `sr` split ratio, `sg` shuffle groups, `dwg` channels
//! per group of the spatial conv and `sc` MUXConv scales (a dot-list; in string form only
//! 0 and positive scales can be written, as in the reference parser).

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::config::Arch;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("block string `{block}`: {message}")]
    Block { block: String, message: String },
    #[error("{}: {message}", path.display())]
    File {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("architecture: {0}")]
    Arch(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    Relu,
    Relu6,
    Swish,
    HardSwish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockType {
    /// Depthwise-separable; `pw_act` is true for `dsa` (activation after the pointwise conv).
    Ds { pw_act: bool },
    /// Inverted residual (MobileNetV2/MixNet style).
    Ir,
    /// Channel-multiplexed inverted residual (the MUX block).
    Sp,
}

/// One decoded block string (before channel/depth multipliers).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockArgs {
    pub block_type: BlockType,
    pub repeats: usize,
    pub kernels: Vec<i64>,
    pub stride: i64,
    pub exp_ratio: f64,
    pub out_chs: i64,
    pub se_ratio: Option<f64>,
    /// None: the model's default activation.
    pub act: Option<Act>,
    pub noskip: bool,
    pub split_ratio: f64,
    pub shuffle_groups: i64,
    pub dw_group_factor: i64,
    pub scales: Option<Vec<i64>>,
}

/// The block type a block string starts with (`ds`, `dsa`, `ir`, `sp`).
fn block_type(name: &str) -> Result<BlockType, String> {
    Ok(match name {
        "ds" => BlockType::Ds { pw_act: false },
        "dsa" => BlockType::Ds { pw_act: true },
        "ir" => BlockType::Ir,
        "sp" => BlockType::Sp,
        other => {
            return Err(format!(
                "unknown block type `{other}` (expected ds, dsa, ir or sp)"
            ))
        }
    })
}

/// An activation option (`nre`, `nr6`, `nhs`, `nsw`), without its `n`.
fn activation(a: &str, op: &str) -> Result<Act, String> {
    Ok(match a {
        "re" => Act::Relu,
        "r6" => Act::Relu6,
        "hs" => Act::HardSwish,
        "sw" => Act::Swish,
        _ => return Err(format!("unknown activation option `{op}`")),
    })
}

impl BlockArgs {
    /// A block of `block_type` before its options: the reference MuxInvertedResidual's
    /// defaults.
    fn defaults(block_type: BlockType) -> Self {
        BlockArgs {
            block_type,
            repeats: 0,
            kernels: vec![],
            stride: 0,
            exp_ratio: 1.0,
            out_chs: 0,
            se_ratio: None,
            act: None,
            noskip: matches!(block_type, BlockType::Ds { pw_act: true }),
            split_ratio: 0.75,
            shuffle_groups: 2,
            dw_group_factor: 1,
            scales: None,
        }
    }

    /// Sets the option `key` (the letters before the value) to `value`, as written in `op`.
    fn set(&mut self, key: &str, value: &str, op: &str) -> Result<(), String> {
        let num = |v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("option `{op}`: `{v}` is not a finite number"))
        };
        let int = |v: &str| -> Result<i64, String> {
            v.parse::<i64>()
                .map_err(|_| format!("option `{op}`: `{v}` is not an integer"))
        };
        let list = |v: &str| -> Result<Vec<i64>, String> { v.split('.').map(int).collect() };
        match key {
            "r" => {
                self.repeats = int(value)?
                    .try_into()
                    .map_err(|_| "r must be positive".to_string())?
            }
            "k" => self.kernels = list(value)?,
            "s" => self.stride = int(value)?,
            "e" => self.exp_ratio = num(value)?,
            "c" => self.out_chs = int(value)?,
            "se" => self.se_ratio = Some(num(value)?),
            "sr" => self.split_ratio = num(value)?,
            "sg" => self.shuffle_groups = int(value)?,
            "dwg" => self.dw_group_factor = int(value)?,
            "sc" => self.scales = Some(list(value)?),
            _ => return Err(format!("unknown option `{key}` in `{op}`")),
        }
        Ok(())
    }

    /// What a decoded block must have: r, k, s and c (and e for ir/sp), positive; odd
    /// kernels; buildable ranges; at least two distinct MUXConv scales with one kernel or one
    /// per scale.
    fn check(&self, seen: &std::collections::HashSet<&str>) -> Result<(), String> {
        for what in ["r", "k", "s", "c"] {
            if !seen.contains(what) {
                return Err(format!("missing option `{what}`"));
            }
        }
        if matches!(self.block_type, BlockType::Ir | BlockType::Sp) && !seen.contains("e") {
            return Err("missing option `e` (expansion ratio)".into());
        }
        if self.repeats == 0 || self.stride < 1 || self.out_chs < 1 {
            return Err("r, s and c must be positive".into());
        }
        if self.kernels.iter().any(|k| *k < 1 || k % 2 == 0) {
            return Err("kernel sizes must be odd and positive".into());
        }
        check_ranges(self)?;
        if let Some(sc) = &self.scales {
            let mut distinct = sc.clone();
            distinct.sort();
            distinct.dedup();
            if distinct.len() < 2 {
                return Err("MUXConv needs at least two distinct scales".into());
            }
            if self.kernels.len() != 1 && self.kernels.len() != sc.len() {
                return Err("give one kernel, or one kernel per scale".into());
            }
        }
        Ok(())
    }
}

/// Decodes one block string, e.g. `sp_r2_k3_s1_e4_c24_se0.75_sr0.5_sg2_sc0.1_nre`.
pub fn decode_block(s: &str) -> Result<BlockArgs, SpecError> {
    let bad = |message: String| SpecError::Block {
        block: s.to_string(),
        message,
    };
    let mut ops = s.split('_');
    let mut args = BlockArgs::defaults(block_type(ops.next().unwrap_or("")).map_err(bad)?);
    let mut seen = std::collections::HashSet::new();
    for op in ops {
        if op == "noskip" {
            args.noskip = true;
            continue;
        }
        if let Some(a) = op.strip_prefix('n') {
            args.act = Some(activation(a, op).map_err(bad)?);
            continue;
        }
        // The key is everything before the first digit (as the reference's regex split).
        let cut = op
            .find(|c: char| c.is_ascii_digit())
            .ok_or_else(|| bad(format!("option `{op}` has no value")))?;
        let (key, value) = op.split_at(cut);
        if !seen.insert(key) {
            return Err(bad(format!(
                "option `{key}` is given twice (the second, `{op}`, would silently win)"
            )));
        }
        args.set(key, value, op).map_err(bad)?;
    }
    args.check(&seen).map_err(bad)?;
    Ok(args)
}

/// The ranges the network can be built with, checked when the block string is read: each
/// message names the option (the caller names the block).
fn check_ranges(a: &BlockArgs) -> Result<(), String> {
    if a.exp_ratio <= 0.0 {
        return Err(format!(
            "e{} must be positive (the expansion ratio)",
            a.exp_ratio
        ));
    }
    if let Some(se) = a.se_ratio {
        if !(0.0..=1.0).contains(&se) {
            return Err(format!(
                "se{se} must lie in [0, 1] (squeeze-excitation ratio)"
            ));
        }
    }
    if !(a.split_ratio > 0.0 && a.split_ratio < 1.0) {
        return Err(format!(
            "sr{} must lie strictly between 0 and 1 (the share of channels an `sp` block processes)",
            a.split_ratio
        ));
    }
    if a.shuffle_groups < 1 {
        return Err(format!(
            "sg{} must be at least 1 (shuffle groups)",
            a.shuffle_groups
        ));
    }
    if a.dw_group_factor < 1 {
        return Err(format!(
            "dwg{} must be at least 1 (channels per group)",
            a.dw_group_factor
        ));
    }
    if a.stride > 2 {
        return Err(format!("s{} must be 1 or 2 (MUXNet's strides)", a.stride));
    }
    Ok(())
}

/// An architecture in the form of `../shared/fixtures/muxnet/*.arch.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// Stages, each a list of block strings.
    pub arch_def: Vec<Vec<String>>,
    pub stem_size: i64,
    /// Head width before the channel multiplier (see [`ArchSpec::head_channels`]).
    pub num_features: i64,
    #[serde(default = "one")]
    pub channel_multiplier: f64,
    #[serde(default = "one")]
    pub depth_multiplier: f64,
    /// Classes of the head the file was made with; `--num-classes` may override it.
    #[serde(default)]
    pub num_classes: Option<i64>,
    #[serde(default)]
    pub input_resolution: Option<i64>,
    #[serde(default = "swish")]
    pub act_default: Act,
}

fn one() -> f64 {
    1.0
}
fn swish() -> Act {
    Act::Swish
}

fn stages(defs: &[&str]) -> Vec<Vec<String>> {
    defs.iter().map(|s| vec![s.to_string()]).collect()
}

/// DenseNet's layout constants (Huang et al. 2017, Table 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenseNetLayout {
    pub growth: i64,
    /// The bottleneck 1x1 conv has `bn_size * growth` channels.
    pub bn_size: i64,
    pub init_features: i64,
    /// Dense layers per block.
    pub blocks: [i64; 4],
}

/// DenseNet-121, CheXNet's backbone.
pub const DENSENET121: DenseNetLayout = DenseNetLayout {
    growth: 32,
    bn_size: 4,
    init_features: 64,
    blocks: [6, 12, 24, 16],
};

impl ArchSpec {
    /// MUXNet-m as the authors' `_gen_muxnet_m` builds it: 18 blocks, stem 24, head 1280.
    pub fn muxnet_m() -> Self {
        ArchSpec {
            name: Some("muxnet_m".into()),
            arch_def: stages(&[
                "ds_r1_k3_s1_e1_c24_se0.25_nre",
                "ir_r1_k3_s2_e4_c24_se0.75_nre",
                "sp_r1_k3_s1_e4_c24_se0.75_sr0.5_sg2_dwg2_nre",
                "sp_r1_k3_s1_e4_c24_se0.75_sr0.5_sg2_dwg2_nre",
                "ir_r1_k3.5.7_s2_e4_c40_se0.75",
                "sp_r1_k3_s1_e6_c40_se0.75_sr0.5_sg2_dwg2",
                "sp_r1_k3_s1_e6_c40_se0.75_sr0.5_sg2_dwg2",
                "ir_r1_k3.5.7.9_s2_e4_c80_se0.75",
                "sp_r1_k5_s1_e6_c80_se0.75_sr0.5_sg2_dwg2",
                "sp_r1_k5_s1_e6_c80_se0.75_sr0.5_sg2_dwg2",
                "ir_r1_k5_s1_e6_c112_se0.75",
                "sp_r1_k5_s1_e6_c112_se0.75_sr0.5_sg2_dwg2",
                "sp_r1_k5_s1_e6_c112_se0.75_sr0.5_sg2_dwg2",
                "ir_r1_k3.5.7.9.11_s2_e4_c160_se0.75",
                "sp_r1_k5_s1_e6_c160_se0.75_sr0.5_sg2_dwg2",
                "sp_r1_k5_s1_e6_c160_se0.75_sr0.5_sg2_dwg2",
                "sp_r1_k5_s1_e6_c160_se0.75_sr0.5_sg2_dwg2",
                "ir_r1_k3_s1_e6_c200_se0.75",
            ]),
            stem_size: 24,
            num_features: 1280,
            channel_multiplier: 1.0,
            depth_multiplier: 1.0,
            num_classes: None,
            input_resolution: Some(224),
            act_default: Act::Swish,
        }
    }

    /// MUXNet-l as the authors' `_gen_muxnet_l` builds it: 21 blocks, stem 24, head 1536.
    pub fn muxnet_l() -> Self {
        let mut defs = vec![
            "ds_r1_k3_s1_e1_c24_se0.25_nre",
            "ir_r1_k3_s2_e6_c24_se0.75_nre",
        ];
        defs.extend(["sp_r1_k5_s1_e6_c24_se0.75_sr0.5_sg2_dwg2_nre"; 2]);
        defs.push("ir_r1_k3.5.7_s2_e6_c40_se0.75");
        defs.extend(["sp_r1_k5_s1_e6_c40_se0.75_sr0.5_sg2_dwg2"; 3]);
        defs.push("ir_r1_k3.5.7.9_s2_e6_c80_se0.75");
        defs.extend(["sp_r1_k5_s1_e6_c80_se0.75_sr0.5_sg2_dwg2"; 3]);
        defs.push("ir_r1_k5_s1_e6_c120_se0.75");
        defs.extend(["sp_r1_k5_s1_e6_c120_se0.75_sr0.5_sg2_dwg2"; 3]);
        defs.push("ir_r1_k3.5.7.9.11_s2_e6_c160_se0.75");
        defs.extend(["sp_r1_k5_s1_e6_c160_se0.75_sr0.5_sg2_dwg2"; 3]);
        defs.push("ir_r1_k3_s1_e6_c200_se0.75");
        ArchSpec {
            name: Some("muxnet_l".into()),
            arch_def: stages(&defs),
            stem_size: 24,
            num_features: 1536,
            channel_multiplier: 1.0,
            depth_multiplier: 1.0,
            num_classes: None,
            input_resolution: Some(224),
            act_default: Act::Swish,
        }
    }

    /// The spec of a MUXNet architecture (built-in or JSON file); DenseNet-121 has none.
    pub fn of(arch: &Arch) -> Result<Self, SpecError> {
        match arch {
            Arch::MuxnetM => Ok(Self::muxnet_m()),
            Arch::MuxnetL => Ok(Self::muxnet_l()),
            Arch::Json(p) => Self::from_json_file(p),
            Arch::Densenet121 => Err(SpecError::Arch(
                "densenet121 is not a MUXNet: it has no block-string spec".into(),
            )),
        }
    }

    pub fn from_json_file(path: &Path) -> Result<Self, SpecError> {
        let file_err = |message: String| SpecError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let mut spec: ArchSpec =
            serde_json::from_str(&text).map_err(|e| file_err(e.to_string()))?;
        if spec.name.is_none() {
            spec.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        spec.plan().map_err(|e| file_err(e.to_string()))?;
        Ok(spec)
    }

    /// Expands stages, repeats, multipliers and channel widths into one entry per block.
    pub fn plan(&self) -> Result<Vec<Vec<BlockPlan>>, SpecError> {
        if self.arch_def.is_empty() {
            return Err(SpecError::Arch("arch_def has no stages".into()));
        }
        let mut in_chs = round_channels(self.stem_size, self.channel_multiplier);
        let mut out = Vec::new();
        for stage in &self.arch_def {
            let decoded: Vec<BlockArgs> = stage
                .iter()
                .map(|s| decode_block(s))
                .collect::<Result<_, _>>()?;
            let repeats: Vec<usize> = decoded.iter().map(|b| b.repeats).collect();
            let scaled = scale_stage_depth(&repeats, self.depth_multiplier);
            let mut blocks = Vec::new();
            for (args, rep) in decoded.iter().zip(scaled) {
                for _ in 0..rep {
                    let stride = if blocks.is_empty() { args.stride } else { 1 };
                    let out_chs = round_channels(args.out_chs, self.channel_multiplier);
                    let b = BlockPlan {
                        args: args.clone(),
                        in_chs,
                        out_chs,
                        stride,
                        act: args.act.unwrap_or(self.act_default),
                    };
                    b.check()?;
                    in_chs = out_chs;
                    blocks.push(b);
                }
            }
            out.push(blocks);
        }
        Ok(out)
    }

    /// Output channels of the last block (input of the head conv).
    pub fn last_channels(&self) -> Result<i64, SpecError> {
        let plan = self.plan()?;
        Ok(plan
            .last()
            .and_then(|s| s.last())
            .map(|b| b.out_chs)
            .unwrap_or(self.stem_size))
    }

    pub fn stem_channels(&self) -> i64 {
        round_channels(self.stem_size, self.channel_multiplier)
    }

    /// Width of the head conv: `num_features` is the unscaled base and scales with the
    /// channel multiplier, as the authors' `_gen_muxnet_*` do
    /// (`num_features = round_channels(1280 * multiplier)`), so checkpoints of scaled
    /// variants load.
    pub fn head_channels(&self) -> i64 {
        round_channels(self.num_features, self.channel_multiplier)
    }
}

/// One block with its widths resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockPlan {
    pub args: BlockArgs,
    pub in_chs: i64,
    pub out_chs: i64,
    pub stride: i64,
    pub act: Act,
}

impl BlockPlan {
    fn check(&self) -> Result<(), SpecError> {
        let bad = |message: String| SpecError::Arch(message);
        if self.args.block_type == BlockType::Sp {
            if self.in_chs != self.out_chs || self.stride != 1 {
                return Err(bad(format!(
                    "an `sp` block keeps width and resolution, but this one goes {} -> {} channels with stride {}",
                    self.in_chs, self.out_chs, self.stride
                )));
            }
            let c = self.split_chs();
            let mid = self.mid_chs();
            if c < 1 || self.in_chs % self.args.shuffle_groups != 0 {
                return Err(bad(format!(
                    "`sp` block with {} channels cannot be split at {} and shuffled in {} groups",
                    self.in_chs, self.args.split_ratio, self.args.shuffle_groups
                )));
            }
            if let Some(sc) = &self.args.scales {
                let parts = split_channels(mid, sc.len());
                if sc.iter().zip(&parts).any(|(s, ch)| *s > 0 && ch % 4 != 0) {
                    return Err(bad(format!(
                        "`sp` block: a +1 MUXConv scale folds 4 channels into space, but {mid} mid channels split as {parts:?}"
                    )));
                }
            }
            if self.args.scales.is_none() && (mid % self.args.dw_group_factor != 0) {
                return Err(bad(format!(
                    "`sp` block: {mid} mid channels are not divisible by dwg{}",
                    self.args.dw_group_factor
                )));
            }
        }
        Ok(())
    }

    /// Width of the processed part of an `sp` block (the reference's `int(C * split_ratio)`).
    pub fn split_chs(&self) -> i64 {
        match self.args.block_type {
            BlockType::Sp => (self.in_chs as f64 * self.args.split_ratio) as i64,
            _ => self.in_chs,
        }
    }

    /// Expanded width: `int(in * exp_ratio)` of the (processed) input.
    pub fn mid_chs(&self) -> i64 {
        match self.args.block_type {
            BlockType::Ds { .. } => self.in_chs,
            _ => (self.split_chs() as f64 * self.args.exp_ratio) as i64,
        }
    }

    /// Squeeze-excitation reduced width; its base is the block's (split) input width, not
    /// the expanded width (the reference's `se_reduce_mid=False`).
    pub fn se_chs(&self) -> Option<i64> {
        let r = self.args.se_ratio.filter(|r| *r > 0.0)?;
        Some(((self.split_chs() as f64 * r) as i64).max(1))
    }

    pub fn has_residual(&self) -> bool {
        match self.args.block_type {
            BlockType::Sp => !self.args.noskip,
            _ => self.stride == 1 && self.in_chs == self.out_chs && !self.args.noskip,
        }
    }
}

/// The reference's `_split_channels`: equal parts, the first takes the remainder.
pub fn split_channels(total: i64, groups: usize) -> Vec<i64> {
    let n = groups as i64;
    let mut s = vec![total / n; groups];
    s[0] += total - (total / n) * n;
    s
}

/// The reference's `_round_channels` with divisor 8.
pub fn round_channels(chs: i64, multiplier: f64) -> i64 {
    if multiplier == 0.0 {
        return chs;
    }
    let divisor = 8.0;
    let c = chs as f64 * multiplier;
    let mut new = (((c + divisor / 2.0) as i64) / 8 * 8).max(8);
    if (new as f64) < 0.9 * c {
        new += 8;
    }
    new
}

/// The reference's `_scale_stage_depth` with `depth_trunc='ceil'`.
fn scale_stage_depth(repeats: &[usize], depth_multiplier: f64) -> Vec<usize> {
    let mut num_repeat: usize = repeats.iter().sum();
    let mut num_scaled = (num_repeat as f64 * depth_multiplier).ceil() as usize;
    let mut out = Vec::with_capacity(repeats.len());
    for &r in repeats.iter().rev() {
        let rs = ((r as f64 / num_repeat as f64 * num_scaled as f64).round() as usize).max(1);
        out.push(rs);
        num_repeat -= r;
        num_scaled = num_scaled.saturating_sub(rs);
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_reference_grammar() {
        let b = decode_block("sp_r2_k3_s1_e4_c24_se0.75_sr0.5_sg2_sc0.1_nre").unwrap();
        assert_eq!(b.block_type, BlockType::Sp);
        assert_eq!((b.repeats, b.stride, b.out_chs), (2, 1, 24));
        assert_eq!(b.kernels, vec![3]);
        assert_eq!(b.exp_ratio, 4.0);
        assert_eq!(b.se_ratio, Some(0.75));
        assert_eq!(b.split_ratio, 0.5);
        assert_eq!(b.scales, Some(vec![0, 1]));
        assert_eq!(b.act, Some(Act::Relu));
        let b = decode_block("ir_r1_k3.5.7_s2_e4_c40_se0.75").unwrap();
        assert_eq!(b.kernels, vec![3, 5, 7]);
        assert_eq!(b.act, None);
        assert_eq!(b.dw_group_factor, 1);
    }

    #[test]
    fn rejects_bad_block_strings() {
        for s in [
            "xx_r1_k3_s1_c8",
            "ir_r1_k3_s1_c8",
            "ir_r1_k4_s1_e2_c8",
            "ir_k3_s1_e2_c8",
            "ir_r1_k3_s1_e2_c8_zz3",
            "sp_r1_k3_s1_e2_c8_sc1.1",
            "ir_r1_k3_s1_ex_c8",
        ] {
            assert!(decode_block(s).is_err(), "{s} should fail");
        }
    }

    #[test]
    fn out_of_range_and_repeated_options_are_refused_by_name() {
        for (s, says) in [
            (
                "sp_r1_k3_s1_e4_c24_sr1.5",
                "sr1.5 must lie strictly between 0 and 1",
            ),
            (
                "sp_r1_k3_s1_e4_c24_sr0",
                "sr0 must lie strictly between 0 and 1",
            ),
            ("ir_r1_k3_s1_e0_c24", "e0 must be positive"),
            ("ir_r1_k3_s1_e4_c24_se1.5", "se1.5 must lie in [0, 1]"),
            ("sp_r1_k3_s1_e4_c24_sg0", "sg0 must be at least 1"),
            ("sp_r1_k3_s1_e4_c24_dwg0", "dwg0 must be at least 1"),
            ("ir_r1_k3_s3_e4_c24", "s3 must be 1 or 2"),
            ("ir_r1_k3_s1_e1e999_c24", "is not a finite number"),
            ("ir_r1_k3_s1_e4_c24_s2", "option `s` is given twice"),
            ("ir_r1_k3_s1_e4_c24_s1", "option `s` is given twice"),
        ] {
            let e = decode_block(s).unwrap_err().to_string();
            assert!(e.starts_with(&format!("block string `{s}`:")), "{e}");
            assert!(e.contains(says), "{s}: {e}");
        }
    }

    #[test]
    fn split_channels_puts_remainder_first() {
        assert_eq!(split_channels(448, 5), vec![92, 89, 89, 89, 89]);
        assert_eq!(split_channels(48, 3), vec![16, 16, 16]);
    }

    #[test]
    fn muxnet_m_plan_matches_the_architecture_table() {
        let plan = ArchSpec::muxnet_m().plan().unwrap();
        let blocks: Vec<&BlockPlan> = plan.iter().flatten().collect();
        assert_eq!(blocks.len(), 18);
        // Block 2: MUX-IR 24 -> 24, split 12, mid 48, SE 9, ReLU.
        assert_eq!(
            (
                blocks[2].split_chs(),
                blocks[2].mid_chs(),
                blocks[2].se_chs()
            ),
            (12, 48, Some(9))
        );
        assert_eq!(blocks[2].act, Act::Relu);
        // Block 13: IR 112 -> 160, mid 448, SE 84 (base is the input width), swish.
        assert_eq!((blocks[13].mid_chs(), blocks[13].se_chs()), (448, Some(84)));
        assert_eq!(blocks[13].act, Act::Swish);
        assert_eq!(blocks[17].out_chs, 200);
        assert_eq!(ArchSpec::muxnet_l().plan().unwrap().len(), 21);
    }

    #[test]
    fn repeats_expand_within_a_stage() {
        let spec = ArchSpec {
            name: None,
            arch_def: vec![
                vec!["ir_r1_k3_s2_e4_c24".into()],
                vec!["sp_r2_k3_s1_e4_c24_sr0.5".into()],
            ],
            stem_size: 16,
            num_features: 64,
            channel_multiplier: 1.0,
            depth_multiplier: 1.0,
            num_classes: None,
            input_resolution: None,
            act_default: Act::Swish,
        };
        let plan = spec.plan().unwrap();
        assert_eq!(plan[1].len(), 2);
        assert_eq!(round_channels(20, 1.0), 24);
        assert_eq!(round_channels(24, 0.5), 16);
    }
}
