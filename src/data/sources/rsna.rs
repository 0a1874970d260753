//! The RSNA Pneumonia Detection Challenge (Kaggle): `stage_2_train_labels.csv` in
//! `data.root`, `patientId, x, y, width, height, Target`, one row per box or one row with
//! an empty box and `Target` 0; one image per patient, `stage_2_train_images/<id>.dcm`.
//! `Target` is the concept Pneumonia (see the vocabulary).

use std::collections::BTreeMap;

use super::rows::{self, fields, row_err, Header, Read, SourceRow};
use crate::config::DataConfig;
use crate::data::manifest_dir::{ManifestError, SourceFile};
use crate::labels::vocabulary::Dataset;

pub fn read(d: &DataConfig) -> Result<Read, ManifestError> {
    let path = d.root.join("stage_2_train_labels.csv");
    let recs = rows::records(&path)?;
    let h = Header::new(&recs[0], &path, Dataset::RsnaPneumonia);
    let (iid, itarget) = (h.col("patientId")?, h.col("Target")?);
    for c in ["x", "y", "width", "height"] {
        h.col(c)?;
    }
    // Per patient: first line and Target, which every row of the patient must repeat.
    let mut by_id: BTreeMap<String, (usize, bool)> = BTreeMap::new();
    for r in &recs[1..] {
        let f = fields(r, h.len(), &path)?;
        let t = match f[itarget] {
            "1" => true,
            "0" => false,
            v => {
                return Err(row_err(
                    &path,
                    r.line,
                    format!("Target `{v}` is not 0 or 1"),
                ))
            }
        };
        let (first, target) = *by_id.entry(f[iid].to_string()).or_insert((r.line, t));
        if target != t {
            return Err(row_err(
                &path,
                r.line,
                format!(
                    "Target {} differs from line {first}'s for {}",
                    t as u8, f[iid]
                ),
            ));
        }
    }
    let concepts = rows::chosen_concepts(d, Dataset::RsnaPneumonia);
    let mut out: Vec<SourceRow> = by_id
        .into_iter()
        .map(|(id, (line, t))| SourceRow {
            line,
            path: d
                .root
                .join("stage_2_train_images")
                .join(format!("{id}.dcm")),
            patient: id.clone(),
            image_id: id,
            view: None,
            sex: None,
            age: None,
            labels: concepts.iter().map(|_| Some(t as u8 as f32)).collect(),
            uncertain: Vec::new(),
            given: None,
        })
        .collect();
    out.sort_by_key(|r| r.line);
    let mut sources = BTreeMap::new();
    sources.insert("rsna_labels".to_string(), SourceFile::of(&path)?);
    Ok(Read {
        dataset: Dataset::RsnaPneumonia,
        rows: out,
        concepts,
        sources,
        main: path,
        official_why: "has no split",
        unmapped: BTreeMap::new(),
        dropped: Vec::new(),
    })
}
