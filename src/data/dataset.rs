//! A split of a written manifest (or of a run's own copy of it), as the loader and evaluation
//! need it.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::manifest_dir::{ManifestError, ManifestInfo};
use crate::labels::Split;

#[derive(Debug, Clone)]
pub struct SplitData {
    pub label_names: Vec<String>,
    pub image_ids: Vec<String>,
    /// Resolved file paths (None where the manifest was built without scanning images).
    pub paths: Vec<Option<PathBuf>>,
    pub patients: Vec<String>,
    /// Each image's dataset key (`nih`, `chexpert`, …; empty where the manifest has no
    /// `dataset` column): in a multi-source run it says which source an image came from.
    pub datasets: Vec<String>,
    /// labels[i][k]: 1 positive, 0 negative, NaN missing (not annotated by the image's
    /// dataset, or uncertain under `data.uncertain: ignore`).
    pub labels: Vec<Vec<f32>>,
}

impl SplitData {
    pub fn len(&self) -> usize {
        self.image_ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.image_ids.is_empty()
    }
    /// The rows where `keep` is true.
    pub fn select(&self, keep: &[bool]) -> SplitData {
        let pick = |i: &usize| keep.get(*i).copied().unwrap_or(true);
        let rows: Vec<usize> = (0..self.len()).filter(pick).collect();
        SplitData {
            label_names: self.label_names.clone(),
            image_ids: rows.iter().map(|&i| self.image_ids[i].clone()).collect(),
            paths: rows.iter().map(|&i| self.paths[i].clone()).collect(),
            patients: rows.iter().map(|&i| self.patients[i].clone()).collect(),
            datasets: rows.iter().map(|&i| self.datasets[i].clone()).collect(),
            labels: rows.iter().map(|&i| self.labels[i].clone()).collect(),
        }
    }

    /// Labels with fewer than `min` positives or negatives here, as "Label (p positives, n
    /// negatives)", for warnings: on such a split the label's AUROC, and any model selection
    /// resting on it, is unreliable (undefined with one class).
    pub fn thin_labels(&self, min: usize) -> Vec<String> {
        (0..self.label_names.len())
            .filter_map(|k| {
                let pos = self.labels.iter().filter(|l| l[k] > 0.5).count();
                let neg = self.labels.iter().filter(|l| l[k] <= 0.5).count();
                (pos < min || neg < min).then(|| {
                    let what = if pos == 0 || neg == 0 {
                        ": one class only, AUROC undefined"
                    } else {
                        ""
                    };
                    format!(
                        "{} ({pos} positives, {neg} negatives{what})",
                        self.label_names[k]
                    )
                })
            })
            .collect()
    }

    /// Positive fraction of every label, among the images whose label is known.
    pub fn prevalence(&self) -> Vec<f64> {
        (0..self.label_names.len())
            .map(|k| {
                let known = self.labels.iter().filter(|l| !l[k].is_nan()).count();
                let pos = self.labels.iter().filter(|l| l[k] > 0.5).count();
                pos as f64 / known.max(1) as f64
            })
            .collect()
    }
}

/// Copies the split file `from` to `to` without the images in `drop` (written to a temp
/// file and renamed); returns how many rows were left out.
pub fn copy_split_without(
    from: &Path,
    to: &Path,
    drop: &std::collections::HashSet<String>,
) -> Result<usize, ManifestError> {
    let f = std::fs::File::open(from).map_err(|e| ManifestError::input(from, e.to_string()))?;
    let df = ParquetReader::new(f).finish()?;
    let ids = df
        .column("image_id")
        .map_err(|_| ManifestError::input(from, "no column `image_id`"))?
        .cast(&DataType::String)?;
    let keep: BooleanChunked = ids
        .str()?
        .iter()
        .map(|v| Some(v.is_none_or(|id| !drop.contains(id))))
        .collect();
    let mut kept = df.filter(&keep)?;
    let dropped = df.height() - kept.height();
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ManifestError::input(dir, e.to_string()))?;
    }
    let tmp = to.with_extension("parquet.tmp");
    let out = std::fs::File::create(&tmp).map_err(|e| ManifestError::input(&tmp, e.to_string()))?;
    ParquetWriter::new(out).finish(&mut kept)?;
    std::fs::rename(&tmp, to).map_err(|e| ManifestError::input(to, e.to_string()))?;
    Ok(dropped)
}

/// The val split's labels with too few positives or negatives to choose a model by.
pub fn thin_val_warning(val: &SplitData) -> Option<String> {
    let thin = val.thin_labels(crate::metrics::FEW_OF_A_CLASS);
    (!thin.is_empty()).then(|| {
        format!(
            "the val split has fewer than {} positives or negatives for {} label(s): {}. Their val AUROC is unreliable, and model selection by val mean AUROC rests on the other labels for any that is undefined",
            crate::metrics::FEW_OF_A_CLASS,
            thin.len(),
            thin.join(", ")
        )
    })
}

/// The label order recorded in `manifest.json`.
pub fn manifest_labels(dir: &Path) -> Result<Vec<String>, ManifestError> {
    Ok(ManifestInfo::read(dir)?.labels)
}

/// Reads `<dir>/<split>.parquet` of a manifest folder.
pub fn load_split(dir: &Path, split: Split) -> Result<SplitData, ManifestError> {
    load_split_file(&split_path(dir, split), &manifest_labels(dir)?)
}

/// Where a manifest folder (or a run's `splits/`) keeps a split.
pub fn split_path(dir: &Path, split: Split) -> PathBuf {
    super::manifest_dir::split_file(dir, split)
}

/// Reads one split's parquet file; `label_names` are the label columns, in model order.
pub fn load_split_file(p: &Path, label_names: &[String]) -> Result<SplitData, ManifestError> {
    let f = std::fs::File::open(p).map_err(|e| ManifestError::input(p, e.to_string()))?;
    let df = ParquetReader::new(f).finish()?;
    let strs = |name: &str| -> Result<Vec<Option<String>>, ManifestError> {
        let c = df
            .column(name)
            .map_err(|_| ManifestError::input(p, format!("no column `{name}`")))?;
        let c = c.cast(&DataType::String)?;
        Ok(c.str()?.iter().map(|v| v.map(String::from)).collect())
    };
    let image_ids: Vec<String> = strs("image_id")?
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    let paths = strs("path")?
        .into_iter()
        .map(|p| p.map(PathBuf::from))
        .collect();
    let patients = strs("patient_id")?
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    let datasets = if df.column("dataset").is_ok() {
        strs("dataset")?
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect()
    } else {
        vec![String::new(); image_ids.len()]
    };
    let mut labels = vec![Vec::with_capacity(label_names.len()); image_ids.len()];
    for l in label_names {
        let c = df
            .column(l)
            .map_err(|_| ManifestError::input(p, format!("no label column `{l}`")))?;
        let c = c.cast(&DataType::Float32)?;
        for (i, v) in c.f32()?.iter().enumerate() {
            labels[i].push(v.unwrap_or(f32::NAN));
        }
    }
    Ok(SplitData {
        label_names: label_names.to_vec(),
        image_ids,
        paths,
        patients,
        datasets,
        labels,
    })
}

/// The attributes subgroups are made of, per row of a split file: None where the row has
/// no value, and each column None where the manifest has no such column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SplitAttributes {
    pub image_ids: Vec<String>,
    pub sex: Option<Vec<Option<String>>>,
    pub age: Option<Vec<Option<f64>>>,
    pub view: Option<Vec<Option<String>>>,
    pub dataset: Option<Vec<Option<String>>>,
}

impl SplitAttributes {
    /// The sex, age and view of NIH metadata records (`Patient Gender`, `Patient Age`,
    /// `View Position`), one per image of `ids` (None: the image has no record).
    pub fn of_nih_records(ids: &[String], records: &[Option<&super::nih::Record>]) -> Self {
        let text = |f: &dyn Fn(&super::nih::Record) -> &str| {
            Some(
                records
                    .iter()
                    .map(|r| r.map(|r| f(r).to_string()))
                    .collect(),
            )
        };
        SplitAttributes {
            image_ids: ids.to_vec(),
            sex: text(&|r| r.sex.as_str()),
            age: Some(records.iter().map(|r| r.map(|r| r.age as f64)).collect()),
            view: text(&|r| r.view.as_str()),
            dataset: None,
        }
    }

    /// The attributes of `ids`, in that order (None for an id not held here).
    pub fn aligned_to(&self, ids: &[String]) -> SplitAttributes {
        let row: std::collections::HashMap<&str, usize> = self
            .image_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let at: Vec<Option<usize>> = ids.iter().map(|id| row.get(id.as_str()).copied()).collect();
        fn pick<T: Clone>(
            col: &Option<Vec<Option<T>>>,
            at: &[Option<usize>],
        ) -> Option<Vec<Option<T>>> {
            col.as_ref()
                .map(|c| at.iter().map(|i| i.and_then(|i| c[i].clone())).collect())
        }
        SplitAttributes {
            image_ids: ids.to_vec(),
            sex: pick(&self.sex, &at),
            age: pick(&self.age, &at),
            view: pick(&self.view, &at),
            dataset: pick(&self.dataset, &at),
        }
    }
}

/// Reads the `sex`, `age`, `view` and `dataset` columns of one split's parquet file.
pub fn load_split_attributes(p: &Path) -> Result<SplitAttributes, ManifestError> {
    let f = std::fs::File::open(p).map_err(|e| ManifestError::input(p, e.to_string()))?;
    let df = ParquetReader::new(f).finish()?;
    let strs = |name: &str| -> Result<Option<Vec<Option<String>>>, ManifestError> {
        let Ok(c) = df.column(name) else {
            return Ok(None);
        };
        let c = c.cast(&DataType::String)?;
        let v: Vec<Option<String>> = c
            .str()?
            .iter()
            .map(|v| v.map(str::trim).filter(|v| !v.is_empty()).map(String::from))
            .collect();
        Ok(Some(v))
    };
    let age = match df.column("age") {
        Ok(c) => Some(c.cast(&DataType::Float64)?.f64()?.iter().collect()),
        Err(_) => None,
    };
    Ok(SplitAttributes {
        image_ids: strs("image_id")?
            .ok_or_else(|| ManifestError::input(p, "no column `image_id`"))?
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect(),
        sex: strs("sex")?,
        age,
        view: strs("view")?,
        dataset: strs("dataset")?,
    })
}

/// `acc` followed by `more` (`n` rows so far, `m` more): a column one part lacks is None
/// for its rows.
fn append<T: Clone>(
    acc: &mut Option<Vec<Option<T>>>,
    more: Option<Vec<Option<T>>>,
    first: bool,
    n: usize,
    m: usize,
) {
    match (acc.as_mut(), more) {
        (Some(v), Some(w)) => v.extend(w),
        (Some(v), None) => v.extend(std::iter::repeat_n(None, m)),
        (None, Some(w)) if first => *acc = Some(w),
        (None, Some(w)) => {
            let mut v = vec![None; n];
            v.extend(w);
            *acc = Some(v);
        }
        (None, None) => {}
    }
}

/// [`load_split_attributes`] of each of `splits` of the manifest folder `dir`, one after
/// the other.
pub fn load_attributes_of(dir: &Path, splits: &[Split]) -> Result<SplitAttributes, ManifestError> {
    let mut out = SplitAttributes::default();
    for (i, s) in splits.iter().enumerate() {
        let a = load_split_attributes(&split_path(dir, *s))?;
        let n = out.image_ids.len();
        out.image_ids.extend(a.image_ids);
        let m = out.image_ids.len() - n;
        let first = i == 0;
        append(&mut out.sex, a.sex, first, n, m);
        append(&mut out.age, a.age, first, n, m);
        append(&mut out.view, a.view, first, n, m);
        append(&mut out.dataset, a.dataset, first, n, m);
    }
    Ok(out)
}
