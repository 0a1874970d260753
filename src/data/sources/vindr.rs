//! VinDr-CXR as the Kaggle VinBigData release ships it: `train.csv` in `data.root`, one row
//! per finding box per radiologist (`image_id, class_name, class_id, rad_id, x_min, y_min,
//! x_max, y_max`), `No finding` rows for a reader who saw nothing, three readers per image.
//! A concept is positive under `data.readers`: `majority` (more than half of the image's
//! readers marked it) or `any`. Images are `train/<image_id>.dicom`; each image is its own
//! patient (the release gives no patient ids).

use std::collections::{BTreeMap, BTreeSet};

use super::rows::{self, fields, row_err, Header, Read, SourceRow};
use crate::config::{DataConfig, ReaderPolicy};
use crate::data::manifest_dir::{ManifestError, SourceFile};
use crate::labels::vocabulary::{self, Dataset};

/// The class rows of one image: its readers and, per class name, the readers marking it.
#[derive(Default)]
struct Image {
    line: usize,
    readers: BTreeSet<String>,
    marks: BTreeMap<String, BTreeSet<String>>,
}

pub fn read(d: &DataConfig) -> Result<Read, ManifestError> {
    let path = d.root.join("train.csv");
    let recs = rows::records(&path)?;
    let h = Header::new(&recs[0], &path, Dataset::VindrCxr);
    let (iid, iclass, irad) = (h.col("image_id")?, h.col("class_name")?, h.col("rad_id")?);
    for c in ["class_id", "x_min", "y_min", "x_max", "y_max"] {
        h.col(c)?;
    }
    let mut images: BTreeMap<String, Image> = BTreeMap::new();
    let mut unmapped = BTreeMap::new();
    for r in &recs[1..] {
        let f = fields(r, h.len(), &path)?;
        if f[iid].is_empty() || f[irad].is_empty() {
            return Err(row_err(&path, r.line, "empty image_id or rad_id"));
        }
        let im = images.entry(f[iid].to_string()).or_default();
        if im.line == 0 {
            im.line = r.line;
        }
        im.readers.insert(f[irad].to_string());
        let class = f[iclass];
        if class != "No finding" {
            if vocabulary::concept(Dataset::VindrCxr, class).is_none() {
                *unmapped.entry(class.to_string()).or_insert(0) += 1;
            }
            im.marks
                .entry(class.to_string())
                .or_default()
                .insert(f[irad].to_string());
        }
    }
    let concepts = rows::chosen_concepts(d, Dataset::VindrCxr);
    let names: Vec<&str> = concepts
        .iter()
        .filter_map(|c| {
            vocabulary::concepts_of(Dataset::VindrCxr)
                .into_iter()
                .find(|m| &m.concept == c)
                .map(|m| m.name.as_str())
        })
        .collect();
    let policy = d.readers.unwrap_or(ReaderPolicy::Majority);
    let mut out = Vec::with_capacity(images.len());
    for (id, im) in images {
        let n = im.readers.len();
        let labels = names
            .iter()
            .map(|name| {
                let k = im.marks.get(*name).map_or(0, BTreeSet::len);
                let pos = match policy {
                    ReaderPolicy::Majority => 2 * k > n,
                    ReaderPolicy::Any => k > 0,
                };
                Some(pos as u8 as f32)
            })
            .collect();
        out.push(SourceRow {
            line: im.line,
            path: d.root.join("train").join(format!("{id}.dicom")),
            patient: id.clone(),
            image_id: id,
            view: None,
            sex: None,
            age: None,
            labels,
            uncertain: Vec::new(),
            given: None,
        });
    }
    out.sort_by_key(|r| r.line);
    let mut sources = BTreeMap::new();
    sources.insert("vindr_train".to_string(), SourceFile::of(&path)?);
    Ok(Read {
        dataset: Dataset::VindrCxr,
        rows: out,
        concepts,
        sources,
        main: path,
        official_why: "has no split",
        unmapped,
        dropped: Vec::new(),
    })
}
