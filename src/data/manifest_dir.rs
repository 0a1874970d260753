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

use std::path::{Path, PathBuf};

use crate::config::augment::CacheDtype;
use crate::config::AugmentConfig;
use crate::labels::Split;

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
