//! The two Kaggle releases, with DICOM images and boxes drawn from the lesions' extents:
//! VinDr-CXR as VinBigData ships it (three readers per image, one row per box per reader)
//! and the RSNA Pneumonia Detection Challenge (one image per patient, one row per box).

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{columns_of, draw_all, io, marker};
use crate::data::dicom::{encode_grey, GreyDicom};
use crate::data::synth::{Lesion, Scanner, SynthError, SynthOptions, SynthRecord};
use crate::labels::vocabulary::Dataset;
use crate::labels::LABELS;

/// VinDr-CXR's 15 classes by `class_id` (14 is `No finding`).
const VINDR_CLASSES: [&str; 15] = [
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Nodule/Mass",
    "Other lesion",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    "No finding",
];

/// Hanoi's look: low contrast and noisy, a wide field of view.
const VINDR_SCANNER: Scanner = Scanner {
    gain: (0.6, 0.85),
    offset: (0.18, 0.3),
    noise: (0.04, 0.075),
    field_of_view: 0.9,
};

/// The RSNA set's look (its images are NIH's, re-exported as 8-bit DICOM at 1024²): close
/// to the NIH-format set, a little darker and noisier.
const RSNA_SCANNER: Scanner = Scanner {
    gain: (0.8, 1.05),
    offset: (0.08, 0.18),
    noise: (0.025, 0.05),
    field_of_view: 1.0,
};

/// A reader sees a finding that is there with this probability (readers disagree).
const READER_SENSITIVITY: f64 = 0.85;

fn lesion_of(lesions: &[Lesion], k: usize) -> [f32; 4] {
    lesions
        .iter()
        .find(|l| l.label == k)
        .map_or([0.25, 0.25, 0.75, 0.75], |l| l.extent)
}

/// A box in pixels of a `size`² image, each edge moved by up to 2% of the side, at least
/// one pixel wide and high.
fn pixels(extent: [f32; 4], size: u32, rng: &mut ChaCha8Rng) -> [f32; 4] {
    let s = size as f32;
    let [x0, y0, x1, y1] =
        extent.map(|v| ((v + rng.random_range(-0.02..0.02)).clamp(0.0, 1.0) * s).round());
    let span = |a: f32, b: f32| {
        let (a, b) = (a.min(b), a.max(b));
        if b - a >= 1.0 {
            (a, b)
        } else if a + 1.0 <= s {
            (a, a + 1.0)
        } else {
            (s - 1.0, s)
        }
    };
    let ((x0, x1), (y0, y1)) = (span(x0, x1), span(y0, y1));
    [x0, y0, x1, y1]
}

/// VinDr-CXR: `train.csv` (`image_id, class_name, class_id, rad_id, x_min, y_min, x_max,
/// y_max`) and `train/<image_id>.dicom`, 12 bits stored in 16, one image in six
/// MONOCHROME1 (as some of the real scanners write). Three of 17 readers per image; each
/// marks each finding of the image with probability 0.85 and draws its box from the lesion;
/// a reader who marks nothing writes a `No finding` row. NIH's Nodule and Mass are written
/// as VinDr's `Nodule/Mass`.
pub fn write_vindr(out: &Path, o: &SynthOptions) -> Result<Vec<SynthRecord>, SynthError> {
    let records = super::start(out, o)?;
    marker(out, "VinDr-CXR (Kaggle VinBigData)")?;
    let ids: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{:016x}{:016x}",
                (r.patient as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                r.follow_up
            )
        })
        .collect();
    let paths: Vec<_> = ids
        .iter()
        .map(|id| out.join("train").join(format!("{id}.dicom")))
        .collect();
    let lesions = draw_all(&records, &paths, o, &VINDR_SCANNER, |r, px, size, p| {
        let inverted = (r.patient + r.follow_up) % 6 == 0;
        let values: Vec<u16> = px
            .iter()
            .map(|v| {
                let v = (v * 4095.0).round() as u16;
                if inverted {
                    4095 - v
                } else {
                    v
                }
            })
            .collect();
        let sop = format!("1.2.826.0.1.3680043.10.{}.{}", r.patient, r.follow_up);
        let id = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let g = GreyDicom {
            width: size,
            height: size,
            values: &values,
            bits_stored: 12,
            monochrome1: inverted,
            patient_id: id,
            sop_instance_uid: &sop,
            view: None,
        };
        encode_grey(&g, p).map_err(|e| io(p, &e))
    })?;
    let mut names: BTreeMap<usize, String> = columns_of(Dataset::VindrCxr);
    for k in ["Nodule", "Mass"] {
        if let Some(i) = LABELS.iter().position(|l| *l == k) {
            names.insert(i, "Nodule/Mass".to_string());
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed ^ 0x51D);
    let mut csv = String::from("image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n");
    for ((r, ls), id) in records.iter().zip(&lesions).zip(&ids) {
        let mut readers: Vec<u32> = Vec::new();
        while readers.len() < 3 {
            let k = rng.random_range(1..=17);
            if !readers.contains(&k) {
                readers.push(k);
            }
        }
        for rad in readers {
            let mut marked = std::collections::BTreeSet::new();
            for &k in &r.labels {
                let Some(name) = names.get(&k) else { continue };
                if !rng.random_bool(READER_SENSITIVITY) || !marked.insert(name.clone()) {
                    continue;
                }
                let class = VINDR_CLASSES.iter().position(|c| c == name).unwrap_or(9);
                let [x0, y0, x1, y1] = pixels(lesion_of(ls, k), o.size, &mut rng);
                csv += &format!("{id},{name},{class},R{rad},{x0:.1},{y0:.1},{x1:.1},{y1:.1}\n");
            }
            if marked.is_empty() {
                csv += &format!("{id},No finding,14,R{rad},,,,\n");
            }
        }
    }
    let p = out.join("train.csv");
    crate::io::write_atomic(&p, csv.as_bytes()).map_err(|e| io(&p, &e))?;
    Ok(records)
}

/// RSNA's Target: readers marked lung opacities suspicious for pneumonia, so an image with a
/// drawn Pneumonia, Consolidation or Infiltration is positive (about a fifth of the images,
/// near the real file's 22.5%), each such lesion one box.
const RSNA_OPACITIES: [&str; 3] = ["Pneumonia", "Consolidation", "Infiltration"];

/// RSNA Pneumonia: `stage_2_train_labels.csv` (`patientId, x, y, width, height, Target`)
/// and `stage_2_train_images/<patientId>.dcm` (8-bit MONOCHROME2 with ViewPosition). Each
/// synthetic image is a patient of its own, as in the challenge.
pub fn write_rsna(out: &Path, o: &SynthOptions) -> Result<Vec<SynthRecord>, SynthError> {
    let records = super::start(out, o)?;
    marker(out, "RSNA Pneumonia Detection Challenge")?;
    let ids: Vec<String> = records
        .iter()
        .map(|r| {
            let h = (r.patient as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ r.follow_up as u64;
            format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                h >> 32,
                (h >> 16) & 0xFFFF,
                h & 0xFFFF,
                r.follow_up & 0xFFFF,
                r.patient as u64 * 1_000 + r.follow_up as u64
            )
        })
        .collect();
    let paths: Vec<_> = ids
        .iter()
        .map(|id| out.join("stage_2_train_images").join(format!("{id}.dcm")))
        .collect();
    let lesions = draw_all(&records, &paths, o, &RSNA_SCANNER, |r, px, size, p| {
        let values: Vec<u16> = px.iter().map(|v| (v * 255.0).round() as u16).collect();
        let id = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let sop = format!("1.2.276.0.7230010.3.1.4.{}.{}", r.patient, r.follow_up);
        let g = GreyDicom {
            width: size,
            height: size,
            values: &values,
            bits_stored: 8,
            monochrome1: false,
            patient_id: id,
            sop_instance_uid: &sop,
            view: Some(if r.pa { "PA" } else { "AP" }),
        };
        encode_grey(&g, p).map_err(|e| io(p, &e))
    })?;
    let opacity: Vec<usize> = RSNA_OPACITIES
        .iter()
        .filter_map(|n| LABELS.iter().position(|l| l == n))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed ^ 0x25A);
    let mut csv = String::from("patientId,x,y,width,height,Target\n");
    for ((r, ls), id) in records.iter().zip(&lesions).zip(&ids) {
        let boxes: Vec<usize> = r
            .labels
            .iter()
            .copied()
            .filter(|k| opacity.contains(k))
            .collect();
        if boxes.is_empty() {
            csv += &format!("{id},,,,,0\n");
        }
        for k in boxes {
            let [x0, y0, x1, y1] = pixels(lesion_of(ls, k), o.size, &mut rng);
            csv += &format!("{id},{x0:.1},{y0:.1},{:.1},{:.1},1\n", x1 - x0, y1 - y0);
        }
    }
    let p = out.join("stage_2_train_labels.csv");
    crate::io::write_atomic(&p, csv.as_bytes()).map_err(|e| io(&p, &e))?;
    Ok(records)
}
