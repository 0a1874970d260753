//! [`RunDir`]: every file name of a run directory, and reading and writing them.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use super::types::{EpochRow, Event, ExternalInfo, Localization, RunInfo, State};
use super::{Checkpoint, EvalKey};
use crate::config::{self, PipelineConfig};
use crate::data::dataset::{self, SplitData};
use crate::data::manifest_dir::ManifestDir;
use crate::data::manifest_dir::ManifestInfo;
use crate::labels::Split;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{} is not a muxmed run directory (it has no config.resolved.yaml)", .0.display())]
    NotARun(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Manifest(#[from] crate::data::manifest_dir::ManifestError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `external/<pipeline>/` of a run: the run's model scored on another pipeline's data
/// (`muxmed evaluate --run R --on PIPELINE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalDir {
    root: PathBuf,
}

impl ExternalDir {
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `predictions_test.csv`, `predictions_all_ema.csv`, ...
    pub fn predictions(&self, k: &ExternalKey) -> PathBuf {
        self.root.join(format!("predictions_{}.csv", k.suffix()))
    }
    pub fn metrics(&self, k: &ExternalKey) -> PathBuf {
        self.root.join(format!("metrics_{}.json", k.suffix()))
    }
    /// What was scored and what was not: [`super::types::ExternalInfo`].
    pub fn info(&self, k: &ExternalKey) -> PathBuf {
        self.root.join(format!("external_{}.json", k.suffix()))
    }
    /// Per-label AUROC within subgroups of the other data (`eval::subgroups::Subgroups`).
    pub fn subgroups(&self, k: &ExternalKey) -> PathBuf {
        self.root.join(format!("subgroups_{}.json", k.suffix()))
    }
    /// Internal against external AUROC per shared concept (`eval::shift::Shift`).
    pub fn shift(&self, k: &ExternalKey) -> PathBuf {
        self.root.join(format!("shift_{}.json", k.suffix()))
    }
    /// The box benchmark on the other pipeline's `split` (`muxmed localize --on`).
    pub fn localization_files(&self, split: Split) -> LocalizationFiles {
        LocalizationFiles {
            root: self.root.clone(),
            split,
        }
    }
    pub fn read_info(&self, k: &ExternalKey) -> Result<ExternalInfo, RunError> {
        read_json(&self.info(k))
    }
    pub fn write_info(&self, k: &ExternalKey, info: &ExternalInfo) -> Result<(), RunError> {
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        write_json(&self.info(k), info)
    }
    /// The pipelines evaluated on, with their folders (for the report).
    pub fn list(run: &RunDir) -> Vec<(String, ExternalDir)> {
        let Ok(rd) = std::fs::read_dir(run.root.join("external")) else {
            return Vec::new();
        };
        let mut out: Vec<(String, ExternalDir)> = rd
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().to_str()?.to_string();
                e.path()
                    .is_dir()
                    .then(|| (name, run.external(&e.file_name().to_string_lossy())))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The files of one box benchmark (`muxmed localize`): in the run for its own split, in
/// `external/<pipeline>/` for another pipeline's (`localize --on`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalizationFiles {
    root: PathBuf,
    split: Split,
}

impl LocalizationFiles {
    /// Accuracy per T(IoBB), as `<name>.png` and `<name>.svg` in [`Self::dir`].
    pub const CHART: &'static str = "localization_accuracy";
    pub fn json(&self) -> PathBuf {
        self.root.join(format!("localization_{}.json", self.split))
    }
    pub fn csv(&self) -> PathBuf {
        self.root.join(format!("localization_{}.csv", self.split))
    }
    /// The benchmark's figures.
    pub fn dir(&self) -> PathBuf {
        self.root.join(format!("localization_{}", self.split))
    }
    pub fn chart_png(&self) -> PathBuf {
        self.dir().join(format!("{}.png", Self::CHART))
    }
    /// The best and worst cases.
    pub fn gallery(&self) -> PathBuf {
        self.dir().join("localization_gallery.png")
    }
    /// The benchmark, when `muxmed localize` has written it.
    pub fn read(&self) -> Result<Option<Localization>, RunError> {
        let p = self.json();
        if !p.is_file() {
            return Ok(None);
        }
        read_json(&p).map(Some)
    }

    /// Writes `localization_<split>.json` and its long-format `.csv` (source, finding,
    /// metric, threshold, boxes, accuracy).
    pub fn write(&self, l: &Localization) -> Result<(), RunError> {
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        write_json(&self.json(), l)?;
        let mut csv = String::from("source,finding,metric,threshold,boxes,accuracy\n");
        for s in &l.sources {
            let rows = std::iter::once(("all", &s.overall)).chain(
                s.per_finding
                    .iter()
                    .map(|f| (f.finding.as_str(), &f.accuracy)),
            );
            for (finding, a) in rows {
                let mut line = |metric: &str, t: String, v: f64| {
                    csv += &format!(
                        "{},{finding},{metric},{t},{},{v}\n",
                        s.source.as_str(),
                        a.boxes
                    );
                };
                for (t, v) in l.iobb_thresholds.iter().zip(&a.iobb) {
                    line("iobb", t.to_string(), *v);
                }
                for (t, v) in l.iou_thresholds.iter().zip(&a.iou) {
                    line("iou", t.to_string(), *v);
                }
                line("pointing", String::new(), a.pointing);
            }
        }
        let p = self.csv();
        crate::io::write_atomic(&p, csv.as_bytes()).map_err(io(&p))
    }
}

/// Which external evaluation: the checkpoint and TTA of an [`EvalKey`] (its split is the
/// other pipeline's), or every split of the other pipeline with `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalKey {
    pub eval: EvalKey,
    pub all: bool,
}

impl ExternalKey {
    pub fn suffix(&self) -> String {
        let s = self.eval.suffix();
        if self.all {
            let split = self.eval.split.to_string();
            format!("all{}", &s[split.len()..])
        } else {
            s
        }
    }
}

/// A run directory (`reports/<run>/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// A run directory at `root`, existing or to be created.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    /// An existing run directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, RunError> {
        let d = RunDir::new(root);
        if !d.config_file().is_file() {
            return Err(RunError::NotARun(d.root));
        }
        Ok(d)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder's name (the run name).
    pub fn name(&self) -> String {
        self.root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.resolved.yaml")
    }
    pub fn manifest_json(&self) -> PathBuf {
        self.root.join("manifest.json")
    }
    pub fn splits_dir(&self) -> PathBuf {
        self.root.join("splits")
    }
    pub fn split_file(&self, split: Split) -> PathBuf {
        dataset::split_path(&self.splits_dir(), split)
    }
    pub fn info_file(&self) -> PathBuf {
        self.root.join("run.json")
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn metrics_csv(&self) -> PathBuf {
        self.root.join("metrics.csv")
    }
    pub fn events_file(&self) -> PathBuf {
        self.root.join("events.jsonl")
    }
    pub fn log_file(&self) -> PathBuf {
        self.root.join("train.log")
    }
    pub fn checkpoint(&self, c: Checkpoint) -> PathBuf {
        self.root.join(c.file_name())
    }
    pub fn predictions(&self, k: &EvalKey) -> PathBuf {
        self.root.join(format!("predictions_{}.csv", k.suffix()))
    }
    pub fn metrics(&self, k: &EvalKey) -> PathBuf {
        self.root.join(format!("metrics_{}.json", k.suffix()))
    }
    /// Per-label AUROC within subgroups (`eval::subgroups::Subgroups`).
    pub fn subgroups(&self, k: &EvalKey) -> PathBuf {
        self.root.join(format!("subgroups_{}.json", k.suffix()))
    }
    /// The temperatures fitted on val for `k`'s checkpoint and TTA setting
    /// (`eval::calibrate::Temperatures`), whatever split `k` scores.
    pub fn temperatures(&self, k: &EvalKey) -> PathBuf {
        let val = EvalKey {
            split: Split::Val,
            ..*k
        };
        self.root
            .join(format!("temperatures_{}.json", val.suffix()))
    }
    /// Brier, ECE and reliability before and after scaling (`eval::calibrate::Calibration`).
    pub fn calibration(&self, k: &EvalKey) -> PathBuf {
        self.root.join(format!("calibration_{}.json", k.suffix()))
    }
    /// AUROC on Google's adjudicated labels (`eval::adjudicated::Adjudicated`).
    pub fn adjudicated(&self, k: &EvalKey) -> PathBuf {
        self.root
            .join(format!("truth_google2019_{}.json", k.suffix()))
    }
    /// The box benchmark of the run's own `split` (`muxmed localize`).
    pub fn localization_files(&self, split: Split) -> LocalizationFiles {
        LocalizationFiles {
            root: self.root.clone(),
            split,
        }
    }
    /// The report of one evaluation: `report/` for the test split's best checkpoint (the
    /// default), `report_<key>/` for any other (`report_val/`, `report_test_ema_tta/`), so a
    /// report of one evaluation never replaces another's.
    pub fn report_dir(&self, key: &EvalKey) -> PathBuf {
        match key.suffix().as_str() {
            "test" => self.root.join("report"),
            other => self.root.join(format!("report_{other}")),
        }
    }
    /// One external evaluation's folder: `external/<pipeline>/`.
    pub fn external(&self, pipeline: &str) -> ExternalDir {
        ExternalDir {
            root: self.root.join("external").join(pipeline),
        }
    }
    /// Held (with the pid) while a process trains the run.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("run.lock")
    }

    /// Takes the run's lock: a second `train --resume` of the same run is refused.
    pub fn lock(&self) -> Result<crate::io::Lock, crate::io::LockError> {
        crate::io::Lock::acquire(&self.lock_file(), "the run")
    }

    /// The run's resolved config.
    pub fn config(&self) -> Result<PipelineConfig, RunError> {
        Ok(config::load(&self.config_file(), &[])?.config)
    }

    pub fn info(&self) -> Result<RunInfo, RunError> {
        read_json(&self.info_file())
    }
    pub fn write_info(&self, info: &RunInfo) -> Result<(), RunError> {
        write_json(&self.info_file(), info)
    }
    pub fn state(&self) -> Result<State, RunError> {
        read_json(&self.state_file())
    }
    pub fn write_state(&self, state: &State) -> Result<(), RunError> {
        write_json(&self.state_file(), state)
    }

    /// The manifest description the run started with.
    pub fn manifest(&self) -> Result<ManifestInfo, RunError> {
        Ok(ManifestInfo::read(&self.root)?)
    }

    /// One of the run's own splits.
    pub fn split(&self, split: Split) -> Result<SplitData, RunError> {
        let labels = self.manifest()?.labels;
        let p = self.split_file(split);
        if !p.is_file() {
            return Err(RunError::Format {
                path: p,
                message: "the run has no copy of this split (it was made by a muxmed without split copies); train it again".into(),
            });
        }
        Ok(dataset::load_split_file(&p, &labels)?)
    }

    /// Copies the manifest's description and its split files into the run, so the run keeps
    /// its splits whatever happens to the manifest folder later.
    /// Copies the manifest folder's splits into the run, without the images in `drop` (those
    /// `prepare` skipped as unreadable), so training, evaluation, localization and
    /// comparison all work on the images the run could read.
    pub fn keep_splits(
        &self,
        manifest_dir: &Path,
        drop: &std::collections::HashSet<String>,
    ) -> Result<(), RunError> {
        let from = ManifestDir::new(manifest_dir).manifest_json();
        let bytes = std::fs::read(&from).map_err(io(&from))?;
        crate::io::write_atomic(&self.manifest_json(), &bytes)
            .map_err(io(&self.manifest_json()))?;
        for s in Split::ALL {
            let to = self.split_file(s);
            let split = ManifestDir::new(manifest_dir).split(s);
            dataset::copy_split_without(&split, &to, drop)?;
        }
        Ok(())
    }

    /// One line when the manifest folder is not what the run started from (rebuilt with
    /// other settings, or gone); `None` when it is the same.
    pub fn manifest_notice(&self, manifest_dir: &Path) -> Option<String> {
        let recorded = self.info().ok()?.manifest_sha256;
        let manifest = ManifestDir::new(manifest_dir).manifest_json();
        let now = crate::io::sha256_file(&manifest).ok();
        (now.as_deref() != Some(recorded.as_str())).then(|| {
            format!(
                "note: {} has changed since this run started; the run's own splits in {} are used",
                manifest.display(),
                self.splits_dir().display()
            )
        })
    }

    /// Writes `metrics.csv`: one row per epoch, one column per value (empty where undefined).
    pub fn write_metrics_csv(
        &self,
        history: &[EpochRow],
        labels: &[String],
    ) -> Result<(), RunError> {
        let path = self.metrics_csv();
        let bytes = metrics_csv_bytes(history, labels).map_err(|message| RunError::Format {
            path: path.clone(),
            message,
        })?;
        crate::io::write_atomic(&path, &bytes).map_err(io(&path))
    }

    /// Drops the lines of `events.jsonl` after step `last_step` (written after the checkpoint
    /// a run resumes from, e.g. before a SIGKILL), and a torn last line, so a resumed run
    /// does not log the same steps twice.
    pub fn trim_events(&self, last_step: u64) -> Result<(), RunError> {
        let path = self.events_file();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|l| serde_json::from_str::<Event>(l).is_ok_and(|e| e.step <= last_step))
            .map(|l| format!("{l}\n"))
            .collect();
        if kept != text {
            crate::io::write_atomic(&path, kept.as_bytes()).map_err(io(&path))?;
        }
        Ok(())
    }

    /// Appends one line to `events.jsonl`.
    pub fn append_event(&self, e: &Event) -> Result<(), RunError> {
        let path = self.events_file();
        let line = serde_json::to_string(e).map_err(|e| RunError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        writeln!(f, "{line}").map_err(io(&path))
    }
}

fn metrics_csv_bytes(history: &[EpochRow], labels: &[String]) -> Result<Vec<u8>, String> {
    let with_ema = history.iter().any(|h| h.val_mean_auroc_ema.is_some());
    let cell = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let mut header: Vec<String> = ["epoch", "train_loss", "val_loss", "val_mean_auroc"]
        .map(String::from)
        .to_vec();
    if with_ema {
        header.push("val_mean_auroc_ema".into());
    }
    header.extend(labels.iter().map(|l| format!("val_auroc_{l}")));
    header.extend(
        [
            "lr_head",
            "lr_backbone",
            "images_per_s",
            "epoch_time_s",
            "peak_rss_mb",
            "frozen",
        ]
        .map(String::from),
    );
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header).map_err(|e| e.to_string())?;
    for h in history {
        let mut row = vec![
            h.epoch.to_string(),
            h.train_loss.to_string(),
            h.val_loss.to_string(),
            cell(h.val_mean_auroc),
        ];
        if with_ema {
            row.push(cell(h.val_mean_auroc_ema));
        }
        row.extend(h.val_auroc.iter().map(|a| cell(*a)));
        row.extend([
            h.lr_head.to_string(),
            h.lr_backbone.to_string(),
            h.images_per_s.to_string(),
            h.epoch_time_s.to_string(),
            h.peak_rss_mb.to_string(),
            u8::from(h.frozen).to_string(),
        ]);
        w.write_record(&row).map_err(|e| e.to_string())?;
    }
    w.into_inner().map_err(|e| e.to_string())
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, RunError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|e| RunError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| RunError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    crate::io::write_atomic(path, (text + "\n").as_bytes()).map_err(io(path))
}
