//! `muxmed synth --format`: the synthetic chest films of [`super::synth`] written in another
//! dataset's file format, drawn by another "scanner" (exposure, noise, field of view), so a
//! model trained on the NIH-format set loses some AUROC on them, as real models do between
//! hospitals. Findings are NIH's 14; each is written under the dataset's own name for the
//! same concept (`src/labels/vocabulary.csv`), and a finding the dataset does not annotate
//! is simply not written, as in the real files.

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

mod kaggle;
mod padchest;

use super::synth::{render_with, start, Lesion, Scanner, SynthError, SynthOptions, SynthRecord};
use crate::labels::vocabulary::{self, Dataset};
use crate::labels::LABELS;

/// The file formats `muxmed synth` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SynthFormat {
    Nih,
    Chexpert,
    MimicCxr,
    Padchest,
    VindrCxr,
    RsnaPneumonia,
}

impl SynthFormat {
    /// The dataset whose files this format writes.
    pub fn dataset(self) -> Dataset {
        match self {
            SynthFormat::Nih => Dataset::Nih,
            SynthFormat::Chexpert => Dataset::Chexpert,
            SynthFormat::MimicCxr => Dataset::MimicCxr,
            SynthFormat::Padchest => Dataset::Padchest,
            SynthFormat::VindrCxr => Dataset::VindrCxr,
            SynthFormat::RsnaPneumonia => Dataset::RsnaPneumonia,
        }
    }
}

/// CheXpert's 14 observation columns, in the file's order.
pub const CHEXPERT_OBSERVATIONS: [&str; 14] = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
];

/// A darker, noisier site with a wider field of view than the NIH-format set.
const CHEXPERT_SCANNER: Scanner = Scanner {
    gain: (0.65, 0.95),
    offset: (0.15, 0.28),
    noise: (0.035, 0.07),
    field_of_view: 0.85,
};

/// The MIMIC-CXR-format set's look: brighter and flatter than NIH's, a little noisier,
/// the lungs a little larger in the frame.
const MIMIC_SCANNER: Scanner = Scanner {
    gain: (0.7, 0.9),
    offset: (0.2, 0.32),
    noise: (0.03, 0.055),
    field_of_view: 1.1,
};

/// Writes the set in `format` into `out`; returns the records (NIH's findings).
pub fn write(
    out: &Path,
    o: &SynthOptions,
    format: SynthFormat,
) -> Result<Vec<SynthRecord>, SynthError> {
    match format {
        SynthFormat::Nih => super::synth::write(out, o),
        SynthFormat::Chexpert => write_chexpert(out, o),
        SynthFormat::MimicCxr => write_mimic(out, o),
        SynthFormat::Padchest => padchest::write(out, o),
        SynthFormat::VindrCxr => kaggle::write_vindr(out, o),
        SynthFormat::RsnaPneumonia => kaggle::write_rsna(out, o),
    }
}

pub(super) fn io(p: &Path, e: &dyn std::fmt::Display) -> SynthError {
    SynthError::Io {
        path: p.to_path_buf(),
        message: e.to_string(),
    }
}

/// Each NIH finding's column in `dataset`'s file (by concept), where the dataset has one.
pub(super) fn columns_of(dataset: Dataset) -> BTreeMap<usize, String> {
    LABELS
        .iter()
        .enumerate()
        .filter_map(|(k, nih)| {
            let m = vocabulary::concepts_of(dataset)
                .into_iter()
                .find(|m| m.concept == *nih)?;
            Some((k, m.name.clone()))
        })
        .collect()
}

/// CheXpert-v1.0-small's layout: `train.csv` (the NIH set's train/val patients) and
/// `valid.csv` (its test patients), JPEGs at `CheXpert-v1.0-small/{train,valid}/
/// patientNNNNN/studyN/view1_frontal.jpg`. In train.csv a positive is written `-1.0`
/// (uncertain) one time in six and an absent finding blank (not mentioned) two times in
/// three, else `0.0`; valid.csv, like the real one, has only 1.0 and 0.0.
fn write_chexpert(out: &Path, o: &SynthOptions) -> Result<Vec<SynthRecord>, SynthError> {
    let records = start(out, o)?;
    marker(out, "CheXpert")?;
    let cols = columns_of(Dataset::Chexpert);
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed ^ 0xC4E);
    let header = format!(
        "Path,Sex,Age,Frontal/Lateral,AP/PA,{}\n",
        CHEXPERT_OBSERVATIONS.join(",")
    );
    let (mut train, mut valid) = (header.clone(), header);
    let mut paths = Vec::with_capacity(records.len());
    for r in &records {
        let part = if r.test { "valid" } else { "train" };
        let rel = format!(
            "CheXpert-v1.0-small/{part}/patient{:05}/study{}/view1_frontal.jpg",
            r.patient,
            r.follow_up + 1
        );
        let mut line = format!(
            "{rel},{},{},Frontal,{}",
            if r.male { "Male" } else { "Female" },
            r.age,
            if r.pa { "PA" } else { "AP" }
        );
        for obs in CHEXPERT_OBSERVATIONS {
            line += ",";
            line += chexpert_cell(&mut rng, r.test, observed(r, &cols, obs));
        }
        line += "\n";
        if r.test {
            valid += &line;
        } else {
            train += &line;
        }
        paths.push(out.join(rel));
    }
    for (name, text) in [("train.csv", &train), ("valid.csv", &valid)] {
        let p = out.join(name);
        crate::io::write_atomic(&p, text.as_bytes()).map_err(|e| io(&p, &e))?;
    }
    draw_all(&records, &paths, o, &CHEXPERT_SCANNER, jpeg)?;
    Ok(records)
}

/// A CheXpert-coded cell (as CheXpert's and MIMIC's label files write them) for a finding
/// that is `positive`: on a labelled (test) image 1.0 or 0.0; elsewhere a positive is
/// uncertain (-1.0) one time in six and an absent finding blank two times in three.
fn chexpert_cell(rng: &mut ChaCha8Rng, labelled: bool, positive: bool) -> &'static str {
    match (labelled, positive) {
        (true, true) => "1.0",
        (true, false) => "0.0",
        (false, true) if rng.random_bool(1.0 / 6.0) => "-1.0",
        (false, true) => "1.0",
        (false, false) if rng.random_bool(2.0 / 3.0) => "",
        (false, false) => "0.0",
    }
}

/// Whether CheXpert observation `obs` is present in record `r` (No Finding: no finding).
fn observed(r: &SynthRecord, cols: &BTreeMap<usize, String>, obs: &str) -> bool {
    if obs == "No Finding" {
        r.labels.is_empty()
    } else {
        cols.iter()
            .any(|(k, name)| name == obs && r.labels.contains(k))
    }
}

/// MIMIC-CXR-JPG 2.x's layout: `mimic-cxr-2.0.0-metadata.csv`, `-chexpert.csv` (labels per
/// study, CheXpert's coding: the test studies 1.0/0.0, the rest with -1.0 and blanks as in
/// [`chexpert_cell`]) and `-split.csv` (the NIH set's test patients `test`, one train/val
/// patient in ten `validate`, the rest `train`), JPEGs at
/// `files/p<first two digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg`. Each synthetic
/// image is a study of its own; subject_id is 10,000,000 + the patient.
fn write_mimic(out: &Path, o: &SynthOptions) -> Result<Vec<SynthRecord>, SynthError> {
    let records = start(out, o)?;
    marker(out, "MIMIC-CXR-JPG")?;
    let cols = columns_of(Dataset::MimicCxr);
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed ^ 0x313C);
    let mut meta = String::from("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning\n");
    let mut labels = format!("subject_id,study_id,{}\n", CHEXPERT_OBSERVATIONS.join(","));
    let mut split = String::from("dicom_id,study_id,subject_id,split\n");
    let mut paths = Vec::with_capacity(records.len());
    for r in &records {
        let subject = 10_000_000 + r.patient;
        let study = 50_000_000 + r.patient * 100 + r.follow_up;
        let dicom = format!("{:08x}-{:08x}", subject, study.wrapping_mul(2_654_435_761));
        let view = if r.pa { "PA" } else { "AP" };
        meta += &format!(
            "{dicom},{subject},{study},CHEST ({view}),{view},{s},{s},2150{:02}{:02},101010.000,CHEST ({view}),postero-anterior,Erect\n",
            1 + r.follow_up % 12,
            1 + r.patient % 28,
            s = o.size
        );
        labels += &format!("{subject},{study}");
        for obs in CHEXPERT_OBSERVATIONS {
            labels += ",";
            labels += chexpert_cell(&mut rng, r.test, observed(r, &cols, obs));
        }
        labels += "\n";
        let part = match (r.test, r.patient % 10) {
            (true, _) => "test",
            (false, 0) => "validate",
            _ => "train",
        };
        split += &format!("{dicom},{study},{subject},{part}\n");
        let sub = subject.to_string();
        paths.push(out.join(format!("files/p{}/p{sub}/s{study}/{dicom}.jpg", &sub[..2])));
    }
    for (name, text) in [
        ("mimic-cxr-2.0.0-metadata.csv", &meta),
        ("mimic-cxr-2.0.0-chexpert.csv", &labels),
        ("mimic-cxr-2.0.0-split.csv", &split),
    ] {
        let p = out.join(name);
        crate::io::write_atomic(&p, text.as_bytes()).map_err(|e| io(&p, &e))?;
    }
    draw_all(&records, &paths, o, &MIMIC_SCANNER, jpeg)?;
    Ok(records)
}

pub(super) fn marker(out: &Path, dataset: &str) -> Result<(), SynthError> {
    let p = out.join(crate::data::synth::MARKER);
    let text = format!(
        "Made by `muxmed synth`: synthetic images and labels in {dataset}'s file format, drawn by another scanner than the NIH-format set. Numbers measured on them say nothing about real chest X-rays.\n"
    );
    crate::io::write_atomic(&p, text.as_bytes()).map_err(|e| io(&p, &e))
}

/// Draws every image (in parallel) with `scanner`'s look, encodes it with `encode` and
/// writes it, creating its folder; returns each image's lesions.
pub(super) fn draw_all<E>(
    records: &[SynthRecord],
    paths: &[std::path::PathBuf],
    o: &SynthOptions,
    scanner: &Scanner,
    encode: E,
) -> Result<Vec<Vec<Lesion>>, SynthError>
where
    E: Fn(&SynthRecord, &[f32], u32, &Path) -> Result<Vec<u8>, SynthError> + Sync,
{
    records
        .par_iter()
        .zip(paths)
        .map(|(r, p)| {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io(dir, &e))?;
            }
            let (px, lesions) = render_with(r, o.size, o.seed, scanner);
            let bytes = encode(r, &px, o.size, p)?;
            crate::io::write_atomic(p, &bytes).map_err(|e| io(p, &e))?;
            Ok(lesions)
        })
        .collect()
}

/// A `size`² 8-bit grey JPEG (quality 92).
pub(super) fn jpeg(
    _: &SynthRecord,
    px: &[f32],
    size: u32,
    p: &Path,
) -> Result<Vec<u8>, SynthError> {
    let px: Vec<u8> = px.iter().map(|v| (v * 255.0).round() as u8).collect();
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92);
    image::ImageEncoder::write_image(enc, &px, size, size, image::ExtendedColorType::L8)
        .map_err(|e| io(p, &e))?;
    Ok(out)
}
