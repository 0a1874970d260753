//! AdamW and SGD with momentum written in tch tensor ops, so their state (moments, step
//! counts) can be saved with a checkpoint and a resumed run continues exactly (libtorch's
//! optimisers in tch cannot save theirs). Updates follow PyTorch's `AdamW` and `SGD`.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use crate::config::OptimizerKind;
use crate::model::network::ParamGroup;

/// One trainable tensor with its hyper-parameters and state.
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    /// Multiplies the scheduled learning rate (the backbone's factor, or 1 for the head).
    pub lr_factor: f64,
    /// Backbone parameters also follow the unfreeze warmup factor of [`Optimizer::step`].
    pub backbone: bool,
    pub weight_decay: f64,
    /// Adam: first moment; SGD: momentum buffer.
    m: Tensor,
    /// Adam: second moment (unused by SGD).
    v: Tensor,
    /// Steps this parameter has taken (frozen steps do not count).
    steps: i64,
}

pub struct Optimizer {
    pub kind: OptimizerKind,
    pub params: Vec<Param>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub momentum: f64,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, groups: Vec<ParamGroup>) -> Self {
        let params = groups
            .into_iter()
            .flat_map(|g| {
                let (lr_factor, weight_decay, backbone) = (g.lr_factor, g.weight_decay, g.backbone);
                g.params.into_iter().map(move |(name, tensor)| Param {
                    m: tensor.zeros_like().detach(),
                    v: tensor.zeros_like().detach(),
                    name,
                    tensor,
                    lr_factor,
                    backbone,
                    weight_decay,
                    steps: 0,
                })
            })
            .collect();
        Optimizer {
            kind,
            params,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            momentum: 0.9,
        }
    }

    pub fn zero_grad(&mut self) {
        for p in &self.params {
            let mut g = p.tensor.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// Global L2 norm of all gradients; scales them down to `max` when above it (as
    /// `torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max: Option<f64>) -> f64 {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.tensor.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let total = tch::no_grad(|| {
            let sq: Vec<Tensor> = grads
                .iter()
                .map(|g| g.pow_tensor_scalar(2).sum(Kind::Float))
                .collect();
            Tensor::stack(&sq, 0)
                .sum(Kind::Float)
                .sqrt()
                .double_value(&[])
        });
        if let Some(max) = max {
            let coef = max / (total + 1e-6);
            if coef < 1.0 {
                tch::no_grad(|| {
                    for g in &grads {
                        let mut g = g.shallow_clone();
                        let _ = g.g_mul_scalar_(coef);
                    }
                });
            }
        }
        total
    }

    /// One update at learning rate `lr` (times each parameter's factor, and times
    /// `backbone_warmup` for backbone parameters); parameters without a gradient (frozen)
    /// are skipped.
    pub fn step(&mut self, lr: f64, backbone_warmup: f64) {
        let (b1, b2, eps, mu) = (self.beta1, self.beta2, self.eps, self.momentum);
        let kind = self.kind;
        tch::no_grad(|| {
            for p in self.params.iter_mut() {
                let g = p.tensor.grad();
                if !g.defined() || !p.tensor.requires_grad() {
                    continue;
                }
                let lr = lr * p.lr_factor * if p.backbone { backbone_warmup } else { 1.0 };
                p.steps += 1;
                match kind {
                    OptimizerKind::Adamw => {
                        if p.weight_decay > 0.0 {
                            let _ = p.tensor.g_mul_scalar_(1.0 - lr * p.weight_decay);
                        }
                        let _ = p.m.g_mul_scalar_(b1);
                        let _ = p.m.g_add_(&(&g * (1.0 - b1)));
                        let _ = p.v.g_mul_scalar_(b2);
                        let _ = p.v.g_add_(&(&g * &g * (1.0 - b2)));
                        let bc1 = 1.0 - b1.powi(p.steps as i32);
                        let bc2 = 1.0 - b2.powi(p.steps as i32);
                        let denom = (&p.v / bc2).sqrt() + eps;
                        let update = &p.m / &denom * (lr / bc1);
                        let _ = p.tensor.g_sub_(&update);
                    }
                    OptimizerKind::Sgd => {
                        let d = if p.weight_decay > 0.0 {
                            &g + &p.tensor * p.weight_decay
                        } else {
                            g.shallow_clone()
                        };
                        if p.steps == 1 {
                            p.m.copy_(&d);
                        } else {
                            let _ = p.m.g_mul_scalar_(mu);
                            let _ = p.m.g_add_(&d);
                        }
                        let _ = p.tensor.g_sub_(&(&p.m * lr));
                    }
                }
            }
        });
    }

    /// The optimiser state as named tensors (`optim.<param>.m`, `.v`, `.steps`).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.params.len() * 3);
        for p in &self.params {
            out.push((format!("optim.{}.m", p.name), p.m.shallow_clone()));
            out.push((format!("optim.{}.v", p.name), p.v.shallow_clone()));
            out.push((
                format!("optim.{}.steps", p.name),
                Tensor::from_slice(&[p.steps]),
            ));
        }
        out
    }

    /// Restores what [`state_tensors`] saved; every parameter must be present.
    pub fn load_state(&mut self, t: &BTreeMap<String, Tensor>) -> Result<(), String> {
        for p in self.params.iter_mut() {
            let get = |k: &str| {
                t.get(&format!("optim.{}.{k}", p.name))
                    .ok_or_else(|| format!("optimizer state for {} is missing", p.name))
            };
            let m = get("m")?;
            let v = get("v")?;
            let steps = get("steps")?.int64_value(&[0]);
            tch::no_grad(|| {
                p.m.copy_(&m.to_device(p.m.device()));
                p.v.copy_(&v.to_device(p.v.device()));
            });
            p.steps = steps;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;

    fn group(w: &Tensor, weight_decay: f64) -> ParamGroup {
        ParamGroup {
            params: vec![("w".into(), w.shallow_clone())],
            backbone: false,
            lr_factor: 1.0,
            weight_decay,
        }
    }

    /// Our AdamW and SGD against libtorch's own on the same problem.
    fn compare(kind: OptimizerKind) {
        tch::manual_seed(3);
        let x = Tensor::randn([16, 5], tch::kind::FLOAT_CPU);
        let y = Tensor::randn([16, 1], tch::kind::FLOAT_CPU);
        let w0 = Tensor::randn([5, 1], tch::kind::FLOAT_CPU);
        // libtorch reference.
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let w_ref = vs.root().var_copy("w", &w0);
        let mut reference = match kind {
            OptimizerKind::Adamw => tch::nn::AdamW {
                wd: 0.01,
                ..Default::default()
            }
            .build(&vs, 0.05)
            .unwrap(),
            OptimizerKind::Sgd => tch::nn::Sgd {
                momentum: 0.9,
                wd: 0.01,
                ..Default::default()
            }
            .build(&vs, 0.05)
            .unwrap(),
        };
        // Ours.
        let w = w0.copy().set_requires_grad(true);
        let mut ours = Optimizer::new(kind, vec![group(&w, 0.01)]);
        for _ in 0..5 {
            let l = (x.matmul(&w_ref) - &y)
                .pow_tensor_scalar(2)
                .mean(Kind::Float);
            reference.backward_step(&l);
            ours.zero_grad();
            let l = (x.matmul(&w) - &y).pow_tensor_scalar(2).mean(Kind::Float);
            l.backward();
            ours.step(0.05, 1.0);
        }
        let d = (&w - &w_ref).abs().max().double_value(&[]);
        assert!(d < 1e-6, "{kind:?}: {d}");
    }

    #[test]
    fn adamw_matches_libtorch() {
        compare(OptimizerKind::Adamw);
    }

    #[test]
    fn sgd_matches_libtorch() {
        compare(OptimizerKind::Sgd);
    }

    #[test]
    fn clip_scales_the_global_norm() {
        let w = Tensor::from_slice(&[3f32, 4.0]).set_requires_grad(true);
        let mut o = Optimizer::new(OptimizerKind::Sgd, vec![group(&w, 0.0)]);
        (&w * &w).sum(Kind::Float).backward(); // grad = 2w = (6, 8), norm 10
        let n = o.clip_grad_norm(Some(5.0));
        assert!((n - 10.0).abs() < 1e-6);
        let g: Vec<f32> = Vec::try_from(w.grad()).unwrap();
        assert!((g[0] - 3.0).abs() < 1e-4 && (g[1] - 4.0).abs() < 1e-4);
    }
}
