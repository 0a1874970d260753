//! Ground-truth boxes for the box benchmark (`muxmed localize`), read from each dataset's
//! own file: NIH's `BBox_List_2017.csv` (one box per finding on 880 images), VinDr-CXR's
//! `train.csv` (every radiologist's box: three readers' boxes of one lesion are three
//! boxes) and RSNA's `stage_2_train_labels.csv` (the boxes of `Target` 1 rows, concept
//! Pneumonia). Each box carries its concept (the vocabulary's), so a model's outputs meet
//! it by concept, and its file's line.

use std::path::{Path, PathBuf};

use super::manifest_dir::{ManifestError, ManifestInfo};
use super::sources::rows::{self, fields, row_err, Header};
use crate::labels::vocabulary::{self, Dataset};
use crate::labels::LABELS;

/// A box file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxFormat {
    /// `Image Index, Finding Label, Bbox [x,y,w,h]`.
    NihBboxList,
    /// `image_id, class_name, class_id, rad_id, x_min, y_min, x_max, y_max`.
    Vindr,
    /// `patientId, x, y, width, height, Target`.
    Rsna,
}

impl BoxFormat {
    /// The format of `dataset`'s box file, when it ships one.
    pub fn of(dataset: Dataset) -> Option<BoxFormat> {
        match dataset {
            Dataset::Nih => Some(BoxFormat::NihBboxList),
            Dataset::VindrCxr => Some(BoxFormat::Vindr),
            Dataset::RsnaPneumonia => Some(BoxFormat::Rsna),
            _ => None,
        }
    }

    /// The role under which a manifest records the file (`manifest.json`'s `sources`; in a
    /// mix it ends the entry's key).
    fn role(self) -> &'static str {
        match self {
            BoxFormat::NihBboxList => "bbox_list",
            BoxFormat::Vindr => "vindr_train",
            BoxFormat::Rsna => "rsna_labels",
        }
    }

    const ALL: [BoxFormat; 3] = [BoxFormat::NihBboxList, BoxFormat::Vindr, BoxFormat::Rsna];
}

/// One ground-truth box in the image file's pixels (x, y = top-left).
#[derive(Debug, Clone, PartialEq)]
pub struct GroundBox {
    pub image_id: String,
    /// The finding's concept (`src/labels/vocabulary.csv`), or the dataset's own name for a
    /// finding the vocabulary does not map.
    pub concept: String,
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    /// The line of the box file it was read from.
    pub line: usize,
}

/// The box file a manifest was built from: its format, path and sha256 then.
pub struct ManifestBoxes {
    pub format: BoxFormat,
    pub path: PathBuf,
    pub sha256: String,
}

/// The box file of the manifest; `Ok(None)` when it has none, an error when a mix holds
/// several (pass one with `--boxes`).
pub fn of_manifest(m: &ManifestInfo) -> Result<Option<ManifestBoxes>, ManifestError> {
    let mut found: Vec<ManifestBoxes> = Vec::new();
    for (key, f) in &m.sources {
        if let Some(format) = BoxFormat::ALL
            .into_iter()
            .find(|b| key == b.role() || key.ends_with(&format!("_{}", b.role())))
        {
            found.push(ManifestBoxes {
                format,
                path: PathBuf::from(&f.path),
                sha256: f.sha256.clone(),
            });
        }
    }
    if found.len() > 1 {
        let names: Vec<String> = found.iter().map(|b| b.path.display().to_string()).collect();
        return Err(ManifestError::Audit(format!(
            "the manifest was built from {} box files ({}): pass the one to score with --boxes",
            found.len(),
            names.join(", ")
        )));
    }
    Ok(found.pop())
}

/// Reads the boxes of `path` in `format`; a box that is not a box is an error naming its
/// line ([`super::nih::check_box`]).
pub fn read(format: BoxFormat, path: &Path) -> Result<Vec<GroundBox>, ManifestError> {
    let boxes = match format {
        BoxFormat::NihBboxList => {
            let text = super::nih::read_text(path)?;
            super::nih::parse_bboxes(&text, path)?
                .into_iter()
                .map(|b| GroundBox {
                    image_id: b.image_id,
                    concept: LABELS[b.label].to_string(),
                    x: b.x,
                    y: b.y,
                    w: b.w,
                    h: b.h,
                    line: b.line,
                })
                .collect()
        }
        BoxFormat::Vindr => read_vindr(path)?,
        BoxFormat::Rsna => read_rsna(path)?,
    };
    for b in &boxes {
        super::nih::check_box(b.x, b.y, b.w, b.h).map_err(|m| row_err(path, b.line, m))?;
    }
    Ok(boxes)
}

fn number(path: &Path, line: usize, name: &str, v: &str) -> Result<f64, ManifestError> {
    v.trim()
        .parse::<f64>()
        .map_err(|_| row_err(path, line, format!("{name} `{v}` is not a number")))
}

/// VinDr: every row but `No finding` is one reader's box.
fn read_vindr(path: &Path) -> Result<Vec<GroundBox>, ManifestError> {
    let recs = rows::records(path)?;
    let h = Header::new(&recs[0], path, Dataset::VindrCxr);
    let [iid, iclass, x0, y0, x1, y1] =
        h.cols(["image_id", "class_name", "x_min", "y_min", "x_max", "y_max"])?;
    let mut out = Vec::new();
    for r in &recs[1..] {
        let f = fields(r, h.len(), path)?;
        if f[iclass] == "No finding" {
            continue;
        }
        let n = |i: usize, name: &str| number(path, r.line, name, f[i]);
        let (ax, ay) = (n(x0, "x_min")?, n(y0, "y_min")?);
        out.push(GroundBox {
            image_id: f[iid].to_string(),
            concept: vocabulary::concept(Dataset::VindrCxr, f[iclass])
                .unwrap_or(f[iclass])
                .to_string(),
            x: ax,
            y: ay,
            w: n(x1, "x_max")? - ax,
            h: n(y1, "y_max")? - ay,
            line: r.line,
        });
    }
    Ok(out)
}

/// RSNA: the box of every `Target` 1 row.
fn read_rsna(path: &Path) -> Result<Vec<GroundBox>, ManifestError> {
    let recs = rows::records(path)?;
    let h = Header::new(&recs[0], path, Dataset::RsnaPneumonia);
    let [iid, ix, iy, iw, ih, it] = h.cols(["patientId", "x", "y", "width", "height", "Target"])?;
    let concept = vocabulary::concept(Dataset::RsnaPneumonia, "Target").unwrap_or("Pneumonia");
    let mut out = Vec::new();
    for r in &recs[1..] {
        let f = fields(r, h.len(), path)?;
        if f[it] != "1" {
            continue;
        }
        let n = |i: usize, name: &str| number(path, r.line, name, f[i]);
        out.push(GroundBox {
            image_id: f[iid].to_string(),
            concept: concept.to_string(),
            x: n(ix, "x")?,
            y: n(iy, "y")?,
            w: n(iw, "width")?,
            h: n(ih, "height")?,
            line: r.line,
        });
    }
    Ok(out)
}
