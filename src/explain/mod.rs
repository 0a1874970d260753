//! Where the model looks: Grad-CAM maps of a trained checkpoint placed back on the original
//! X-ray (`muxmed explain`) and the ChestX-ray8 box benchmark (`muxmed localize`). Images go
//! through the checkpoint's own preprocessing, as `predict` does; maps come back through the
//! inverse of its geometry ([`Geometry`]).

pub mod figures;
pub mod heatmaps;
pub mod localize;

use std::path::Path;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

use crate::data::augment::{apply, image_rng, Img};
use crate::data::geometry::Geometry;
use crate::data::image::{decode_file, Gray};
use crate::data::loader::working_image;
use crate::model::device::batch_tensor;
use crate::model::folded::FoldedNetwork;
use crate::model::gradcam::{gradcam, min_max};
use crate::model::layout::MemoryFormat;
use crate::run::checkpoint::load_checkpoint;
use crate::run::CheckpointMeta;

/// A checkpoint ready to explain images.
pub struct Explainer {
    /// The inference model (BatchNorm folded); Grad-CAM's gradients flow only through its
    /// pooling and classifier.
    net: FoldedNetwork,
    pub meta: CheckpointMeta,
    device: Device,
}

/// One image as the network sees it, with the way back to its original pixels.
pub struct Prepared {
    pub original: Gray,
    pub input: Img,
    pub geometry: Geometry,
}

/// Grad-CAM of a batch: per image, per class, a map at the input's resolution in [0, 1].
pub struct Cams {
    pub maps: Vec<Vec<Vec<f32>>>,
    pub probs: Vec<Vec<f64>>,
    /// The feature map's (height, width): the grid the maps are upsampled from.
    pub grid: (usize, usize),
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))
        .context("copying a tensor out of libtorch")
}

impl Explainer {
    pub fn load(checkpoint: &Path, device: Device) -> Result<Self> {
        let loaded = load_checkpoint(checkpoint, device)?;
        Ok(Explainer {
            net: loaded.folded(MemoryFormat::default()),
            meta: loaded.meta,
            device,
        })
    }

    /// Decodes `path` and runs the checkpoint's eval preprocessing on it.
    pub fn prepare(&self, path: &Path) -> Result<Prepared> {
        prepare(&self.meta, path)
    }

    /// Grad-CAM maps and probabilities of every class for images of one input size.
    pub fn cams(&self, inputs: &[&Img]) -> Result<Cams> {
        let Some(first) = inputs.first() else {
            return Ok(Cams {
                maps: vec![],
                probs: vec![],
                grid: (0, 0),
            });
        };
        let (c, h, w) = (first.c, first.h, first.w);
        let mut data = Vec::with_capacity(inputs.len() * c * h * w);
        for i in inputs {
            data.extend_from_slice(&i.data);
        }
        let x = batch_tensor(&data, [inputs.len(), c, h, w], self.device);
        let g = gradcam(&self.net, &x);
        let rs = g.raw.size();
        let k = rs[1] as usize;
        let maps = to_vec(&g.map)?;
        let probs = to_vec(&g.logits.sigmoid())?;
        let per = h * w;
        Ok(Cams {
            maps: (0..inputs.len())
                .map(|n| {
                    (0..k)
                        .map(|j| maps[(n * k + j) * per..(n * k + j + 1) * per].to_vec())
                        .collect()
                })
                .collect(),
            probs: probs
                .chunks(k)
                .map(|p| p.iter().map(|v| *v as f64).collect())
                .collect(),
            grid: (rs[2] as usize, rs[3] as usize),
        })
    }
}

/// Decodes `path` and runs a checkpoint's eval preprocessing on it (what `predict` feeds the
/// network), keeping the original and the geometry between the two.
pub fn prepare(meta: &CheckpointMeta, path: &Path) -> Result<Prepared> {
    let original = decode_file(path)?;
    let geometry = Geometry::of(
        original.width as usize,
        original.height as usize,
        meta.working_size,
        &meta.eval_stages,
    )
    .with_context(|| format!("the checkpoint's eval pipeline, for {}", path.display()))?;
    let input = apply(
        &meta.eval_stages,
        working_image(&original, meta.working_size, meta.cache_dtype),
        &mut image_rng(0, 0, 0),
    );
    Ok(Prepared {
        original,
        input,
        geometry,
    })
}

/// The centre-prior baseline at the input's resolution: a Gaussian centred on the input
/// with σ a quarter of each side, min-max scaled.
pub fn centre_prior(w: usize, h: usize) -> Vec<f32> {
    let (sx, sy) = (w as f32 / 4.0, h as f32 / 4.0);
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let v: Vec<f32> = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f32 + 0.5 - cx, (i / w) as f32 + 0.5 - cy);
            (-(x * x) / (2.0 * sx * sx) - (y * y) / (2.0 * sy * sy)).exp()
        })
        .collect();
    let (lo, hi) = v
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    v.iter().map(|x| (x - lo) / (hi - lo)).collect()
}

/// The random baseline: uniform noise on the feature-map `grid` (seeded by `seed` and
/// `key`), upsampled and scaled exactly as Grad-CAM's maps are.
pub fn random_map(
    grid: (usize, usize),
    w: usize,
    h: usize,
    seed: u64,
    key: u64,
) -> Result<Vec<f32>> {
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ key.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let raw: Vec<f32> = (0..grid.0 * grid.1).map(|_| rng.random::<f32>()).collect();
    let t = Tensor::from_slice(&raw).view([1, 1, grid.0 as i64, grid.1 as i64]);
    to_vec(&min_max(&t.upsample_bilinear2d(
        [h as i64, w as i64],
        false,
        None,
        None,
    )))
}
