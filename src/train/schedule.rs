//! Learning-rate schedule: linear warmup from 0 to the base rate, then cosine decay to
//! `min_lr`, evaluated per optimiser step (tch has no schedulers).

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosine {
    pub base_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl WarmupCosine {
    /// The rate for step `step` (0-based): during warmup `base * (step + 1) / warmup`, then
    /// `min + (base - min) * (1 + cos(pi * t)) / 2` with t going from 0 to 1 over the rest.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// The backbone's learning-rate factor after a frozen phase: 0 → 1 linearly over
/// `warmup_steps` optimiser steps from `unfreeze_step` on (1 when nothing was frozen).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnfreezeWarmup {
    pub unfreeze_step: u64,
    pub warmup_steps: u64,
}

impl UnfreezeWarmup {
    pub fn factor(&self, step: u64) -> f64 {
        if self.unfreeze_step == 0 || self.warmup_steps == 0 || step < self.unfreeze_step {
            return 1.0;
        }
        ((step - self.unfreeze_step + 1) as f64 / self.warmup_steps as f64).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backbone_warms_up_again_after_unfreezing() {
        let w = UnfreezeWarmup {
            unfreeze_step: 10,
            warmup_steps: 4,
        };
        assert_eq!(w.factor(10), 0.25);
        assert_eq!(w.factor(11), 0.5);
        assert_eq!(w.factor(13), 1.0);
        assert_eq!(w.factor(50), 1.0);
        let none = UnfreezeWarmup {
            unfreeze_step: 0,
            warmup_steps: 4,
        };
        assert_eq!(none.factor(0), 1.0);
    }

    #[test]
    fn warmup_then_cosine() {
        let s = WarmupCosine {
            base_lr: 1.0,
            min_lr: 0.1,
            warmup_steps: 4,
            total_steps: 14,
        };
        assert_eq!(s.lr(0), 0.25);
        assert_eq!(s.lr(3), 1.0);
        // Start of decay: the base rate; middle: halfway between base and min; end: min.
        assert!((s.lr(4) - 1.0).abs() < 1e-12);
        assert!((s.lr(9) - 0.55).abs() < 1e-12);
        assert!((s.lr(14) - 0.1).abs() < 1e-12);
        assert!((s.lr(100) - 0.1).abs() < 1e-12);
        // Monotone after warmup.
        for k in 4..14 {
            assert!(s.lr(k + 1) <= s.lr(k));
        }
    }

    #[test]
    fn no_warmup() {
        let s = WarmupCosine {
            base_lr: 0.5,
            min_lr: 0.0,
            warmup_steps: 0,
            total_steps: 2,
        };
        assert_eq!(s.lr(0), 0.5);
        assert!((s.lr(1) - 0.25).abs() < 1e-12);
        assert!(s.lr(2).abs() < 1e-12);
    }
}
