//! Manifest sources: each reads one kind of dataset's files, as the dataset ships them, into
//! the manifest table. Splits are assigned through [`crate::data::split`]; the manifest
//! module cuts the table into split files.

use std::collections::BTreeMap;

use polars::prelude::DataFrame;

use crate::data::manifest_dir::{Audit, SourceFile};

pub mod generic;
pub mod nih;

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
}
