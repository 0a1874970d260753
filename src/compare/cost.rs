//! Inference cost measured the same way for every compared model: in this process, one
//! model after the other, on the CPU, random inputs at the model's resolution, two warm-up
//! passes, then the median of timed passes; memory from the kernel's resident-set counters.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tch::{nn, Device, Kind, Tensor};

use super::stats::{Cost, Speed};
use crate::config::Arch;
use crate::model::muxnet::HeadInit;
use crate::model::network::Network;

/// At least this many timed passes, and more until this much time has passed (at most 30).
const MIN_ITERS: usize = 3;
const MIN_SECONDS: f64 = 1.5;
const MAX_ITERS: usize = 30;
const WARMUP: usize = 2;

/// `VmRSS` and `VmHWM` of this process in MB, from /proc/self/status.
fn rss_and_peak_mb() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Resets the kernel's peak-RSS mark of this process to its current RSS (Linux ≥ 4.0).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn time_batch(net: &Network, batch: i64, resolution: i64) -> Speed {
    let x = Tensor::randn([batch, 3, resolution, resolution], tch::kind::FLOAT_CPU);
    let pass = || {
        tch::no_grad(|| net.forward_t(&x, false))
            .sum(Kind::Float)
            .double_value(&[])
    };
    for _ in 0..WARMUP {
        pass();
    }
    let mut seconds = Vec::new();
    let start = Instant::now();
    while seconds.len() < MAX_ITERS
        && (seconds.len() < MIN_ITERS || start.elapsed().as_secs_f64() < MIN_SECONDS)
    {
        let t = Instant::now();
        pass();
        seconds.push(t.elapsed().as_secs_f64());
    }
    let iterations = seconds.len();
    seconds.sort_by(|a, b| a.total_cmp(b));
    let median = seconds[iterations / 2];
    Speed {
        batch,
        images_per_s: batch as f64 / median,
        ms_per_image: median * 1e3 / batch as f64,
        iterations,
    }
}

/// Speed at batch 1 and 32, and the memory of batch-32 inference.
pub fn measure(net: &Network, resolution: i64) -> Cost {
    let batch_1 = time_batch(net, 1, resolution);
    let before = rss_and_peak_mb();
    let reset = reset_peak();
    let batch_32 = time_batch(net, 32, resolution);
    let after = rss_and_peak_mb();
    let (inference_memory_mb, peak_rss_mb) = match (before, after) {
        (Some((rss, _)), Some((_, peak))) if reset => (Some((peak - rss).max(0.0)), Some(peak)),
        (_, Some((_, peak))) => (None, Some(peak)),
        _ => (None, None),
    };
    Cost {
        batch_1,
        batch_32,
        inference_memory_mb,
        peak_rss_mb,
        threads: tch::get_num_threads(),
    }
}

/// Measures a trained checkpoint at its own resolution.
pub fn measure_checkpoint(path: &Path) -> Result<Cost> {
    let loaded = crate::eval::run_eval::load_checkpoint(path, Device::Cpu)?;
    Ok(measure(&loaded.net, loaded.meta.resolution as i64))
}

/// Measures an architecture with freshly initialised weights (speed and memory do not
/// depend on the weights' values).
pub fn measure_arch(arch: &Arch, num_classes: i64, resolution: i64) -> Result<Cost> {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::build(&vs.root(), arch, num_classes, 0.0, HeadInit::Reference)
        .with_context(|| format!("building {arch}"))?;
    Ok(measure(&net, resolution))
}
