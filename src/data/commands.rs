//! What `muxmed augment preview`, `muxmed augment stats` and `muxmed bench data` do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::augment::{apply, image_rng, Img};
use super::cache::{prepare, to_working, Cache};
use super::dataset::load_split;
use super::image::decode_file;
use super::loader::{start_epoch, LoaderOptions, Source};
use crate::config::augment::Stage;
use crate::config::PipelineConfig;

/// Min-max stretch of channel 0 to 8 bits, for looking at an augmented image.
fn to_u8(img: &Img, size: usize) -> Vec<u8> {
    let plane = &img.data[..img.h * img.w];
    let (lo, hi) = plane
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
    let small = super::augment::resize(
        &Img::gray(
            img.h,
            img.w,
            plane.iter().map(|v| (v - lo) * scale / 255.0).collect(),
        ),
        size,
        size,
        crate::config::augment::Filter::Bilinear,
    );
    small
        .data
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}

/// A PNG grid: one row per image, the working-size original then `variants` augmented draws
/// (epochs 0, 1, ...), each shown at `tile` pixels.
pub fn preview(
    cfg: &PipelineConfig,
    manifest_dir: &Path,
    images: usize,
    variants: usize,
    out: &Path,
) -> Result<PathBuf> {
    let a = &cfg.augment;
    let split = load_split(manifest_dir, crate::labels::Split::Train)?;
    if split.is_empty() {
        bail!("the train split of {} is empty", manifest_dir.display());
    }
    let cache = Cache::open(manifest_dir, a).ok();
    let tile = 192usize;
    let n = images.min(split.len()).max(1);
    let cols = variants + 1;
    let (w, h) = (cols * (tile + 4) + 4, n * (tile + 4) + 4);
    let mut canvas = vec![255u8; w * h];
    for r in 0..n {
        let base = match &cache {
            Some(c) => c.image(
                c.slot(&split.image_ids[r])
                    .context("image not in the cache")?,
            ),
            None => {
                let p = split.paths[r]
                    .clone()
                    .context("the manifest has no image paths")?;
                let g = decode_file(&p)?;
                let s = a.working_size as usize;
                Img::gray(
                    s,
                    s,
                    to_working(&g, a.working_size)
                        .iter()
                        .map(|v| *v as f32 / 65535.0)
                        .collect(),
                )
            }
        };
        let mut tiles = vec![to_u8(&base, tile)];
        for e in 0..variants {
            let aug = apply(
                &a.train,
                base.clone(),
                &mut image_rng(cfg.train.seed, e as u64, r as u64),
            );
            tiles.push(to_u8(&aug, tile));
        }
        for (c, t) in tiles.iter().enumerate() {
            let (x0, y0) = (4 + c * (tile + 4), 4 + r * (tile + 4));
            for y in 0..tile {
                canvas[(y0 + y) * w + x0..(y0 + y) * w + x0 + tile]
                    .copy_from_slice(&t[y * tile..(y + 1) * tile]);
            }
        }
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &canvas,
        w as u32,
        h as u32,
        image::ExtendedColorType::L8,
    )?;
    crate::io::write_atomic(out, &png).with_context(|| format!("writing {}", out.display()))?;
    Ok(out.to_path_buf())
}

/// Mean and standard deviation of the train images in the prepared cache (working size).
pub fn stats(cfg: &PipelineConfig, manifest_dir: &Path) -> Result<(f64, f64, usize)> {
    let cache = Cache::open(manifest_dir, &cfg.augment)?;
    let split = load_split(manifest_dir, crate::labels::Split::Train)?;
    let slots: Vec<usize> = split
        .image_ids
        .iter()
        .filter_map(|id| cache.slot(id))
        .collect();
    let (s, s2, n) = slots
        .par_iter()
        .map(|&i| {
            let img = cache.image(i);
            let s: f64 = img.data.iter().map(|v| *v as f64).sum();
            let s2: f64 = img.data.iter().map(|v| (*v as f64).powi(2)).sum();
            (s, s2, img.data.len() as f64)
        })
        .reduce(|| (0.0, 0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    if n == 0.0 {
        bail!("no train images in the cache");
    }
    let mean = s / n;
    Ok((mean, (s2 / n - mean * mean).max(0.0).sqrt(), slots.len()))
}

/// Figures printed by `muxmed bench data`.
#[derive(Debug, serde::Serialize)]
pub struct DataBench {
    pub images: usize,
    pub workers: usize,
    /// (a) decode + resize of the original files to the working size.
    pub decode_resize_images_per_s: f64,
    /// (b) prepared cache + train augmentation + batching.
    pub cache_augment_batch_images_per_s: f64,
}

/// Runs both measurements on the PNG/JPEG files in `images_dir`.
pub fn bench(
    images_dir: &Path,
    stages: &[Stage],
    working_size: u32,
    workers: usize,
    batch: usize,
    epochs: usize,
) -> Result<DataBench> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(images_dir)
        .with_context(|| format!("reading {}", images_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| super::image::is_image_file(p))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no images in {}", images_dir.display());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers.max(1))
        .build()?;
    // (a) decode + resize.
    let t = Instant::now();
    let results: Vec<Result<Vec<u16>>> = pool.install(|| {
        files
            .par_iter()
            .map(|p| Ok(to_working(&decode_file(p)?, working_size)))
            .collect()
    });
    let decoded = t.elapsed().as_secs_f64();
    for r in &results {
        if let Err(e) = r {
            bail!("{e}");
        }
    }
    // (b) through a real prepared cache of the same images (a generic manifest in a temp dir).
    let tmp = bench_tempdir()?;
    let csv = tmp.join("labels.csv");
    let mut text = String::from("path,labels,patient_id,split\n");
    for (i, p) in files.iter().enumerate() {
        text += &format!("{},,{i},train\n", p.canonicalize()?.display());
    }
    std::fs::write(&csv, text)?;
    let d = crate::config::DataConfig {
        generic: Some(crate::config::GenericDataConfig {
            csv,
            labels: vec!["x".into()],
            dicom_folder: None,
        }),
        ..Default::default()
    };
    let mdir = tmp.join("manifest");
    super::manifest::build(&d, true)?.write(&mdir)?;
    let a = crate::config::AugmentConfig {
        working_size,
        ..Default::default()
    };
    prepare(&mdir, &a, &|_, _| {})?;
    let cache = Arc::new(Cache::open(&mdir, &a)?);
    let split = Arc::new(load_split(&mdir, crate::labels::Split::Train)?);
    let slots: Vec<usize> = split
        .image_ids
        .iter()
        .map(|id| cache.slot(id).context("slot"))
        .collect::<Result<_>>()?;
    let stages = Arc::new(stages.to_vec());
    let t = Instant::now();
    let mut n = 0;
    for epoch in 0..epochs {
        let o = LoaderOptions {
            batch_size: batch,
            shuffle: true,
            class_balanced: None,
            source_weights: Vec::new(),
            drop_last: false,
            seed: 0,
            epoch: epoch as u64,
            workers,
            prefetch: 4,
        };
        for b in start_epoch(
            split.clone(),
            Source::Cache(cache.clone(), slots.clone()),
            stages.clone(),
            o,
        )
        .map_err(anyhow::Error::msg)?
        {
            n += b.map_err(anyhow::Error::msg)?.indices.len();
        }
    }
    let loaded = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(DataBench {
        images: files.len(),
        workers,
        decode_resize_images_per_s: files.len() as f64 / decoded,
        cache_augment_batch_images_per_s: n as f64 / loaded,
    })
}

fn bench_tempdir() -> Result<PathBuf> {
    let p = std::env::temp_dir().join(format!("muxmed-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p)?;
    Ok(p)
}
