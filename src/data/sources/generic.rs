//! A manifest for any dataset: a CSV of image path, `|`-separated labels, patient id and
//! optional split, so users can fine-tune on their own data through the same pipeline. With
//! `dicom_folder`, rows name DICOM files by SOP Instance UID or by path in the folder, and
//! patient ids may come from the files' headers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::Table;
use crate::config::{DataConfig, GenericDataConfig};
use crate::data::manifest_dir::{Audit, ManifestError, SourceFile};
use crate::data::nih::{csv_rows, files_under, read_text, NihError};
use crate::data::split::{self, Entry, Given, Plan};
use crate::labels::Split;

struct Row {
    /// The CSV line the row came from.
    line: usize,
    path: String,
    image_id: String,
    patient: String,
    labels: Vec<usize>,
    split: Option<Split>,
    /// The optional `view`, `sex` (`M`/`F`) and `age` columns.
    view: Option<String>,
    sex: Option<String>,
    age: Option<f64>,
}

impl super::rows::Filterable for Row {
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

/// How a CSV row names its image file.
enum Locate {
    /// Column index; paths are relative to this folder (the CSV's, or the DICOM folder, in
    /// which case the files' headers give patient ids).
    Path {
        column: usize,
        base: PathBuf,
        dicom: bool,
    },
    /// Column index of the SOP Instance UID, and the folder's files by UID.
    Uid(usize, HashMap<String, (PathBuf, Option<String>)>),
}

impl Locate {
    /// The row's file, its image id and (DICOM) the header's Patient ID.
    fn find(&self, f: &[&str]) -> Result<(PathBuf, String, Option<String>), String> {
        match self {
            Locate::Path {
                column,
                base,
                dicom,
            } => {
                let p = Path::new(f[*column]);
                let path = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    base.join(p)
                };
                let patient = if *dicom && path.is_file() {
                    crate::data::dicom::read_header(&path)
                        .map_err(|e| e.to_string())?
                        .patient_id
                } else {
                    None
                };
                // In a DICOM folder the relative path is the id (names repeat across folders).
                let id = match p.file_name() {
                    Some(n) if !*dicom => n.to_string_lossy().into_owned(),
                    _ => f[*column].to_string(),
                };
                Ok((path, id, patient))
            }
            Locate::Uid(k, files) => {
                let uid = f[*k];
                if uid.is_empty() {
                    return Err("empty sop_instance_uid".into());
                }
                match files.get(uid) {
                    Some((path, patient)) => Ok((path.clone(), uid.to_string(), patient.clone())),
                    // Not in the folder: a path that does not exist, for the missing-image audit.
                    None => Ok((
                        PathBuf::from(format!("<no DICOM file with SOP Instance UID {uid}>")),
                        uid.to_string(),
                        None,
                    )),
                }
            }
        }
    }
}

/// Every DICOM file under `folder` (any name, links to files followed; files without the
/// DICOM marker are skipped) by SOP Instance UID, with its Patient ID. A DICOM file whose
/// header cannot be read, or two files with one UID, are errors naming the files.
fn dicom_uids(folder: &Path) -> Result<HashMap<String, (PathBuf, Option<String>)>, ManifestError> {
    // Regular files, or links to them (a FIFO would block the header read forever).
    let mut files: Vec<PathBuf> = files_under(folder)?
        .into_iter()
        .map(|e| e.path())
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
        .collect();
    files.sort();
    let mut out: HashMap<String, (PathBuf, Option<String>)> = HashMap::new();
    for p in files {
        let h = match crate::data::dicom::read_header(&p) {
            Ok(h) => h,
            // Other files (a README, a DICOMDIR-less listing) are not part of the dataset.
            Err(crate::data::dicom::DicomError::NotDicom { .. }) => continue,
            Err(e) => return Err(ManifestError::Audit(e.to_string())),
        };
        let Some(uid) = h.sop_instance_uid else {
            continue;
        };
        if let Some((first, _)) = out.get(&uid) {
            return Err(ManifestError::Audit(format!(
                "{} and {} have the same SOP Instance UID {uid}",
                first.display(),
                p.display()
            )));
        }
        out.insert(uid, (p, h.patient_id));
    }
    Ok(out)
}

/// Where a row's fields are: how it names its image, and the column indices.
struct Layout {
    locate: Locate,
    labels: usize,
    patient: Option<usize>,
    split: Option<usize>,
    view: Option<usize>,
    sex: Option<usize>,
    age: Option<usize>,
    width: usize,
}

/// The [`Layout`] the CSV's header describes; a filter of `d` needs the column it reads.
fn columns(header: &[&str], d: &DataConfig, csv: &Path) -> Result<Layout, ManifestError> {
    let g = d
        .generic
        .as_ref()
        .ok_or_else(|| ManifestError::input(csv, "no data.generic"))?;
    let idx = |name: &str| header.iter().position(|h| *h == name);
    let header_err = |message: String| {
        ManifestError::Nih(NihError::Row {
            path: csv.to_path_buf(),
            line: 1,
            message,
        })
    };
    let found = header.join(",");
    let Some(il) = idx("labels") else {
        return Err(header_err(format!("no `labels` column; found `{found}`")));
    };
    let (locate, patient) = match &g.dicom_folder {
        None => match (idx("path"), idx("patient_id")) {
            (Some(column), Some(ipt)) => {
                let base = csv.parent().unwrap_or(Path::new(".")).to_path_buf();
                let locate = Locate::Path {
                    column,
                    base,
                    dicom: false,
                };
                (locate, Some(ipt))
            }
            _ => return Err(header_err(format!(
                "the header must name the columns path, labels, patient_id (and optionally split); found `{found}`"
            ))),
        },
        Some(folder) => {
            let locate = match (idx("sop_instance_uid"), idx("path")) {
                (Some(iu), _) => Locate::Uid(iu, dicom_uids(folder)?),
                (None, Some(column)) => Locate::Path {
                    column,
                    base: folder.clone(),
                    dicom: true,
                },
                (None, None) => return Err(header_err(format!(
                    "with data.generic.dicom_folder the header must name sop_instance_uid or path, and labels (patient_id and split are optional); found `{found}`"
                ))),
            };
            (locate, idx("patient_id"))
        }
    };
    let f = &d.filters;
    for (key, set, column) in [
        ("data.filters.views", !f.views.is_empty(), "view"),
        ("data.filters.min_age", f.min_age.is_some(), "age"),
        ("data.filters.max_age", f.max_age.is_some(), "age"),
    ] {
        if set && idx(column).is_none() {
            return Err(header_err(format!(
                "{key} needs the `{column}` column, which the header lacks; found `{found}`"
            )));
        }
    }
    Ok(Layout {
        locate,
        labels: il,
        patient,
        split: idx("split"),
        view: idx("view"),
        sex: idx("sex"),
        age: idx("age"),
        width: header.len(),
    })
}

/// One data row (`f`, its trimmed fields) as a [`Row`]; `Err` is the message for its line.
fn read_row(
    line: usize,
    f: &[&str],
    layout: &Layout,
    g: &GenericDataConfig,
) -> Result<Row, String> {
    let mut labels = Vec::new();
    for l in f[layout.labels].split('|').filter(|l| !l.is_empty()) {
        let k = g.labels.iter().position(|x| x == l).ok_or_else(|| {
            format!(
                "unknown label `{l}`; data.generic.labels are {}",
                g.labels.join(", ")
            )
        })?;
        labels.push(k);
    }
    let split = match layout.split {
        Some(k) => Some(
            Split::parse(f[k])
                .ok_or_else(|| format!("split `{}` is not train, val or test", f[k]))?,
        ),
        None => None,
    };
    let (path, image_id, header_patient) = layout.locate.find(f)?;
    let cell = |k: Option<usize>| k.map(|k| f[k]).filter(|v| !v.is_empty());
    let sex = match cell(layout.sex) {
        None => None,
        Some("M" | "m" | "Male" | "male") => Some("M".to_string()),
        Some("F" | "f" | "Female" | "female") => Some("F".to_string()),
        Some(v) => return Err(format!("sex `{v}` is not M, F, Male or Female (or empty)")),
    };
    let age = match cell(layout.age) {
        None => None,
        Some(v) => match v.parse::<f64>() {
            Ok(a) if (0.0..=130.0).contains(&a) => Some(a),
            _ => return Err(format!("age `{v}` is not a number of years from 0 to 130")),
        },
    };
    let patient = match layout.patient.map(|k| f[k]).filter(|p| !p.is_empty()) {
        Some(p) => p.to_string(),
        None if g.dicom_folder.is_some() => match header_patient {
            Some(p) => p,
            // A file that is missing gets no patient; the missing-image audit names it.
            None if !path.is_file() => String::new(),
            None => {
                return Err(format!(
                    "no patient_id in the CSV and {} has no Patient ID (0010,0020)",
                    path.display()
                ))
            }
        },
        None => return Err("empty patient_id".into()),
    };
    Ok(Row {
        line,
        image_id,
        path: path.display().to_string(),
        patient,
        labels,
        split,
        view: cell(layout.view).map(String::from),
        sex,
        age,
    })
}

/// The CSV's data rows, each checked against the header's width.
fn read_rows(d: &DataConfig, g: &GenericDataConfig) -> Result<(Vec<Row>, Layout), ManifestError> {
    let csv = &g.csv;
    let row_err = |line: usize, message: String| {
        ManifestError::Nih(NihError::Row {
            path: csv.clone(),
            line,
            message,
        })
    };
    let records = csv_rows(&read_text(csv)?, csv)?;
    let mut lines = records.iter();
    let header: Vec<&str> = lines
        .next()
        .map(|r| r.fields.iter().map(|h| h.trim()).collect())
        .unwrap_or_default();
    let layout = columns(&header, d, csv)?;
    let mut rows = Vec::new();
    for r in lines {
        let f: Vec<&str> = r.fields.iter().map(|x| x.trim()).collect();
        if f.len() != layout.width {
            let message = format!(
                "expected {} fields, found {}: `{}`",
                layout.width,
                f.len(),
                r.fields.join(",")
            );
            return Err(row_err(r.line, message));
        }
        rows.push(read_row(r.line, &f, &layout, g).map_err(|m| row_err(r.line, m))?);
    }
    Ok((rows, layout))
}

/// Rows whose file does not exist: an error, or with `allow_missing_images` dropped and
/// counted. A file listed twice is an error.
fn check_files(
    d: &DataConfig,
    csv: &Path,
    rows: &mut Vec<Row>,
    check_images: bool,
    audit: &mut Audit,
) -> Result<(), ManifestError> {
    if check_images {
        let missing: Vec<String> = rows
            .iter()
            .filter(|r| !Path::new(&r.path).is_file())
            .map(|r| r.path.clone())
            .collect();
        audit.missing_images = missing.len();
        audit.missing_examples = missing.iter().take(5).cloned().collect();
        if !missing.is_empty() {
            if !d.allow_missing_images {
                return Err(ManifestError::Audit(format!(
                    "{} of {} images listed in {} do not exist (first: {}); set data.allow_missing_images: true to drop them",
                    missing.len(),
                    rows.len(),
                    csv.display(),
                    audit.missing_examples.join(", ")
                )));
            }
            audit.dropped_missing = true;
            rows.retain(|r| Path::new(&r.path).is_file());
        }
    }
    let twice = crate::io::repeated_keys(rows.iter().map(|r| (r.path.as_str(), r.line)));
    if !twice.is_empty() {
        return Err(ManifestError::Audit(format!(
            "{} file(s) are listed more than once in {}: {}",
            twice.len(),
            csv.display(),
            twice.join("; ")
        )));
    }
    Ok(())
}

/// Each row's split: the split column when every row has one, else patients at random.
fn assign_splits(d: &DataConfig, csv: &Path, rows: &[Row]) -> Result<Vec<Split>, ManifestError> {
    let given = rows.iter().all(|r| r.split.is_some());
    if given && d.test_fraction.is_some() {
        return Err(ManifestError::input(
            csv,
            "every row has a split, so data.test_fraction cannot apply: remove it, or drop the split column to split patients at random",
        ));
    }
    let entries: Vec<Entry<&str>> = rows
        .iter()
        .map(|r| Entry {
            image_id: &r.image_id,
            line: r.line,
            patient: r.patient.as_str(),
            labels: &r.labels,
            given: r.split.map(Given::In),
        })
        .collect();
    let plan = if given {
        Plan::Given {
            source: csv,
            why: "has no split",
            n_labels: 0,
        }
    } else {
        Plan::Random
    };
    split::assign(d, &entries, plan)
}

/// The manifest table, in path order.
fn frame(rows: &[Row], split: &[Split], labels: &[String]) -> Result<DataFrame, ManifestError> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|a, b| rows[*a].path.cmp(&rows[*b].path));
    let strs = |f: &dyn Fn(usize) -> String| order.iter().map(|&i| f(i)).collect::<Vec<String>>();
    let u32s = |f: &dyn Fn(&Row) -> u32| order.iter().map(|&i| f(&rows[i])).collect::<Vec<u32>>();
    let opt = |f: &dyn Fn(&Row) -> Option<String>| {
        order
            .iter()
            .map(|&i| f(&rows[i]))
            .collect::<Vec<Option<String>>>()
    };
    let mut cols = vec![
        Column::new("image_id".into(), strs(&|i| rows[i].image_id.clone())),
        Column::new("path".into(), strs(&|i| rows[i].path.clone())),
        Column::new("patient_id".into(), strs(&|i| rows[i].patient.clone())),
        Column::new("view".into(), opt(&|r| r.view.clone())),
        Column::new("sex".into(), opt(&|r| r.sex.clone())),
        Column::new(
            "age".into(),
            order
                .iter()
                .map(|&i| rows[i].age)
                .collect::<Vec<Option<f64>>>(),
        ),
    ];
    for (k, l) in labels.iter().enumerate() {
        cols.push(Column::new(
            l.as_str().into(),
            u32s(&|r| r.labels.contains(&k) as u32),
        ));
    }
    cols.push(Column::new(
        "no_finding".into(),
        u32s(&|r| r.labels.is_empty() as u32),
    ));
    cols.push(Column::new("split".into(), strs(&|i| split[i].to_string())));
    Ok(DataFrame::new_infer_height(cols)?)
}

/// Reads `data.generic.csv` into the manifest table (splits assigned and audited).
pub fn read(
    d: &DataConfig,
    g: &GenericDataConfig,
    check_images: bool,
) -> Result<Table, ManifestError> {
    let csv = &g.csv;
    let (mut rows, layout) = read_rows(d, g)?;
    let mut audit = Audit::default();
    super::rows::apply_filters(d, &mut rows, &mut audit);
    check_files(d, csv, &mut rows, check_images, &mut audit)?;
    super::rows::one_per_patient(d, &mut rows, &mut audit);
    let split = assign_splits(d, csv, &rows)?;
    split::check_no_shared_patients(
        rows.iter().map(|r| r.patient.clone()),
        &split,
        csv,
        &mut audit,
    )?;
    let mut sources = BTreeMap::new();
    sources.insert("generic_csv".to_string(), SourceFile::of(csv)?);
    Ok(Table {
        all: frame(&rows, &split, &g.labels)?,
        labels: g.labels.clone(),
        sources,
        protocol: if layout.split.is_some() {
            "generic_split_column"
        } else {
            "generic_random_patient"
        },
        audit,
        synthetic: false,
        dataset: None,
    })
}
