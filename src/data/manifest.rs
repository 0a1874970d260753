//! `muxmed manifest`: one row per image with its labels and split, built from NIH's own files
//! (official split by default), audited for patient leakage, and written atomically as
//! `train/val/test.parquet`, `manifest.json` and `summary.csv`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use polars::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::dataset::{ManifestInfo, SourceFile, SplitCount};
use super::manifest_dir::ManifestDir;
use super::nih::{self, NihError, Record};
use super::{Split, LABELS};
use crate::config::{DataConfig, SplitProtocol};

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
}

impl Audit {
    fn note_dropped(&mut self, filter: &str, n: usize) {
        if n > 0 {
            self.dropped.push((filter.to_string(), n));
        }
    }
}

/// A built manifest, before writing.
pub struct Manifest {
    pub frames: BTreeMap<&'static str, DataFrame>,
    /// What `manifest.json` will hold (the audit included).
    pub info: ManifestInfo,
    pub summary: DataFrame,
}

fn sha256(path: &Path) -> Result<String, ManifestError> {
    crate::io::sha256_file(path).map_err(|e| ManifestError::Input {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// NIH's two split lists must not share an image; names they list that the metadata does
/// not have are counted in the audit.
fn check_split_lists(
    src: &Sources,
    records: &[Record],
    audit: &mut Audit,
) -> Result<(), ManifestError> {
    let (Some(t), Some(tv)) = (&src.test_list, &src.train_val_list) else {
        return Ok(());
    };
    let test: BTreeSet<String> = nih::read_list(t)?.into_iter().collect();
    let train_val: BTreeSet<String> = nih::read_list(tv)?.into_iter().collect();
    let both: Vec<&String> = test.intersection(&train_val).collect();
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
        .chain(&train_val)
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

/// Assigns each record a split index (0 train, 1 val, 2 test) by the configured protocol.
fn assign_splits(
    d: &DataConfig,
    src: &Sources,
    records: &[Record],
) -> Result<Vec<u8>, ManifestError> {
    let by_patient = |pred: &dyn Fn(&Record) -> bool| -> BTreeSet<u32> {
        records
            .iter()
            .filter(|r| pred(r))
            .map(|r| r.patient_id)
            .collect()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(d.seed);
    match d.protocol {
        SplitProtocol::Official => {
            let need = |p: &Option<PathBuf>, n: &str| {
                p.clone().ok_or_else(|| ManifestError::Input {
                    path: d.root.join(n),
                    message: format!(
                        "the official protocol needs {n} (set data.{})",
                        n.trim_end_matches(".txt")
                    ),
                })
            };
            let test: BTreeSet<String> = nih::read_list(&need(&src.test_list, "test_list.txt")?)?
                .into_iter()
                .collect();
            let tv: BTreeSet<String> =
                nih::read_list(&need(&src.train_val_list, "train_val_list.txt")?)?
                    .into_iter()
                    .collect();
            if let Some(r) = records
                .iter()
                .find(|r| !test.contains(&r.image_id) && !tv.contains(&r.image_id))
            {
                return Err(ManifestError::Audit(format!(
                    "{} (line {} of the metadata) is in neither split list",
                    r.image_id, r.line
                )));
            }
            let tv_patients = by_patient(&|r: &Record| tv.contains(&r.image_id));
            let val = carve_val(records, &tv_patients, d.val_fraction, &mut rng, |r| {
                tv.contains(&r.image_id)
            });
            Ok(records
                .iter()
                .map(|r| {
                    if test.contains(&r.image_id) {
                        2
                    } else if val.contains(&r.patient_id) {
                        1
                    } else {
                        0
                    }
                })
                .collect())
        }
        SplitProtocol::RandomPatient => {
            let test = d.test_fraction.unwrap_or(DEFAULT_TEST_FRACTION);
            let split = random_patient_split(by_patient(&|_| true), d.val_fraction, test, &mut rng);
            Ok(records.iter().map(|r| split[&r.patient_id]).collect())
        }
        SplitProtocol::SplitFile => {
            let path = d.split_file.clone().ok_or_else(|| ManifestError::Input {
                path: PathBuf::from("data.split_file"),
                message: "protocol split_file needs data.split_file".into(),
            })?;
            let text = nih::read_text(&path)?;
            let mut map = HashMap::new();
            for r in nih::csv_rows(&text, &path)? {
                let line_no = r.line;
                let f: Vec<&str> = r.fields.iter().map(|x| x.trim()).collect();
                if line_no == 1
                    && f.first()
                        .is_some_and(|h| h.eq_ignore_ascii_case("image_id") || *h == "Image Index")
                {
                    continue;
                }
                let idx = match f.as_slice() {
                    [_, s] => Split::parse(s).map(|k| k as usize),
                    _ => None,
                }
                .ok_or_else(|| NihError::Row {
                    path: path.clone(),
                    line: line_no,
                    message: format!(
                        "expected `image_id,split` with split train, val or test: `{}`",
                        r.fields.join(",")
                    ),
                })?;
                map.insert(f[0].to_string(), idx as u8);
            }
            records
                .iter()
                .map(|r| {
                    map.get(&r.image_id)
                        .copied()
                        .ok_or_else(|| ManifestError::Input {
                            path: path.clone(),
                            message: format!("no split given for {}", r.image_id),
                        })
                })
                .collect()
        }
    }
}

/// The test fraction of a random patient split when `data.test_fraction` is unset.
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;

/// A split of patients at random (CheXNet's, 70/10/20 by default): patients shuffled by the
/// seeded generator, `val` and `test` of them (fractions of all patients, rounded) to val
/// and test, the rest to train. Returns each patient's split index.
pub(super) fn random_patient_split<K: Ord + Clone + std::hash::Hash>(
    patients: BTreeSet<K>,
    val: f64,
    test: f64,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> HashMap<K, u8> {
    let mut patients: Vec<K> = patients.into_iter().collect();
    patients.shuffle(rng);
    let n = patients.len();
    let n_val = (n as f64 * val).round() as usize;
    let n_test = (n as f64 * test).round() as usize;
    let n_train = n.saturating_sub(n_val + n_test);
    patients
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            (
                p,
                if i < n_train {
                    0
                } else if i < n_train + n_val {
                    1
                } else {
                    2
                },
            )
        })
        .collect()
}

/// Validation patients carved from `pool` by patient: a seeded shuffle takes `fraction` of
/// them, then for every label with positives in the pool but none in val, the first patient
/// (in shuffled order) with that label moves to val, so every label can be scored on val.
fn carve_val(
    records: &[Record],
    pool: &BTreeSet<u32>,
    fraction: f64,
    rng: &mut rand_chacha::ChaCha8Rng,
    in_pool: impl Fn(&Record) -> bool,
) -> BTreeSet<u32> {
    let mut patients: Vec<u32> = pool.iter().copied().collect();
    patients.shuffle(rng);
    let n_val = ((patients.len() as f64) * fraction).round() as usize;
    let mut val: BTreeSet<u32> = patients[..n_val].iter().copied().collect();
    let mut labels_of: HashMap<u32, u16> = HashMap::new();
    for r in records.iter().filter(|r| in_pool(r)) {
        let m = labels_of.entry(r.patient_id).or_default();
        for &l in &r.labels {
            *m |= 1 << l;
        }
    }
    for l in 0..LABELS.len() {
        let has = |p: &u32| labels_of.get(p).is_some_and(|m| m & (1 << l) != 0);
        if !val.iter().any(has) {
            if let Some(p) = patients[n_val..].iter().find(|p| has(p)) {
                val.insert(*p);
            }
        }
    }
    val
}

/// Builds the manifest (does not write it): from NIH's files, or from `data.generic`.
pub fn build(d: &DataConfig, scan_images: bool) -> Result<Manifest, ManifestError> {
    if let Some(g) = &d.generic {
        return super::generic::build(d, g, scan_images);
    }
    let src = Sources::resolve(d)?;
    let mut records = nih::parse_metadata(&nih::read_text(&src.metadata)?, &src.metadata)?;
    let mut audit = Audit::default();

    let twice = crate::io::repeated_keys(records.iter().map(|r| (r.image_id.as_str(), r.line)));
    if !twice.is_empty() {
        return Err(ManifestError::Audit(format!(
            "{} image id(s) occur more than once in {}: {}",
            twice.len(),
            src.metadata.display(),
            twice.join("; ")
        )));
    }
    if d.protocol == SplitProtocol::Official {
        check_split_lists(&src, &records, &mut audit)?;
    }
    audit.ages_outside_0_120 = records
        .iter()
        .filter(|r| r.age > 120)
        .map(|r| format!("{} (line {}): age {}", r.image_id, r.line, r.age))
        .collect();

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
    let split = assign_splits(d, &src, &records)?;

    // Leakage audit: no patient in two splits.
    let mut patient_split: HashMap<u32, u8> = HashMap::new();
    let mut shared = BTreeSet::new();
    for (r, s) in records.iter().zip(&split) {
        if let Some(prev) = patient_split.insert(r.patient_id, *s) {
            if prev != *s {
                shared.insert(r.patient_id);
            }
        }
    }
    audit.shared_patients_between_splits = shared.len();
    if !shared.is_empty() {
        return Err(ManifestError::Audit(format!(
            "{} patients appear in more than one split (e.g. {:?}); refusing to write a leaking manifest",
            shared.len(),
            shared.iter().take(5).collect::<Vec<_>>()
        )));
    }
    audit.images = records.len();
    audit.patients = patient_split.len();

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

    // Bounding boxes (first box per image and label kept as columns; count of boxes).
    let boxes = match &src.bbox_list {
        Some(p) => nih::parse_bboxes(&nih::read_text(p)?, p)?,
        None => vec![],
    };
    let mut box_of: HashMap<&str, Vec<&nih::BBox>> = HashMap::new();
    for b in &boxes {
        box_of.entry(b.image_id.as_str()).or_default().push(b);
    }

    // Columns, in image-id order so the output does not depend on the metadata's row order.
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by(|a, b| records[*a].image_id.cmp(&records[*b].image_id));
    let col_str = |name: &str, f: &dyn Fn(usize) -> String| -> Column {
        Column::new(
            name.into(),
            order.iter().map(|&i| f(i)).collect::<Vec<String>>(),
        )
    };
    let col_u32 = |name: &str, f: &dyn Fn(usize) -> u32| -> Column {
        Column::new(
            name.into(),
            order.iter().map(|&i| f(i)).collect::<Vec<u32>>(),
        )
    };
    let col_f64 = |name: &str, f: &dyn Fn(usize) -> f64| -> Column {
        Column::new(
            name.into(),
            order.iter().map(|&i| f(i)).collect::<Vec<f64>>(),
        )
    };
    let mut cols = vec![
        col_str("image_id", &|i| records[i].image_id.clone()),
        Column::new(
            "path".into(),
            order
                .iter()
                .map(|&i| paths[i].clone())
                .collect::<Vec<Option<String>>>(),
        ),
        col_u32("patient_id", &|i| records[i].patient_id),
        col_u32("follow_up", &|i| records[i].follow_up),
        col_u32("age", &|i| records[i].age),
        col_str("sex", &|i| records[i].sex.clone()),
        col_str("view", &|i| records[i].view.clone()),
        col_u32("orig_width", &|i| records[i].width),
        col_u32("orig_height", &|i| records[i].height),
        col_f64("pixel_spacing_x", &|i| records[i].spacing_x),
        col_f64("pixel_spacing_y", &|i| records[i].spacing_y),
    ];
    for &l in &label_idx {
        cols.push(col_u32(LABELS[l], &|i| {
            records[i].labels.contains(&l) as u32
        }));
    }
    cols.push(col_u32("no_finding", &|i| {
        records[i].labels.is_empty() as u32
    }));
    cols.push(col_str("split", &|i| {
        Split::ALL[split[i] as usize].to_string()
    }));
    cols.push(col_u32("n_boxes", &|i| {
        box_of
            .get(records[i].image_id.as_str())
            .map_or(0, |v| v.len() as u32)
    }));
    let bbox_json = |i: usize| -> Option<String> {
        box_of.get(records[i].image_id.as_str()).map(|v| {
            let items: Vec<serde_json::Value> = v
                .iter()
                .map(|b| serde_json::json!({"label": LABELS[b.label], "x": b.x, "y": b.y, "w": b.w, "h": b.h}))
                .collect();
            serde_json::Value::Array(items).to_string()
        })
    };
    cols.push(Column::new(
        "bboxes".into(),
        order
            .iter()
            .map(|&i| bbox_json(i))
            .collect::<Vec<Option<String>>>(),
    ));
    let all = DataFrame::new_infer_height(cols)?;

    let mut sources = BTreeMap::new();
    for (k, p) in [
        ("metadata", Some(&src.metadata)),
        ("train_val_list", src.train_val_list.as_ref()),
        ("test_list", src.test_list.as_ref()),
        ("bbox_list", src.bbox_list.as_ref()),
    ] {
        if let Some(p) = p {
            sources.insert(k.to_string(), source_entry(p)?);
        }
    }
    let labels: Vec<String> = label_idx.iter().map(|&l| LABELS[l].to_string()).collect();
    let protocol = match d.protocol {
        SplitProtocol::Official => "official",
        SplitProtocol::RandomPatient => "random_patient",
        SplitProtocol::SplitFile => "split_file",
    };
    let mut m = assemble(all, &labels, sources, protocol, d, audit)?;
    // `muxmed synth` leaves this marker so every report can say the data is synthetic.
    m.info.synthetic = d.root.join("SYNTHETIC.txt").is_file();
    Ok(m)
}

pub(super) fn source_entry(p: &Path) -> Result<SourceFile, ManifestError> {
    Ok(SourceFile {
        path: p.display().to_string(),
        sha256: sha256(p)?,
    })
}

/// Splits the full table into train/val/test (a polars mask filter), counts positives per
/// label and split (column sums of each split's frame) and records everything in
/// manifest.json. Eager polars only: the lazy engine would pull polars' async and cloud IO
/// stack (tokio, reqwest, object_store) into the build for two one-line queries.
pub(super) fn assemble(
    all: DataFrame,
    labels: &[String],
    sources: BTreeMap<String, SourceFile>,
    protocol: &str,
    d: &DataConfig,
    audit: Audit,
) -> Result<Manifest, ManifestError> {
    let label_names: Vec<&str> = labels
        .iter()
        .map(String::as_str)
        .chain(["no_finding"])
        .collect();
    let split_col = all.column("split")?.str()?.clone();
    let mut frames = BTreeMap::new();
    let mut splits = BTreeMap::new();
    let mut rows_label = Vec::new();
    let mut rows_split = Vec::new();
    let mut rows_pos = Vec::new();
    let mut rows_n = Vec::new();
    let mut rows_prev = Vec::new();
    for split in Split::ALL {
        let s = split.as_str();
        let df = all.filter(&split_col.equal(s))?;
        let n = df.height() as u64;
        let patients = df.column("patient_id")?.n_unique()? as u64;
        splits.insert(
            split,
            SplitCount {
                images: n,
                patients,
            },
        );
        if n > 0 {
            for l in &label_names {
                let pos = df
                    .column(l)?
                    .cast(&DataType::UInt64)?
                    .u64()?
                    .sum()
                    .unwrap_or(0);
                rows_label.push(l.to_string());
                rows_split.push(s.to_string());
                rows_pos.push(pos);
                rows_n.push(n);
                rows_prev.push(pos as f64 / n as f64);
            }
        }
        frames.insert(s, df);
    }
    let summary = DataFrame::new_infer_height(vec![
        Column::new("label".into(), rows_label),
        Column::new("split".into(), rows_split),
        Column::new("positives".into(), rows_pos),
        Column::new("images".into(), rows_n),
        Column::new("prevalence".into(), rows_prev),
    ])?;

    let info = ManifestInfo {
        tool: "muxmed".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        sources,
        protocol: protocol.to_string(),
        val_fraction: d.val_fraction,
        test_fraction: d.test_fraction,
        seed: d.seed,
        filters: d.filters.clone(),
        labels: labels.to_vec(),
        splits,
        audit,
        synthetic: false,
    };
    Ok(Manifest {
        frames,
        info,
        summary,
    })
}

/// Times [`build`] (image scan excluded) `runs` times: (rows, median s, min s).
pub fn bench_build(d: &DataConfig, runs: usize) -> Result<(usize, f64, f64), ManifestError> {
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..runs.max(1) {
        let t = std::time::Instant::now();
        let m = build(d, false)?;
        times.push(t.elapsed().as_secs_f64());
        rows = m.info.audit.images;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((rows, times[times.len() / 2], times[0]))
}

impl Manifest {
    /// What `muxmed manifest` prints: prevalence per split, split sizes, dropped and
    /// flagged images.
    pub fn summary(&self) -> Result<String, ManifestError> {
        let mut out = self.prevalence_table()?;
        for (s, df) in Split::ALL
            .iter()
            .filter_map(|s| Some((s, self.frames.get(s.as_str())?)))
        {
            let patients = df.column("patient_id")?.n_unique()?;
            out += &format!("{s:<6} {} images, {patients} patients\n", df.height());
        }
        let a = &self.info.audit;
        for (filter, n) in &a.dropped {
            out += &match filter.as_str() {
                "missing_images" => format!(
                    "dropped {n} images missing on disk (first: {})\n",
                    a.missing_examples.join(", ")
                ),
                "one_per_patient" => format!(
                    "one_per_patient dropped {n} later images of patients (each keeps its first image present)\n"
                ),
                f => format!("filters.{f} dropped {n} images\n"),
            };
        }
        if a.list_names_not_in_metadata > 0 {
            out += &format!(
                "{} names in the split lists are not in the metadata (first: {}); they are ignored\n",
                a.list_names_not_in_metadata,
                a.list_names_not_in_metadata_examples.join(", ")
            );
        }
        if !a.ages_outside_0_120.is_empty() {
            out += &format!(
                "flagged {} ages outside 0..120 (listed in manifest.json)\n",
                a.ages_outside_0_120.len()
            );
        }
        Ok(out)
    }

    /// Positives as a percentage of images, per label (rows) and split (columns).
    pub fn prevalence_table(&self) -> Result<String, ManifestError> {
        let label = self.summary.column("label")?.str()?.clone();
        let split = self.summary.column("split")?.str()?.clone();
        let prev = self.summary.column("prevalence")?.f64()?.clone();
        let mut rows: Vec<(String, [Option<f64>; 3])> = Vec::new();
        for i in 0..self.summary.height() {
            let (Some(l), Some(s), Some(p)) = (label.get(i), split.get(i), prev.get(i)) else {
                continue;
            };
            let col = Split::parse(s).map_or(0, |k| k as usize);
            match rows.iter_mut().find(|(name, _)| name == l) {
                Some((_, cells)) => cells[col] = Some(p),
                None => {
                    let mut cells = [None; 3];
                    cells[col] = Some(p);
                    rows.push((l.to_string(), cells));
                }
            }
        }
        let mut out = format!(
            "{:<20} {:>8} {:>8} {:>8}\n",
            "prevalence", "train", "val", "test"
        );
        for (l, cells) in rows {
            let c = |v: Option<f64>| {
                v.map(|p| format!("{:.2}%", 100.0 * p))
                    .unwrap_or("-".into())
            };
            out += &format!(
                "{:<20} {:>8} {:>8} {:>8}\n",
                l,
                c(cells[0]),
                c(cells[1]),
                c(cells[2])
            );
        }
        Ok(out)
    }

    /// Writes the five files into a temporary folder beside `out`, then renames it into
    /// place, so a failure never leaves a half-written manifest. Everything else in `out`
    /// (the prepared caches) is kept: a cache whose manifest is unchanged stays usable, and
    /// a stale one is refused by name when opened. A symlinked `out` stays a symlink: the
    /// files are renamed into its target one by one, `manifest.json` last.
    /// The splits without an image.
    pub fn empty_splits(&self) -> Vec<Split> {
        Split::ALL
            .into_iter()
            .filter(|s| self.frames.get(s.as_str()).is_none_or(|f| f.height() == 0))
            .collect()
    }

    pub fn write(&mut self, out: &Path) -> Result<(), ManifestError> {
        let werr = |message: String| ManifestError::Write {
            path: out.to_path_buf(),
            message,
        };
        // A manifest without images (a header-only metadata file, filters that drop
        // everything) is refused before anything is written, so a good manifest is never
        // replaced by it. One empty split is allowed (a test-only set to score a model on)
        // and named by `empty_splits`; `train` refuses an empty train or val split.
        if self.empty_splits().len() == Split::ALL.len() {
            let from: Vec<String> = self
                .info
                .sources
                .values()
                .map(|src| src.path.clone())
                .collect();
            return Err(ManifestError::Audit(format!(
                "every split would be empty (built from {}); nothing was written to {}",
                from.join(", "),
                out.display()
            )));
        }
        let link = std::fs::symlink_metadata(out).is_ok_and(|m| m.file_type().is_symlink());
        if out.exists() && !out.is_dir() {
            return Err(werr("is a file, not a folder: give --out a folder".into()));
        }
        let parent = if link {
            out.to_path_buf()
        } else {
            out.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf()
        };
        std::fs::create_dir_all(&parent).map_err(|e| werr(e.to_string()))?;
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| werr(e.to_string()))?;
        if let Err(e) = self.write_files(&tmp) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if link {
            // Into the symlink's target, file by file; manifest.json (what caches and runs
            // check) last.
            let (from, to) = (ManifestDir::new(&tmp), ManifestDir::new(out));
            for (a, b) in from.manifest_files().into_iter().zip(to.manifest_files()) {
                std::fs::rename(a, b).map_err(|e| werr(e.to_string()))?;
            }
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(());
        }
        // Keep what else the folder holds (prepared caches): move it into the new folder.
        if out.is_dir() {
            for e in std::fs::read_dir(out)
                .map_err(|e| werr(e.to_string()))?
                .flatten()
            {
                let n = e.file_name();
                if !tmp.join(&n).exists() {
                    std::fs::rename(e.path(), tmp.join(&n)).map_err(|e| werr(e.to_string()))?;
                }
            }
        }
        // Swap in: old folder aside, new one in, old one removed.
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        if out.exists() {
            std::fs::rename(out, &old).map_err(|e| werr(e.to_string()))?;
        }
        std::fs::rename(&tmp, out).map_err(|e| werr(e.to_string()))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    fn write_files(&mut self, dir: &Path) -> Result<(), ManifestError> {
        let werr = |message: String| ManifestError::Write {
            path: dir.to_path_buf(),
            message,
        };
        let files = ManifestDir::new(dir);
        for (s, df) in self.frames.iter_mut() {
            let split = Split::parse(s).ok_or_else(|| werr(format!("no split `{s}`")))?;
            let f = std::fs::File::create(files.split(split)).map_err(|e| werr(e.to_string()))?;
            ParquetWriter::new(f).finish(df)?;
        }
        let f = std::fs::File::create(files.summary_csv()).map_err(|e| werr(e.to_string()))?;
        CsvWriter::new(f).finish(&mut self.summary)?;
        let text = serde_json::to_string_pretty(&self.info).map_err(|e| werr(e.to_string()))?;
        std::fs::write(files.manifest_json(), text + "\n").map_err(|e| werr(e.to_string()))
    }
}
