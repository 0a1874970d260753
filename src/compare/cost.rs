//! Inference cost measured the same way for every compared model: in this process, on the
//! CPU, random inputs at each model's resolution. Every model is loaded first and warmed up;
//! then the timed passes take turns (model 1, model 2, ..., model 1, ...) over several
//! rounds, so a change in the load of this shared machine hits every model alike; each
//! figure is the median of its model's passes. Memory comes from the kernel's resident-set
//! counters, one model at a time.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tch::{nn, Device, Kind, Tensor};

use super::stats::{Cost, Speed};
use crate::config::{Arch, MemoryFormat};
use crate::model::folded::FoldedNetwork;
use crate::model::muxnet::HeadInit;
use crate::model::network::Network;

const WARMUP: usize = 2;
/// Rounds of taking turns, and the least time one model's turn lasts in a round.
const ROUNDS: usize = 3;
const MIN_TURN_SECONDS: f64 = 0.5;
const MAX_PASSES_PER_TURN: usize = 10;
const BATCHES: [i64; 2] = [1, 32];

/// A network ready to be timed: its inference model (BatchNorm folded, the default memory
/// format), what `evaluate` and `predict` run.
pub struct Candidate {
    net: FoldedNetwork,
    resolution: i64,
}

impl Candidate {
    /// A trained checkpoint, at its own resolution.
    pub fn checkpoint(path: &Path) -> Result<Self> {
        let loaded = crate::run::checkpoint::load_checkpoint(path, Device::Cpu)?;
        Ok(Candidate {
            resolution: loaded.meta.resolution as i64,
            net: loaded.folded(MemoryFormat::default()),
        })
    }

    /// An architecture with freshly initialised weights (speed and memory do not depend on
    /// the weights' values).
    pub fn arch(arch: &Arch, num_classes: i64, resolution: i64) -> Result<Self> {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::build(&vs.root(), arch, num_classes, 0.0, HeadInit::Reference)
            .with_context(|| format!("building {arch}"))?;
        Ok(Candidate {
            net: FoldedNetwork::new(&net, MemoryFormat::default()),
            resolution,
        })
    }

    fn input(&self, batch: i64) -> Tensor {
        Tensor::randn(
            [batch, 3, self.resolution, self.resolution],
            tch::kind::FLOAT_CPU,
        )
    }

    fn pass(&self, x: &Tensor) -> f64 {
        let t = Instant::now();
        let _ = tch::no_grad(|| self.net.forward(x))
            .sum(Kind::Float)
            .double_value(&[]);
        t.elapsed().as_secs_f64()
    }
}

/// Resets the kernel's peak-RSS mark of this process to its current RSS (Linux ≥ 4.0).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Growth of resident memory during one batch-32 pass, and the process peak during it.
fn memory(c: &Candidate) -> (Option<f64>, Option<f64>) {
    let x = c.input(32);
    let before = crate::process::rss_and_peak_mb();
    let reset = reset_peak();
    c.pass(&x);
    match (before, crate::process::rss_and_peak_mb()) {
        (Some((rss, _)), Some((_, peak))) if reset => (Some((peak - rss).max(0.0)), Some(peak)),
        (_, Some((_, peak))) => (None, Some(peak)),
        _ => (None, None),
    }
}

fn speed(batch: i64, mut seconds: Vec<f64>) -> Speed {
    seconds.sort_by(|a, b| a.total_cmp(b));
    let median = seconds[seconds.len() / 2];
    Speed {
        batch,
        images_per_s: batch as f64 / median,
        ms_per_image: median * 1e3 / batch as f64,
        iterations: seconds.len(),
    }
}

/// Speed at batch 1 and 32 and the memory of batch-32 inference of every candidate, in
/// their order.
pub fn measure_all(candidates: &[Candidate]) -> Vec<Cost> {
    let memory: Vec<_> = candidates.iter().map(memory).collect();
    let mut speeds: Vec<Vec<Speed>> = vec![Vec::new(); candidates.len()];
    for batch in BATCHES {
        let inputs: Vec<Tensor> = candidates.iter().map(|c| c.input(batch)).collect();
        for (c, x) in candidates.iter().zip(&inputs) {
            for _ in 0..WARMUP {
                c.pass(x);
            }
        }
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); candidates.len()];
        for _ in 0..ROUNDS {
            for ((c, x), t) in candidates.iter().zip(&inputs).zip(times.iter_mut()) {
                let start = Instant::now();
                let mut n = 0;
                while n < MAX_PASSES_PER_TURN
                    && (n == 0 || start.elapsed().as_secs_f64() < MIN_TURN_SECONDS)
                {
                    t.push(c.pass(x));
                    n += 1;
                }
            }
        }
        for (s, t) in speeds.iter_mut().zip(times) {
            s.push(speed(batch, t));
        }
    }
    speeds
        .into_iter()
        .zip(memory)
        .map(|(mut s, (inference_memory_mb, peak_rss_mb))| {
            let batch_32 = s.remove(1);
            let batch_1 = s.remove(0);
            Cost {
                batch_1,
                batch_32,
                inference_memory_mb,
                peak_rss_mb,
                threads: tch::get_num_threads(),
            }
        })
        .collect()
}
