//! The declared augmentation stages applied to one image. Every random draw comes from a
//! generator seeded by (run seed, epoch, image index), so an image gets the same
//! augmentation whatever thread processes it.

use fast_image_resize as fir;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::augment::{Filter, ResizeMode, Stage, IMAGENET_MEAN, IMAGENET_STD};

/// A float image, channels first (C, H, W).
#[derive(Debug, Clone, PartialEq)]
pub struct Img {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl Img {
    pub fn gray(h: usize, w: usize, data: Vec<f32>) -> Self {
        Img { c: 1, h, w, data }
    }

    fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.h + y) * self.w + x]
    }

    /// Bilinear sample at continuous pixel coordinates (pixel centres at integer + 0.5);
    /// outside the image is 0.
    fn sample(&self, c: usize, y: f32, x: f32) -> f32 {
        let (fy, fx) = (y - 0.5, x - 0.5);
        let (y0, x0) = (fy.floor(), fx.floor());
        let (dy, dx) = (fy - y0, fx - x0);
        let get = |yy: f32, xx: f32| -> f32 {
            if yy < 0.0 || xx < 0.0 || yy >= self.h as f32 || xx >= self.w as f32 {
                0.0
            } else {
                self.at(c, yy as usize, xx as usize)
            }
        };
        let a = get(y0, x0) * (1.0 - dx) + get(y0, x0 + 1.0) * dx;
        let b = get(y0 + 1.0, x0) * (1.0 - dx) + get(y0 + 1.0, x0 + 1.0) * dx;
        a * (1.0 - dy) + b * dy
    }
}

/// The generator of one image in one epoch (splitmix64 of the three numbers).
pub fn image_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    ChaCha8Rng::seed_from_u64(mix(mix(mix(seed) ^ epoch) ^ index))
}

/// Resizes every channel with fast_image_resize (antialiased convolution filters).
pub fn resize(img: &Img, h: usize, w: usize, filter: Filter) -> Img {
    if img.h == h && img.w == w {
        return img.clone();
    }
    let alg = match filter {
        Filter::Nearest => fir::ResizeAlg::Nearest,
        Filter::Bilinear => fir::ResizeAlg::Convolution(fir::FilterType::Bilinear),
        Filter::Bicubic => fir::ResizeAlg::Convolution(fir::FilterType::CatmullRom),
        Filter::Lanczos3 => fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3),
    };
    let mut out = Vec::with_capacity(img.c * h * w);
    let mut resizer = fir::Resizer::new();
    let opts = fir::ResizeOptions::new().resize_alg(alg);
    for c in 0..img.c {
        let mut src: Vec<f32> = img.data[c * img.h * img.w..(c + 1) * img.h * img.w].to_vec();
        let mut dst = vec![0f32; h * w];
        let s = fir::images::Image::from_slice_u8(
            img.w as u32,
            img.h as u32,
            bytemuck::cast_slice_mut(&mut src),
            fir::PixelType::F32,
        )
        .expect("buffer sized for the image");
        let mut d = fir::images::Image::from_slice_u8(
            w as u32,
            h as u32,
            bytemuck::cast_slice_mut(&mut dst),
            fir::PixelType::F32,
        )
        .expect("buffer sized for the image");
        resizer.resize(&s, &mut d, &opts).expect("same pixel types");
        out.extend_from_slice(&dst);
    }
    Img {
        c: img.c,
        h,
        w,
        data: out,
    }
}

fn crop(img: &Img, top: usize, left: usize, h: usize, w: usize) -> Img {
    let mut data = Vec::with_capacity(img.c * h * w);
    for c in 0..img.c {
        for y in top..top + h {
            let row = (c * img.h + y) * img.w;
            data.extend_from_slice(&img.data[row + left..row + left + w]);
        }
    }
    Img {
        c: img.c,
        h,
        w,
        data,
    }
}

/// Applies `stages` to `img`, drawing from `rng`.
pub fn apply(stages: &[Stage], mut img: Img, rng: &mut ChaCha8Rng) -> Img {
    for s in stages {
        img = apply_one(s, img, rng);
    }
    img
}

fn apply_one(stage: &Stage, img: Img, rng: &mut ChaCha8Rng) -> Img {
    match stage {
        Stage::Resize { size, mode, filter } => {
            let size = *size as usize;
            let (h, w) = match mode {
                ResizeMode::Exact => (size, size),
                ResizeMode::Shorter if img.h <= img.w => (size, img.w * size / img.h),
                ResizeMode::Shorter => (img.h * size / img.w, size),
            };
            resize(&img, h, w, *filter)
        }
        Stage::CenterCrop { size } => {
            let s = *size as usize;
            // torchvision rounds the offsets: int(round((H - s) / 2)).
            let top = ((img.h - s) as f64 / 2.0).round() as usize;
            let left = ((img.w - s) as f64 / 2.0).round() as usize;
            crop(&img, top, left, s, s)
        }
        Stage::RandomResizedCrop { size, scale, ratio } => {
            random_resized_crop(img, *size as usize, scale, ratio, rng)
        }
        Stage::RandomAffine {
            degrees,
            translate,
            scale,
        } => random_affine(img, *degrees, *translate, scale, rng),
        Stage::HorizontalFlip { p } => {
            if rng.random_bool(*p) {
                let mut out = img.clone();
                for c in 0..img.c {
                    for y in 0..img.h {
                        for x in 0..img.w {
                            out.data[(c * img.h + y) * img.w + x] = img.at(c, y, img.w - 1 - x);
                        }
                    }
                }
                out
            } else {
                img
            }
        }
        Stage::ColorJitter {
            brightness,
            contrast,
            gamma,
        } => color_jitter(img, *brightness, *contrast, gamma, rng),
        Stage::GaussianNoise { std, p } => {
            if rng.random_bool(*p) {
                let mut img = img;
                let std = *std as f32;
                for v in img.data.iter_mut() {
                    // Box-Muller from two uniforms.
                    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
                    let u2: f32 = rng.random();
                    *v += std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
                }
                img
            } else {
                img
            }
        }
        Stage::ToRgb => {
            let mut data = Vec::with_capacity(img.data.len() * 3);
            for _ in 0..3 {
                data.extend_from_slice(&img.data);
            }
            Img { c: 3, data, ..img }
        }
        Stage::Normalize { mean, std } => normalize(img, mean, std),
        Stage::NormalizeImagenet => normalize(img, &IMAGENET_MEAN, &IMAGENET_STD),
    }
}

/// torchvision's RandomResizedCrop: up to ten draws of an area fraction in `scale` and a
/// log-uniform aspect ratio in `ratio` that fit the image, else the central square; the crop
/// is resized to `size` (bilinear).
fn random_resized_crop(
    img: Img,
    size: usize,
    scale: &[f64; 2],
    ratio: &[f64; 2],
    rng: &mut ChaCha8Rng,
) -> Img {
    let (h, w) = (img.h as f64, img.w as f64);
    let area = h * w;
    let mut chosen = None;
    for _ in 0..10 {
        let target = area * rng.random_range(scale[0]..=scale[1]);
        let log_r = rng.random_range(ratio[0].ln()..=ratio[1].ln());
        let ar = log_r.exp();
        let cw = (target * ar).sqrt().round();
        let ch = (target / ar).sqrt().round();
        if cw > 0.0 && ch > 0.0 && cw <= w && ch <= h {
            let top = rng.random_range(0..=(h - ch) as usize);
            let left = rng.random_range(0..=(w - cw) as usize);
            chosen = Some((top, left, ch as usize, cw as usize));
            break;
        }
    }
    let (top, left, ch, cw) = chosen.unwrap_or_else(|| {
        let s = img.h.min(img.w);
        ((img.h - s) / 2, (img.w - s) / 2, s, s)
    });
    resize(&crop(&img, top, left, ch, cw), size, size, Filter::Bilinear)
}

/// A rotation by up to `degrees`, a shift by up to `translate` of the size and a zoom in
/// `scale`, about the centre, bilinear, zero outside.
fn random_affine(
    img: Img,
    degrees: f64,
    translate: f64,
    scale: &[f64; 2],
    rng: &mut ChaCha8Rng,
) -> Img {
    let angle = rng.random_range(-degrees..=degrees).to_radians() as f32;
    let tx = (rng.random_range(-translate..=translate) * img.w as f64) as f32;
    let ty = (rng.random_range(-translate..=translate) * img.h as f64) as f32;
    let sc = rng.random_range(scale[0]..=scale[1]) as f32;
    let (cy, cx) = (img.h as f32 / 2.0, img.w as f32 / 2.0);
    let (ca, sb) = (angle.cos() / sc, angle.sin() / sc);
    let mut data = vec![0f32; img.data.len()];
    for c in 0..img.c {
        for y in 0..img.h {
            // Inverse map of the output pixel centres: the source position is
            // linear in x, so it is stepped along the row.
            let oy = y as f32 + 0.5 - cy - ty;
            let ox0 = 0.5 - cx - tx;
            let mut sx = ca * ox0 + sb * oy + cx;
            let mut sy = -sb * ox0 + ca * oy + cy;
            let start = (c * img.h + y) * img.w;
            for out in data[start..start + img.w].iter_mut() {
                *out = img.sample(c, sy, sx);
                sx += ca;
                sy -= sb;
            }
        }
    }
    Img { data, ..img }
}

/// Brightness and contrast factors about the mean, then a gamma, each drawn from its range.
fn color_jitter(
    img: Img,
    brightness: f64,
    contrast: f64,
    gamma: &[f64; 2],
    rng: &mut ChaCha8Rng,
) -> Img {
    let b = rng.random_range(1.0 - brightness..=1.0 + brightness) as f32;
    let k = rng.random_range(1.0 - contrast..=1.0 + contrast) as f32;
    let g = rng.random_range(gamma[0]..=gamma[1]) as f32;
    let mut img = img;
    let mean = img.data.iter().sum::<f32>() / img.data.len().max(1) as f32;
    // x^g through a 4096-entry table with linear interpolation (error below 1e-4,
    // far under the 8-bit step of the source images).
    const N: usize = 4096;
    let table: Vec<f32> = (0..=N).map(|i| (i as f32 / N as f32).powf(g)).collect();
    for v in img.data.iter_mut() {
        let x = ((*v * b - mean * b) * k + mean * b).clamp(0.0, 1.0) * N as f32;
        let i = (x as usize).min(N - 1);
        let f = x - i as f32;
        *v = table[i] + (table[i + 1] - table[i]) * f;
    }
    img
}

fn normalize(mut img: Img, mean: &[f64], std: &[f64]) -> Img {
    let plane = img.h * img.w;
    for c in 0..img.c {
        let (m, s) = (mean[c] as f32, std[c] as f32);
        for v in &mut img.data[c * plane..(c + 1) * plane] {
            *v = (*v - m) / s;
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::augment::Stage;

    fn ramp(h: usize, w: usize) -> Img {
        Img::gray(
            h,
            w,
            (0..h * w).map(|i| (i % w) as f32 / w as f32).collect(),
        )
    }

    fn rng() -> ChaCha8Rng {
        image_rng(1, 0, 0)
    }

    #[test]
    fn resize_shorter_side_keeps_aspect() {
        let out = apply(
            &[Stage::Resize {
                size: 50,
                mode: ResizeMode::Shorter,
                filter: Filter::Bilinear,
            }],
            ramp(100, 200),
            &mut rng(),
        );
        assert_eq!((out.h, out.w), (50, 100));
        // A horizontal ramp stays a ramp: left side dark, right side bright.
        assert!(out.data[0] < 0.05 && out.data[99] > 0.95);
    }

    #[test]
    fn center_crop_takes_the_middle() {
        let mut img = Img::gray(4, 4, vec![0.0; 16]);
        img.data[5] = 1.0; // (1,1)
        let out = apply(&[Stage::CenterCrop { size: 2 }], img, &mut rng());
        assert_eq!(out.data, vec![1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn random_resized_crop_full_scale_is_a_resize() {
        let img = ramp(64, 64);
        let s = Stage::RandomResizedCrop {
            size: 32,
            scale: [1.0, 1.0],
            ratio: [1.0, 1.0],
        };
        let out = apply(&[s], img.clone(), &mut rng());
        let plain = resize(&img, 32, 32, Filter::Bilinear);
        assert_eq!(out, plain);
        // A small scale zooms in: the crop covers a narrower range of the ramp.
        let s = Stage::RandomResizedCrop {
            size: 32,
            scale: [0.1, 0.1],
            ratio: [1.0, 1.0],
        };
        let z = apply(&[s], img, &mut rng());
        let span = |i: &Img| i.data[31] - i.data[0];
        assert!(
            span(&z) < 0.5 * span(&plain),
            "{} vs {}",
            span(&z),
            span(&plain)
        );
    }

    #[test]
    fn affine_identity_zoom_and_rotation() {
        let mut img = Img::gray(9, 9, vec![0.0; 81]);
        img.data[0] = 1.0; // top-left pixel
        let s = Stage::RandomAffine {
            degrees: 0.0,
            translate: 0.0,
            scale: [1.0, 1.0],
        };
        assert_eq!(apply(&[s], img.clone(), &mut rng()), img);
        // degrees range [90, 90] cannot be written; check the zoom instead: scale 2 moves the
        // bright corner out of the frame.
        let s = Stage::RandomAffine {
            degrees: 0.0,
            translate: 0.0,
            scale: [2.0, 2.0],
        };
        let z = apply(&[s], img, &mut rng());
        assert_eq!(z.data.iter().sum::<f32>(), 0.0);
    }

    #[test]
    fn flip_mirrors_and_is_reversible() {
        let img = ramp(3, 5);
        let f = apply(&[Stage::HorizontalFlip { p: 1.0 }], img.clone(), &mut rng());
        assert_eq!(f.data[0], img.data[4]);
        assert_eq!(
            apply(&[Stage::HorizontalFlip { p: 1.0 }], f, &mut rng()),
            img
        );
        assert_eq!(
            apply(&[Stage::HorizontalFlip { p: 0.0 }], img.clone(), &mut rng()),
            img
        );
    }

    #[test]
    fn jitter_changes_intensity_within_bounds() {
        let img = ramp(8, 8);
        let s = Stage::ColorJitter {
            brightness: 0.0,
            contrast: 0.0,
            gamma: [2.0, 2.0],
        };
        let g = apply(&[s], img.clone(), &mut rng());
        for (a, b) in img.data.iter().zip(&g.data) {
            assert!((b - a * a).abs() < 1e-4);
        }
        let s = Stage::ColorJitter {
            brightness: 0.5,
            contrast: 0.5,
            gamma: [1.0, 1.0],
        };
        let j = apply(&[s], img.clone(), &mut rng());
        assert!(j.data.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_ne!(j, img);
    }

    #[test]
    fn noise_has_the_requested_spread() {
        let img = Img::gray(100, 100, vec![0.5; 10_000]);
        let n = apply(
            &[Stage::GaussianNoise { std: 0.1, p: 1.0 }],
            img,
            &mut rng(),
        );
        let mean = n.data.iter().sum::<f32>() / 1e4;
        let sd = (n.data.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 1e4).sqrt();
        assert!(
            (mean - 0.5).abs() < 0.005 && (sd - 0.1).abs() < 0.005,
            "{mean} {sd}"
        );
    }

    #[test]
    fn rgb_then_imagenet_normalisation() {
        let img = Img::gray(1, 2, vec![0.485, 1.0]);
        let out = apply(&[Stage::ToRgb, Stage::NormalizeImagenet], img, &mut rng());
        assert_eq!((out.c, out.data.len()), (3, 6));
        assert!(out.data[0].abs() < 1e-6);
        assert!((out.data[5] - ((1.0 - 0.406) / 0.225) as f32).abs() < 1e-5);
    }

    #[test]
    fn same_seed_epoch_index_same_draws() {
        let stages = crate::config::AugmentConfig::default().train;
        let img = ramp(256, 256);
        let a = apply(&stages, img.clone(), &mut image_rng(3, 1, 17));
        let b = apply(&stages, img.clone(), &mut image_rng(3, 1, 17));
        let c = apply(&stages, img, &mut image_rng(3, 2, 17));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!((a.c, a.h, a.w), (3, 224, 224));
    }
}
