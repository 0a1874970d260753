//! MUXNet (Lu, Deb, Boddeti, "MUXConv: Information Multiplexing in Convolutional Neural
//! Networks", CVPR 2020), mirroring the authors' `GenMUXNet` in `human-analysis/MUXConv`
//! (commit eb63b14): stem conv → blocks → 1x1 head conv → global average pool → dropout →
//! classifier. Module paths equal the reference state-dict keys (`conv_stem`, `bn1`,
//! `blocks.<stage>.<repeat>....`, `conv_head`, `bn2`, `classifier`), so the authors'
//! checkpoints load without renaming.

use tch::nn::{self, Module};
use tch::Tensor;

use super::blocks::Block;
use super::layers::{act, bn, bn_t, conv, Conv};
use super::layout::{self, MemoryFormat};
use super::spec::{Act, ArchSpec, SpecError};

/// How the classifier is initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadInit {
    /// The reference constructor's: U(±1/sqrt(out_features)), bias 0 (training from scratch).
    Reference,
    /// PyTorch's default `nn.Linear` (the reference's `reset_classifier`, used for
    /// transfer): weight and bias from U(±1/sqrt(in_features)).
    PytorchDefault,
}

/// Intermediate activations of one forward pass, named as in the golden fixtures.
#[derive(Debug)]
pub struct Taps {
    pub stem: Tensor,
    /// Output of each stage (`blocks.<i>`).
    pub blocks: Vec<Tensor>,
    /// After the head conv, BN and activation, before pooling.
    pub head: Tensor,
    pub features: Tensor,
    pub logits: Tensor,
}

#[derive(Debug)]
pub struct MuxNet {
    pub spec: ArchSpec,
    pub num_classes: i64,
    pub drop_rate: f64,
    pub(super) conv_stem: Conv,
    pub(super) bn1: nn::BatchNorm,
    pub(super) blocks: Vec<Vec<Block>>,
    pub(super) conv_head: Conv,
    pub(super) bn2: nn::BatchNorm,
    pub(super) classifier: nn::Linear,
    pub(super) act: Act,
}

impl MuxNet {
    pub fn new(
        p: &nn::Path,
        spec: &ArchSpec,
        num_classes: i64,
        drop_rate: f64,
        head_init: HeadInit,
    ) -> Result<Self, SpecError> {
        let plan = spec.plan()?;
        let stem = spec.stem_channels();
        let blocks_path = p / "blocks";
        let blocks = plan
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let sp = &blocks_path / i;
                stage
                    .iter()
                    .enumerate()
                    .map(|(j, b)| Block::new(&sp / j, b))
                    .collect()
            })
            .collect();
        let last = spec.last_channels()?;
        let nf = spec.head_channels();
        let (ws_init, bs_init) = match head_init {
            HeadInit::Reference => {
                let b = 1.0 / (num_classes as f64).sqrt();
                (nn::Init::Uniform { lo: -b, up: b }, nn::Init::Const(0.0))
            }
            HeadInit::PytorchDefault => {
                let b = 1.0 / (nf as f64).sqrt();
                (
                    nn::Init::Uniform { lo: -b, up: b },
                    nn::Init::Uniform { lo: -b, up: b },
                )
            }
        };
        Ok(MuxNet {
            spec: spec.clone(),
            num_classes,
            drop_rate,
            conv_stem: conv(p / "conv_stem", 3, stem, 3, 2, 1, false),
            bn1: bn(p / "bn1", stem),
            blocks,
            conv_head: conv(p / "conv_head", last, nf, 1, 1, 1, false),
            bn2: bn(p / "bn2", nf),
            classifier: nn::linear(
                p / "classifier",
                nf,
                num_classes,
                nn::LinearConfig {
                    ws_init,
                    bs_init: Some(bs_init),
                    bias: true,
                },
            ),
            act: spec.act_default,
        })
    }

    /// The memory format of the weights (see [`super::layout::apply`]).
    pub fn memory_format(&self) -> MemoryFormat {
        layout::format_of(self.conv_stem.weight())
    }

    /// `x` in the weights' memory format.
    fn laid_out(&self, x: &Tensor) -> Tensor {
        layout::to_format(x, self.memory_format())
    }

    /// Sets stochastic depth: block `i` of `n` (counted over all stages, from 0) drops its
    /// residual branch with probability `rate * i / n`, as the reference's builder scales
    /// `drop_connect_rate` (MUXConv repo, `muxnet.py`; timm's EfficientNet builder).
    pub fn set_drop_path_rate(&mut self, rate: f64) {
        let n = self.blocks.iter().map(Vec::len).sum::<usize>().max(1) as f64;
        for (i, b) in self.blocks.iter_mut().flatten().enumerate() {
            b.set_drop_path(rate * i as f64 / n);
        }
    }

    /// The last feature map before global pooling (N, head channels, H/32, W/32): after
    /// `conv_head`, `bn2` and the activation. Grad-CAM's A.
    pub fn feature_map_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.stem_t(x, train);
        for b in self.blocks.iter().flatten() {
            y = b.forward_t(&y, train);
        }
        self.head_map_t(&y, train)
    }

    /// The stem (conv, BN, activation) on `x` brought to the weights' memory format: the
    /// first block's input.
    pub fn stem_t(&self, x: &Tensor, train: bool) -> Tensor {
        let x = self.laid_out(x);
        act(
            self.act,
            &bn_t(&self.bn1, &self.conv_stem.forward(&x), train),
        )
    }

    /// Every block in forward order with its state-dict prefix (`blocks.<stage>.<repeat>`).
    pub fn blocks(&self) -> impl Iterator<Item = (String, &Block)> {
        self.blocks.iter().enumerate().flat_map(|(i, stage)| {
            stage
                .iter()
                .enumerate()
                .map(move |(j, b)| (format!("blocks.{i}.{j}"), b))
        })
    }

    /// The head conv, BN and activation on the last block's output (before pooling).
    pub fn head_map_t(&self, y: &Tensor, train: bool) -> Tensor {
        act(
            self.act,
            &bn_t(&self.bn2, &self.conv_head.forward(y), train),
        )
    }

    /// Pooled features (N, head channels). `train` selects batch statistics in BatchNorm.
    pub fn forward_features_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = self.feature_map_t(x, train);
        y.mean_dim([2i64, 3].as_slice(), false, y.kind())
    }

    /// Logits; dropout (when `drop_rate > 0`) only in training.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_head_t(&self.forward_features_t(x, train), train)
    }

    /// The classifier on pooled features, with dropout in training.
    pub fn forward_head_t(&self, features: &Tensor, train: bool) -> Tensor {
        let f = if self.drop_rate > 0.0 {
            features.dropout(self.drop_rate, train)
        } else {
            features.shallow_clone()
        };
        self.classifier.forward(&f)
    }

    /// Logits with the backbone in eval mode (BatchNorm running statistics frozen) and the
    /// head in `head_train` mode: the forward pass of a frozen-backbone phase.
    pub fn forward_frozen_backbone(&self, x: &Tensor, head_train: bool) -> Tensor {
        self.forward_head_t(&self.forward_features_t(x, false), head_train)
    }

    /// Forward pass keeping every stage's output, for parity checks against the reference.
    pub fn forward_taps(&self, x: &Tensor, train: bool) -> Taps {
        let stem = self.stem_t(x, train);
        let mut y = stem.shallow_clone();
        let mut outs = Vec::new();
        for stage in &self.blocks {
            for b in stage {
                y = b.forward_t(&y, train);
            }
            outs.push(y.shallow_clone());
        }
        let head = self.head_map_t(&y, train);
        let features = head.mean_dim([2i64, 3].as_slice(), false, head.kind());
        let logits = self.forward_head_t(&features, train);
        Taps {
            stem,
            blocks: outs,
            head,
            features,
            logits,
        }
    }
}
