//! An exponential moving average of the model (Polyak averaging), as timm's `ModelEmaV2`:
//! every variable, BatchNorm running statistics included, is averaged.

use tch::nn;

use crate::config::Arch;
use crate::model::muxnet::HeadInit;
use crate::model::network::Network;

pub struct Ema {
    pub vs: nn::VarStore,
    pub net: Network,
    pub decay: f64,
}

impl Ema {
    /// A copy of the live model's architecture, current weights and memory format.
    pub fn new(
        live: &nn::VarStore,
        live_net: &Network,
        arch: &Arch,
        num_classes: i64,
        decay: f64,
    ) -> Result<Self, crate::model::spec::SpecError> {
        let vs = nn::VarStore::new(live.device());
        let net = Network::build(&vs.root(), arch, num_classes, 0.0, HeadInit::PytorchDefault)?;
        net.set_memory_format(&vs, live_net.memory_format());
        tch::no_grad(|| {
            let src = live.variables();
            for (name, mut v) in vs.variables() {
                v.copy_(&src[&name]);
            }
        });
        Ok(Ema { vs, net, decay })
    }

    /// The decay of update `n` (0-based): it warms up as in timm and TensorFlow's
    /// `ExponentialMovingAverage(num_updates=...)`, min(decay, (1 + n) / (10 + n)), so the
    /// average is not dominated by the random initial weights early in training.
    pub fn decay_at(&self, n: u64) -> f64 {
        self.decay.min((1.0 + n as f64) / (10.0 + n as f64))
    }

    /// ema = d * ema + (1 - d) * live for every variable, with d = [`Ema::decay_at`]`(n)`.
    pub fn update(&self, live: &nn::VarStore, n: u64) {
        let d = self.decay_at(n);
        tch::no_grad(|| {
            let src = live.variables();
            for (name, mut v) in self.vs.variables() {
                let s = &src[&name];
                let _ = v.g_mul_scalar_(d);
                let _ = v.g_add_(&(s * (1.0 - d)));
            }
        });
    }
}
