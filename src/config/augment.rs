//! The `augment:` section: the prepared-cache size and the ordered augmentation stages,
//! separately for training and evaluation.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Side of the square images `muxmed prepare` stores (shorter side resized, then centre
    /// cropped); the stages below start from it.
    pub working_size: u32,
    /// Sample type in the prepared cache: u8, or u16 to keep 16-bit sources' precision.
    pub cache_dtype: CacheDtype,
    /// A corrupt or truncated image: false stops with its name; true skips it and lists it.
    pub skip_bad_images: bool,
    pub train: Vec<Stage>,
    pub eval: Vec<Stage>,
    /// Extra evaluation pipelines averaged with `eval` by `muxmed evaluate --tta`.
    pub tta: Vec<Vec<Stage>>,
}

/// The sample type `prepare` stores working-size images in; every path from a file to the
/// network (cache, `predict`, `explain`) rounds pixels to it, so they see the same image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CacheDtype {
    /// 8 bits a sample: the default, as NIH's PNGs are 8-bit.
    #[default]
    U8,
    U16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Scale so the shorter side equals `size` (aspect kept).
    #[default]
    Shorter,
    /// Scale to exactly `size` x `size`.
    Exact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    Nearest,
    #[default]
    Bilinear,
    Bicubic,
    Lanczos3,
}

fn default_rrc_scale() -> [f64; 2] {
    [0.08, 1.0]
}
fn default_rrc_ratio() -> [f64; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}
fn one_pair() -> [f64; 2] {
    [1.0, 1.0]
}
fn half() -> f64 {
    0.5
}
fn one() -> f64 {
    1.0
}

/// One augmentation stage. Written in YAML as `- resize: {size: 256}` or `- to_rgb`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Stage {
    Resize {
        size: u32,
        #[serde(default)]
        mode: ResizeMode,
        #[serde(default)]
        filter: Filter,
    },
    CenterCrop {
        size: u32,
    },
    /// torchvision's RandomResizedCrop: a random area fraction in `scale` and aspect ratio
    /// in `ratio`, resized (bilinear) to `size` x `size`.
    RandomResizedCrop {
        size: u32,
        #[serde(default = "default_rrc_scale")]
        scale: [f64; 2],
        #[serde(default = "default_rrc_ratio")]
        ratio: [f64; 2],
    },
    /// Rotation by up to ±`degrees`, translation by up to ±`translate` of the size, zoom in
    /// `scale`; pixels from outside the image are black.
    RandomAffine {
        #[serde(default)]
        degrees: f64,
        #[serde(default)]
        translate: f64,
        #[serde(default = "one_pair")]
        scale: [f64; 2],
    },
    /// Mirror left-right with probability `p`.
    HorizontalFlip {
        #[serde(default = "half")]
        p: f64,
    },
    /// Brightness factor in 1 ± `brightness`, contrast factor in 1 ± `contrast` (around the
    /// image mean), gamma exponent in `gamma`; values clipped to [0, 1].
    ColorJitter {
        #[serde(default)]
        brightness: f64,
        #[serde(default)]
        contrast: f64,
        #[serde(default = "one_pair")]
        gamma: [f64; 2],
    },
    /// Additive N(0, std) noise with probability `p`.
    GaussianNoise {
        std: f64,
        #[serde(default = "one")]
        p: f64,
    },
    /// Replicate the gray channel to 3 channels (ImageNet backbones).
    ToRgb,
    /// (x - mean) / std per channel; one value per channel at this point of the pipeline.
    Normalize {
        mean: Vec<f64>,
        std: Vec<f64>,
    },
    /// ImageNet mean and std on 3 channels.
    NormalizeImagenet,
}

impl Stage {
    /// The (height, width) a resizing stage makes from an h×w image; None for the stages
    /// that keep the size or only crop.
    pub fn output_side(&self, h: u32, w: u32) -> Option<(u32, u32)> {
        match self {
            Stage::Resize { size, mode, .. } => Some(match mode {
                ResizeMode::Exact => (*size, *size),
                ResizeMode::Shorter if h <= w => {
                    (*size, (w as u64 * *size as u64 / h.max(1) as u64) as u32)
                }
                ResizeMode::Shorter => ((h as u64 * *size as u64 / w.max(1) as u64) as u32, *size),
            }),
            Stage::RandomResizedCrop { size, .. } => Some((*size, *size)),
            _ => None,
        }
    }

    /// The stage's name as written in a pipeline file.
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Resize { .. } => "resize",
            Stage::CenterCrop { .. } => "center_crop",
            Stage::RandomResizedCrop { .. } => "random_resized_crop",
            Stage::RandomAffine { .. } => "random_affine",
            Stage::HorizontalFlip { .. } => "horizontal_flip",
            Stage::ColorJitter { .. } => "color_jitter",
            Stage::GaussianNoise { .. } => "gaussian_noise",
            Stage::ToRgb => "to_rgb",
            Stage::Normalize { .. } => "normalize",
            Stage::NormalizeImagenet => "normalize_imagenet",
        }
    }

    /// Whether the stage draws random numbers with its settings (a flip with p = 1 or a
    /// jitter of zero width does not).
    pub fn is_random(&self) -> bool {
        match self {
            Stage::RandomResizedCrop { .. } => true,
            Stage::RandomAffine {
                degrees,
                translate,
                scale,
            } => *degrees != 0.0 || *translate != 0.0 || scale[0] != scale[1],
            Stage::HorizontalFlip { p } => *p > 0.0 && *p < 1.0,
            Stage::ColorJitter {
                brightness,
                contrast,
                gamma,
            } => *brightness != 0.0 || *contrast != 0.0 || gamma[0] != gamma[1],
            Stage::GaussianNoise { std, p } => *std != 0.0 && *p > 0.0,
            Stage::Resize { .. }
            | Stage::CenterCrop { .. }
            | Stage::ToRgb
            | Stage::Normalize { .. }
            | Stage::NormalizeImagenet => false,
        }
    }
}

pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            working_size: 256,
            cache_dtype: CacheDtype::U8,
            skip_bad_images: false,
            train: vec![
                Stage::RandomResizedCrop {
                    size: 224,
                    scale: [0.7, 1.0],
                    ratio: [0.9, 1.1],
                },
                Stage::RandomAffine {
                    degrees: 7.0,
                    translate: 0.05,
                    scale: [0.95, 1.05],
                },
                Stage::ColorJitter {
                    brightness: 0.1,
                    contrast: 0.1,
                    gamma: [0.9, 1.1],
                },
                Stage::ToRgb,
                Stage::NormalizeImagenet,
            ],
            eval: vec![
                Stage::Resize {
                    size: 224,
                    mode: ResizeMode::Shorter,
                    filter: Filter::Bilinear,
                },
                Stage::CenterCrop { size: 224 },
                Stage::ToRgb,
                Stage::NormalizeImagenet,
            ],
            tta: vec![],
        }
    }
}

/// Follows (channels, height, width) through a stage list from a square working image and
/// checks each stage can run; returns the output shape or (stage index, message).
pub fn output_shape(stages: &[Stage], working: u32) -> Result<(u32, u32, u32), (usize, String)> {
    let (mut c, mut h, mut w) = (1u32, working, working);
    for (i, s) in stages.iter().enumerate() {
        let bad = |m: String| Err((i, m));
        if let Some(out) = s.output_side(h, w) {
            if out.0 > h || out.1 > w {
                return bad(format!(
                    "`{}` makes {}x{} from {h}x{w}: it would upsample beyond augment.working_size ({working}), the size `prepare` caches images at, and train on blurred images labelled with a resolution they do not have. Raise augment.working_size to at least {} (then run `muxmed prepare` again) or lower train.resolution and this stage's size",
                    s.name(),
                    out.0,
                    out.1,
                    out.0.max(out.1),
                ));
            }
        }
        match s {
            Stage::Resize { size, .. } => {
                if *size == 0 {
                    return bad("size must be positive".into());
                }
                (h, w) = s.output_side(h, w).unwrap_or((h, w));
            }
            Stage::CenterCrop { size } => {
                if *size > h || *size > w || *size == 0 {
                    return bad(format!("cannot crop {size}x{size} from a {h}x{w} image"));
                }
                (h, w) = (*size, *size);
            }
            Stage::RandomResizedCrop { size, scale, ratio } => {
                if *size == 0 || !(0.0 < scale[0] && scale[0] <= scale[1] && scale[1] <= 1.0) {
                    return bad("needs size > 0 and 0 < scale[0] <= scale[1] <= 1".into());
                }
                if !(0.0 < ratio[0] && ratio[0] <= ratio[1]) {
                    return bad("needs 0 < ratio[0] <= ratio[1]".into());
                }
                (h, w) = (*size, *size);
            }
            Stage::RandomAffine {
                degrees,
                translate,
                scale,
            } => {
                if *degrees < 0.0
                    || !(0.0..0.5).contains(translate)
                    || !(0.0 < scale[0] && scale[0] <= scale[1])
                {
                    return bad(
                        "needs degrees >= 0, 0 <= translate < 0.5 and 0 < scale[0] <= scale[1]"
                            .into(),
                    );
                }
            }
            Stage::HorizontalFlip { p } | Stage::GaussianNoise { p, .. } => {
                if !(0.0..=1.0).contains(p) {
                    return bad(format!("p must be in [0, 1], got {p}"));
                }
            }
            Stage::ColorJitter {
                brightness,
                contrast,
                gamma,
            } => {
                let ok = (0.0..1.0).contains(brightness)
                    && (0.0..1.0).contains(contrast)
                    && 0.0 < gamma[0]
                    && gamma[0] <= gamma[1];
                if !ok {
                    return bad(
                        "needs 0 <= brightness < 1, 0 <= contrast < 1 and 0 < gamma[0] <= gamma[1]"
                            .into(),
                    );
                }
            }
            Stage::ToRgb => {
                if c != 1 {
                    return bad("the image already has 3 channels".into());
                }
                c = 3;
            }
            Stage::Normalize { mean, std } => {
                if mean.len() != c as usize || std.len() != c as usize {
                    return bad(format!(
                        "the image has {c} channel(s) here, so mean and std need {c} value(s) each (put to_rgb after normalize, or give one value per channel)"
                    ));
                }
                if std.iter().any(|s| *s <= 0.0) {
                    return bad("std values must be positive".into());
                }
            }
            Stage::NormalizeImagenet => {
                if c != 3 {
                    return bad(
                        "ImageNet normalisation needs 3 channels: put to_rgb before it".into(),
                    );
                }
            }
        }
    }
    Ok((c, h, w))
}
