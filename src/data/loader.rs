//! A bounded, parallel batch pipeline: worker threads (a rayon pool separate from libtorch's
//! threads) read the prepared cache or decode files, augment, and assemble batches ahead of
//! the training loop; a bounded channel gives back-pressure so memory stays flat.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::Rng;
use rayon::prelude::*;

use super::augment::{apply, image_rng, Img};
use super::cache::Cache;
use super::dataset::SplitData;
use super::image::{decode_file, Gray};
use crate::config::augment::{CacheDtype, Stage};
use crate::config::BalanceWeighting;

/// Where the working-size images come from.
#[derive(Clone)]
pub enum Source {
    /// The prepared cache (slot per item).
    Cache(Arc<Cache>, Vec<usize>),
    /// Decode the original files (shorter side to `working_size`, centre crop, samples
    /// rounded to the cache's type): the very pixels `prepare` would have cached.
    Files(Vec<PathBuf>, u32, CacheDtype),
}

/// One batch, ready to become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// N x C x H x W, row-major.
    pub images: Vec<f32>,
    pub shape: [usize; 4],
    /// N x K targets.
    pub targets: Vec<f32>,
    /// Positions of the batch's images in the split.
    pub indices: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct LoaderOptions {
    pub batch_size: usize,
    pub shuffle: bool,
    /// Draw images with replacement by the frequency of their rarest label (see
    /// [`draw_probabilities`]) instead of a permutation.
    pub class_balanced: Option<Balance>,
    /// `data.sources` weights by dataset name: an image's draw probability is multiplied by
    /// its dataset's weight (empty: none given).
    pub source_weights: Vec<(String, f64)>,
    pub drop_last: bool,
    pub seed: u64,
    pub epoch: u64,
    pub workers: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
}

/// Class-balanced sampling: the weighting and the cap on repeats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balance {
    pub weighting: BalanceWeighting,
    /// Largest expected number of draws of one image per epoch of n draws.
    pub max_repeat: Option<f64>,
}

/// Each image's probability in one class-balanced draw. An image's weight comes from the
/// frequency f of its rarest positive label ("no finding" counting as a label of its own):
/// 1/√f or 1/f. With a cap, probabilities above max_repeat/n are set to it and the rest
/// rescaled to sum to 1 again (repeated until none is above), so in an epoch of n draws no
/// image is expected more than max_repeat times.
pub fn draw_probabilities(labels: &[Vec<f32>], b: Balance) -> Vec<f64> {
    let n = labels.len();
    let k = labels.first().map_or(0, |l| l.len());
    let mut freq = vec![0f64; k + 1];
    let rarest = |l: &[f32], freq: &[f64]| -> usize {
        (0..k)
            .filter(|&j| l[j] > 0.5)
            .min_by(|&a, &c| freq[a].total_cmp(&freq[c]))
            .unwrap_or(k)
    };
    for l in labels {
        let pos: Vec<usize> = (0..k).filter(|&j| l[j] > 0.5).collect();
        pos.iter().for_each(|&j| freq[j] += 1.0);
        if pos.is_empty() {
            freq[k] += 1.0;
        }
    }
    let w: Vec<f64> = labels
        .iter()
        .map(|l| {
            let f = freq[rarest(l, &freq)].max(1.0);
            match b.weighting {
                BalanceWeighting::Sqrt => 1.0 / f.sqrt(),
                BalanceWeighting::Inverse => 1.0 / f,
            }
        })
        .collect();
    let total: f64 = w.iter().sum();
    let mut p: Vec<f64> = w.iter().map(|x| x / total).collect();
    if let Some(cap) = b.max_repeat.map(|m| m / n as f64) {
        let mut capped = vec![false; n];
        loop {
            let over: Vec<usize> = (0..n).filter(|&i| !capped[i] && p[i] > cap).collect();
            if over.is_empty() {
                break;
            }
            over.iter().for_each(|&i| capped[i] = true);
            let fixed = capped.iter().filter(|c| **c).count() as f64 * cap;
            let free: f64 = (0..n).filter(|&i| !capped[i]).map(|i| w[i]).sum();
            for i in 0..n {
                p[i] = if capped[i] {
                    cap
                } else {
                    w[i] / free * (1.0 - fixed).max(0.0)
                };
            }
        }
    }
    p
}

/// Each image's probability in one draw under class balance and the sources' weights
/// (None: neither is asked for, so an epoch is a permutation).
pub fn weighted_draws(split: &SplitData, o: &LoaderOptions) -> Option<Vec<f64>> {
    let n = split.len();
    if o.class_balanced.is_none() && o.source_weights.is_empty() {
        return None;
    }
    let mut p = match o.class_balanced {
        Some(b) => draw_probabilities(&split.labels, b),
        None => vec![1.0 / n.max(1) as f64; n],
    };
    if !o.source_weights.is_empty() {
        let weight = |d: &str| {
            o.source_weights
                .iter()
                .find(|(name, _)| name == d)
                .map_or(1.0, |(_, w)| *w)
        };
        for (p, d) in p.iter_mut().zip(&split.datasets) {
            *p *= weight(d);
        }
        let total: f64 = p.iter().sum();
        p.iter_mut().for_each(|v| *v /= total);
    }
    Some(p)
}

/// The order of items for one epoch: a seeded permutation, weighted draws with replacement
/// ([`weighted_draws`]), or 0..n.
pub fn epoch_order(split: &SplitData, o: &LoaderOptions) -> Vec<usize> {
    let n = split.len();
    let mut rng = image_rng(o.seed, o.epoch, u64::MAX);
    if let Some(draws) = weighted_draws(split, o) {
        let mut cum = Vec::with_capacity(n);
        let mut acc = 0.0;
        for p in draws {
            acc += p;
            cum.push(acc);
        }
        (0..n)
            .map(|_| {
                let u: f64 = rng.random();
                cum.partition_point(|c| *c < u).min(n - 1)
            })
            .collect()
    } else {
        let mut order: Vec<usize> = (0..n).collect();
        if o.shuffle {
            order.shuffle(&mut rng);
        }
        order
    }
}

/// A decoded original as the working-size square the stages start from (what `prepare`
/// stores in the cache), values in [0, 1].
pub fn working_image(g: &Gray, size: u32, dtype: CacheDtype) -> Img {
    let s = size as usize;
    let px = super::cache::to_working(g, size);
    let data = match dtype {
        CacheDtype::U8 => px
            .iter()
            .map(|v| super::cache::narrow_to_u8(*v) as f32 / 255.0)
            .collect(),
        CacheDtype::U16 => px.iter().map(|v| *v as f32 / 65535.0).collect(),
    };
    Img::gray(s, s, data)
}

/// Loads, augments and returns item `i` of the split. The augmentation draws are keyed on
/// `position`, the item's place in the epoch's order: with class-balanced sampling an image
/// drawn twice in one epoch gets two different augmented copies.
pub fn load_item(
    source: &Source,
    i: usize,
    position: usize,
    stages: &[Stage],
    seed: u64,
    epoch: u64,
) -> Result<Img, String> {
    let img = match source {
        Source::Cache(c, slots) => c.image(slots[i]),
        Source::Files(paths, size, dtype) => working_image(
            &decode_file(&paths[i]).map_err(|e| e.to_string())?,
            *size,
            *dtype,
        ),
    };
    Ok(apply(
        stages,
        img,
        &mut image_rng(seed, epoch, position as u64),
    ))
}

/// A running epoch: iterate to get batches in order.
pub struct Epoch {
    rx: Receiver<Result<Batch, String>>,
    handle: Option<JoinHandle<()>>,
    pub batches: usize,
}

impl Iterator for Epoch {
    type Item = Result<Batch, String>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        // Dropping the receiver makes the producer's next send fail, which ends it.
        let (_tx, rx) = sync_channel(1);
        let _ = std::mem::replace(&mut self.rx, rx);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Starts producing the batches of one epoch in the background.
pub fn start_epoch(
    split: Arc<SplitData>,
    source: Source,
    stages: Arc<Vec<Stage>>,
    o: LoaderOptions,
) -> Result<Epoch, String> {
    start_epoch_at(split, source, stages, o, 0)
}

/// [`start_epoch`] from batch `first` on (a resumed epoch): the earlier batches are neither
/// loaded nor augmented, and the later ones are the same as in an uninterrupted epoch.
pub fn start_epoch_at(
    split: Arc<SplitData>,
    source: Source,
    stages: Arc<Vec<Stage>>,
    o: LoaderOptions,
    first: usize,
) -> Result<Epoch, String> {
    let order: Vec<(usize, usize)> = epoch_order(&split, &o).into_iter().enumerate().collect();
    let mut batches: Vec<Vec<(usize, usize)>> = order
        .chunks(o.batch_size.max(1))
        .map(|c| c.to_vec())
        .collect();
    if o.drop_last && batches.last().is_some_and(|b| b.len() < o.batch_size) {
        batches.pop();
    }
    batches.drain(..first.min(batches.len()));
    let n_batches = batches.len();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(o.workers.max(1))
        .thread_name(|i| format!("muxmed-loader-{i}"))
        .build()
        .map_err(|e| e.to_string())?;
    let (tx, rx) = sync_channel(o.prefetch.max(1));
    let handle = std::thread::spawn(move || {
        for idx in batches {
            let items: Vec<Result<Img, String>> = pool.install(|| {
                idx.par_iter()
                    .map(|&(pos, i)| load_item(&source, i, pos, &stages, o.seed, o.epoch))
                    .collect()
            });
            let batch = (|| {
                let mut images = Vec::new();
                let mut shape = [idx.len(), 0, 0, 0];
                for it in items {
                    let img = it?;
                    shape[1..].copy_from_slice(&[img.c, img.h, img.w]);
                    images.extend_from_slice(&img.data);
                }
                let targets = idx
                    .iter()
                    .flat_map(|&(_, i)| split.labels[i].iter().copied())
                    .collect();
                Ok(Batch {
                    images,
                    shape,
                    targets,
                    indices: idx.iter().map(|&(_, i)| i).collect(),
                })
            })();
            let stop = batch.is_err();
            if tx.send(batch).is_err() || stop {
                return;
            }
        }
    });
    Ok(Epoch {
        rx,
        handle: Some(handle),
        batches: n_batches,
    })
}
