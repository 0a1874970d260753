//! PadChest's layout (Bustos et al. 2020): `PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`
//! with the release's 35 columns, `Labels` a Python-list string of PadChest's terms, and
//! 16-bit grey PNGs in numbered folders named by `ImageDir`. The NIH set's test patients are
//! the physician-labelled rows (`MethodLabel` `Physician`), the rest `RNN_model`.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{columns_of, draw_all, io, marker};
use crate::data::synth::{Scanner, SynthError, SynthOptions, SynthRecord};
use crate::labels::vocabulary::Dataset;

/// The release's columns, in its order.
const COLUMNS: [&str; 35] = [
    "ImageID",
    "ImageDir",
    "StudyDate_DICOM",
    "StudyID",
    "PatientID",
    "PatientBirth",
    "PatientSex_DICOM",
    "ViewPosition_DICOM",
    "Projection",
    "MethodProjection",
    "Pediatric",
    "Modality_DICOM",
    "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM",
    "PixelRepresentation_DICOM",
    "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM",
    "BitsStored_DICOM",
    "WindowCenter_DICOM",
    "WindowWidth_DICOM",
    "Rows_DICOM",
    "Columns_DICOM",
    "XRayTubeCurrent_DICOM",
    "Exposure_DICOM",
    "ExposureInuAs_DICOM",
    "ExposureTime",
    "RelativeXRayExposure_DICOM",
    "ReportID",
    "Report",
    "MethodLabel",
    "Labels",
    "Localizations",
    "LabelsLocalizationsBySentence",
    "labelCUIS",
    "LocalizationsCUIS",
];

/// PadChest terms with no ChestX-Ray14 counterpart, added now and then as the real reports
/// have them; the reader counts them as unmapped.
const OTHER_TERMS: [&str; 4] = [
    "chronic changes",
    "aortic elongation",
    "kyphosis",
    "apical pleural thickening",
];

/// Alicante's look: bright, low noise, a tight field of view.
const PADCHEST_SCANNER: Scanner = Scanner {
    gain: (0.75, 1.0),
    offset: (0.12, 0.22),
    noise: (0.02, 0.045),
    field_of_view: 1.15,
};

/// The `Labels` cell of `r`: its findings' PadChest terms (`normal` when none), sometimes
/// with one unmapped term, with the release's `'...'` quoting and `, ` separators; one row
/// in 40 has the stray empty term the real file has.
fn labels_cell(r: &SynthRecord, rng: &mut ChaCha8Rng) -> String {
    let cols = columns_of(Dataset::Padchest);
    let mut terms: Vec<String> = r
        .labels
        .iter()
        .filter_map(|k| cols.get(k).cloned())
        .collect();
    if rng.random_bool(0.15) {
        terms.push(OTHER_TERMS[rng.random_range(0..OTHER_TERMS.len())].to_string());
    }
    if terms.is_empty() {
        terms.push("normal".to_string());
    }
    if rng.random_bool(1.0 / 40.0) {
        terms.push(String::new());
    }
    let quoted: Vec<String> = terms.iter().map(|t| format!("'{t}'")).collect();
    format!("\"[{}]\"", quoted.join(", "))
}

pub fn write(out: &Path, o: &SynthOptions) -> Result<Vec<SynthRecord>, SynthError> {
    let records = super::start(out, o)?;
    marker(out, "PadChest")?;
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed ^ 0xBAD);
    let mut csv = COLUMNS.join(",") + "\n";
    let mut paths = Vec::with_capacity(records.len());
    for r in &records {
        let image = format!(
            "21684011136696401228{:010}{:03}_{:06x}.png",
            r.patient,
            r.follow_up,
            (r.patient.wrapping_mul(7919).wrapping_add(r.follow_up)) % 0xFFFFFF
        );
        let dir = (r.patient % 4).to_string();
        let year = 2009 + (r.follow_up + r.patient) % 9;
        let view = if r.pa { "PA" } else { "AP" };
        let fields: [String; 35] = [
            image.clone(),
            dir.clone(),
            format!("{year}{:02}{:02}", 1 + r.follow_up % 12, 1 + r.patient % 28),
            format!(
                "{:032x}",
                u128::from(r.patient) << 16 | u128::from(r.follow_up)
            ),
            format!("{:032x}", u128::from(r.patient) * 0x9E37_79B9),
            (year - r.age).to_string(),
            if r.male { "M" } else { "F" }.to_string(),
            format!("['{view}']"),
            view.to_string(),
            "Manual review of DICOM fields".to_string(),
            "No".to_string(),
            "CR".to_string(),
            "PhilipsMedicalSystems".to_string(),
            "MONOCHROME2".to_string(),
            "0".to_string(),
            "1".to_string(),
            "0.139".to_string(),
            "16".to_string(),
            "32768".to_string(),
            "65535".to_string(),
            o.size.to_string(),
            o.size.to_string(),
            "250".to_string(),
            "5".to_string(),
            "5000".to_string(),
            "20".to_string(),
            String::new(),
            (4_000_000 + r.patient * 100 + r.follow_up).to_string(),
            "\"informe sintetico, sin valor clinico.\"".to_string(),
            if r.test { "Physician" } else { "RNN_model" }.to_string(),
            labels_cell(r, &mut rng),
            "\"[]\"".to_string(),
            "\"[]\"".to_string(),
            "\"[]\"".to_string(),
            "\"[]\"".to_string(),
        ];
        csv += &fields.join(",");
        csv += "\n";
        paths.push(out.join(dir).join(image));
    }
    let p = out.join("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv");
    crate::io::write_atomic(&p, csv.as_bytes()).map_err(|e| io(&p, &e))?;
    draw_all(&records, &paths, o, &PADCHEST_SCANNER, png16)?;
    Ok(records)
}

/// A `size`² 16-bit grey PNG spanning the full 16-bit range.
fn png16(_: &SynthRecord, px: &[f32], size: u32, p: &Path) -> Result<Vec<u8>, SynthError> {
    let data: Vec<u8> = px
        .iter()
        .flat_map(|v| ((v * 65535.0).round() as u16).to_be_bytes())
        .collect();
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, size, size);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Sixteen);
    let mut w = enc.write_header().map_err(|e| io(p, &e))?;
    w.write_image_data(&data).map_err(|e| io(p, &e))?;
    w.finish().map_err(|e| io(p, &e))?;
    Ok(out)
}
