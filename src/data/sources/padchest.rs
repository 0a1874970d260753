//! PadChest as BIMCV ships it: `PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`
//! (optionally gzipped) in `data.root`, columns selected by name. `Labels` is a Python-list
//! string (`['pleural effusion', 'cardiomegaly']`); its terms map to concepts through the
//! vocabulary, `normal` is no finding, and any other term is counted and listed (the real
//! file has misspellings), never fatal. A vocabulary concept absent from the list is
//! negative. Images are 16-bit PNGs at `<ImageDir>/<ImageID>`. Officially the
//! physician-labelled rows (`MethodLabel == Physician`) are the test split.

use std::collections::BTreeMap;

use super::rows::{self, fields, row_err, Header, Read, SourceRow};
use crate::config::{DataConfig, SplitProtocol};
use crate::data::manifest_dir::{ManifestError, SourceFile};
use crate::data::split::Given;
use crate::labels::vocabulary::{self, Dataset};
use crate::labels::Split;

const NAME: &str = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19";

/// The terms of a `Labels` cell: brackets, quotes and stray spaces removed, empty terms
/// dropped.
pub fn terms(cell: &str) -> Vec<String> {
    cell.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|t| {
            t.trim()
                .trim_matches(|c| c == '\'' || c == '"')
                .trim()
                .to_string()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

pub fn read(d: &DataConfig) -> Result<Read, ManifestError> {
    let gz = d.root.join(format!("{NAME}.csv.gz"));
    let path = if gz.is_file() {
        gz
    } else {
        d.root.join(format!("{NAME}.csv"))
    };
    let recs = rows::records(&path)?;
    let h = Header::new(&recs[0], &path, Dataset::Padchest);
    let c = |n| h.col(n);
    let (iimg, idir, ipat, ibirth, isex, iproj, idate, imethod, ilabels) = (
        c("ImageID")?,
        c("ImageDir")?,
        c("PatientID")?,
        c("PatientBirth")?,
        c("PatientSex_DICOM")?,
        c("Projection")?,
        c("StudyDate_DICOM")?,
        c("MethodLabel")?,
        c("Labels")?,
    );
    let concepts = rows::chosen_concepts(d, Dataset::Padchest);
    let mut unmapped: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::with_capacity(recs.len());
    let mut no_labels = 0;
    for r in &recs[1..] {
        let f = fields(r, h.len(), &path)?;
        if f[iimg].is_empty() || f[ipat].is_empty() {
            return Err(row_err(&path, r.line, "empty ImageID or PatientID"));
        }
        let t = terms(f[ilabels]);
        if t.is_empty() {
            no_labels += 1;
            continue;
        }
        let mut found = vec![false; concepts.len()];
        for term in &t {
            match vocabulary::concept(Dataset::Padchest, term) {
                Some(cn) => {
                    if let Some(k) = concepts.iter().position(|x| x == cn) {
                        found[k] = true;
                    }
                }
                None if term == "normal" => {}
                None => *unmapped.entry(term.clone()).or_insert(0) += 1,
            }
        }
        let year = |s: &str| s.get(..4).and_then(|y| y.parse::<f64>().ok());
        let age = match (year(f[idate]), f[ibirth].parse::<f64>().ok()) {
            (Some(y), Some(b)) => Some(y - b),
            _ => None,
        };
        out.push(SourceRow {
            line: r.line,
            image_id: f[iimg].to_string(),
            path: d.root.join(f[idir]).join(f[iimg]),
            patient: f[ipat].to_string(),
            view: (!f[iproj].is_empty()).then(|| f[iproj].to_string()),
            sex: matches!(f[isex], "M" | "F").then(|| f[isex].to_string()),
            age,
            labels: found.iter().map(|&p| Some(p as u8 as f32)).collect(),
            uncertain: Vec::new(),
            given: Some(if f[imethod] == "Physician" {
                Given::In(Split::Test)
            } else {
                Given::TrainOrVal
            }),
        });
    }
    // A patient with physician-labelled images is a test patient: their images labelled
    // by the report model are left out, so no patient is in two splits.
    let test_patients: std::collections::HashSet<String> = out
        .iter()
        .filter(|r| {
            d.protocol == SplitProtocol::Official && r.given == Some(Given::In(Split::Test))
        })
        .map(|r| r.patient.clone())
        .collect();
    let before = out.len();
    out.retain(|r| r.given == Some(Given::In(Split::Test)) || !test_patients.contains(&r.patient));
    let rnn_of_test = before - out.len();
    let mut sources = BTreeMap::new();
    sources.insert("padchest_labels".to_string(), SourceFile::of(&path)?);
    Ok(Read {
        dataset: Dataset::Padchest,
        rows: out,
        concepts,
        sources,
        main: path,
        official_why: "has no split",
        unmapped,
        dropped: vec![
            ("empty_labels".to_string(), no_labels),
            (
                "report_model_rows_of_physician_patients".to_string(),
                rnn_of_test,
            ),
        ],
    })
}
