//! The path every dataset reader but NIH's shares: the reader turns its files into
//! [`SourceRow`]s (labels already concepts, each known, negative or missing), and
//! [`finish`] applies the filters, the missing-image audit, one image per patient, the
//! split protocol and the leakage audit, and builds the manifest table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::Table;
use crate::config::{BlankPolicy, DataConfig, SplitProtocol, UncertainPolicy};
use crate::data::manifest_dir::{Audit, ManifestError, SourceFile};
use crate::data::nih::{csv_rows, read_text};
use crate::data::split::{self, Entry, Given, Plan};
use crate::io::CsvRecord;
use crate::labels::vocabulary::{self, Dataset};
use crate::labels::Split;

/// One image as a reader found it.
#[derive(Debug, Clone)]
pub struct SourceRow {
    /// The line of the reader's main file the row came from.
    pub line: usize,
    pub image_id: String,
    pub path: PathBuf,
    pub patient: String,
    /// `PA`, `AP`, `LATERAL`, ... as the dataset names it; None where it gives none.
    pub view: Option<String>,
    /// `M` or `F`.
    pub sex: Option<String>,
    pub age: Option<f64>,
    /// Per concept of [`Read::concepts`]: 1 positive, 0 negative, None missing.
    pub labels: Vec<Option<f32>>,
    /// Concepts whose label was uncertain in the files (whatever the policy made of it).
    pub uncertain: Vec<usize>,
    pub given: Option<Given>,
}

/// What a reader hands to [`finish`].
pub struct Read {
    pub dataset: Dataset,
    pub rows: Vec<SourceRow>,
    /// The concepts, in model order.
    pub concepts: Vec<String>,
    pub sources: BTreeMap<String, SourceFile>,
    /// The file rows' lines refer to, for messages.
    pub main: PathBuf,
    /// What `official` means for this dataset (for a missing split).
    pub official_why: &'static str,
    /// Label strings the vocabulary does not map, with their counts.
    pub unmapped: BTreeMap<String, usize>,
    /// Rows the reader left out, by reason, for the audit.
    pub dropped: Vec<(String, usize)>,
}

/// Reads a label file into its CSV records (header first), refusing one without records.
pub fn records(path: &Path) -> Result<Vec<CsvRecord>, ManifestError> {
    let recs = csv_rows(&read_text(path)?, path)?;
    if recs.is_empty() {
        return Err(ManifestError::input(path, "empty file: no header"));
    }
    Ok(recs)
}

/// Column positions by name in a header; a missing column names the file, the format and
/// the columns found.
pub struct Header<'a> {
    names: Vec<String>,
    path: &'a Path,
    format: Dataset,
}

impl<'a> Header<'a> {
    pub fn new(rec: &CsvRecord, path: &'a Path, format: Dataset) -> Self {
        Header {
            names: rec.fields.iter().map(|h| h.trim().to_string()).collect(),
            path,
            format,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, col: usize) -> &str {
        self.names.get(col).map_or("", String::as_str)
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|h| h == name)
    }

    /// [`Self::col`] of each name, in order; the first missing one is the error.
    pub fn cols<const N: usize>(&self, names: [&str; N]) -> Result<[usize; N], ManifestError> {
        let mut out = [0; N];
        for (o, n) in out.iter_mut().zip(names) {
            *o = self.col(n)?;
        }
        Ok(out)
    }

    pub fn col(&self, name: &str) -> Result<usize, ManifestError> {
        self.find(name).ok_or_else(|| {
            ManifestError::input(
                self.path,
                format!(
                    "no column `{name}`, which the {} format has; the file's columns are: {}",
                    self.format,
                    self.names.join(", ")
                ),
            )
        })
    }
}

/// A record's fields, trimmed, checked against the header's width.
pub fn fields<'r>(
    r: &'r CsvRecord,
    width: usize,
    path: &Path,
) -> Result<Vec<&'r str>, ManifestError> {
    if r.fields.len() != width {
        return Err(row_err(
            path,
            r.line,
            format!("expected {width} fields, found {}", r.fields.len()),
        ));
    }
    Ok(r.fields.iter().map(|f| f.trim()).collect())
}

pub fn row_err(path: &Path, line: usize, message: impl Into<String>) -> ManifestError {
    ManifestError::input(path, format!("line {line}: {}", message.into()))
}

/// A CheXpert-coded label (`1.0` positive, `0.0` negative, `-1.0` uncertain, blank not
/// mentioned) under the policies: (value, was uncertain). `Err` names the bad value.
pub fn chexpert_coded(
    raw: &str,
    uncertain: UncertainPolicy,
    blank: BlankPolicy,
) -> Result<(Option<f32>, bool), String> {
    let v = match raw {
        "" => {
            return Ok((
                match blank {
                    BlankPolicy::Negative => Some(0.0),
                    BlankPolicy::Missing => None,
                },
                false,
            ))
        }
        _ => raw
            .parse::<f64>()
            .map_err(|_| format!("label `{raw}` is not 1, 0, -1 or empty (CheXpert's coding)"))?,
    };
    match v {
        1.0 => Ok((Some(1.0), false)),
        0.0 => Ok((Some(0.0), false)),
        -1.0 => Ok((
            match uncertain {
                UncertainPolicy::Ones => Some(1.0),
                UncertainPolicy::Zeros => Some(0.0),
                UncertainPolicy::Ignore => None,
            },
            true,
        )),
        _ => Err(format!(
            "label `{raw}` is not 1, 0, -1 or empty (CheXpert's coding)"
        )),
    }
}

/// The concepts a dataset annotates, restricted to `data.filters.labels` when given.
pub fn chosen_concepts(d: &DataConfig, dataset: Dataset) -> Vec<String> {
    vocabulary::concepts_of(dataset)
        .into_iter()
        .map(|m| m.concept.clone())
        .filter(|c| d.filters.labels.is_empty() || d.filters.labels.contains(c))
        .collect()
}

/// What `data.filters` reads of a row: its view, age and patient.
pub trait Filterable {
    fn view(&self) -> Option<&str>;
    fn age(&self) -> Option<f64>;
    fn patient(&self) -> &str;
}

impl Filterable for SourceRow {
    fn view(&self) -> Option<&str> {
        self.view.as_deref()
    }
    fn age(&self) -> Option<f64> {
        self.age
    }
    fn patient(&self) -> &str {
        &self.patient
    }
}

/// `data.filters`' views and ages.
pub fn apply_filters<R: Filterable>(d: &DataConfig, rows: &mut Vec<R>, audit: &mut Audit) {
    let f = &d.filters;
    if !f.views.is_empty() {
        let before = rows.len();
        rows.retain(|r| r.view().is_some_and(|v| f.views.iter().any(|x| x == v)));
        audit.note_dropped("views", before - rows.len());
    }
    if let Some(lo) = f.min_age {
        let before = rows.len();
        rows.retain(|r| r.age().is_some_and(|a| a >= lo as f64));
        audit.note_dropped("min_age", before - rows.len());
    }
    if let Some(hi) = f.max_age {
        let before = rows.len();
        rows.retain(|r| r.age().is_some_and(|a| a <= hi as f64));
        audit.note_dropped("max_age", before - rows.len());
    }
}

/// Images missing on disk: an error, or with `allow_missing_images` dropped and counted;
/// one file listed twice is an error.
fn check_files(
    d: &DataConfig,
    read: &mut Read,
    check_images: bool,
    audit: &mut Audit,
) -> Result<(), ManifestError> {
    let twice = crate::io::repeated_keys(read.rows.iter().map(|r| (r.image_id.as_str(), r.line)));
    if !twice.is_empty() {
        return Err(ManifestError::Audit(format!(
            "{} image(s) are listed more than once in {}: {}",
            twice.len(),
            read.main.display(),
            twice.join("; ")
        )));
    }
    if !check_images {
        return Ok(());
    }
    let missing: Vec<String> = read
        .rows
        .iter()
        .filter(|r| !r.path.is_file())
        .map(|r| r.path.display().to_string())
        .collect();
    audit.missing_images = missing.len();
    audit.missing_examples = missing.iter().take(5).cloned().collect();
    if !missing.is_empty() {
        if !d.allow_missing_images {
            return Err(ManifestError::Audit(format!(
                "{} of {} images listed in {} do not exist (first: {}); set data.allow_missing_images: true to drop them",
                missing.len(),
                read.rows.len(),
                read.main.display(),
                audit.missing_examples.join(", ")
            )));
        }
        audit.dropped_missing = true;
        let before = read.rows.len();
        read.rows.retain(|r| r.path.is_file());
        audit.note_dropped("missing_images", before - read.rows.len());
    }
    Ok(())
}

/// `data.filters.one_per_patient`: each patient keeps its first image (file order).
pub fn one_per_patient<R: Filterable>(d: &DataConfig, rows: &mut Vec<R>, audit: &mut Audit) {
    if !d.filters.one_per_patient {
        return;
    }
    let mut seen = BTreeSet::new();
    let before = rows.len();
    rows.retain(|r| seen.insert(r.patient().to_string()));
    audit.note_dropped("one_per_patient", before - rows.len());
}

/// Each row's split under `data.protocol`.
fn assign(d: &DataConfig, read: &Read) -> Result<Vec<Split>, ManifestError> {
    let positives: Vec<Vec<usize>> = read
        .rows
        .iter()
        .map(|r| {
            (0..r.labels.len())
                .filter(|&k| r.labels[k] == Some(1.0))
                .collect()
        })
        .collect();
    let entries: Vec<Entry<&str>> = read
        .rows
        .iter()
        .zip(&positives)
        .map(|(r, p)| Entry {
            image_id: &r.image_id,
            line: r.line,
            patient: r.patient.as_str(),
            labels: p,
            given: r.given,
        })
        .collect();
    let plan = match d.protocol {
        SplitProtocol::Official => Plan::Given {
            source: &read.main,
            why: read.official_why,
            n_labels: read.concepts.len(),
        },
        SplitProtocol::RandomPatient => Plan::Random,
        SplitProtocol::SplitFile => match &d.split_file {
            Some(f) => Plan::File(f),
            None => {
                return Err(ManifestError::input(
                    &read.main,
                    "protocol split_file needs data.split_file",
                ))
            }
        },
    };
    split::assign(d, &entries, plan)
}

/// The manifest table: the reader's rows filtered, audited and split.
pub fn finish(d: &DataConfig, mut read: Read, check_images: bool) -> Result<Table, ManifestError> {
    let mut audit = Audit::default();
    for (why, n) in std::mem::take(&mut read.dropped) {
        audit.note_dropped(&why, n);
    }
    apply_filters(d, &mut read.rows, &mut audit);
    check_files(d, &mut read, check_images, &mut audit)?;
    one_per_patient(d, &mut read.rows, &mut audit);
    let split = assign(d, &read)?;
    split::check_no_shared_patients(
        read.rows.iter().map(|r| r.patient.clone()),
        &split,
        &read.main,
        &mut audit,
    )?;
    audit.unmapped_labels = std::mem::take(&mut read.unmapped);
    let protocol = match d.protocol {
        SplitProtocol::Official => "official",
        SplitProtocol::RandomPatient => "random_patient",
        SplitProtocol::SplitFile => "split_file",
    };
    Ok(Table {
        all: frame(&read, &split)?,
        labels: read.concepts.clone(),
        sources: read.sources,
        protocol,
        audit,
        // `muxmed synth` leaves this marker in every format's root.
        synthetic: crate::data::synth::is_synthetic(&d.root),
        dataset: Some(read.dataset),
    })
}

/// One row per image in file order: ids, path, patient, dataset, view, sex, age, a label
/// column per concept (Float32: 1, 0, null missing), the uncertain concepts (`|`-joined),
/// `no_finding` (no known positive) and the split.
fn frame(read: &Read, split: &[Split]) -> Result<DataFrame, ManifestError> {
    let rows = &read.rows;
    let strs = |f: &dyn Fn(&SourceRow) -> String| rows.iter().map(f).collect::<Vec<String>>();
    let opt = |f: &dyn Fn(&SourceRow) -> Option<String>| {
        rows.iter().map(f).collect::<Vec<Option<String>>>()
    };
    let mut cols = vec![
        Column::new("image_id".into(), strs(&|r| r.image_id.clone())),
        Column::new("path".into(), strs(&|r| r.path.display().to_string())),
        Column::new("patient_id".into(), strs(&|r| r.patient.clone())),
        Column::new("dataset".into(), strs(&|_| read.dataset.key().to_string())),
        Column::new("view".into(), opt(&|r| r.view.clone())),
        Column::new("sex".into(), opt(&|r| r.sex.clone())),
        Column::new(
            "age".into(),
            rows.iter().map(|r| r.age).collect::<Vec<Option<f64>>>(),
        ),
    ];
    for (k, c) in read.concepts.iter().enumerate() {
        let v: Vec<Option<f32>> = rows.iter().map(|r| r.labels[k]).collect();
        cols.push(Column::new(c.as_str().into(), v));
    }
    cols.push(Column::new(
        "uncertain".into(),
        strs(&|r| {
            let names: Vec<&str> = r
                .uncertain
                .iter()
                .map(|&k| read.concepts[k].as_str())
                .collect();
            names.join("|")
        }),
    ));
    cols.push(Column::new(
        "no_finding".into(),
        rows.iter()
            .map(|r| !r.labels.contains(&Some(1.0)) as u32)
            .collect::<Vec<u32>>(),
    ));
    cols.push(Column::new(
        "split".into(),
        split.iter().map(|s| s.to_string()).collect::<Vec<String>>(),
    ));
    Ok(DataFrame::new_infer_height(cols)?)
}
