//! Where each pixel of the network's input comes from in the original image. The evaluation
//! path (centre square of the original resized to the working size, then the `eval` stages'
//! resizes and centre crops) is an axis-aligned affine map per axis; [`Geometry`] holds it
//! and samples a map made at the input's resolution back onto the original pixels.

use crate::config::augment::Stage;

/// One axis of the map: `original = offset + scale * input`, in continuous pixel-edge
/// coordinates (pixel i covers [i, i + 1)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axis {
    pub offset: f64,
    pub scale: f64,
}

impl Axis {
    fn identity() -> Self {
        Axis {
            offset: 0.0,
            scale: 1.0,
        }
    }
    /// The current image is `from` pixels along this axis and becomes `to`.
    fn resize(&mut self, from: usize, to: usize) {
        self.scale *= from as f64 / to as f64;
    }
    /// The first `start` pixels are cut away.
    fn crop(&mut self, start: f64) {
        self.offset += self.scale * start;
    }
    pub fn to_original(&self, u: f64) -> f64 {
        self.offset + self.scale * u
    }
    pub fn to_input(&self, x: f64) -> f64 {
        (x - self.offset) / self.scale
    }
}

/// The evaluation geometry of one original image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Original image size (width, height).
    pub original: (usize, usize),
    /// Network input size (width, height).
    pub input: (usize, usize),
    pub x: Axis,
    pub y: Axis,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GeometryError {
    #[error("the eval stage `{0}` moves pixels at random, so a map cannot be placed back on the original image")]
    Random(&'static str),
    #[error("the eval stage `{0}` is not a resize, centre crop or mirror, so a map cannot be placed back on the original image")]
    NotAxisAligned(&'static str),
    #[error("center_crop of {crop} on an image of {w}x{h}")]
    CropTooLarge { crop: usize, w: usize, h: usize },
}

impl Geometry {
    /// The geometry of an original of `width` x `height` through the working-size square
    /// (what `prepare` and `predict` do) and the `eval` stages, mirroring
    /// [`crate::data::augment::apply`] stage by stage.
    pub fn of(
        width: usize,
        height: usize,
        working_size: u32,
        stages: &[Stage],
    ) -> Result<Geometry, GeometryError> {
        let (mut x, mut y) = (Axis::identity(), Axis::identity());
        // `cache::to_working`: centre square (offsets rounded down), resized to the working size.
        let s = width.min(height);
        x.crop(((width - s) / 2) as f64);
        y.crop(((height - s) / 2) as f64);
        let ws = working_size as usize;
        x.resize(s, ws);
        y.resize(s, ws);
        let (mut w, mut h) = (ws, ws);
        for stage in stages {
            match stage {
                Stage::Resize { size, mode, .. } => {
                    let size = *size as usize;
                    let (nh, nw) = match mode {
                        crate::config::augment::ResizeMode::Exact => (size, size),
                        crate::config::augment::ResizeMode::Shorter if h <= w => {
                            (size, w * size / h)
                        }
                        crate::config::augment::ResizeMode::Shorter => (h * size / w, size),
                    };
                    x.resize(w, nw);
                    y.resize(h, nh);
                    (w, h) = (nw, nh);
                }
                Stage::CenterCrop { size } => {
                    let c = *size as usize;
                    if c > w || c > h {
                        return Err(GeometryError::CropTooLarge { crop: c, w, h });
                    }
                    // As `augment::apply`: offsets rounded like torchvision.
                    x.crop(((w - c) as f64 / 2.0).round());
                    y.crop(((h - c) as f64 / 2.0).round());
                    (w, h) = (c, c);
                }
                Stage::HorizontalFlip { p } if *p >= 1.0 => {
                    x.offset += x.scale * w as f64;
                    x.scale = -x.scale;
                }
                Stage::RandomAffine {
                    degrees,
                    translate,
                    scale,
                } if *degrees == 0.0 && *translate == 0.0 && scale[0] == scale[1] => {
                    // A fixed zoom by `a` about the centre: input u shows u' = c + (u - c) / a.
                    let a = scale[0];
                    for (axis, n) in [(&mut x, w), (&mut y, h)] {
                        let c = n as f64 / 2.0;
                        axis.offset += axis.scale * c * (1.0 - 1.0 / a);
                        axis.scale /= a;
                    }
                }
                s if s.is_random() => return Err(GeometryError::Random(s.name())),
                Stage::RandomResizedCrop { .. } | Stage::RandomAffine { .. } => {
                    return Err(GeometryError::NotAxisAligned(stage.name()))
                }
                Stage::HorizontalFlip { .. }
                | Stage::ColorJitter { .. }
                | Stage::GaussianNoise { .. }
                | Stage::ToRgb
                | Stage::Normalize { .. }
                | Stage::NormalizeImagenet => {}
            }
        }
        Ok(Geometry {
            original: (width, height),
            input: (w, h),
            x,
            y,
        })
    }

    /// Samples `map` (input height x width, row-major) at every original pixel's centre,
    /// bilinearly; pixels the network never saw (the cropped-away margin) are NaN.
    pub fn to_original(&self, map: &[f32]) -> Vec<f32> {
        let (iw, ih) = self.input;
        assert_eq!(map.len(), iw * ih, "map size");
        let (ow, oh) = self.original;
        let at = |r: usize, c: usize| map[r * iw + c];
        // Per column: the input column pair and weight, or None outside the input.
        let taps = |axis: &Axis, n_out: usize, n_in: usize| -> Vec<Option<(usize, usize, f32)>> {
            (0..n_out)
                .map(|i| {
                    let u = axis.to_input(i as f64 + 0.5);
                    if !(0.0..n_in as f64).contains(&u) {
                        return None;
                    }
                    let f = (u - 0.5).clamp(0.0, (n_in - 1) as f64);
                    let i0 = f.floor() as usize;
                    let i1 = (i0 + 1).min(n_in - 1);
                    Some((i0, i1, (f - i0 as f64) as f32))
                })
                .collect()
        };
        let cols = taps(&self.x, ow, iw);
        let rows = taps(&self.y, oh, ih);
        let mut out = vec![f32::NAN; ow * oh];
        for (r, row) in rows.iter().enumerate() {
            let Some((r0, r1, dy)) = *row else { continue };
            for (c, col) in cols.iter().enumerate() {
                let Some((c0, c1, dx)) = *col else { continue };
                let top = at(r0, c0) * (1.0 - dx) + at(r0, c1) * dx;
                let bottom = at(r1, c0) * (1.0 - dx) + at(r1, c1) * dx;
                out[r * ow + c] = top * (1.0 - dy) + bottom * dy;
            }
        }
        out
    }

    /// The part of the original the network saw, as (x0, y0, x1, y1) in pixel-edge
    /// coordinates.
    pub fn seen(&self) -> (f64, f64, f64, f64) {
        let (a, b) = (
            self.x.to_original(0.0),
            self.x.to_original(self.input.0 as f64),
        );
        let (c, d) = (
            self.y.to_original(0.0),
            self.y.to_original(self.input.1 as f64),
        );
        (a.min(b), c.min(d), a.max(b), c.max(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::augment::{Filter, ResizeMode};
    use crate::data::augment::{apply, image_rng};
    use crate::data::image::Gray;
    use crate::data::loader::working_image;

    fn eval_stages() -> Vec<Stage> {
        vec![
            Stage::Resize {
                size: 96,
                mode: ResizeMode::Shorter,
                filter: Filter::Bilinear,
            },
            Stage::CenterCrop { size: 80 },
            Stage::ToRgb,
        ]
    }

    /// A non-square original whose pixel values are their own x (or y) coordinate: pushed
    /// through the real pipeline (`to_working` and `augment::apply`), each input pixel shows
    /// the original coordinate the geometry predicts for it.
    #[test]
    fn input_pixels_come_from_where_the_geometry_says_for_a_non_square_source() {
        let (w, h) = (300usize, 200usize);
        for along_x in [true, false] {
            let n = if along_x { w } else { h } as f32;
            let data: Vec<f32> = (0..w * h)
                .map(|i| {
                    let (x, y) = (i % w, i / w);
                    (if along_x { x } else { y }) as f32 / n
                })
                .collect();
            let g = Gray {
                width: w as u32,
                height: h as u32,
                data,
                bits: 16,
            };
            let img = apply(
                &eval_stages(),
                working_image(&g, 100, crate::config::augment::CacheDtype::U16),
                &mut image_rng(0, 0, 0),
            );
            let geo = Geometry::of(w, h, 100, &eval_stages()).unwrap();
            assert_eq!(geo.input, (80, 80));
            assert_eq!((img.w, img.h), (80, 80));
            // Away from the borders, where the resize filters see only the ramp.
            for i in 5..75 {
                let (r, c) = if along_x { (40, i) } else { (i, 40) };
                let axis = if along_x { &geo.x } else { &geo.y };
                let want = (axis.to_original(i as f64 + 0.5) - 0.5) as f32 / n;
                let got = img.data[r * 80 + c];
                // u16 quantisation of the working image (1/65535) and f32 filters.
                // In original pixels. The resizes' antialiasing filters take discrete taps,
                // which moves each sample's centroid by up to ~0.035 working pixels in a
                // 24-pixel cycle (100 -> 96), i.e. up to 0.07 original pixels; a wrong crop
                // offset or pixel-centre convention would be off by 0.5 to 2 pixels.
                let off = ((got - want) * n).abs();
                assert!(off < 0.08, "{along_x} {i}: off by {off} original pixels");
            }
        }
    }

    #[test]
    fn the_cropped_margin_is_not_seen_and_a_peak_lands_where_it_came_from() {
        let geo = Geometry::of(300, 200, 100, &eval_stages()).unwrap();
        // Working square: x in [50, 250) scaled by 2; resize 100 -> 96; crop 8 each side.
        let sc = 2.0 * 100.0 / 96.0;
        assert!((geo.x.scale - sc).abs() < 1e-12 && (geo.y.scale - sc).abs() < 1e-12);
        assert!((geo.x.offset - (50.0 + 8.0 * sc)).abs() < 1e-12);
        assert!((geo.y.offset - 8.0 * sc).abs() < 1e-12);
        let (x0, y0, x1, y1) = geo.seen();
        assert!(
            (x0 - 66.666_666_666_666_67).abs() < 1e-9 && (x1 - 233.333_333_333_333_3).abs() < 1e-9
        );
        assert!(
            (y0 - 16.666_666_666_666_67).abs() < 1e-9 && (y1 - 183.333_333_333_333_3).abs() < 1e-9
        );
        let mut map = vec![0f32; 80 * 80];
        map[20 * 80 + 60] = 1.0;
        let orig = geo.to_original(&map);
        assert_eq!(orig.len(), 300 * 200);
        // Everything outside the seen rectangle is NaN, everything inside a number.
        for (i, v) in orig.iter().enumerate() {
            let (px, py) = ((i % 300) as f64 + 0.5, (i / 300) as f64 + 0.5);
            let inside = px > x0 && px < x1 && py > y0 && py < y1;
            assert_eq!(v.is_nan(), !inside, "pixel {px} {py}");
        }
        let (best, _) = orig
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
        // Input pixel (60, 20)'s centre is at original x = off + 60.5 sc, y = off + 20.5 sc.
        let (want_x, want_y) = (geo.x.to_original(60.5), geo.y.to_original(20.5));
        let (bx, by) = ((best % 300) as f64 + 0.5, (best / 300) as f64 + 0.5);
        assert!(
            (bx - want_x).abs() <= 1.0 && (by - want_y).abs() <= 1.0,
            "{bx},{by} vs {want_x},{want_y}"
        );
    }

    #[test]
    fn random_or_rotating_eval_stages_are_refused() {
        let r = Geometry::of(
            64,
            64,
            64,
            &[Stage::RandomResizedCrop {
                size: 32,
                scale: [0.5, 1.0],
                ratio: [1.0, 1.0],
            }],
        );
        assert_eq!(r, Err(GeometryError::Random("random_resized_crop")));
        let flip = Geometry::of(64, 64, 64, &[Stage::HorizontalFlip { p: 1.0 }]).unwrap();
        assert_eq!(flip.x.to_original(0.0), 64.0);
        assert_eq!(flip.x.to_original(64.0), 0.0);
    }
}
