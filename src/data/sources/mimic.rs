//! MIMIC-CXR-JPG 2.x as PhysioNet ships it, in `data.root`: `mimic-cxr-2.0.0-metadata.csv`,
//! `-chexpert.csv` (or `-negbio.csv`, `data.labeler`) and `-split.csv`, each optionally
//! gzipped. Labels are per study (CheXpert's coding); the patient is `subject_id`, the view
//! `ViewPosition`; images are `files/p<first two digits>/p<subject>/s<study>/<dicom>.jpg`.
//! The official split is the split file's train / validate / test.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::rows::{self, chexpert_coded, fields, row_err, Header, Read, SourceRow};
use crate::config::{BlankPolicy, DataConfig, MimicLabeler};
use crate::data::manifest_dir::{ManifestError, SourceFile};
use crate::data::split::Given;
use crate::labels::vocabulary::Dataset;
use crate::labels::Split;

/// `name.csv.gz` if present, else `name.csv`.
fn file(root: &Path, name: &str) -> PathBuf {
    let gz = root.join(format!("{name}.csv.gz"));
    if gz.is_file() {
        gz
    } else {
        root.join(format!("{name}.csv"))
    }
}

type Study = (Vec<Option<f32>>, Vec<usize>);

/// Labels per (subject, study).
fn labels(
    d: &DataConfig,
    path: &Path,
    concepts: &[String],
) -> Result<HashMap<(String, String), Study>, ManifestError> {
    let recs = rows::records(path)?;
    let h = Header::new(&recs[0], path, Dataset::MimicCxr);
    let (isub, istudy) = (h.col("subject_id")?, h.col("study_id")?);
    let cols = super::chexpert::label_columns(&h, Dataset::MimicCxr, concepts)?;
    let blank = d.blank.unwrap_or(BlankPolicy::Negative);
    let mut out = HashMap::new();
    for r in &recs[1..] {
        let f = fields(r, h.len(), path)?;
        let mut study: Study = (Vec::new(), Vec::new());
        for (k, &c) in cols.iter().enumerate() {
            let (v, unc) = chexpert_coded(f[c], d.uncertain_for(&concepts[k]), blank)
                .map_err(|m| row_err(path, r.line, format!("column `{}`: {m}", h.name(c))))?;
            study.0.push(v);
            if unc {
                study.1.push(k);
            }
        }
        out.insert((f[isub].to_string(), f[istudy].to_string()), study);
    }
    Ok(out)
}

/// Split per dicom_id.
fn splits(path: &Path) -> Result<HashMap<String, Given>, ManifestError> {
    let recs = rows::records(path)?;
    let h = Header::new(&recs[0], path, Dataset::MimicCxr);
    let (idicom, isplit) = (h.col("dicom_id")?, h.col("split")?);
    let mut out = HashMap::new();
    for r in &recs[1..] {
        let f = fields(r, h.len(), path)?;
        let g = match f[isplit] {
            "train" => Given::In(Split::Train),
            "validate" => Given::In(Split::Val),
            "test" => Given::In(Split::Test),
            v => {
                return Err(row_err(
                    path,
                    r.line,
                    format!("split `{v}` is not train, validate or test"),
                ))
            }
        };
        out.insert(f[idicom].to_string(), g);
    }
    Ok(out)
}

pub fn read(d: &DataConfig) -> Result<Read, ManifestError> {
    let concepts = rows::chosen_concepts(d, Dataset::MimicCxr);
    let meta = file(&d.root, "mimic-cxr-2.0.0-metadata");
    let labeler = match d.labeler.unwrap_or(MimicLabeler::Chexpert) {
        MimicLabeler::Chexpert => "mimic-cxr-2.0.0-chexpert",
        MimicLabeler::Negbio => "mimic-cxr-2.0.0-negbio",
    };
    let lab = file(&d.root, labeler);
    let split_path = file(&d.root, "mimic-cxr-2.0.0-split");
    let studies = labels(d, &lab, &concepts)?;
    let split = splits(&split_path)?;
    let recs = rows::records(&meta)?;
    let h = Header::new(&recs[0], &meta, Dataset::MimicCxr);
    let (idicom, isub, istudy, iview) = (
        h.col("dicom_id")?,
        h.col("subject_id")?,
        h.col("study_id")?,
        h.col("ViewPosition")?,
    );
    let mut out = Vec::with_capacity(recs.len());
    let mut unlabelled = 0;
    for r in &recs[1..] {
        let f = fields(r, h.len(), &meta)?;
        let (dicom, sub, study) = (f[idicom], f[isub], f[istudy]);
        if sub.len() < 2 {
            return Err(row_err(
                &meta,
                r.line,
                format!("subject_id `{sub}` is too short for the files/pXX folder"),
            ));
        }
        // A study the labeler did not label (no report section) has no labels: left out.
        let Some((labels, uncertain)) = studies.get(&(sub.to_string(), study.to_string())) else {
            unlabelled += 1;
            continue;
        };
        out.push(SourceRow {
            line: r.line,
            image_id: dicom.to_string(),
            path: d
                .root
                .join("files")
                .join(format!("p{}", &sub[..2]))
                .join(format!("p{sub}"))
                .join(format!("s{study}"))
                .join(format!("{dicom}.jpg")),
            patient: sub.to_string(),
            view: (!f[iview].is_empty()).then(|| f[iview].to_string()),
            sex: None,
            age: None,
            labels: labels.clone(),
            uncertain: uncertain.clone(),
            given: split.get(dicom).copied(),
        });
    }
    let mut sources = BTreeMap::new();
    sources.insert("mimic_metadata".to_string(), SourceFile::of(&meta)?);
    sources.insert("mimic_labels".to_string(), SourceFile::of(&lab)?);
    sources.insert("mimic_split".to_string(), SourceFile::of(&split_path)?);
    Ok(Read {
        dataset: Dataset::MimicCxr,
        rows: out,
        concepts,
        sources,
        main: meta,
        official_why: "is not in the split file",
        unmapped: BTreeMap::new(),
        dropped: vec![("studies_without_labels".to_string(), unlabelled)],
    })
}
