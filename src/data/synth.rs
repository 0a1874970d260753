//! `muxmed synth`: a ChestX-Ray14 look-alike in NIH's exact file format, so the built-in demo
//! runs the same code paths as the real data: `Data_Entry_2017_v2020.csv` (all 11 fields),
//! patient-disjoint `train_val_list.txt` / `test_list.txt`, `BBox_List_2017.csv` (with the
//! real file's `Infiltrate` spelling) and grayscale PNGs in `images_001/images/...` (about 1%
//! stored as RGBA with equal channels, as in the real release).
//!
//! Metadata follows the real file's statistics (label prevalences, number of findings per
//! image, images per patient, ages, sexes, views, sizes, pixel spacings). Each image is a
//! drawn chest radiograph (body, lungs, mediastinum, heart, diaphragm, ribs, noise) and each
//! finding adds its own pattern with a random severity, some nearly invisible.

use std::f32::consts::PI;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::nih::METADATA_HEADER;
use crate::labels::LABELS;

/// Label prevalence over all 112,120 images of the real metadata (2020 release).
pub const REAL_PREVALENCE: [f64; 14] = [
    0.10309, 0.02476, 0.11877, 0.17743, 0.05157, 0.05647, 0.01276, 0.04729, 0.04163, 0.02054,
    0.02244, 0.01504, 0.03019, 0.00202,
];
/// Fraction of real images with 0, 1, 2, ... findings.
const N_FINDINGS: [f64; 8] = [
    0.5384, 0.2762, 0.1276, 0.0433, 0.0111, 0.0027, 0.0006, 0.0001,
];
/// Fraction of real patients with 1, 2, ... images (the last bucket is 20 or more).
const IMAGES_PER_PATIENT: [f64; 20] = [
    0.5682, 0.1335, 0.0682, 0.0432, 0.0304, 0.0255, 0.0197, 0.016, 0.0126, 0.0104, 0.0091, 0.0076,
    0.0054, 0.0059, 0.0039, 0.0039, 0.003, 0.0025, 0.0025, 0.0285,
];
const SIZES: [(u32, u32); 5] = [
    (2500, 2048),
    (2992, 2991),
    (3056, 2544),
    (2048, 2500),
    (2021, 2021),
];
const SPACINGS: [f64; 4] = [0.143, 0.168, 0.139, 0.171];

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error("{0}")]
    Args(String),
    #[error("{} is not empty and is not a muxmed synthetic dataset (it has no SYNTHETIC.txt): refusing to write over it; choose an empty folder, or pass --overwrite", .0.display())]
    NotSynthetic(PathBuf),
}

#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub images: usize,
    /// Number of patients; None picks about images / 3.6 as in the real file.
    pub patients: Option<usize>,
    pub size: u32,
    pub seed: u64,
    /// Fraction of patients in the test list.
    pub test_fraction: f64,
    /// Write into a non-empty folder that is not a muxmed synthetic dataset.
    pub overwrite: bool,
}

/// One synthetic image's metadata and drawing parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthRecord {
    pub image_id: String,
    pub patient: u32,
    pub follow_up: u32,
    pub labels: Vec<usize>,
    pub age: u32,
    pub male: bool,
    pub pa: bool,
    pub size: (u32, u32),
    pub spacing: f64,
    pub test: bool,
}

fn pick(rng: &mut ChaCha8Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Label weights for drawing an image's findings without replacement such that each label's
/// overall prevalence matches [`REAL_PREVALENCE`] (drawing without replacement with the
/// prevalences themselves under-represents the common labels). Found once by a fixed-point
/// iteration on a seeded simulation.
fn calibrated_weights() -> &'static [f64; 14] {
    static W: std::sync::OnceLock<[f64; 14]> = std::sync::OnceLock::new();
    W.get_or_init(|| {
        let mut w = REAL_PREVALENCE;
        for round in 0..8 {
            let mut rng = ChaCha8Rng::seed_from_u64(0xCA1B + round);
            let draws = 40_000;
            let mut hits = [0f64; 14];
            for _ in 0..draws {
                let n = pick(&mut rng, &N_FINDINGS);
                let mut ww = w.to_vec();
                for _ in 0..n {
                    let l = pick(&mut rng, &ww);
                    ww[l] = 0.0;
                    hits[l] += 1.0;
                }
            }
            for k in 0..14 {
                let achieved = (hits[k] / draws as f64).max(1e-6);
                w[k] *= (REAL_PREVALENCE[k] / achieved).clamp(0.5, 2.0);
            }
        }
        w
    })
}

/// The metadata of a synthetic dataset (no pixels), deterministic for the options.
pub fn metadata(o: &SynthOptions) -> Result<Vec<SynthRecord>, SynthError> {
    if o.images == 0 {
        return Err(SynthError::Args("--images must be at least 1".into()));
    }
    let patients = o
        .patients
        .unwrap_or(((o.images as f64 / 3.64).round() as usize).max(1));
    if patients == 0 || patients > o.images {
        return Err(SynthError::Args(format!(
            "--patients must be between 1 and --images ({}), got {patients}",
            o.images
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    // Images per patient: draw from the real distribution, then fix the total.
    let mut counts: Vec<usize> = (0..patients)
        .map(|_| pick(&mut rng, &IMAGES_PER_PATIENT) + 1)
        .collect();
    let mut total: usize = counts.iter().sum();
    while total != o.images {
        let p = rng.random_range(0..patients);
        if total < o.images {
            counts[p] += 1;
            total += 1;
        } else if counts[p] > 1 {
            counts[p] -= 1;
            total -= 1;
        }
    }
    let n_test = ((patients as f64) * o.test_fraction).round() as usize;
    let mut ids: Vec<usize> = (0..patients).collect();
    rand::seq::SliceRandom::shuffle(ids.as_mut_slice(), &mut rng);
    let test: std::collections::HashSet<usize> = ids[..n_test].iter().copied().collect();
    let mut out = Vec::with_capacity(o.images);
    for (p, &count) in counts.iter().enumerate() {
        let pid = p as u32 + 1;
        let base_age = (46.6 + 16.6 * normal(&mut rng)).clamp(1.0, 94.0) as u32;
        let male = rng.random_bool(0.565);
        for f in 0..count {
            let n = pick(&mut rng, &N_FINDINGS);
            let mut labels = Vec::new();
            let mut w = calibrated_weights().to_vec();
            for _ in 0..n {
                let l = pick(&mut rng, &w);
                w[l] = 0.0;
                labels.push(l);
            }
            labels.sort_unstable();
            let (sw, sh) = SIZES[pick(&mut rng, &[37153.0, 21961.0, 15340.0, 8683.0, 4411.0])];
            out.push(SynthRecord {
                image_id: format!("{pid:08}_{f:03}.png"),
                patient: pid,
                follow_up: f as u32,
                labels,
                age: (base_age + (f as u32) / 4).min(95),
                male,
                pa: rng.random_bool(0.6),
                size: (sw, sh),
                spacing: SPACINGS[pick(&mut rng, &[39849.0, 35803.0, 20091.0, 9979.0])],
                test: test.contains(&p),
            });
        }
    }
    Ok(out)
}

/// A float canvas with drawing helpers (coordinates in [0, 1] of the image side).
struct Canvas {
    s: usize,
    px: Vec<f32>,
}

impl Canvas {
    /// Adds `amount * shape(x, y)` where shape is a soft ellipse centred at (cx, cy).
    fn ellipse(&mut self, cx: f32, cy: f32, rx: f32, ry: f32, amount: f32, softness: f32) {
        let s = self.s as f32;
        let (x0, x1) = (
            ((cx - rx * 1.6) * s).max(0.0) as usize,
            (((cx + rx * 1.6) * s) as usize).min(self.s),
        );
        let (y0, y1) = (
            ((cy - ry * 1.6) * s).max(0.0) as usize,
            (((cy + ry * 1.6) * s) as usize).min(self.s),
        );
        for y in y0..y1 {
            for x in x0..x1 {
                let dx = ((x as f32 + 0.5) / s - cx) / rx;
                let dy = ((y as f32 + 0.5) / s - cy) / ry;
                let d = (dx * dx + dy * dy).sqrt();
                let v = 1.0 / (1.0 + ((d - 1.0) / softness).exp());
                self.px[y * self.s + x] += amount * v;
            }
        }
    }
    fn map(&mut self, f: impl Fn(f32, f32, f32) -> f32) {
        let s = self.s as f32;
        for y in 0..self.s {
            for x in 0..self.s {
                let i = y * self.s + x;
                self.px[i] = f((x as f32 + 0.5) / s, (y as f32 + 0.5) / s, self.px[i]);
            }
        }
    }
}

/// Whether (x, y) is inside one of the two lung fields (image left = patient's right).
fn in_lung(x: f32, y: f32, emphysema: f32) -> f32 {
    let ry = 0.25 + 0.03 * emphysema;
    let l = ((x - 0.32) / 0.14).powi(2) + ((y - 0.45) / ry).powi(2);
    let r = ((x - 0.68) / 0.14).powi(2) + ((y - 0.45) / ry).powi(2);
    let m = l.min(r);
    (1.0 / (1.0 + ((m - 1.0) / 0.08).exp())).clamp(0.0, 1.0)
}

/// Where a finding was drawn: the extent of its lesion as (x0, y0, x1, y1) in fractions of
/// the image side, clipped to the image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lesion {
    /// Index into [`LABELS`].
    pub label: usize,
    pub extent: [f32; 4],
}

impl Lesion {
    fn new(label: usize, x0: f32, y0: f32, x1: f32, y1: f32) -> Self {
        let c = |v: f32| v.clamp(0.0, 1.0);
        Lesion {
            label,
            extent: [c(x0), c(y0), c(x1), c(y1)],
        }
    }
}

/// The horizontal extent of the lung field centred at `lung` (0.32 or 0.68), within which
/// lung-bound findings are drawn.
fn in_lung_x(lung: f32, x0: f32, x1: f32) -> (f32, f32) {
    (x0.max(lung - 0.14), x1.min(lung + 0.14))
}

/// The anatomy every image has (body, lungs, ribs, mediastinum, heart, diaphragm), with
/// emphysema's hyperinflation and an enlarged heart in Cardiomegaly (whose box it returns).
fn draw_chest(
    c: &mut Canvas,
    rng: &mut ChaCha8Rng,
    emph: f32,
    cardiomegaly: bool,
) -> Option<Lesion> {
    // Body and soft tissue.
    c.ellipse(0.5, 0.55, 0.42, 0.55, 0.55, 0.05);
    // Lungs: dark fields with a bit of per-patient shape jitter.
    let jitter = rng.random_range(-0.02..0.02f32);
    c.map(|x, y, v| v - 0.38 * in_lung(x + jitter, y, emph) * (1.0 + 0.12 * emph));
    // Ribs: curved bright bands across the lungs.
    let phase = rng.random_range(0.0..PI);
    c.map(|x, y, v| {
        let curve = y + 0.06 * ((x - 0.5) * 3.0).powi(2);
        let rib = ((curve * 55.0 + phase).sin()).max(0.0).powi(2);
        v + 0.07 * rib * in_lung(x, y, emph)
    });
    // Mediastinum and spine.
    c.ellipse(0.5, 0.45, 0.06, 0.4, 0.35, 0.15);
    // Heart shadow on the patient's left (image right); enlarged in Cardiomegaly.
    let cardio = if cardiomegaly { severity(rng) } else { 0.0 };
    let hr = 0.12 * (1.0 + 0.45 * cardio) + rng.random_range(-0.01..0.01);
    c.ellipse(0.56, 0.62, hr * 1.1, hr * 0.85, 0.32, 0.1);
    let heart = (cardio > 0.0).then(|| {
        let k = LABELS
            .iter()
            .position(|l| *l == "Cardiomegaly")
            .unwrap_or(1);
        let (rx, ry) = (hr * 1.1, hr * 0.85);
        Lesion::new(k, 0.56 - rx, 0.62 - ry, 0.56 + rx, 0.62 + ry)
    });
    // Diaphragm domes (lower and flatter with emphysema).
    let dy = 0.7 + 0.025 * emph;
    c.map(|x, y, v| {
        let dome = dy
            + 0.05
                * ((x - 0.32) / 0.15).powi(2).min(((x - 0.68) / 0.15).powi(2))
                * (1.0 - 0.6 * emph);
        v + 0.22 / (1.0 + ((dome - y) / 0.015).exp())
    });
    heart
}

/// Atelectasis, effusion, infiltration, mass, nodule or pneumonia at severity `a` in the lung
/// at `lung`, centred near `cx`; returns its box.
fn draw_opacity(
    c: &mut Canvas,
    rng: &mut ChaCha8Rng,
    (k, name): (usize, &str),
    a: f32,
    (lung, cx): (f32, f32),
) -> Option<Lesion> {
    let mut out = None;
    match name {
        "Atelectasis" => {
            let y0 = rng.random_range(0.5..0.62);
            // The band's weight exp(-(dy/0.012)^2) is below 2% beyond |dy| = 0.024.
            let (x0, x1) = in_lung_x(lung, cx - 0.14, cx + 0.14);
            out = Some(Lesion::new(k, x0, y0 - 0.024, x1, y0 + 0.024));
            c.map(|x, y, v| {
                v + 0.25
                    * a
                    * (-((y - y0) / 0.012).powi(2)).exp()
                    * in_lung(x, y, 0.0)
                    * (1.0 - ((x - cx) / 0.14).abs()).max(0.0)
            });
        }
        "Effusion" => {
            // Fluid below a meniscus rising laterally, down to the costophrenic angle.
            let level = 0.69 - 0.08 * a;
            c.map(|x, y, v| {
                let lateral = (x - cx) * if cx < 0.5 { -1.0 } else { 1.0 };
                let men = level - 0.05 * lateral.max(0.0) / 0.14;
                let inside = (1.0 - ((x - cx) / 0.16).abs()).clamp(0.0, 1.0);
                let above_floor = 1.0 / (1.0 + ((y - 0.8) / 0.01).exp());
                v + 0.25 * a * inside * above_floor / (1.0 + ((men - y) / 0.01).exp())
            });
            let top = level - 0.05 * 0.16 / 0.14;
            out = Some(Lesion::new(k, cx - 0.16, top, cx + 0.16, 0.8));
        }
        "Infiltration" => {
            let mut e = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
            for _ in 0..rng.random_range(3..7) {
                let (bx, by) = (
                    cx + rng.random_range(-0.08..0.08),
                    rng.random_range(0.3..0.6),
                );
                let (rx, ry) = (rng.random_range(0.02..0.05), rng.random_range(0.02..0.05));
                c.ellipse(bx, by, rx, ry, 0.14 * a, 0.4);
                e = [
                    e[0].min(bx - rx),
                    e[1].min(by - ry),
                    e[2].max(bx + rx),
                    e[3].max(by + ry),
                ];
            }
            out = Some(Lesion::new(k, e[0], e[1], e[2], e[3]));
        }
        "Mass" => {
            let r0 = 0.045 + 0.03 * a;
            let cy = rng.random_range(0.3..0.55);
            c.ellipse(cx, cy, r0, r0, 0.3 * a + 0.05, 0.15);
            out = Some(Lesion::new(k, cx - r0, cy - r0, cx + r0, cy + r0));
        }
        "Nodule" => {
            let r0 = 0.018 + 0.012 * a;
            let cy = rng.random_range(0.28..0.6);
            c.ellipse(cx, cy, r0, r0, 0.3 * a + 0.05, 0.2);
            out = Some(Lesion::new(k, cx - r0, cy - r0, cx + r0, cy + r0));
        }
        "Pneumonia" => {
            let cy = rng.random_range(0.45..0.6);
            c.ellipse(cx, cy, 0.09, 0.1, 0.22 * a, 0.5);
            out = Some(Lesion::new(k, cx - 0.09, cy - 0.1, cx + 0.09, cy + 0.1));
        }
        _ => {}
    }
    out
}

/// Pneumothorax, consolidation, edema, fibrosis, pleural thickening or hernia (a box for
/// pneumothorax only, as before).
fn draw_other(
    c: &mut Canvas,
    rng: &mut ChaCha8Rng,
    (k, name): (usize, &str),
    a: f32,
    (lung, cx): (f32, f32),
) -> Option<Lesion> {
    let mut out = None;
    match name {
        "Pneumothorax" => {
            // A dark rim without lung texture at the apex.
            let y1 = 0.22 + 0.12 * a;
            c.map(|x, y, v| {
                let near = (1.0 - ((x - cx) / 0.14).abs()).clamp(0.0, 1.0);
                if y < y1 && near > 0.0 && in_lung(x, y, 0.0) > 0.3 {
                    v - 0.2 * a * near
                } else {
                    v
                }
            });
            // The lung field's apex is at y = 0.45 - 0.25.
            let (x0, x1) = in_lung_x(lung, cx - 0.14, cx + 0.14);
            out = Some(Lesion::new(k, x0, 0.2, x1, y1));
        }
        "Consolidation" => c.ellipse(cx, rng.random_range(0.52..0.64), 0.08, 0.06, 0.3 * a, 0.12),
        "Edema" => {
            c.ellipse(0.38, 0.45, 0.08, 0.12, 0.18 * a, 0.6);
            c.ellipse(0.62, 0.45, 0.08, 0.12, 0.18 * a, 0.6);
        }
        "Fibrosis" => {
            let f = rng.random_range(28.0..40.0f32);
            c.map(|x, y, v| {
                let t = ((x * f).sin() * (y * f * 1.3).cos()).abs().powi(4);
                v + 0.16 * a * t * in_lung(x, y, 0.0) * ((y - 0.4) / 0.2).clamp(0.0, 1.0)
            });
        }
        "Pleural_Thickening" => {
            let edge = if cx < 0.5 { 0.19 } else { 0.81 };
            c.map(|x, y, v| {
                v + 0.3
                    * a
                    * (-((x - edge) / 0.015).powi(2)).exp()
                    * (y > 0.2 && y < 0.65) as u8 as f32
            });
        }
        "Hernia" => {
            c.ellipse(0.47, 0.66, 0.06, 0.045, 0.25 * a + 0.05, 0.15);
            c.ellipse(0.47, 0.65, 0.02, 0.015, -0.15 * a, 0.3);
        }
        _ => {}
    }
    out
}

/// A finding's severity: from a skewed distribution, so some are nearly invisible.
fn severity(rng: &mut ChaCha8Rng) -> f32 {
    let u: f32 = rng.random();
    0.08 + 0.92 * u.powf(0.7)
}

/// An imaging site's look: exposure gain and offset, noise level (each drawn per image from
/// its range) and field of view (the chest's share of the image side: below 1 the chest is
/// smaller, with more of the surroundings in the picture).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scanner {
    pub gain: (f32, f32),
    pub offset: (f32, f32),
    pub noise: (f32, f32),
    pub field_of_view: f32,
}

impl Scanner {
    /// The NIH-format set's look.
    pub const NIH: Scanner = Scanner {
        gain: (0.85, 1.15),
        offset: (0.05, 0.15),
        noise: (0.015, 0.04),
        field_of_view: 1.0,
    };
}

/// Draws one synthetic radiograph (values in [0, 1]) with NIH's look and returns where each
/// drawn lesion is.
pub fn render(r: &SynthRecord, size: u32, seed: u64) -> (Vec<f32>, Vec<Lesion>) {
    render_with(r, size, seed, &Scanner::NIH)
}

/// [`render`] with another site's look. Lesion extents stay in the drawn chest's
/// coordinates, mapped through the field of view.
pub fn render_with(
    r: &SynthRecord,
    size: u32,
    seed: u64,
    scanner: &Scanner,
) -> (Vec<f32>, Vec<Lesion>) {
    let s = size as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (r.patient as u64) << 20 ^ r.follow_up as u64);
    let has = |name: &str| {
        LABELS
            .iter()
            .position(|l| *l == name)
            .is_some_and(|k| r.labels.contains(&k))
    };
    let mut c = Canvas {
        s,
        px: vec![0.0; s * s],
    };
    // Exposure differences and the noise level, drawn first so an image's exposure does not
    // depend on which findings it has.
    let gain = rng.random_range(scanner.gain.0..scanner.gain.1);
    let offset = rng.random_range(scanner.offset.0..scanner.offset.1);
    let noise = rng.random_range(scanner.noise.0..scanner.noise.1);
    let emph = if has("Emphysema") {
        severity(&mut rng)
    } else {
        0.0
    };
    let mut lesions: Vec<Lesion> = draw_chest(&mut c, &mut rng, emph, has("Cardiomegaly"))
        .into_iter()
        .collect();
    for (k, name) in LABELS.iter().enumerate() {
        if !r.labels.contains(&k) || *name == "Cardiomegaly" || *name == "Emphysema" {
            continue;
        }
        let a = severity(&mut rng);
        let lung = if rng.random_bool(0.5) { 0.32f32 } else { 0.68 };
        let cx = lung + rng.random_range(-0.05..0.05);
        let draw = match *name {
            "Atelectasis" | "Effusion" | "Infiltration" | "Mass" | "Nodule" | "Pneumonia" => {
                draw_opacity
            }
            _ => draw_other,
        };
        lesions.extend(draw(&mut c, &mut rng, (k, name), a, (lung, cx)));
    }
    let mut out = c.px;
    if scanner.field_of_view != 1.0 {
        out = zoom_out(&out, s, scanner.field_of_view);
        for l in lesions.iter_mut() {
            l.extent = l.extent.map(|v| 0.5 + (v - 0.5) * scanner.field_of_view);
        }
    }
    for v in out.iter_mut() {
        let u1: f32 = rng.random_range(f32::EPSILON..1.0);
        let u2: f32 = rng.random();
        let n = (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos();
        *v = (offset + gain * *v + noise * n).clamp(0.0, 1.0);
    }
    (out, lesions)
}

/// The drawn chest shrunk about the centre to `fov` of the side (nearest sample); the border
/// it uncovers is empty (0) before exposure and noise.
fn zoom_out(px: &[f32], s: usize, fov: f32) -> Vec<f32> {
    let mut out = vec![0.0; s * s];
    for y in 0..s {
        for x in 0..s {
            let src = |v: usize| ((v as f32 + 0.5) / s as f32 - 0.5) / fov + 0.5;
            let (u, w) = (src(x), src(y));
            if (0.0..1.0).contains(&u) && (0.0..1.0).contains(&w) {
                out[y * s + x] = px[(w * s as f32) as usize * s + (u * s as f32) as usize];
            }
        }
    }
    out
}

/// The file that marks a folder as a synthetic dataset.
pub const MARKER: &str = "SYNTHETIC.txt";

/// Whether `dir` holds a dataset `muxmed synth` made (its image names copy NIH's, its
/// images and labels are not NIH's).
pub fn is_synthetic(dir: &Path) -> bool {
    dir.join(MARKER).is_file()
}

/// Checks the options and `out` (empty, or an earlier synthetic set), creates it and draws
/// the metadata.
pub fn start(out: &Path, o: &SynthOptions) -> Result<Vec<SynthRecord>, SynthError> {
    if o.size < 32 {
        return Err(SynthError::Args("--size must be at least 32".into()));
    }
    let non_empty = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if non_empty && !is_synthetic(out) && !o.overwrite {
        return Err(SynthError::NotSynthetic(out.to_path_buf()));
    }
    let records = metadata(o)?;
    std::fs::create_dir_all(out).map_err(|e| SynthError::Io {
        path: out.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(records)
}

/// Writes the whole dataset into `out`; returns the records.
pub fn write(out: &Path, o: &SynthOptions) -> Result<Vec<SynthRecord>, SynthError> {
    let io = |p: &Path, e: &dyn std::fmt::Display| SynthError::Io {
        path: p.to_path_buf(),
        message: e.to_string(),
    };
    let records = start(out, o)?;
    // Metadata CSV rows are in image-id order, like the file's own order within a patient.
    let mut csv = format!("{METADATA_HEADER}\n");
    for r in &records {
        let labels = if r.labels.is_empty() {
            "No Finding".to_string()
        } else {
            r.labels
                .iter()
                .map(|&k| LABELS[k])
                .collect::<Vec<_>>()
                .join("|")
        };
        csv += &format!(
            "{},{labels},{},{},{},{},{},{},{},{},{}\n",
            r.image_id,
            r.follow_up,
            r.patient,
            r.age,
            if r.male { "M" } else { "F" },
            if r.pa { "PA" } else { "AP" },
            r.size.0,
            r.size.1,
            r.spacing,
            r.spacing
        );
    }
    let marker = out.join(MARKER);
    crate::io::write_atomic(
        &marker,
        b"Made by `muxmed synth`: synthetic images and labels in NIH's file format. Numbers measured on them say nothing about real chest X-rays. Boxes are the drawn lesions' extents.\n",
    )
    .map_err(|e| io(&marker, &e))?;
    let p = out.join("Data_Entry_2017_v2020.csv");
    crate::io::write_atomic(&p, csv.as_bytes()).map_err(|e| io(&p, &e))?;
    let list = |test: bool| {
        records
            .iter()
            .filter(|r| r.test == test)
            .map(|r| r.image_id.clone())
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    for (name, test) in [("train_val_list.txt", false), ("test_list.txt", true)] {
        let p = out.join(name);
        crate::io::write_atomic(&p, list(test).as_bytes()).map_err(|e| io(&p, &e))?;
    }
    // Images: three folders like images_001/images, about 1% stored as RGBA.
    let per_folder = records.len().div_ceil(3).max(1);
    let lesions: Vec<Vec<Lesion>> = records
        .par_iter()
        .enumerate()
        .map(|(i, r)| {
            let dir = out.join(format!("images_{:03}/images", i / per_folder + 1));
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, &e))?;
            let (px, lesions) = render(r, o.size, o.seed);
            let p = dir.join(&r.image_id);
            let png = encode_png(
                &px,
                o.size,
                (r.patient as u64 * 31 + r.follow_up as u64) % 100 == 7,
            )
            .map_err(|e| io(&p, &e))?;
            crate::io::write_atomic(&p, &png).map_err(|e| io(&p, &e))?;
            Ok(lesions)
        })
        .collect::<Result<_, SynthError>>()?;
    // Boxes: for every finding of the official box list's 8 on a test image, the true extent
    // of the drawn lesion in image pixels (the real file's header and spelling: `Infiltrate`).
    let mut bb = String::from("Image Index,Finding Label,Bbox [x,y,w,h],,,\n");
    let side = o.size as f32;
    for (r, ls) in records.iter().zip(&lesions).filter(|(r, _)| r.test) {
        for l in ls.iter().filter(|l| l.label < 8) {
            let name = if LABELS[l.label] == "Infiltration" {
                "Infiltrate"
            } else {
                LABELS[l.label]
            };
            let [x0, y0, x1, y1] = l.extent.map(|v| v * side);
            bb += &format!(
                "{},{name},{x0:.3},{y0:.3},{:.3},{:.3}\n",
                r.image_id,
                x1 - x0,
                y1 - y0
            );
        }
    }
    let p = out.join("BBox_List_2017.csv");
    crate::io::write_atomic(&p, bb.as_bytes()).map_err(|e| io(&p, &e))?;
    Ok(records)
}

/// A gray image as PNG bytes: 8-bit gray, or RGBA (gray replicated, opaque) when `rgba`.
fn encode_png(px: &[f32], size: u32, rgba: bool) -> image::ImageResult<Vec<u8>> {
    let px: Vec<u8> = px.iter().map(|v| (v * 255.0).round() as u8).collect();
    let mut png = Vec::new();
    let enc = image::codecs::png::PngEncoder::new(&mut png);
    if rgba {
        let data: Vec<u8> = px.iter().flat_map(|&v| [v, v, v, 255]).collect();
        image::ImageEncoder::write_image(enc, &data, size, size, image::ExtendedColorType::Rgba8)?;
    } else {
        image::ImageEncoder::write_image(enc, &px, size, size, image::ExtendedColorType::L8)?;
    }
    Ok(png)
}
