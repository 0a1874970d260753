//! Which split every image goes to, for every data source. A source reads its files into
//! rows and says what it knows of each row's split ([`Given`]); this module applies the
//! protocol (the source's own split, patients at random, a split file), carves validation
//! patients out of a training pool, and audits the result (no patient in two splits).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::manifest_dir::{Audit, ManifestError};
use super::nih::{csv_rows, read_text, NihError};
use crate::config::DataConfig;
use crate::labels::Split;

/// The test fraction of a random patient split when `data.test_fraction` is unset.
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;

/// What a data source says about one row's split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    /// The source puts the row in this split.
    In(Split),
    /// The source's training pool (NIH's `train_val_list.txt`): train, unless the patient is
    /// carved out for validation.
    TrainOrVal,
}

/// One row as the splitter sees it.
#[derive(Debug, Clone)]
pub struct Entry<'a, K> {
    pub image_id: &'a str,
    /// The line of the source file the row came from, for messages.
    pub line: usize,
    pub patient: K,
    /// Indices of the row's positive labels (the validation carve keeps each label in val).
    pub labels: &'a [usize],
    pub given: Option<Given>,
}

/// How the rows of a source are assigned to splits.
#[derive(Debug, Clone, Copy)]
pub enum Plan<'a> {
    /// The source's own split: every row must have one (`source` names the file, `why` what
    /// a row without one is missing). A `TrainOrVal` pool is carved by patient into train
    /// and val; `n_labels` is the number of labels the carve keeps represented.
    Given {
        source: &'a Path,
        why: &'a str,
        n_labels: usize,
    },
    /// Patients at random, `data.val_fraction` and `data.test_fraction` of them.
    Random,
    /// `data.split_file`: a CSV of `image_id,split`.
    File(&'a Path),
}

/// Each entry's split under `plan`, seeded by `data.seed`.
pub fn assign<K: Ord + Clone + Hash>(
    d: &DataConfig,
    entries: &[Entry<'_, K>],
    plan: Plan<'_>,
) -> Result<Vec<Split>, ManifestError> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(d.seed);
    match plan {
        Plan::Given {
            source,
            why,
            n_labels,
        } => {
            if let Some(e) = entries.iter().find(|e| e.given.is_none()) {
                return Err(ManifestError::Audit(format!(
                    "{} (line {} of {}) {why}",
                    e.image_id,
                    e.line,
                    source.display()
                )));
            }
            let pool: Vec<&Entry<K>> = entries
                .iter()
                .filter(|e| e.given == Some(Given::TrainOrVal))
                .collect();
            let val = carve_val(&pool, d.val_fraction, n_labels, &mut rng);
            Ok(entries
                .iter()
                .map(|e| match e.given {
                    Some(Given::In(s)) => s,
                    _ if val.contains(&e.patient) => Split::Val,
                    _ => Split::Train,
                })
                .collect())
        }
        Plan::Random => {
            let test = d.test_fraction.unwrap_or(DEFAULT_TEST_FRACTION);
            let patients: BTreeSet<K> = entries.iter().map(|e| e.patient.clone()).collect();
            let split = random_patient_split(patients, d.val_fraction, test, &mut rng);
            Ok(entries.iter().map(|e| split[&e.patient]).collect())
        }
        Plan::File(path) => {
            let map = read_split_file(path)?;
            entries
                .iter()
                .map(|e| {
                    map.get(e.image_id).copied().ok_or_else(|| {
                        ManifestError::input(path, format!("no split given for {}", e.image_id))
                    })
                })
                .collect()
        }
    }
}

/// A split of patients at random (CheXNet's, 70/10/20 by default): patients shuffled by the
/// seeded generator, `val` and `test` of them (fractions of all patients, rounded) to val
/// and test, the rest to train.
fn random_patient_split<K: Ord + Clone + Hash>(
    patients: BTreeSet<K>,
    val: f64,
    test: f64,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> HashMap<K, Split> {
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
            let s = if i < n_train {
                Split::Train
            } else if i < n_train + n_val {
                Split::Val
            } else {
                Split::Test
            };
            (p, s)
        })
        .collect()
}

/// Validation patients carved from the `pool`'s patients: a seeded shuffle takes `fraction`
/// of them, then for every label with positives in the pool but none in val, the first
/// patient (in shuffled order) with that label moves to val, so every label can be scored.
fn carve_val<K: Ord + Clone + Hash>(
    pool: &[&Entry<'_, K>],
    fraction: f64,
    n_labels: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> BTreeSet<K> {
    let patients: BTreeSet<K> = pool.iter().map(|e| e.patient.clone()).collect();
    let mut patients: Vec<K> = patients.into_iter().collect();
    patients.shuffle(rng);
    let n_val = ((patients.len() as f64) * fraction).round() as usize;
    let mut val: BTreeSet<K> = patients[..n_val].iter().cloned().collect();
    let mut labels_of: HashMap<&K, BTreeSet<usize>> = HashMap::new();
    for e in pool {
        labels_of
            .entry(&e.patient)
            .or_default()
            .extend(e.labels.iter().copied());
    }
    for l in 0..n_labels {
        let has = |p: &K| labels_of.get(p).is_some_and(|m| m.contains(&l));
        if !val.iter().any(has) {
            if let Some(p) = patients[n_val..].iter().find(|p| has(p)) {
                val.insert(p.clone());
            }
        }
    }
    val
}

/// `data.split_file`: `image_id,split` per line (a header line is skipped).
fn read_split_file(path: &Path) -> Result<HashMap<String, Split>, ManifestError> {
    let text = read_text(path)?;
    let mut map = HashMap::new();
    for r in csv_rows(&text, path)? {
        let f: Vec<&str> = r.fields.iter().map(|x| x.trim()).collect();
        if r.line == 1
            && f.first()
                .is_some_and(|h| h.eq_ignore_ascii_case("image_id") || *h == "Image Index")
        {
            continue;
        }
        let split = match f.as_slice() {
            [_, s] => Split::parse(s),
            _ => None,
        }
        .ok_or_else(|| NihError::Row {
            path: path.to_path_buf(),
            line: r.line,
            message: format!(
                "expected `image_id,split` with split train, val or test: `{}`",
                r.fields.join(",")
            ),
        })?;
        map.insert(f[0].to_string(), split);
    }
    Ok(map)
}

/// The leakage audit: refuses a split that puts one patient in two splits (`source` names
/// where the rows came from). Records the image and patient counts in `audit`.
pub fn check_no_shared_patients<K: Ord + Clone + Hash + Debug>(
    patients: impl Iterator<Item = K>,
    split: &[Split],
    source: &Path,
    audit: &mut Audit,
) -> Result<(), ManifestError> {
    let mut patient_split: HashMap<K, Split> = HashMap::new();
    let mut shared = BTreeSet::new();
    for (p, s) in patients.zip(split) {
        if let Some(prev) = patient_split.insert(p.clone(), *s) {
            if prev != *s {
                shared.insert(p);
            }
        }
    }
    audit.shared_patients_between_splits = shared.len();
    if !shared.is_empty() {
        return Err(ManifestError::Audit(format!(
            "{} patients appear in more than one split of {} (e.g. {:?}); refusing to write a leaking manifest",
            shared.len(),
            source.display(),
            shared.iter().take(5).collect::<Vec<_>>()
        )));
    }
    audit.images = split.len();
    audit.patients = patient_split.len();
    Ok(())
}
