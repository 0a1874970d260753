//! Manifest sources: each reads one kind of dataset's files, as the dataset ships them, into
//! the manifest table. Splits are assigned through [`crate::data::split`]; the manifest
//! module cuts the table into split files.

use std::collections::BTreeMap;

use polars::prelude::DataFrame;

use crate::data::manifest_dir::{Audit, SourceFile};

pub mod chexpert;
pub mod generic;
pub mod mimic;
pub mod multi;
pub mod nih;
pub mod padchest;
pub mod rows;
pub mod rsna;
pub mod vindr;

/// What a source hands to the manifest: one row per image (a `split` column included), the
/// label columns in model order, the files read and what the audit found.
pub struct Table {
    pub all: DataFrame,
    pub labels: Vec<String>,
    /// The files it was read from, by role (`metadata`, `test_list`, `generic_csv`, ...).
    pub sources: BTreeMap<String, SourceFile>,
    /// How the splits were made (`official`, `random_patient`, `generic_split_column`, ...).
    pub protocol: &'static str,
    pub audit: Audit,
    /// Made by `muxmed synth`.
    pub synthetic: bool,
    /// The dataset read (None: NIH's files or a generic CSV, as manifests before it said).
    pub dataset: Option<crate::labels::Dataset>,
}

/// Reads `data.source`'s files into the manifest table.
pub fn read(
    d: &crate::config::DataConfig,
    scan_images: bool,
) -> Result<Table, crate::data::manifest_dir::ManifestError> {
    use crate::labels::Dataset;
    if !d.sources.is_empty() {
        return multi::read(d, scan_images);
    }
    let read = match d.dataset() {
        Dataset::Nih => return nih::read(d, scan_images),
        Dataset::Generic => match &d.generic {
            Some(g) => return generic::read(d, g, scan_images),
            None => {
                return Err(crate::data::manifest_dir::ManifestError::input(
                    &d.root,
                    "data.source: generic needs data.generic",
                ))
            }
        },
        Dataset::Chexpert => chexpert::read(d)?,
        Dataset::MimicCxr => mimic::read(d)?,
        Dataset::Padchest => padchest::read(d)?,
        Dataset::VindrCxr => vindr::read(d)?,
        Dataset::RsnaPneumonia => rsna::read(d)?,
    };
    rows::finish(d, read, scan_images)
}
