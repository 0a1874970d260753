//! NIH ChestX-Ray14 as a manifest source: `Data_Entry_2017*.csv` read into rows with their
//! image files, the optional filters (views, ages, one image per patient), the official split
//! lists as each row's given split, and the columns of the manifest table (boxes included).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use polars::prelude::*;

use super::Table;
use crate::config::{DataConfig, SplitProtocol};
use crate::data::manifest_dir::{Audit, ManifestError, SourceFile};
use crate::data::nih::{self, Record};
use crate::data::split::{self, Entry, Given, Plan};
use crate::labels::{Split, LABELS};

/// The files a manifest was built from, resolved from `data.root` and the optional keys.
#[derive(Debug, Clone)]
pub struct Sources {
    pub metadata: PathBuf,
    pub train_val_list: Option<PathBuf>,
    pub test_list: Option<PathBuf>,
    pub bbox_list: Option<PathBuf>,
    pub images: PathBuf,
}

impl Sources {
    pub fn resolve(d: &DataConfig) -> Result<Self, ManifestError> {
        let root = &d.root;
        let opt = |given: &Option<PathBuf>, names: &[&str]| -> Option<PathBuf> {
            match given {
                Some(p) => Some(p.clone()),
                None => names.iter().map(|n| root.join(n)).find(|p| p.is_file()),
            }
        };
        let metadata = match &d.metadata {
            Some(p) => p.clone(),
            None => nih::find_in(root, &nih::METADATA_NAMES, "metadata CSV")?,
        };
        Ok(Sources {
            metadata,
            train_val_list: opt(
                &d.train_val_list,
                &["train_val_list.txt", "train_val_list.txt.gz"],
            ),
            test_list: opt(&d.test_list, &["test_list.txt", "test_list.txt.gz"]),
            bbox_list: opt(
                &d.bbox_list,
                &["BBox_List_2017.csv", "BBox_List_2017.csv.gz"],
            ),
            images: d.images.clone().unwrap_or_else(|| root.clone()),
        })
    }

    /// The files found, by role, with their hashes (for `manifest.json`).
    fn files(&self) -> Result<BTreeMap<String, SourceFile>, ManifestError> {
        let mut out = BTreeMap::new();
        for (k, p) in [
            ("metadata", Some(&self.metadata)),
            ("train_val_list", self.train_val_list.as_ref()),
            ("test_list", self.test_list.as_ref()),
            ("bbox_list", self.bbox_list.as_ref()),
        ] {
            if let Some(p) = p {
                out.insert(k.to_string(), SourceFile::of(p)?);
            }
        }
        Ok(out)
    }
}

/// NIH's two split lists, `test_list.txt` and `train_val_list.txt`, read once.
struct SplitLists {
    test: BTreeSet<String>,
    train_val: BTreeSet<String>,
}

impl SplitLists {
    /// Both lists, when both files were found (None otherwise).
    fn read(src: &Sources) -> Result<Option<Self>, ManifestError> {
        let (Some(t), Some(tv)) = (&src.test_list, &src.train_val_list) else {
            return Ok(None);
        };
        Ok(Some(SplitLists {
            test: nih::read_list(t)?.into_iter().collect(),
            train_val: nih::read_list(tv)?.into_iter().collect(),
        }))
    }
}

/// NIH's two split lists must not share an image; names they list that the metadata does
/// not have are counted in the audit.
fn check_split_lists(
    src: &Sources,
    lists: &SplitLists,
    records: &[Record],
    audit: &mut Audit,
) -> Result<(), ManifestError> {
    let (Some(t), Some(tv)) = (&src.test_list, &src.train_val_list) else {
        return Ok(());
    };
    let (test, train_val) = (&lists.test, &lists.train_val);
    let both: Vec<&String> = test.intersection(train_val).collect();
    if !both.is_empty() {
        return Err(ManifestError::Audit(format!(
            "{} image(s) are in both {} and {} (first: {}): an image belongs to one split",
            both.len(),
            t.display(),
            tv.display(),
            both.iter()
                .take(5)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let known: std::collections::HashSet<&str> =
        records.iter().map(|r| r.image_id.as_str()).collect();
    let unknown: Vec<&String> = test
        .iter()
        .chain(train_val)
        .filter(|n| !known.contains(n.as_str()))
        .collect();
    audit.list_names_not_in_metadata = unknown.len();
    audit.list_names_not_in_metadata_examples =
        unknown.iter().take(5).map(|s| s.to_string()).collect();
    Ok(())
}

/// Drops records outside `filters.views` and the age range; counts each in the audit.
/// Returns an empty path per remaining record (filled by the image scan).
fn filter_by_view_and_age(
    f: &crate::config::FilterConfig,
    records: &mut Vec<Record>,
    audit: &mut Audit,
) -> Vec<Option<String>> {
    let before = records.len();
    records.retain(|r| f.views.is_empty() || f.views.contains(&r.view));
    audit.note_dropped("views", before - records.len());
    let before = records.len();
    records.retain(|r| f.min_age.is_none_or(|a| r.age >= a));
    audit.note_dropped("min_age", before - records.len());
    let before = records.len();
    records.retain(|r| f.max_age.is_none_or(|a| r.age <= a));
    audit.note_dropped("max_age", before - records.len());
    vec![None; records.len()]
}

/// Finds every record's image by one scan; images missing on disk are an error, or with
/// `allow_missing_images` dropped and counted. Returns the paths of the records kept.
fn drop_missing_images(
    d: &DataConfig,
    src: &Sources,
    records: &mut Vec<Record>,
    audit: &mut Audit,
) -> Result<Vec<Option<String>>, ManifestError> {
    let found = if src.images.is_dir() {
        nih::scan_images(&src.images)?
    } else {
        HashMap::new()
    };
    let mut paths: Vec<Option<String>> = records
        .iter()
        .map(|r| found.get(&r.image_id).map(|p| p.display().to_string()))
        .collect();
    let missing: Vec<&str> = records
        .iter()
        .zip(&paths)
        .filter(|(_, p)| p.is_none())
        .map(|(r, _)| r.image_id.as_str())
        .collect();
    audit.missing_images = missing.len();
    audit.missing_examples = missing.iter().take(5).map(|s| s.to_string()).collect();
    if missing.is_empty() {
        return Ok(paths);
    }
    if !d.allow_missing_images {
        return Err(ManifestError::Audit(format!(
            "{} of {} images listed in {} are not under {} (first: {}). Point data.images at the image folder, or set data.allow_missing_images: true to drop them",
            missing.len(),
            records.len(),
            src.metadata.display(),
            src.images.display(),
            audit.missing_examples.join(", ")
        )));
    }
    audit.dropped_missing = true;
    audit.note_dropped("missing_images", missing.len());
    let present: Vec<bool> = paths.iter().map(|p| p.is_some()).collect();
    let mut k = present.iter();
    records.retain(|_| *k.next().unwrap_or(&false));
    paths.retain(|p| p.is_some());
    Ok(paths)
}

/// `one_per_patient`: each patient's earliest follow-up among the records left.
fn keep_first_per_patient(
    records: &mut Vec<Record>,
    paths: &mut Vec<Option<String>>,
    audit: &mut Audit,
) {
    let mut first: HashMap<u32, u32> = HashMap::new();
    for r in records.iter() {
        let e = first.entry(r.patient_id).or_insert(r.follow_up);
        *e = (*e).min(r.follow_up);
    }
    let keep: Vec<bool> = records
        .iter()
        .map(|r| first.get(&r.patient_id) == Some(&r.follow_up))
        .collect();
    audit.note_dropped("one_per_patient", keep.iter().filter(|k| !**k).count());
    let mut k = keep.iter();
    records.retain(|_| *k.next().unwrap_or(&false));
    let mut k = keep.iter();
    paths.retain(|_| *k.next().unwrap_or(&false));
}

/// Why the official protocol cannot split: the split list it lacks.
fn missing_list(d: &DataConfig, src: &Sources) -> ManifestError {
    let n = if src.test_list.is_none() {
        "test_list.txt"
    } else {
        "train_val_list.txt"
    };
    ManifestError::input(
        &d.root.join(n),
        format!(
            "the official protocol needs {n} (set data.{})",
            n.trim_end_matches(".txt")
        ),
    )
}

/// The given split of each record under the official protocol: test if `test_list.txt` names
/// it, the train/val pool if `train_val_list.txt` does, none otherwise.
fn official_given(lists: &SplitLists, records: &[Record]) -> Vec<Option<Given>> {
    let SplitLists {
        test,
        train_val: tv,
    } = lists;
    records
        .iter()
        .map(|r| {
            if test.contains(&r.image_id) {
                Some(Given::In(Split::Test))
            } else if tv.contains(&r.image_id) {
                Some(Given::TrainOrVal)
            } else {
                None
            }
        })
        .collect()
}

/// Each record's split under `data.protocol`.
fn assign_splits(
    d: &DataConfig,
    src: &Sources,
    lists: Option<&SplitLists>,
    records: &[Record],
) -> Result<Vec<Split>, ManifestError> {
    let given = match d.protocol {
        SplitProtocol::Official => {
            official_given(lists.ok_or_else(|| missing_list(d, src))?, records)
        }
        _ => vec![None; records.len()],
    };
    let entries: Vec<Entry<u32>> = records
        .iter()
        .zip(given)
        .map(|(r, given)| Entry {
            image_id: &r.image_id,
            line: r.line,
            patient: r.patient_id,
            labels: &r.labels,
            given,
        })
        .collect();
    let split_file;
    let plan = match d.protocol {
        SplitProtocol::Official => Plan::Given {
            source: &src.metadata,
            why: "is in neither split list",
            n_labels: LABELS.len(),
        },
        SplitProtocol::RandomPatient => Plan::Random,
        SplitProtocol::SplitFile => {
            split_file = d.split_file.clone().ok_or_else(|| {
                ManifestError::input(
                    std::path::Path::new("data.split_file"),
                    "protocol split_file needs data.split_file",
                )
            })?;
            Plan::File(&split_file)
        }
    };
    split::assign(d, &entries, plan)
}

/// The metadata's records, checked: no image twice; ages outside 0..120 flagged in the audit.
fn read_records(src: &Sources, audit: &mut Audit) -> Result<Vec<Record>, ManifestError> {
    let records = nih::parse_metadata(&nih::read_text(&src.metadata)?, &src.metadata)?;
    let twice = crate::io::repeated_keys(records.iter().map(|r| (r.image_id.as_str(), r.line)));
    if !twice.is_empty() {
        return Err(ManifestError::Audit(format!(
            "{} image id(s) occur more than once in {}: {}",
            twice.len(),
            src.metadata.display(),
            twice.join("; ")
        )));
    }
    audit.ages_outside_0_120 = records
        .iter()
        .filter(|r| r.age > 120)
        .map(|r| format!("{} (line {}): age {}", r.image_id, r.line, r.age))
        .collect();
    Ok(records)
}

/// Reads NIH's files into the manifest table (splits assigned and audited).
pub fn read(d: &DataConfig, scan_images: bool) -> Result<Table, ManifestError> {
    let src = Sources::resolve(d)?;
    let mut audit = Audit::default();
    let mut records = read_records(&src, &mut audit)?;
    // The official protocol's split lists, read once: checked here, applied after the filters.
    let lists = match d.protocol {
        SplitProtocol::Official => SplitLists::read(&src)?,
        _ => None,
    };
    if let Some(lists) = &lists {
        check_split_lists(&src, lists, &records, &mut audit)?;
    }
    // Filters (all off by default), each counting what it drops; one image per patient comes
    // last, after images missing on disk are dropped, so a patient whose first image is
    // missing (or AP under `views: [PA]`) still contributes the first image it has.
    let mut paths = filter_by_view_and_age(&d.filters, &mut records, &mut audit);
    if scan_images {
        paths = drop_missing_images(d, &src, &mut records, &mut audit)?;
    }
    if d.filters.one_per_patient {
        keep_first_per_patient(&mut records, &mut paths, &mut audit);
    }
    // Splits are assigned to the images that remain after the filters and the missing-image
    // drop, so the validation carve sees exactly the images the manifest will hold.
    let split = assign_splits(d, &src, lists.as_ref(), &records)?;
    split::check_no_shared_patients(
        records.iter().map(|r| r.patient_id),
        &split,
        &src.metadata,
        &mut audit,
    )?;
    let label_idx: Vec<usize> = if d.filters.labels.is_empty() {
        (0..LABELS.len()).collect()
    } else {
        LABELS
            .iter()
            .enumerate()
            .filter(|(_, l)| d.filters.labels.iter().any(|x| x == *l))
            .map(|(i, _)| i)
            .collect()
    };
    let boxes = match &src.bbox_list {
        Some(p) => nih::parse_bboxes(&nih::read_text(p)?, p)?,
        None => vec![],
    };
    let rows = Rows {
        records: &records,
        paths: &paths,
        split: &split,
        boxes: &boxes,
    };
    Ok(Table {
        all: rows.frame(&label_idx)?,
        labels: label_idx.iter().map(|&l| LABELS[l].to_string()).collect(),
        sources: src.files()?,
        protocol: match d.protocol {
            SplitProtocol::Official => "official",
            SplitProtocol::RandomPatient => "random_patient",
            SplitProtocol::SplitFile => "split_file",
        },
        audit,
        // `muxmed synth` leaves this marker so every report can say the data is synthetic.
        synthetic: crate::data::synth::is_synthetic(&d.root),
        dataset: None,
    })
}

/// The records that remain, with their image paths, splits and the box list.
struct Rows<'a> {
    records: &'a [Record],
    paths: &'a [Option<String>],
    split: &'a [Split],
    boxes: &'a [nih::BBox],
}

impl Rows<'_> {
    /// The manifest table, in image-id order so the output does not depend on the
    /// metadata's row order; the first box per image and label kept as JSON, with a count.
    fn frame(&self, label_idx: &[usize]) -> Result<DataFrame, ManifestError> {
        let records = self.records;
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by(|a, b| records[*a].image_id.cmp(&records[*b].image_id));
        let mut box_of: HashMap<&str, Vec<&nih::BBox>> = HashMap::new();
        for b in self.boxes {
            box_of.entry(b.image_id.as_str()).or_default().push(b);
        }
        let boxes_of = |i: usize| box_of.get(records[i].image_id.as_str());
        let col = |name: &str, v: Vec<u32>| Column::new(name.into(), v);
        let u32s = |f: &dyn Fn(&Record) -> u32| -> Vec<u32> {
            order.iter().map(|&i| f(&records[i])).collect()
        };
        let strs =
            |f: &dyn Fn(usize) -> String| -> Vec<String> { order.iter().map(|&i| f(i)).collect() };
        let f64s = |f: &dyn Fn(&Record) -> f64| -> Vec<f64> {
            order.iter().map(|&i| f(&records[i])).collect()
        };
        let paths: Vec<Option<String>> = order.iter().map(|&i| self.paths[i].clone()).collect();
        let mut cols = vec![
            Column::new("image_id".into(), strs(&|i| records[i].image_id.clone())),
            Column::new("path".into(), paths),
            col("patient_id", u32s(&|r| r.patient_id)),
            col("follow_up", u32s(&|r| r.follow_up)),
            col("age", u32s(&|r| r.age)),
            Column::new("sex".into(), strs(&|i| records[i].sex.clone())),
            Column::new("view".into(), strs(&|i| records[i].view.clone())),
            col("orig_width", u32s(&|r| r.width)),
            col("orig_height", u32s(&|r| r.height)),
            Column::new("pixel_spacing_x".into(), f64s(&|r| r.spacing_x)),
            Column::new("pixel_spacing_y".into(), f64s(&|r| r.spacing_y)),
        ];
        for &l in label_idx {
            cols.push(col(LABELS[l], u32s(&|r| r.labels.contains(&l) as u32)));
        }
        cols.push(col("no_finding", u32s(&|r| r.labels.is_empty() as u32)));
        cols.push(Column::new(
            "split".into(),
            strs(&|i| self.split[i].to_string()),
        ));
        cols.push(col(
            "n_boxes",
            order
                .iter()
                .map(|&i| boxes_of(i).map_or(0, |v| v.len() as u32))
                .collect(),
        ));
        let bbox_json = |v: &Vec<&nih::BBox>| -> String {
            let items: Vec<serde_json::Value> = v
                .iter()
                .map(|b| serde_json::json!({"label": LABELS[b.label], "x": b.x, "y": b.y, "w": b.w, "h": b.h}))
                .collect();
            serde_json::Value::Array(items).to_string()
        };
        let bboxes: Vec<Option<String>> =
            order.iter().map(|&i| boxes_of(i).map(bbox_json)).collect();
        cols.push(Column::new("bboxes".into(), bboxes));
        Ok(DataFrame::new_infer_height(cols)?)
    }
}
