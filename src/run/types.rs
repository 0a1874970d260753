//! What the files of a run directory hold, as typed structs.

use serde::{Deserialize, Serialize};

use super::Checkpoint;
use crate::config::Arch;
use crate::metrics::localization::Accuracy;

/// `run.json`: what a run is, written once when it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub muxmed_version: String,
    pub started: String,
    pub arch: Arch,
    pub labels: Vec<String>,
    pub params: i64,
    /// Multiply-adds per image at the run's resolution (conv + linear, `model::count`).
    pub madds: Option<u64>,
    pub weights: WeightsInfo,
    pub device: String,
    pub torch_threads: i32,
    /// The pipeline file and `--set` overrides the run started from.
    pub pipeline: Option<String>,
    pub overrides: Vec<String>,
    /// The manifest folder and the sha256 of its `manifest.json` when the run started.
    pub manifest_dir: String,
    pub manifest_sha256: String,
    pub train_images: usize,
    pub val_images: usize,
    pub test_images: usize,
    /// Images of the manifest that `prepare` could not read (with `skip_bad_images`), left
    /// out of every split of this run.
    #[serde(default)]
    pub skipped_images: Vec<SkippedImage>,
}

/// An image left out of a run because `prepare` could not decode it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedImage {
    pub image_id: String,
    pub split: String,
    pub error: String,
}

/// Where a run's starting weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsInfo {
    pub from_scratch: bool,
    pub path: Option<String>,
    pub sha256: Option<String>,
    /// Tensors left at a fresh initialisation (the classifier, for a new label set).
    pub replaced: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Finished,
    EarlyStopped,
    Interrupted,
    FailedNonFinite,
}

impl Status {
    /// A finished or early-stopped run has nothing left to train.
    pub fn is_done(self) -> bool {
        matches!(self, Status::Finished | Status::EarlyStopped)
    }
}

/// Early stopping's memory: the score that counts as the level to beat by `min_delta`, and
/// the epochs since it was last beaten.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Patience {
    pub reference: Option<f64>,
    pub stale_epochs: u32,
}

/// Position and bookkeeping, in `state.json` and inside `last.safetensors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    /// Epoch in progress (0-based) and the next batch of it to run.
    pub epoch: u32,
    pub batch_in_epoch: usize,
    pub opt_step: u64,
    /// `best.safetensors`: the epoch (1-based) with the live model's best `train.select_by`
    /// score (highest val mean AUROC or lowest val loss), and that score.
    pub best_score: Option<f64>,
    pub best_epoch: Option<u32>,
    /// `ema_best.safetensors`: the epoch with the EMA model's own best score.
    pub ema_best_score: Option<f64>,
    pub ema_best_epoch: Option<u32>,
    pub patience: Patience,
    /// EMA updates so far (the decay warms up with it).
    pub ema_updates: u64,
    /// Partial sums of the epoch in progress, so a resumed epoch reports the same loss.
    pub epoch_loss_sum: f64,
    pub epoch_batches: usize,
    pub epoch_images: usize,
    pub epoch_seconds: f64,
    pub seed: u64,
    /// One row per finished epoch (the rows of metrics.csv).
    pub history: Vec<EpochRow>,
}

impl State {
    pub fn new(seed: u64) -> Self {
        State {
            status: Status::Running,
            epoch: 0,
            batch_in_epoch: 0,
            opt_step: 0,
            best_score: None,
            best_epoch: None,
            ema_best_score: None,
            ema_best_epoch: None,
            patience: Patience::default(),
            ema_updates: 0,
            epoch_loss_sum: 0.0,
            epoch_batches: 0,
            epoch_images: 0,
            epoch_seconds: 0.0,
            seed,
            history: vec![],
        }
    }

    /// Clears the partial sums when an epoch ends.
    pub fn start_next_epoch(&mut self) {
        self.epoch += 1;
        self.batch_in_epoch = 0;
        self.epoch_loss_sum = 0.0;
        self.epoch_batches = 0;
        self.epoch_images = 0;
        self.epoch_seconds = 0.0;
    }
}

/// One finished epoch. Undefined AUROCs (a label with one class in val) are `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    /// 1-based.
    pub epoch: u32,
    pub train_loss: f64,
    /// The training loss (same `loss`, `pos_weight`, `focal_gamma`) on val, in eval mode.
    pub val_loss: f64,
    pub val_mean_auroc: Option<f64>,
    pub val_mean_auroc_ema: Option<f64>,
    /// The EMA model's val loss (absent without an EMA, and in runs from before it was kept).
    #[serde(default)]
    pub val_loss_ema: Option<f64>,
    /// Per label, in the run's label order.
    pub val_auroc: Vec<Option<f64>>,
    pub lr_head: f64,
    pub lr_backbone: f64,
    pub images_per_s: f64,
    pub epoch_time_s: f64,
    pub peak_rss_mb: f64,
    pub frozen: bool,
}

/// One line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time: String,
    pub epoch: u32,
    pub step: u64,
    pub loss: f64,
    pub mean_loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub frozen: bool,
}

/// A map the box benchmark scores: the model's Grad-CAM or one of two chance baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapSource {
    /// Grad-CAM of the finding's class.
    Model,
    /// A Gaussian centred on the network input (σ = a quarter of its side).
    CentrePrior,
    /// Uniform noise on the feature-map grid, upsampled like Grad-CAM (seeded).
    Random,
}

impl MapSource {
    pub const ALL: [MapSource; 3] = [MapSource::Model, MapSource::CentrePrior, MapSource::Random];
    pub fn as_str(self) -> &'static str {
        match self {
            MapSource::Model => "model",
            MapSource::CentrePrior => "centre_prior",
            MapSource::Random => "random",
        }
    }
}

/// One map source's accuracies, over all boxes and per finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceAccuracy {
    pub source: MapSource,
    pub overall: Accuracy,
    pub per_finding: Vec<FindingAccuracy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingAccuracy {
    pub finding: String,
    #[serde(flatten)]
    pub accuracy: Accuracy,
}

/// `localization_<split>.json`: the ChestX-ray8 box benchmark of one split (`muxmed localize`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Localization {
    pub split: crate::labels::Split,
    /// The pipeline whose data was scored (`localize --on`); None: the run's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
    pub checkpoint: Checkpoint,
    /// The box file and its sha256.
    pub boxes_file: String,
    pub boxes_sha256: String,
    /// Maps are thresholded at this value (of the [0, 1] map) into detections.
    pub map_threshold: f64,
    pub iobb_thresholds: Vec<f64>,
    pub iou_thresholds: Vec<f64>,
    /// Seed of the random baseline.
    pub seed: u64,
    /// Images of the split with boxes, and their boxes.
    pub images: usize,
    pub boxes: usize,
    /// Boxes on images outside the split (ignored).
    pub boxes_outside_split: usize,
    /// Boxes whose finding the model has no class for (ignored).
    pub boxes_without_class: usize,
    pub sources: Vec<SourceAccuracy>,
}

impl Localization {
    pub fn source(&self, s: MapSource) -> Option<&SourceAccuracy> {
        self.sources.iter().find(|a| a.source == s)
    }
}

/// `external/<pipeline>/external_<key>.json`: what an external evaluation scored. The
/// model's labels are concepts; only the concepts both the run and the other pipeline's
/// manifest know are scored, the others are listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalInfo {
    pub muxmed_version: String,
    /// The other pipeline's name (its manifest folder) and the dataset its data came from.
    pub pipeline: String,
    pub dataset: String,
    /// `test`, or `all` (every split of the other pipeline's manifest).
    pub scored_split: String,
    pub images: usize,
    pub patients: usize,
    pub checkpoint: Checkpoint,
    pub tta: bool,
    /// Concepts scored (model order).
    pub scored: Vec<String>,
    /// The run's concepts the other data does not label.
    pub not_in_other: Vec<String>,
    /// The other data's concepts the run has no output for.
    pub not_in_run: Vec<String>,
    /// The other manifest's `manifest.json` sha256 when scored.
    pub manifest_sha256: String,
}
