//! A classifier network chosen by [`Arch`]: MUXNet (built-in or arch JSON) or DenseNet-121,
//! CheXNet's architecture (Rajpurkar et al. 2017), as the baseline; and the optimiser's
//! parameter groups, decided here once.

use tch::nn;
use tch::Tensor;

use super::densenet::DenseNet121;
use super::layout::{self, MemoryFormat};
use super::muxnet::{HeadInit, MuxNet};
use super::spec::{ArchSpec, SpecError};
use crate::config::Arch;

#[derive(Debug)]
pub enum Network {
    MuxNet(Box<MuxNet>),
    DenseNet121(Box<DenseNet121>),
}

/// Builds `arch` on the CPU and runs one `resolution`-pixel image through it, so a network
/// libtorch cannot run is refused before a run is created, or an old one removed. A libtorch
/// failure inside the pass comes back as its message.
pub fn check_runs(arch: &Arch, num_classes: i64, resolution: i64) -> Result<(), String> {
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let net = Network::build(&vs.root(), arch, num_classes, 0.0, HeadInit::PytorchDefault)
        .map_err(|e| e.to_string())?;
    let x = Tensor::f_zeros(
        [1, 3, resolution, resolution],
        (tch::Kind::Float, tch::Device::Cpu),
    )
    .map_err(|e| e.to_string())?;
    let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tch::no_grad(|| net.forward_t(&x, false).size())
    }));
    match pass {
        Ok(size) if size == [1, num_classes] => Ok(()),
        Ok(size) => Err(format!(
            "it gives outputs of shape {size:?}, not [1, {num_classes}]"
        )),
        Err(p) => Err(super::device::panic_message(p.as_ref())),
    }
}

/// The classifier's variables are `classifier.*`; everything else is backbone.
pub fn is_head_key(name: &str) -> bool {
    name.starts_with("classifier.")
}

fn is_bn_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

impl Network {
    pub fn build(
        p: &nn::Path,
        arch: &Arch,
        num_classes: i64,
        drop_rate: f64,
        head_init: HeadInit,
    ) -> Result<Self, SpecError> {
        if *arch == Arch::Densenet121 {
            return Ok(Network::DenseNet121(Box::new(DenseNet121::new(
                p,
                num_classes,
                drop_rate,
            ))));
        }
        Self::muxnet(p, &ArchSpec::of(arch)?, num_classes, drop_rate, head_init)
    }

    /// A MUXNet from a spec (e.g. one stored inside a checkpoint).
    pub fn muxnet(
        p: &nn::Path,
        spec: &ArchSpec,
        num_classes: i64,
        drop_rate: f64,
        head_init: HeadInit,
    ) -> Result<Self, SpecError> {
        let net = MuxNet::new(p, spec, num_classes, drop_rate, head_init)?;
        Ok(Network::MuxNet(Box::new(net)))
    }

    /// Lays the conv weights of `vs` (this network's store) out in format `f`; every
    /// forward pass then brings its input to that format.
    pub fn set_memory_format(&self, vs: &nn::VarStore, f: MemoryFormat) {
        layout::apply(vs, f);
    }

    pub fn memory_format(&self) -> MemoryFormat {
        match self {
            Network::MuxNet(m) => m.memory_format(),
            Network::DenseNet121(d) => d.memory_format(),
        }
    }

    /// Stochastic depth for training (MUXNet only; DenseNet-121 has none).
    pub fn set_drop_path_rate(&mut self, rate: f64) {
        if let Network::MuxNet(m) = self {
            m.set_drop_path_rate(rate);
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Network::MuxNet(m) => m.forward_t(x, train),
            Network::DenseNet121(d) => d.forward_t(x, train),
        }
    }

    /// The last feature map before global pooling (Grad-CAM's A): MUXNet after `conv_head`,
    /// `bn2` and the activation; DenseNet-121 after `norm5` and ReLU.
    pub fn feature_map_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Network::MuxNet(m) => m.feature_map_t(x, train),
            Network::DenseNet121(d) => d.feature_map_t(x, train),
        }
    }

    /// Logits from a feature map of [`Self::feature_map_t`]: pooling and the classifier.
    pub fn logits_from_map_t(&self, map: &Tensor, train: bool) -> Tensor {
        match self {
            Network::MuxNet(m) => {
                let f = map.mean_dim([2i64, 3].as_slice(), false, map.kind());
                m.forward_head_t(&f, train)
            }
            Network::DenseNet121(d) => d.head_t(map, train),
        }
    }

    /// The forward pass of a training step: with a frozen backbone, its BatchNorm statistics
    /// stay fixed (backbone in eval mode) while the head trains.
    pub fn forward_train(&self, x: &Tensor, backbone_frozen: bool) -> Tensor {
        match (self, backbone_frozen) {
            (Network::MuxNet(m), true) => m.forward_frozen_backbone(x, true),
            (n, true) => n.forward_t(x, false),
            (n, false) => n.forward_t(x, true),
        }
    }
}

/// Freezes or unfreezes the backbone: its parameters stop (or resume) receiving gradients.
/// BatchNorm running statistics are buffers and never trainable; keeping them still while
/// frozen is the forward pass's job ([`Network::forward_train`]).
pub fn set_backbone_trainable(vs: &nn::VarStore, trainable: bool) {
    for (name, t) in vs.variables() {
        if is_head_key(&name) || is_bn_buffer(&name) {
            continue;
        }
        let _ = t.set_requires_grad(trainable);
    }
}

/// Tensors that share a learning-rate factor and a weight decay.
#[derive(Debug)]
pub struct ParamGroup {
    pub params: Vec<(String, Tensor)>,
    /// Backbone groups follow the backbone's learning-rate factor and unfreeze warmup.
    pub backbone: bool,
    /// Multiplies the scheduled learning rate.
    pub lr_factor: f64,
    pub weight_decay: f64,
}

/// The optimiser's groups: backbone and head, each split into weights with decay and
/// parameters without (every bias, BatchNorm weights). BatchNorm buffers are not parameters.
pub fn param_groups(
    vs: &nn::VarStore,
    backbone_lr_factor: f64,
    weight_decay: f64,
) -> Vec<ParamGroup> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut groups: Vec<ParamGroup> = [(true, true), (true, false), (false, true), (false, false)]
        .into_iter()
        .map(|(backbone, decay)| ParamGroup {
            params: vec![],
            backbone,
            lr_factor: if backbone { backbone_lr_factor } else { 1.0 },
            weight_decay: if decay { weight_decay } else { 0.0 },
        })
        .collect();
    for (name, t) in vars {
        if is_bn_buffer(&name) {
            continue;
        }
        let is_bn = name
            .rsplit('.')
            .nth(1)
            .is_some_and(|m| m.starts_with("bn") || m.starts_with("norm"));
        let decay = !(name.ends_with(".bias") || is_bn);
        let g = match (!is_head_key(&name), decay) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        };
        groups[g].params.push((name, t));
    }
    groups.retain(|g| !g.params.is_empty());
    groups
}
