//! A classifier network chosen by name: MUXNet (built-in or arch JSON) or DenseNet-121,
//! CheXNet's architecture (Rajpurkar et al. 2017), as the baseline.

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::muxnet::{HeadInit, MuxNet};
use super::spec::{ArchSpec, SpecError};

pub enum Network {
    MuxNet(Box<MuxNet>),
    DenseNet121(Box<dyn ModuleT + Send>),
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Network::MuxNet(m) => write!(f, "MuxNet({:?})", m.spec.name),
            Network::DenseNet121(_) => write!(f, "DenseNet121"),
        }
    }
}

impl Network {
    /// `arch`: `muxnet_m`, `muxnet_l`, `densenet121` or a path to an arch JSON.
    pub fn build(
        p: &nn::Path,
        arch: &str,
        num_classes: i64,
        drop_rate: f64,
        head_init: HeadInit,
    ) -> Result<Self, SpecError> {
        if arch == "densenet121" {
            return Ok(Network::DenseNet121(Box::new(
                tch::vision::densenet::densenet121(p, num_classes),
            )));
        }
        let spec = ArchSpec::by_name(arch)?;
        let net = MuxNet::new(p, &spec, num_classes, drop_rate, head_init)?;
        Ok(Network::MuxNet(Box::new(net)))
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Network::MuxNet(m) => m.forward_t(x, train),
            Network::DenseNet121(d) => d.forward_t(x, train),
        }
    }

    /// Whether a variable belongs to the classifier head (the rest is backbone).
    pub fn is_head_key(&self, name: &str) -> bool {
        name.starts_with("classifier.")
    }
}

/// Freezes or unfreezes the backbone: its parameters stop (or resume) receiving gradients.
/// BatchNorm running statistics are buffers and never trainable; keeping them still while
/// frozen is the caller's job (run the backbone with `train = false`).
pub fn set_backbone_trainable(vs: &nn::VarStore, trainable: bool) {
    for (name, t) in vs.variables() {
        if name.starts_with("classifier.")
            || name.ends_with("running_mean")
            || name.ends_with("running_var")
        {
            continue;
        }
        let _ = t.set_requires_grad(trainable);
    }
}

/// Parameter groups for the optimiser: backbone weights, head weights, and parameters that
/// get no weight decay (BatchNorm weights and biases, every bias).
#[derive(Debug, Default)]
pub struct ParamGroups {
    pub backbone: Vec<(String, Tensor)>,
    pub head: Vec<(String, Tensor)>,
    pub no_decay: Vec<(String, Tensor)>,
}

pub fn param_groups(vs: &nn::VarStore) -> ParamGroups {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut g = ParamGroups::default();
    for (name, t) in vars {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            continue;
        }
        let is_bn = name
            .rsplit('.')
            .nth(1)
            .is_some_and(|m| m.starts_with("bn") || m.starts_with("norm"));
        if name.ends_with(".bias") || is_bn {
            g.no_decay.push((name, t));
        } else if name.starts_with("classifier.") {
            g.head.push((name, t));
        } else {
            g.backbone.push((name, t));
        }
    }
    g
}
