//! A split of a written manifest, as the loader and evaluation need it.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::manifest::ManifestError;

#[derive(Debug, Clone)]
pub struct SplitData {
    pub split: String,
    pub label_names: Vec<String>,
    pub image_ids: Vec<String>,
    /// Resolved file paths (None where the manifest was built without scanning images).
    pub paths: Vec<Option<PathBuf>>,
    pub patients: Vec<String>,
    /// labels[i][k] in {0, 1}.
    pub labels: Vec<Vec<f32>>,
}

impl SplitData {
    pub fn len(&self) -> usize {
        self.image_ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.image_ids.is_empty()
    }
}

fn merr(path: &Path, message: String) -> ManifestError {
    ManifestError::Input {
        path: path.to_path_buf(),
        message,
    }
}

/// The label order recorded in `manifest.json`.
pub fn manifest_labels(dir: &Path) -> Result<Vec<String>, ManifestError> {
    let p = dir.join("manifest.json");
    let text = std::fs::read_to_string(&p).map_err(|e| {
        merr(
            &p,
            format!("{e}; build the manifest first with `muxmed manifest --pipeline NAME`"),
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| merr(&p, e.to_string()))?;
    v["labels"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .ok_or_else(|| merr(&p, "no `labels` list".into()))
}

/// Reads `<dir>/<split>.parquet`.
pub fn load_split(dir: &Path, split: &str) -> Result<SplitData, ManifestError> {
    let label_names = manifest_labels(dir)?;
    let p = dir.join(format!("{split}.parquet"));
    let f = std::fs::File::open(&p).map_err(|e| merr(&p, e.to_string()))?;
    let df = ParquetReader::new(f).finish()?;
    let strs = |name: &str| -> Result<Vec<Option<String>>, ManifestError> {
        let c = df
            .column(name)
            .map_err(|_| merr(&p, format!("no column `{name}`")))?;
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
    let mut labels = vec![Vec::with_capacity(label_names.len()); image_ids.len()];
    for l in &label_names {
        let c = df
            .column(l)
            .map_err(|_| merr(&p, format!("no label column `{l}`")))?;
        let c = c.cast(&DataType::Float32)?;
        for (i, v) in c.f32()?.iter().enumerate() {
            labels[i].push(v.unwrap_or(0.0));
        }
    }
    Ok(SplitData {
        split: split.to_string(),
        label_names,
        image_ids,
        paths,
        patients,
        labels,
    })
}
