//! What `compare` compares: runs (their `predictions_<key>.csv` on one of their own splits)
//! and external predictions CSVs (scored against a metadata file), read and aligned on the
//! same images, or refused with the difference named.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::config::Arch;
use crate::config::SubgroupConfig;
use crate::data::dataset::SplitAttributes;
use crate::data::nih;
use crate::eval::predictions::{read_predictions, read_run_predictions};
use crate::eval::subgroups::GroupFilter;
use crate::labels::Split;
use crate::metrics::bootstrap::PatientIndex;
use crate::run::{Checkpoint, EvalKey, RunDir};

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{0}")]
    Refused(String),
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    /// A reader's error that already names its file.
    #[error("{0}")]
    Read(String),
}

/// An input's error, naming the file once: readers that name their file are passed through.
fn input_err(path: &Path, message: impl std::fmt::Display) -> CompareError {
    let message = message.to_string();
    if message.contains(&path.display().to_string()) {
        CompareError::Read(message)
    } else {
        CompareError::Input {
            path: path.to_path_buf(),
            message,
        }
    }
}

/// Where one compared model's predictions come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A run directory, with the evaluation (split, checkpoint, TTA) to read.
    Run { dir: PathBuf, key: EvalKey },
    /// A run's external evaluation (`RUN/external/<pipeline>/`, from `evaluate --on`): its
    /// predictions on the other pipeline's test split, with that manifest's truth (in
    /// `manifests`), on the concepts it scored.
    External {
        run: PathBuf,
        pipeline: String,
        key: EvalKey,
        manifests: PathBuf,
    },
    /// Any model's predictions CSV (as `evaluate --predictions` reads it), with the metadata
    /// that labels it, an optional split list, and optionally the architecture it ran (for
    /// the cost figures).
    Predictions {
        csv: PathBuf,
        metadata: PathBuf,
        split_list: Option<PathBuf>,
        arch: Option<(Arch, i64)>,
    },
}

impl Source {
    /// A folder `RUN/external/<pipeline>` is an external evaluation (its truth from the
    /// manifest in `manifests`); any other folder is a run; a file is a predictions CSV
    /// (needing `metadata`).
    pub fn classify(
        path: &Path,
        key: EvalKey,
        metadata: Option<&Path>,
        split_list: Option<&Path>,
        manifests: &Path,
    ) -> Result<Source, CompareError> {
        let parent = path
            .parent()
            .filter(|p| p.file_name() == Some("external".as_ref()));
        if let (true, Some(run), Some(name)) = (path.is_dir(), parent, path.file_name()) {
            if key.split != Split::Test {
                return Err(input_err(
                    path,
                    format!("an external evaluation is scored on its pipeline's test split, not the {} split: compare with --split test", key.split),
                ));
            }
            return Ok(Source::External {
                run: run.parent().unwrap_or(Path::new(".")).to_path_buf(),
                pipeline: name.to_string_lossy().into_owned(),
                key,
                manifests: manifests.to_path_buf(),
            });
        }
        if path.is_dir() {
            Ok(Source::Run {
                dir: path.to_path_buf(),
                key,
            })
        } else if path.is_file() {
            let metadata = metadata.ok_or_else(|| {
                input_err(
                    path,
                    "a predictions CSV needs --labels (the NIH metadata CSV that labels its images)",
                )
            })?;
            Ok(Source::Predictions {
                csv: path.to_path_buf(),
                metadata: metadata.to_path_buf(),
                split_list: split_list.map(Path::to_path_buf),
                arch: None,
            })
        } else {
            Err(input_err(
                path,
                "does not exist (expected a run directory or a predictions CSV)",
            ))
        }
    }
}

/// One model's scores on its images, with their truth and patients.
#[derive(Debug, Clone)]
pub struct Scored {
    pub name: String,
    pub source: Source,
    pub split: Split,
    /// The manifest protocol of a run (`official`, `random_patient`, ...); None for an
    /// external predictions file, whose split muxmed cannot know.
    pub protocol: Option<String>,
    /// Made by `muxmed synth`.
    pub synthetic: bool,
    /// The other pipeline of an external evaluation (its data, not the run's own).
    pub on: Option<String>,
    /// Things the report should say about this input (e.g. stale predictions).
    pub notes: Vec<String>,
    pub labels: Vec<String>,
    pub image_ids: Vec<String>,
    pub patients: Vec<String>,
    /// None where the label is missing for the image.
    pub y: Vec<Vec<Option<bool>>>,
    pub s: Vec<Vec<f64>>,
    /// Sex, age, view and dataset of each image (row by row), for `--where`.
    pub attributes: SplitAttributes,
}

impl Scored {
    pub fn read(name: String, source: Source, split: Split) -> Result<Scored, CompareError> {
        let empty = Scored {
            name,
            source: source.clone(),
            split,
            protocol: None,
            synthetic: false,
            on: None,
            notes: vec![],
            labels: vec![],
            image_ids: vec![],
            patients: vec![],
            y: vec![],
            s: vec![],
            attributes: SplitAttributes::default(),
        };
        match &source {
            Source::Run { dir, key } => read_run(empty, dir, *key),
            Source::External {
                run,
                pipeline,
                key,
                manifests,
            } => read_external_evaluation(empty, run, pipeline, *key, manifests),
            Source::Predictions {
                csv,
                metadata,
                split_list,
                ..
            } => read_external(empty, csv, metadata, split_list.as_deref()),
        }
    }

    /// Keeps only the images of `filter`'s group (age bands by `cfg`); an error when the
    /// input has no such attribute or no image in the group.
    pub fn restrict(
        &mut self,
        filter: &GroupFilter,
        cfg: &SubgroupConfig,
    ) -> Result<(), CompareError> {
        let keep = filter.rows(&self.attributes, cfg).map_err(|why| {
            CompareError::Refused(format!("--where {filter}: `{}`: {why}", self.name))
        })?;
        if !keep.contains(&true) {
            return Err(CompareError::Refused(format!(
                "--where {filter}: `{}` has no image in that group",
                self.name
            )));
        }
        fn pick<T: Clone>(v: &[T], keep: &[bool]) -> Vec<T> {
            v.iter()
                .zip(keep)
                .filter(|(_, k)| **k)
                .map(|(x, _)| x.clone())
                .collect()
        }
        self.image_ids = pick(&self.image_ids, &keep);
        self.patients = pick(&self.patients, &keep);
        self.y = pick(&self.y, &keep);
        self.s = pick(&self.s, &keep);
        self.attributes = self.attributes.aligned_to(&self.image_ids);
        Ok(())
    }

    /// The protocol as people read it.
    pub fn protocol_text(&self) -> String {
        self.protocol
            .clone()
            .unwrap_or_else(|| "unknown (external predictions)".into())
    }
}

fn read_run(mut s: Scored, dir: &Path, key: EvalKey) -> Result<Scored, CompareError> {
    let run = RunDir::open(dir).map_err(|e| input_err(dir, e))?;
    let data = run.split(key.split).map_err(|e| input_err(dir, e))?;
    let manifest = run.manifest().map_err(|e| input_err(dir, e))?;
    let path = run.predictions(&key);
    if !path.is_file() {
        let mut flags = format!("--split {}", key.split);
        if key.checkpoint != Checkpoint::Best {
            flags += &format!(" --checkpoint {}", key.checkpoint.as_str());
        }
        if key.tta {
            flags += " --tta";
        }
        return Err(input_err(
            &path,
            format!(
                "no predictions for the {}: run `muxmed evaluate --run {} {flags}` first",
                key.describe(),
                dir.display()
            ),
        ));
    }
    stale_note(&mut s, &path, &run, key.checkpoint);
    let preds = read_run_predictions(&path, &data.label_names).map_err(|e| input_err(&path, e))?;
    s.split = key.split;
    s.protocol = Some(manifest.protocol.clone());
    s.synthetic = manifest.synthetic;
    s.labels = data.label_names.clone();
    let mut missing = 0;
    for ((id, p), l) in data.image_ids.iter().zip(&data.patients).zip(&data.labels) {
        match preds.get(id) {
            Some(pr) => {
                s.image_ids.push(id.clone());
                s.patients.push(p.clone());
                s.y.push(l.iter().map(|v| crate::metrics::truth_of(*v)).collect());
                s.s.push(pr.clone());
            }
            None => missing += 1,
        }
    }
    if missing > 0 {
        return Err(input_err(
            &path,
            format!(
                "{missing} images of the run's {} split have no prediction: evaluate the run again",
                key.split
            ),
        ));
    }
    let split_file = run.split_file(key.split);
    s.attributes = crate::data::dataset::load_split_attributes(&split_file)
        .map_err(|e| input_err(&split_file, e))?
        .aligned_to(&s.image_ids);
    Ok(s)
}

/// A run's external evaluation on `pipeline`'s test split: its predictions, and the truth
/// and patients of that pipeline's manifest, which must be the one evaluated on (same
/// sha256), on the concepts the evaluation scored.
fn read_external_evaluation(
    mut s: Scored,
    run_dir: &Path,
    pipeline: &str,
    key: EvalKey,
    manifests: &Path,
) -> Result<Scored, CompareError> {
    let run = RunDir::open(run_dir).map_err(|e| input_err(run_dir, e))?;
    let ext = run.external(pipeline);
    let k = crate::run::ExternalKey {
        eval: EvalKey {
            split: Split::Test,
            ..key
        },
        all: false,
    };
    let info = ext.read_info(&k).map_err(|_| {
        input_err(
            ext.root(),
            format!(
                "no external evaluation of the {}: run `muxmed evaluate --run {} --on {pipeline}` first",
                k.eval.describe(),
                run_dir.display()
            ),
        )
    })?;
    let mdir = crate::data::manifest_dir::ManifestDir::of(manifests, &info.pipeline);
    let mjson = mdir.manifest_json();
    let sha = crate::io::sha256_file(&mjson).map_err(|e| input_err(&mjson, e))?;
    if sha != info.manifest_sha256 {
        return Err(input_err(
            &mjson,
            format!(
                "has changed since `{}` was evaluated on it: run `muxmed evaluate --run {} --on {pipeline}` again",
                s.name,
                run_dir.display()
            ),
        ));
    }
    let minfo = crate::data::manifest_dir::ManifestInfo::read(mdir.root())
        .map_err(|e| input_err(&mjson, e))?;
    let split = crate::data::dataset::split_path(mdir.root(), Split::Test);
    let data = crate::data::dataset::load_split_file(&split, &info.scored)
        .map_err(|e| input_err(&split, e))?;
    let path = ext.predictions(&k);
    let preds = read_run_predictions(&path, &info.scored).map_err(|e| input_err(&path, e))?;
    stale_note(&mut s, &path, &run, key.checkpoint);
    s.split = Split::Test;
    s.protocol = Some(minfo.protocol.clone());
    s.on = Some(pipeline.to_string());
    s.synthetic = minfo.synthetic;
    s.labels = info.scored.clone();
    s.notes.push(format!(
        "`{}`: external evaluation of {} on `{pipeline}` ({} data, its test split)",
        s.name,
        run_dir.display(),
        info.dataset
    ));
    // Images the evaluation left out (unreadable when its cache was prepared) are absent
    // from the predictions, as from every other input scored on them.
    for ((id, p), l) in data.image_ids.iter().zip(&data.patients).zip(&data.labels) {
        if let Some(pr) = preds.get(id) {
            s.image_ids.push(id.clone());
            s.patients.push(p.clone());
            s.y.push(l.iter().map(|v| crate::metrics::truth_of(*v)).collect());
            s.s.push(pr.clone());
        }
    }
    if s.image_ids.len() != info.images {
        return Err(input_err(
            &path,
            format!(
                "{} of its {} images are in `{pipeline}`'s test split now: evaluate again",
                s.image_ids.len(),
                info.images
            ),
        ));
    }
    s.attributes = crate::data::dataset::load_split_attributes(&split)
        .map_err(|e| input_err(&split, e))?
        .aligned_to(&s.image_ids);
    Ok(s)
}

/// A note when `predictions` were written before the run's `checkpoint`: the run trained on
/// after that evaluation.
fn stale_note(s: &mut Scored, predictions: &Path, run: &RunDir, checkpoint: Checkpoint) {
    if is_older(predictions, &run.checkpoint(checkpoint)) {
        s.notes.push(format!(
            "`{}`: {} is older than {}: the run trained on after this evaluation; evaluate {} again for the current weights",
            s.name,
            predictions.display(),
            checkpoint.file_name(),
            run.root().display()
        ));
    }
}

/// Whether file `a` was last written before file `b` (false when either time is unknown).
fn is_older(a: &Path, b: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((modified(a), modified(b)), (Some(x), Some(y)) if x < y)
}

fn read_external(
    mut s: Scored,
    csv: &Path,
    metadata: &Path,
    split_list: Option<&Path>,
) -> Result<Scored, CompareError> {
    let p = read_predictions(csv).map_err(|e| input_err(csv, e))?;
    let text = nih::read_text(metadata).map_err(|e| input_err(metadata, e))?;
    let records = nih::parse_metadata(&text, metadata).map_err(|e| input_err(metadata, e))?;
    let list: Option<HashSet<String>> = match split_list {
        Some(l) => Some(
            nih::read_list(l)
                .map_err(|e| input_err(l, e))?
                .into_iter()
                .collect(),
        ),
        None => None,
    };
    let by_id: HashMap<&str, &nih::Record> = records
        .iter()
        .filter(|r| list.as_ref().is_none_or(|l| l.contains(&r.image_id)))
        .map(|r| (r.image_id.as_str(), r))
        .collect();
    let label_idx: Vec<usize> = p
        .labels
        .iter()
        .filter_map(|l| crate::labels::LABELS.iter().position(|k| k == l))
        .collect();
    s.labels = p.labels.clone();
    let mut matched: Vec<Option<&nih::Record>> = Vec::new();
    for (id, probs) in p.image_ids.iter().zip(&p.probs) {
        if let Some(r) = by_id.get(id.as_str()) {
            matched.push(Some(*r));
            s.image_ids.push(id.clone());
            s.patients.push(r.patient_id.to_string());
            s.y.push(
                label_idx
                    .iter()
                    .map(|k| Some(r.labels.contains(k)))
                    .collect(),
            );
            s.s.push(probs.clone());
        }
    }
    if s.image_ids.is_empty() {
        return Err(input_err(
            csv,
            "no image of the predictions has labels in the metadata (and split list)",
        ));
    }
    s.attributes = SplitAttributes::of_nih_records(&s.image_ids, &matched);
    Ok(s)
}

/// The compared models on one image order (the first input's) and one label set.
#[derive(Debug, Clone)]
pub struct Aligned {
    pub inputs: Vec<Scored>,
    /// Labels every input has, in the first input's order.
    pub labels: Vec<String>,
    /// Labels some input lacks (left out of the comparison).
    pub dropped_labels: Vec<String>,
    pub image_ids: Vec<String>,
    /// Patient index (0..) of each image, for the bootstrap.
    pub groups: Vec<usize>,
    pub n_patients: usize,
    /// None where the label is missing for the image.
    pub y: Vec<Vec<Option<bool>>>,
    /// scores[m][i][k]: model m, image i, label k of `labels`.
    pub scores: Vec<Vec<Vec<f64>>>,
}

/// Refuses two inputs scored on different data (a run's own against an external
/// evaluation, or two pipelines), on different splits, or under different protocols.
fn same_population(first: &Scored, o: &Scored) -> Result<(), CompareError> {
    if o.on != first.on {
        let data = |x: &Scored| match &x.on {
            Some(p) => format!("pipeline `{p}`'s data (an external evaluation)"),
            None => "its own run's data".to_string(),
        };
        return Err(CompareError::Refused(format!(
            "`{}` is scored on {} and `{}` on {}: compare models on the same data",
            first.name,
            data(first),
            o.name,
            data(o)
        )));
    }
    if o.split != first.split {
        return Err(CompareError::Refused(format!(
            "`{}` is scored on the {} split and `{}` on the {} split: compare models on the same split",
            first.name, first.split, o.name, o.split
        )));
    }
    if let (Some(a), Some(b)) = (&first.protocol, &o.protocol) {
        if a != b {
            return Err(CompareError::Refused(format!(
                "`{}` uses the {a} split protocol and `{}` the {b} protocol: their {} images are not the same population",
                first.name, o.name, first.split
            )));
        }
    }
    Ok(())
}

/// Puts every input on the first input's images and labels; refuses inputs from different
/// splits or protocols, with different image sets, or whose truth differs on an image.
pub fn align(inputs: Vec<Scored>) -> Result<Aligned, CompareError> {
    if inputs.len() < 2 {
        return Err(CompareError::Refused(
            "compare needs at least two inputs".into(),
        ));
    }
    let first = &inputs[0];
    for o in &inputs[1..] {
        same_population(first, o)?;
        let ids_a: HashSet<&String> = first.image_ids.iter().collect();
        let ids_b: HashSet<&String> = o.image_ids.iter().collect();
        let only_a = ids_a.difference(&ids_b).count();
        let only_b = ids_b.difference(&ids_a).count();
        if only_a > 0 || only_b > 0 {
            let example = first
                .image_ids
                .iter()
                .find(|i| !ids_b.contains(i))
                .or_else(|| o.image_ids.iter().find(|i| !ids_a.contains(i)))
                .cloned()
                .unwrap_or_default();
            return Err(CompareError::Refused(format!(
                "`{}` and `{}` are not scored on the same images: {only_a} images only in `{}`, {only_b} only in `{}` ({} in common; e.g. {example}); protocols: {} and {}",
                first.name,
                o.name,
                first.name,
                o.name,
                ids_a.intersection(&ids_b).count(),
                first.protocol_text(),
                o.protocol_text()
            )));
        }
    }
    let labels: Vec<String> = first
        .labels
        .iter()
        .filter(|l| inputs.iter().all(|i| i.labels.contains(l)))
        .cloned()
        .collect();
    let mut dropped: Vec<String> = inputs
        .iter()
        .flat_map(|i| i.labels.iter())
        .filter(|l| !labels.contains(l))
        .cloned()
        .collect();
    dropped.sort();
    dropped.dedup();
    if labels.is_empty() {
        return Err(CompareError::Refused(
            "the inputs have no label in common".into(),
        ));
    }
    let image_ids = first.image_ids.clone();
    let mut y: Option<Vec<Vec<Option<bool>>>> = None;
    let mut scores = Vec::new();
    for inp in &inputs {
        let pos: HashMap<&String, usize> = inp
            .image_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
        let cols: Vec<usize> = labels
            .iter()
            .filter_map(|l| inp.labels.iter().position(|x| x == l))
            .collect();
        let pick = |row: usize| -> (Vec<Option<bool>>, Vec<f64>) {
            (
                cols.iter().map(|&c| inp.y[row][c]).collect(),
                cols.iter().map(|&c| inp.s[row][c]).collect(),
            )
        };
        let (yi, si): (Vec<Vec<Option<bool>>>, Vec<Vec<f64>>) =
            image_ids.iter().map(|id| pick(pos[id])).unzip();
        if let Some(y0) = &y {
            let differ = y0.iter().zip(&yi).filter(|(a, b)| a != b).count();
            if differ > 0 {
                return Err(CompareError::Refused(format!(
                    "the labels of {differ} images differ between `{}` and `{}`: they were scored against different ground truth",
                    first.name, inp.name
                )));
            }
        } else {
            y = Some(yi);
        }
        scores.push(si);
    }
    let mut index = PatientIndex::<&str>::default();
    let groups: Vec<usize> = first.patients.iter().map(|p| index.index(p)).collect();
    Ok(Aligned {
        n_patients: index.len(),
        labels,
        dropped_labels: dropped,
        image_ids,
        groups,
        y: y.unwrap_or_default(),
        scores,
        inputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(name: &str, ids: &[&str], protocol: &str) -> Scored {
        Scored {
            name: name.into(),
            source: Source::Predictions {
                csv: PathBuf::from(format!("{name}.csv")),
                metadata: PathBuf::from("meta.csv"),
                split_list: None,
                arch: None,
            },
            split: Split::Test,
            protocol: Some(protocol.into()),
            synthetic: false,
            on: None,
            notes: vec![],
            labels: vec!["Effusion".into(), "Mass".into()],
            image_ids: ids.iter().map(|s| s.to_string()).collect(),
            patients: ids.iter().map(|s| s[..2].to_string()).collect(),
            y: ids
                .iter()
                .enumerate()
                .map(|(i, _)| vec![Some(i % 2 == 0), Some(i % 3 == 0)])
                .collect(),
            s: ids
                .iter()
                .enumerate()
                .map(|(i, _)| vec![i as f64 / 10.0, 0.5])
                .collect(),
            attributes: SplitAttributes::default(),
        }
    }

    #[test]
    fn different_image_sets_are_refused_with_the_counts() {
        let a = scored("a", &["01_1", "01_2", "02_1", "03_1"], "official");
        let b = scored("b", &["01_1", "01_2", "02_1", "04_1", "05_1"], "official");
        let e = align(vec![a, b]).unwrap_err().to_string();
        assert!(e.contains("1 images only in `a`"), "{e}");
        assert!(e.contains("2 only in `b`"), "{e}");
        assert!(e.contains("3 in common"), "{e}");
    }

    #[test]
    fn different_protocols_are_refused_by_name() {
        let a = scored("a", &["01_1", "02_1"], "official");
        let b = scored("b", &["01_1", "02_1"], "random_patient");
        let e = align(vec![a, b]).unwrap_err().to_string();
        assert!(
            e.contains("official") && e.contains("random_patient"),
            "{e}"
        );
    }

    #[test]
    fn images_are_aligned_to_the_first_inputs_order() {
        let a = scored("a", &["01_1", "02_1", "03_1"], "official");
        let mut b = scored("b", &["01_1", "02_1", "03_1"], "official");
        // b lists the same images in reverse order, with its own scores.
        b.image_ids.reverse();
        b.y.reverse();
        b.s = vec![vec![0.9, 0.1], vec![0.8, 0.2], vec![0.7, 0.3]];
        b.patients.reverse();
        let al = align(vec![a, b]).unwrap();
        assert_eq!(al.image_ids, vec!["01_1", "02_1", "03_1"]);
        assert_eq!(al.scores[1][0], vec![0.7, 0.3]);
        assert_eq!(al.scores[1][2], vec![0.9, 0.1]);
        assert_eq!(al.n_patients, 3);
    }

    #[test]
    fn different_truth_on_the_same_images_is_refused() {
        let a = scored("a", &["01_1", "02_1"], "official");
        let mut b = scored("b", &["01_1", "02_1"], "official");
        b.y[1][0] = b.y[1][0].map(|v| !v);
        let e = align(vec![a, b]).unwrap_err().to_string();
        assert!(e.contains("labels of 1 images differ"), "{e}");
    }
}
