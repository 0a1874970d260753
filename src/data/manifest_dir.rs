//! The manifest folder, `data_manifests/<pipeline name>/`, and the prepared caches inside it:
//! every file name there is spelled here and nowhere else.
//!
//! ```text
//! data_manifests/<name>/
//!   manifest.json            ManifestInfo: sources, protocol, labels, split counts, audit
//!   summary.csv              label counts per split
//!   <split>.parquet          one row per image: id, path, patient, labels
//!   cache_<size>_<dtype>/    a prepared cache: index.json, images.bin, .complete
//!   cache_<size>_<dtype>.partial/   one being built: the same, plus progress.json and
//!                                   entries_<chunk>.json
//!   cache_<size>_<dtype>.lock       held (with the pid) while one is prepared
//! ```
//!
//! `manifest.json` is typed here ([`ManifestInfo`], with its [`Audit`]), beside the error every
//! manifest reader and writer returns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::PolarsError;

use super::nih::NihError;
use crate::config::augment::CacheDtype;
use crate::config::AugmentConfig;
use crate::labels::Split;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Nih(#[from] NihError),
    #[error("audit failed: {0}")]
    Audit(String),
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    #[error("writing {}: {message}", path.display())]
    Write { path: PathBuf, message: String },
    #[error("polars: {0}")]
    Polars(#[from] PolarsError),
}

impl ManifestError {
    pub fn input(path: &Path, message: impl Into<String>) -> Self {
        ManifestError::Input {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// A manifest folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestDir {
    root: PathBuf,
}

impl ManifestDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ManifestDir { root: root.into() }
    }

    /// The folder of pipeline `name` under `manifests_dir` (`data_manifests/`).
    pub fn of(manifests_dir: &Path, name: &str) -> Self {
        ManifestDir::new(manifests_dir.join(name))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pipeline name the folder belongs to.
    pub fn name(&self) -> String {
        self.root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn manifest_json(&self) -> PathBuf {
        self.root.join("manifest.json")
    }

    pub fn summary_csv(&self) -> PathBuf {
        self.root.join("summary.csv")
    }

    pub fn split(&self, split: Split) -> PathBuf {
        split_file(&self.root, split)
    }

    /// The files a manifest consists of, `manifest.json` (what caches and runs check) last.
    pub fn manifest_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Split::ALL.iter().map(|s| self.split(*s)).collect();
        v.push(self.summary_csv());
        v.push(self.manifest_json());
        v
    }

    /// The prepared cache for these augment settings.
    pub fn cache(&self, a: &AugmentConfig) -> CacheDir {
        let d = match a.cache_dtype {
            CacheDtype::U8 => "u8",
            CacheDtype::U16 => "u16",
        };
        CacheDir::new(self.root.join(format!("cache_{}_{d}", a.working_size)))
    }
}

/// Where a folder of split files keeps `split` (a manifest folder, a run's `splits/`).
pub fn split_file(dir: &Path, split: Split) -> PathBuf {
    dir.join(format!("{split}.parquet"))
}

/// A prepared cache's folder, or the `.partial` one it is built in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDir {
    root: PathBuf,
}

impl CacheDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CacheDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder the cache is built in before it is renamed into place.
    pub fn partial(&self) -> CacheDir {
        let name = self.root.file_name().unwrap_or_default().to_string_lossy();
        CacheDir::new(self.root.with_file_name(format!("{name}.partial")))
    }

    /// Held (with the pid) while the cache is prepared.
    pub fn lock_file(&self) -> PathBuf {
        self.root.with_extension("lock")
    }

    pub fn index_json(&self) -> PathBuf {
        self.root.join("index.json")
    }

    pub fn images_bin(&self) -> PathBuf {
        self.root.join("images.bin")
    }

    /// Written last: the cache is whole.
    pub fn complete_marker(&self) -> PathBuf {
        self.root.join(".complete")
    }

    /// How far a build got (in a `.partial` folder).
    pub fn progress_json(&self) -> PathBuf {
        self.root.join("progress.json")
    }

    /// The index entries of one written chunk (in a `.partial` folder).
    pub fn chunk_entries(&self, chunk: usize) -> PathBuf {
        self.root.join(format!("entries_{chunk:06}.json"))
    }
}

/// What the audit found (written into manifest.json).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Audit {
    pub images: usize,
    pub patients: usize,
    pub ages_outside_0_120: Vec<String>,
    pub missing_images: usize,
    pub missing_examples: Vec<String>,
    pub dropped_missing: bool,
    pub shared_patients_between_splits: usize,
    /// Names in test_list.txt or train_val_list.txt that the metadata does not have.
    pub list_names_not_in_metadata: usize,
    pub list_names_not_in_metadata_examples: Vec<String>,
    /// Images each filter dropped (`views`, `min_age`, `max_age`, `missing_images`,
    /// `one_per_patient`), in the order they ran; only filters that dropped something.
    #[serde(default)]
    pub dropped: Vec<(String, usize)>,
    /// Label strings the vocabulary does not map (PadChest's other findings and
    /// misspellings, VinDr's unknown classes), with how often each occurs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unmapped_labels: BTreeMap<String, usize>,
}

impl Audit {
    pub fn note_dropped(&mut self, filter: &str, n: usize) {
        if n > 0 {
            self.dropped.push((filter.to_string(), n));
        }
    }
}

/// One file a manifest was built from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceFile {
    pub path: String,
    pub sha256: String,
}

impl SourceFile {
    /// `path` with its SHA-256.
    pub fn of(path: &Path) -> Result<Self, ManifestError> {
        Ok(SourceFile {
            path: path.display().to_string(),
            sha256: crate::io::sha256_file(path)
                .map_err(|e| ManifestError::input(path, e.to_string()))?,
        })
    }
}

/// Images and patients of one split.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitCount {
    pub images: u64,
    pub patients: u64,
}

/// `manifest.json`: what a manifest folder holds and how it was made. The manifest module
/// writes it; caches, runs and reports read it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ManifestInfo {
    pub tool: String,
    pub tool_version: String,
    /// The files it was built from, by role (`metadata`, `test_list`, `generic_csv`, ...).
    pub sources: BTreeMap<String, SourceFile>,
    /// `official`, `random_patient`, `split_file`, `generic_split_column` or
    /// `generic_random_patient`.
    pub protocol: String,
    pub val_fraction: f64,
    /// `data.test_fraction` as configured (None: the default, or a given test split).
    #[serde(default)]
    pub test_fraction: Option<f64>,
    pub seed: u64,
    pub filters: crate::config::FilterConfig,
    /// Label columns, in model order.
    pub labels: Vec<String>,
    pub splits: BTreeMap<Split, SplitCount>,
    pub audit: Audit,
    /// Made by `muxmed synth` (reports then show no published numbers).
    #[serde(default)]
    pub synthetic: bool,
    /// The dataset read, for every source but NIH's files and a generic CSV (which
    /// manifests before it did not name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<crate::labels::Dataset>,
    /// Images kept per dataset name (the `dataset` column: the source's key, or a
    /// `data.sources` entry's name); manifests before it: empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub datasets: BTreeMap<String, usize>,
}

impl ManifestInfo {
    /// Images the label files listed: those kept plus those each filter dropped.
    pub fn listed_images(&self) -> usize {
        self.audit.images + self.audit.dropped.iter().map(|(_, n)| n).sum::<usize>()
    }

    /// What the data is, for a report: each dataset's title and citation (synthetic sets
    /// say so), with the images kept and their share of those listed, e.g. "NIH Clinical
    /// Center ChestX-ray14 (Wang et al., CVPR 2017): 1,617 of 112,120 listed images (1.4%)".
    pub fn data_credit(&self) -> String {
        use crate::labels::Dataset;
        let title = |name: &str| -> String {
            let ds = Dataset::parse(name).or(self.dataset);
            let t = match ds {
                Some(d) if d != Dataset::Generic => format!("{} ({})", d.title(), d.citation()),
                Some(_) | None if self.sources.contains_key("generic_csv") => {
                    Dataset::Generic.title().to_string()
                }
                _ => name.to_string(),
            };
            if self.synthetic {
                format!("synthetic images made by `muxmed synth` in the format of {t}")
            } else {
                t
            }
        };
        let kept: usize = self.splits.values().map(|s| s.images as usize).sum();
        let names: Vec<String> = if self.datasets.len() <= 1 {
            let own = self.dataset.map_or("nih", |d| d.key());
            vec![title(
                self.datasets.keys().next().map_or(own, String::as_str),
            )]
        } else {
            self.datasets
                .iter()
                .map(|(n, k)| format!("{} ({} images)", title(n), thousands(*k)))
                .collect()
        };
        let listed = self.listed_images().max(kept);
        format!(
            "{}: {} of {} listed images ({:.1}%)",
            names.join("; "),
            thousands(kept),
            thousands(listed),
            100.0 * kept as f64 / listed.max(1) as f64
        )
    }

    /// Whether published ChestX-Ray14 numbers (CheXNet's, the official-split means) may be
    /// shown beside this manifest's: real NIH data (built from NIH's metadata, not a generic
    /// CSV whose labels happen to share NIH's names, not synthetic) split by the official
    /// lists or by patient at random as those papers did.
    pub fn published_references_apply(&self) -> bool {
        !self.synthetic
            && self.sources.contains_key("metadata")
            && !self.sources.contains_key("generic_csv")
            && matches!(self.protocol.as_str(), "official" | "random_patient")
    }

    /// Reads `<dir>/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self, ManifestError> {
        let mdir = ManifestDir::new(dir);
        let p = mdir.manifest_json();
        let text = std::fs::read_to_string(&p).map_err(|e| {
            let name = mdir.name();
            ManifestError::input(
                &p,
                format!("{e}; build the manifest first with `muxmed manifest --pipeline {name}`"),
            )
        })?;
        serde_json::from_str(&text).map_err(|e| ManifestError::input(&p, e.to_string()))
    }
}

/// What a user sees whose data or manifest folder is not there: where ChestX-Ray14 comes
/// from and where to put it, or the commands that build the manifest.
pub fn missing_data_message(
    cfg: &crate::config::PipelineConfig,
    source: &Path,
    manifest_dir: &Path,
) -> String {
    let root = &cfg.data.root;
    if cfg.data.generic.is_none() && !root.is_dir() {
        format!(
            "ChestX-Ray14 is not at {root} (data.root in {src}).\n\
             - Download it from https://nihcc.app.box.com/v/ChestXray-NIHCC (images_001..012, Data_Entry_2017_v2020.csv, train_val_list.txt, test_list.txt).\n\
             - Put it at {root}, or point the pipeline at it: --set data.root=/path/to/nih\n\
             - Then: muxmed manifest --pipeline {name} --set data.root=... and muxmed prepare --pipeline {name} --set data.root=...\n\
             To see the whole job on the built-in synthetic dataset instead, run `make demo`.",
            root = root.display(),
            src = source.display(),
            name = cfg.name
        )
    } else {
        format!(
            "no manifest at {}: run `muxmed manifest --pipeline {}` then `muxmed prepare --pipeline {}` (with the same --set options)",
            manifest_dir.display(),
            cfg.name,
            cfg.name
        )
    }
}

/// `n` with thousands separators (112,120).
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
