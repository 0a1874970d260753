//! `data.sources`: several datasets in one manifest. Each entry is read by its own reader
//! (with its own split protocol), then the tables are stacked: patients are namespaced by
//! dataset (`chexpert:patient00001`), the labels are the union of the entries' concepts (a
//! concept an entry does not annotate is missing for its images, never negative), and every
//! image keeps its dataset in the `dataset` column. Two entries holding one patient (the
//! same dataset listed twice) are a leakage error, and two holding one image id an error.

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;

use super::Table;
use crate::config::DataConfig;
use crate::data::manifest_dir::{Audit, ManifestError};

/// The columns every stacked table has, besides the labels.
const META: [&str; 6] = ["image_id", "path", "patient_id", "dataset", "view", "sex"];

/// Reads every entry of `d.sources` and stacks them.
pub fn read(d: &DataConfig, scan_images: bool) -> Result<Table, ManifestError> {
    let mut tables = Vec::with_capacity(d.sources.len());
    for (i, e) in d.sources.iter().enumerate() {
        let mut c = d.for_entry(e);
        let key = e.name();
        // Patients of one dataset listed twice meet under its kind; generic CSVs are
        // different datasets unless they share a name.
        let kind = match c.dataset() {
            crate::labels::Dataset::Generic => key.clone(),
            ds => ds.key().to_string(),
        };
        // filters.labels picks among the union: each entry keeps the ones it annotates.
        if !d.filters.labels.is_empty() {
            let own = crate::config::check::entry_concepts(&c);
            c.filters.labels.retain(|l| own.contains(l));
            if c.filters.labels.is_empty() {
                return Err(ManifestError::Audit(format!(
                    "data.sources[{i}] ({key}) annotates none of data.filters.labels ({}); drop the entry or add one of its concepts",
                    d.filters.labels.join(", ")
                )));
            }
        }
        let t = super::read(&c, scan_images)?;
        tables.push(Entry {
            key,
            kind,
            root: c.root.clone(),
            t,
        });
    }
    check_disjoint(&tables)?;
    let mut labels: Vec<String> = Vec::new();
    for e in &tables {
        for l in &e.t.labels {
            if !labels.contains(l) {
                labels.push(l.clone());
            }
        }
    }
    let mut all: Option<DataFrame> = None;
    let mut sources = BTreeMap::new();
    let mut audit = Audit::default();
    let mut synthetic = false;
    for (i, Entry { key, t, .. }) in tables.into_iter().enumerate() {
        let df = normalise(&t.all, &key, &labels)?;
        match &mut all {
            Some(a) => {
                a.vstack_mut(&df)?;
            }
            None => all = Some(df),
        }
        for (role, f) in t.sources {
            sources.insert(format!("{i}_{key}_{role}"), f);
        }
        merge_audit(&mut audit, t.audit);
        synthetic |= t.synthetic;
    }
    let all = all.ok_or_else(|| ManifestError::Audit("data.sources is empty".into()))?;
    audit.patients = all.column("patient_id")?.n_unique()?;
    Ok(Table {
        all,
        labels,
        sources,
        protocol: "multi_source",
        audit,
        synthetic,
        dataset: None,
    })
}

/// One entry of `data.sources` as read.
struct Entry {
    /// Its name (the `dataset` column, the patients' namespace).
    key: String,
    /// Which dataset its patients belong to (the source's key; a generic CSV's name).
    kind: String,
    root: std::path::PathBuf,
    t: Table,
}

/// Patients and image ids, per entry, must not meet across entries.
fn check_disjoint(tables: &[Entry]) -> Result<(), ManifestError> {
    let mut patient_of: HashMap<(String, String), usize> = HashMap::new();
    let mut image_of: HashMap<String, usize> = HashMap::new();
    for (i, Entry { kind, root, t, .. }) in tables.iter().enumerate() {
        let key = kind;
        let pats = t.all.column("patient_id")?.cast(&DataType::String)?;
        for p in pats.str()?.iter().flatten() {
            if let Some(&j) = patient_of.get(&(key.to_string(), p.to_string())) {
                if j != i {
                    return Err(ManifestError::Audit(format!(
                        "leakage: patient {p} of {key} is in data.sources[{j}] ({}) and data.sources[{i}] ({}); list each dataset once",
                        tables[j].root.display(),
                        root.display()
                    )));
                }
            }
            patient_of.insert((key.to_string(), p.to_string()), i);
        }
        let ids = t.all.column("image_id")?.cast(&DataType::String)?;
        for id in ids.str()?.iter().flatten() {
            if let Some(&j) = image_of.get(id) {
                if j != i {
                    return Err(ManifestError::Audit(format!(
                        "image id {id} is in data.sources[{j}] ({}) and data.sources[{i}] ({}); image ids must be unique across sources",
                        tables[j].root.display(),
                        root.display()
                    )));
                }
            }
            image_of.insert(id.to_string(), i);
        }
    }
    Ok(())
}

/// One entry's table in the stacked layout: the meta columns (patients namespaced), a
/// Float32 column per concept of `labels` (null where the entry does not annotate it),
/// `uncertain`, `no_finding`, `split`.
fn normalise(df: &DataFrame, key: &str, labels: &[String]) -> Result<DataFrame, ManifestError> {
    let n = df.height();
    let string_col = |name: &str| -> Result<Column, ManifestError> {
        Ok(match df.column(name) {
            Ok(c) => c.cast(&DataType::String)?.with_name(name.into()),
            Err(_) => Column::full_null(name.into(), n, &DataType::String),
        })
    };
    let mut cols = Vec::new();
    for name in META {
        let c = match name {
            "patient_id" => {
                let p = string_col(name)?;
                let v: Vec<Option<String>> = p
                    .str()?
                    .iter()
                    .map(|x| x.map(|x| format!("{key}:{x}")))
                    .collect();
                Column::new(name.into(), v)
            }
            "dataset" => Column::new(name.into(), vec![key; n]),
            _ => string_col(name)?,
        };
        cols.push(c);
    }
    cols.push(match df.column("age") {
        Ok(c) => c.cast(&DataType::Float64)?,
        Err(_) => Column::full_null("age".into(), n, &DataType::Float64),
    });
    for l in labels {
        cols.push(match df.column(l) {
            Ok(c) => c.cast(&DataType::Float32)?,
            Err(_) => Column::full_null(l.as_str().into(), n, &DataType::Float32),
        });
    }
    cols.push(match df.column("uncertain") {
        Ok(c) => c.cast(&DataType::String)?,
        Err(_) => Column::new("uncertain".into(), vec![""; n]),
    });
    cols.push(df.column("no_finding")?.cast(&DataType::UInt32)?);
    cols.push(df.column("split")?.cast(&DataType::String)?);
    Ok(DataFrame::new_infer_height(cols)?)
}

fn merge_audit(into: &mut Audit, a: Audit) {
    into.images += a.images;
    into.ages_outside_0_120.extend(a.ages_outside_0_120);
    into.missing_images += a.missing_images;
    into.missing_examples.extend(a.missing_examples);
    into.dropped_missing |= a.dropped_missing;
    into.shared_patients_between_splits += a.shared_patients_between_splits;
    into.list_names_not_in_metadata += a.list_names_not_in_metadata;
    into.list_names_not_in_metadata_examples
        .extend(a.list_names_not_in_metadata_examples);
    for (f, n) in a.dropped {
        match into.dropped.iter_mut().find(|(g, _)| *g == f) {
            Some((_, m)) => *m += n,
            None => into.dropped.push((f, n)),
        }
    }
    for (l, n) in a.unmapped_labels {
        *into.unmapped_labels.entry(l).or_insert(0) += n;
    }
}
