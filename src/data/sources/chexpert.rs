//! CheXpert v1.0 and v1.0-small as Stanford ships them: `train.csv` and `valid.csv` in
//! `data.root`, `Path, Sex, Age, Frontal/Lateral, AP/PA` and 14 observations coded 1, 0,
//! -1 (uncertain) or blank (not mentioned). `Path` starts with the dataset's folder
//! (`CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`): the image is that
//! path under `root`'s parent when `root` is that folder, else under `root`. The patient is
//! the `patientNNNNN` part. Officially `valid.csv` (radiologists' labels) is the test split
//! and `train.csv` the training pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::rows::{self, chexpert_coded, fields, row_err, Header, Read, SourceRow};
use crate::config::{BlankPolicy, DataConfig, SplitProtocol};
use crate::data::manifest_dir::{ManifestError, SourceFile};
use crate::data::split::Given;
use crate::labels::vocabulary::{self, Dataset};
use crate::labels::Split;

/// Where `Path` points under `root`.
pub fn image_path(root: &Path, rel: &str) -> PathBuf {
    let mut parts = Path::new(rel).components();
    let first = parts.next().map(|c| c.as_os_str().to_owned());
    match (first, root.file_name()) {
        (Some(f), Some(r)) if f == r => root.join(parts.as_path()),
        _ => root.join(rel),
    }
}

/// Reads one CheXpert-format file (`given`: the split its rows belong to). `dataset` is
/// CheXpert's or MIMIC's vocabulary (the 14 observation columns are the same).
pub fn read_file(
    d: &DataConfig,
    path: &Path,
    given: Given,
    concepts: &[String],
) -> Result<(Vec<SourceRow>, usize), ManifestError> {
    let recs = rows::records(path)?;
    let h = Header::new(&recs[0], path, Dataset::Chexpert);
    let (ip, isex, iage, ifl, iview) = (
        h.col("Path")?,
        h.col("Sex")?,
        h.col("Age")?,
        h.col("Frontal/Lateral")?,
        h.col("AP/PA")?,
    );
    let label_cols = label_columns(&h, Dataset::Chexpert, concepts)?;
    let blank = d.blank.unwrap_or(BlankPolicy::Negative);
    let mut out = Vec::with_capacity(recs.len());
    for r in &recs[1..] {
        let f = fields(r, h.len(), path)?;
        let rel = f[ip];
        let patient = Path::new(rel)
            .components()
            .filter_map(|c| c.as_os_str().to_str())
            .find(|c| {
                c.starts_with("patient")
                    && c[7..].chars().all(|x| x.is_ascii_digit())
                    && c.len() > 7
            })
            .ok_or_else(|| {
                row_err(
                    path,
                    r.line,
                    format!("no patientNNNNN folder in Path `{rel}`"),
                )
            })?;
        let view = match f[ifl] {
            "Lateral" => Some("LATERAL".to_string()),
            _ => (!f[iview].is_empty()).then(|| f[iview].to_string()),
        };
        let mut row = SourceRow {
            line: r.line,
            image_id: image_id(rel),
            path: image_path(&d.root, rel),
            patient: patient.to_string(),
            view,
            sex: match f[isex] {
                "Male" => Some("M".into()),
                "Female" => Some("F".into()),
                _ => None,
            },
            age: f[iage].parse::<f64>().ok(),
            labels: Vec::with_capacity(concepts.len()),
            uncertain: Vec::new(),
            given: Some(given),
        };
        for (k, &col) in label_cols.iter().enumerate() {
            let (v, unc) = chexpert_coded(f[col], d.uncertain_for(&concepts[k]), blank)
                .map_err(|m| row_err(path, r.line, format!("column `{}`: {m}", h.name(col))))?;
            row.labels.push(v);
            if unc {
                row.uncertain.push(k);
            }
        }
        out.push(row);
    }
    Ok((out, recs.len() - 1))
}

/// `Path` without the dataset folder: `train/patient00001/study1/view1_frontal.jpg`.
fn image_id(rel: &str) -> String {
    match rel.split_once('/') {
        Some((first, rest)) if first.starts_with("CheXpert") => rest.to_string(),
        _ => rel.to_string(),
    }
}

/// The column of each concept, through the vocabulary's names for `dataset`.
pub fn label_columns(
    h: &Header,
    dataset: Dataset,
    concepts: &[String],
) -> Result<Vec<usize>, ManifestError> {
    concepts
        .iter()
        .map(|c| {
            let name = vocabulary::concepts_of(dataset)
                .into_iter()
                .find(|m| &m.concept == c)
                .map(|m| m.name.as_str())
                .unwrap_or(c);
            h.col(name)
        })
        .collect()
}

/// Reads `train.csv` and `valid.csv` under `data.root`.
pub fn read(d: &DataConfig) -> Result<Read, ManifestError> {
    let concepts = rows::chosen_concepts(d, Dataset::Chexpert);
    let train = d.root.join("train.csv");
    let valid = d.root.join("valid.csv");
    let mut sources = BTreeMap::new();
    let (mut all, _) = read_file(d, &train, Given::TrainOrVal, &concepts)?;
    sources.insert("chexpert_train".to_string(), SourceFile::of(&train)?);
    if valid.is_file() || d.protocol == SplitProtocol::Official {
        let (v, _) = read_file(d, &valid, Given::In(Split::Test), &concepts)?;
        all.extend(v);
        sources.insert("chexpert_valid".to_string(), SourceFile::of(&valid)?);
    }
    Ok(Read {
        dataset: Dataset::Chexpert,
        rows: all,
        concepts,
        sources,
        main: train,
        official_why: "has no split",
        unmapped: BTreeMap::new(),
        dropped: Vec::new(),
    })
}
