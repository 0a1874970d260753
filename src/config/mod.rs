//! The pipeline config: `pipelines/<name>.yaml` parsed into typed structs.
//!
//! Defaults live in one place, the `Default` impls below; every struct denies unknown keys.
//! Loading goes YAML text → `serde_json::Value` (serde-saphyr) → `--set` overrides applied to
//! the value → typed structs (serde_path_to_error, so a failure knows its key path) →
//! semantic validation. Every error names the file, the line where the YAML has one, and the
//! full key path, and suggests the closest valid key for a misspelt one.

pub mod augment;
pub mod check;
pub mod eval;
mod locate;
pub mod search;

use check::{invalid, Invalid};

pub use augment::AugmentConfig;
pub use eval::{EvalConfig, SubgroupConfig};
pub use search::SearchConfig;

pub use locate::KeyLines;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::labels::Dataset;

/// The whole pipeline: where the data is, which model, how to train, what to run on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Name of the pipeline; names the manifest folder and the default run name.
    pub name: String,
    pub data: DataConfig,
    pub augment: AugmentConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub runtime: RuntimeConfig,
    /// `muxmed search`: the architecture search (unused by the other commands).
    pub search: SearchConfig,
    /// What `evaluate --run` reports beyond the per-label metrics (subgroups).
    pub eval: EvalConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Which dataset's files `root` holds: `nih`, `chexpert`, `mimic_cxr`, `padchest`,
    /// `vindr_cxr`, `rsna_pneumonia` or `generic`. Unset: `generic` when `data.generic` is
    /// given, else `nih`.
    pub source: Option<Dataset>,
    /// Folder of the dataset as it ships (NIH: metadata CSV, split lists, image folders).
    pub root: PathBuf,
    /// Metadata CSV; when unset, the standard names are looked for inside `root`.
    pub metadata: Option<PathBuf>,
    pub train_val_list: Option<PathBuf>,
    pub test_list: Option<PathBuf>,
    pub bbox_list: Option<PathBuf>,
    /// Folder scanned for images; defaults to `root`.
    pub images: Option<PathBuf>,
    pub protocol: SplitProtocol,
    /// Used with `protocol: split_file`: a CSV of image id and split name.
    pub split_file: Option<PathBuf>,
    /// Fraction of patients that go to validation: of the train_val list's patients under
    /// `official`; of all patients under `random_patient` and a generic CSV without a split
    /// column.
    pub val_fraction: f64,
    /// Fraction of all patients that go to test under `random_patient` and a generic CSV
    /// without a split column (unset: 0.2, CheXNet's 70/10/20 with val_fraction 0.1).
    /// Refused where the test split is given (`official`, `split_file`, a split column).
    pub test_fraction: Option<f64>,
    pub seed: u64,
    pub allow_missing_images: bool,
    pub filters: FilterConfig,
    /// Your own dataset instead of NIH's files: a CSV of image path, labels, patient id and
    /// optional split. When set, the NIH keys above (except seed, val_fraction and
    /// allow_missing_images) are not used.
    pub generic: Option<GenericDataConfig>,
    /// CheXpert and MIMIC-CXR: what an uncertain (-1) label becomes: `ones`, `zeros` or
    /// `ignore` (missing: out of the loss and the metrics). Unset: `ignore`.
    pub uncertain: Option<UncertainPolicy>,
    /// Per-concept overrides of `uncertain`, e.g. `{Atelectasis: ones, Edema: ones}`.
    pub uncertain_per_label: BTreeMap<String, UncertainPolicy>,
    /// CheXpert and MIMIC-CXR: what a blank label (not mentioned in the report) is:
    /// `negative` or `missing`. Unset: `negative`.
    pub blank: Option<BlankPolicy>,
    /// VinDr-CXR: a finding is positive when `majority` (2 of the 3 readers) or `any`
    /// reader marks it. Unset: `majority`.
    pub readers: Option<ReaderPolicy>,
    /// MIMIC-CXR-JPG: the label file, `chexpert` or `negbio`. Unset: `chexpert`.
    pub labeler: Option<MimicLabeler>,
    /// Several datasets in one manifest (training on a mix): each entry names its source and
    /// root and may set its own protocol and label policies; everything else (seed,
    /// fractions, filters, allow_missing_images) is this section's. When set, `source`,
    /// `root`, `generic` and the label policies above are not used and must stay unset.
    pub sources: Vec<SourceEntry>,
}

/// One dataset of `data.sources`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceEntry {
    pub source: Option<Dataset>,
    pub root: PathBuf,
    /// What its images' `dataset` column and namespaced patient ids say (`nih:123`).
    /// Unset: the source's key. Names are unique; two generic CSVs need one each.
    pub name: Option<String>,
    /// Relative draw weight of each of its images in training: an image of an entry with
    /// weight 2 is drawn twice as often as one with weight 1 (epochs then draw with
    /// replacement, as class-balanced sampling does, and multiply with it). Unset: 1.
    pub weight: Option<f64>,
    /// Unset: the section's `protocol`.
    pub protocol: Option<SplitProtocol>,
    pub metadata: Option<PathBuf>,
    pub generic: Option<GenericDataConfig>,
    pub uncertain: Option<UncertainPolicy>,
    pub uncertain_per_label: BTreeMap<String, UncertainPolicy>,
    pub blank: Option<BlankPolicy>,
    pub readers: Option<ReaderPolicy>,
    pub labeler: Option<MimicLabeler>,
}

impl DataConfig {
    /// The single-source config entry `e` reads with: this section's shared keys, the
    /// entry's own source, root, protocol and policies.
    pub fn for_entry(&self, e: &SourceEntry) -> DataConfig {
        DataConfig {
            source: e.source,
            root: e.root.clone(),
            metadata: e.metadata.clone(),
            train_val_list: None,
            test_list: None,
            bbox_list: None,
            images: None,
            protocol: e.protocol.unwrap_or(self.protocol),
            generic: e.generic.clone(),
            uncertain: e.uncertain,
            uncertain_per_label: e.uncertain_per_label.clone(),
            blank: e.blank,
            readers: e.readers,
            labeler: e.labeler,
            sources: Vec::new(),
            ..self.clone()
        }
    }

    /// Each `data.sources` entry's name with its sampling weight, when any weight is set
    /// (empty otherwise: every image drawn alike).
    pub fn source_weights(&self) -> Vec<(String, f64)> {
        if self.sources.iter().all(|e| e.weight.is_none()) {
            return Vec::new();
        }
        self.sources
            .iter()
            .map(|e| (e.name(), e.weight.unwrap_or(1.0)))
            .collect()
    }
}

impl SourceEntry {
    /// The name its images are tagged with: `name`, else the source's key.
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.source.unwrap_or_default().key().to_string())
    }
}

impl DataConfig {
    /// The dataset `root` holds.
    pub fn dataset(&self) -> Dataset {
        self.source.unwrap_or(if self.generic.is_some() {
            Dataset::Generic
        } else {
            Dataset::Nih
        })
    }

    /// What an uncertain label of `concept` becomes.
    pub fn uncertain_for(&self, concept: &str) -> UncertainPolicy {
        self.uncertain_per_label
            .get(concept)
            .copied()
            .unwrap_or(self.uncertain.unwrap_or(UncertainPolicy::Ignore))
    }
}

/// What an uncertain label becomes (Irvin et al. 2019's U-Ones, U-Zeros, U-Ignore).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UncertainPolicy {
    Ones,
    Zeros,
    Ignore,
}

/// What a blank (unmentioned) label is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlankPolicy {
    Negative,
    Missing,
}

/// How VinDr-CXR's three readers make one label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReaderPolicy {
    Majority,
    Any,
}

/// MIMIC-CXR-JPG's label files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MimicLabeler {
    Chexpert,
    Negbio,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericDataConfig {
    /// CSV with columns `path`, `labels` (`|`-separated; empty for none), `patient_id` and
    /// optionally `split` (train, val or test), `view`, `sex` and `age`, which
    /// `data.filters` reads. Relative paths are relative to the CSV.
    pub csv: PathBuf,
    /// The label names, in the order the model's outputs use.
    pub labels: Vec<String>,
    /// A folder of DICOM files (searched recursively, any file name). The CSV then keys rows
    /// by `sop_instance_uid` or by `path` (relative to this folder), and `patient_id` is
    /// optional: a row without one takes the file's Patient ID (0010,0020).
    #[serde(default)]
    pub dicom_folder: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitProtocol {
    Official,
    RandomPatient,
    SplitFile,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    /// Keep only these view positions (`PA`, `AP`); empty keeps all.
    pub views: Vec<String>,
    pub min_age: Option<u32>,
    pub max_age: Option<u32>,
    pub one_per_patient: bool,
    /// Train on these labels only; empty means all 14.
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// `muxnet_m`, `muxnet_l`, `densenet121`, or a path to an architecture JSON file.
    pub arch: Arch,
    /// Backbone weights in safetensors (from `muxmed model import`).
    pub weights: Option<PathBuf>,
    /// Train without pretrained weights; every report of such a run says so.
    pub from_scratch: bool,
    /// Dropout before the classifier (training only). Unset: 0.2 for MUXNets (the authors'
    /// transfer recipe), none for DenseNet-121 (CheXNet trained without).
    pub drop_rate: Option<f64>,
    /// Stochastic depth: the residual branch of `ir`/`ds` blocks is dropped per sample with
    /// probability `drop_path_rate * block_index / block_count` in training (the authors'
    /// `drop_connect_rate`). Unset: 0.1 for muxnet_m, 0.15 for muxnet_l, as the authors
    /// trained them; 0 for DenseNet-121 and arch JSON files.
    pub drop_path_rate: Option<f64>,
}

impl ModelConfig {
    /// `drop_rate`, or the architecture's default.
    pub fn drop(&self) -> f64 {
        self.drop_rate.unwrap_or(match self.arch {
            Arch::MuxnetM | Arch::MuxnetL | Arch::Json(_) => 0.2,
            Arch::Densenet121 => 0.0,
        })
    }

    /// `drop_path_rate`, or the architecture's default.
    pub fn drop_path(&self) -> f64 {
        self.drop_path_rate.unwrap_or(match self.arch {
            Arch::MuxnetM => 0.1,
            Arch::MuxnetL => 0.15,
            Arch::Densenet121 | Arch::Json(_) => 0.0,
        })
    }
}

/// A network architecture: a built-in name or an architecture JSON file (the authors'
/// block-string grammar). Written in configs as the name or the path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Arch {
    MuxnetM,
    MuxnetL,
    Densenet121,
    Json(PathBuf),
}

impl Arch {
    pub const BUILT_IN: [&'static str; 3] = ["muxnet_m", "muxnet_l", "densenet121"];

    /// A short name for run names and reports: the built-in name or the JSON file's stem.
    pub fn short_name(&self) -> String {
        match self {
            Arch::Json(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "custom".into()),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arch::MuxnetM => f.write_str("muxnet_m"),
            Arch::MuxnetL => f.write_str("muxnet_l"),
            Arch::Densenet121 => f.write_str("densenet121"),
            Arch::Json(p) => write!(f, "{}", p.display()),
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "muxnet_m" => Ok(Arch::MuxnetM),
            "muxnet_l" => Ok(Arch::MuxnetL),
            "densenet121" => Ok(Arch::Densenet121),
            "muxnet_xs" | "muxnet_s" => Err(format!(
                "`{s}`: the authors released no configuration for it; use muxnet_m, muxnet_l or an arch JSON"
            )),
            p if p.ends_with(".json") => Ok(Arch::Json(PathBuf::from(p))),
            other => {
                let cands: Vec<String> = Arch::BUILT_IN.iter().map(|s| s.to_string()).collect();
                let hint = closest(other, &cands)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                Err(format!(
                    "unknown architecture `{other}`{hint}: expected muxnet_m, muxnet_l, densenet121 or a path to an arch .json"
                ))
            }
        }
    }
}

impl TryFrom<String> for Arch {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Arch> for String {
    fn from(a: Arch) -> String {
        a.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Input resolution (square) the network sees.
    pub resolution: u32,
    pub epochs: u32,
    pub batch_size: u32,
    pub optimizer: OptimizerKind,
    /// Learning rate of the classifier head; the backbone's is `lr * backbone_lr_factor`.
    pub lr: f64,
    pub backbone_lr_factor: f64,
    pub weight_decay: f64,
    pub warmup_epochs: f64,
    pub min_lr: f64,
    pub freeze_backbone_epochs: u32,
    /// After the backbone is unfrozen, its learning rate ramps up linearly from 0 over this
    /// many epochs, so large early gradients of a fresh head do not wreck pretrained features.
    pub unfreeze_warmup_epochs: f64,
    /// Clip the global gradient norm at this value; unset disables clipping.
    pub grad_clip_norm: Option<f64>,
    pub seed: u64,
    /// Batches whose gradients are summed before one optimiser step.
    pub accum_steps: u32,
    pub loss: LossKind,
    /// Weight positives by negatives/positives per label, computed on the train split.
    pub pos_weight: bool,
    /// Focusing parameter of the focal loss.
    pub focal_gamma: f64,
    /// Keep an exponential moving average of the weights with this decay (e.g. 0.999);
    /// evaluated and checkpointed separately.
    pub ema_decay: Option<f64>,
    /// The val score that picks `best.safetensors` (and `ema_best`) and that early stopping
    /// watches.
    pub select_by: SelectBy,
    /// Stop when the `select_by` score has not improved by `min_delta` for `patience`
    /// epochs; with `ema_decay` set it watches the EMA model's score, the model meant to be
    /// kept.
    pub early_stopping: Option<EarlyStopping>,
    /// Draw training images (with replacement) by the frequency of their rarest label
    /// instead of a permutation. It shifts the predicted probabilities towards the rare
    /// labels: calibration and operating thresholds must come from validation.
    pub class_balanced: bool,
    /// How class-balanced draws weight an image: 1/√frequency (default) or 1/frequency.
    pub balance_weighting: BalanceWeighting,
    /// With class_balanced, no image is drawn more than this many times per epoch in
    /// expectation (≥ 1); null: no cap.
    pub max_repeat: Option<f64>,
    /// Write a line to events.jsonl every this many optimiser steps.
    pub log_every: u32,
    /// Write last.safetensors every this many optimiser steps within an epoch, so a killed
    /// run loses at most that much work. Unset: every 10 minutes of training.
    pub checkpoint_every_steps: Option<u64>,
}

/// The weight of an image in class-balanced draws, from the train-split frequency f of its
/// rarest positive label (or of "no finding").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BalanceWeighting {
    /// 1/√f: rare labels drawn more often, without letting a handful of images dominate.
    #[default]
    Sqrt,
    /// 1/f: every label (and "no finding") drawn equally often.
    Inverse,
}

/// Which val score chooses the best epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SelectBy {
    /// Highest macro mean AUROC over the labels defined on val.
    #[default]
    ValMeanAuroc,
    /// Lowest val loss (the training loss on val), as CheXNet selected: steadier than a macro
    /// mean that one rare label can swing on a small val split.
    ValLoss,
}

impl SelectBy {
    /// Whether `score` beats `reference` by more than `margin` in this score's direction.
    pub fn beats(self, score: f64, reference: f64, margin: f64) -> bool {
        match self {
            SelectBy::ValMeanAuroc => score > reference + margin,
            SelectBy::ValLoss => score < reference - margin,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    Bce,
    Focal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    pub patience: u32,
    #[serde(default)]
    pub min_delta: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Adamw,
    Sgd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads; 0 uses every core.
    pub torch_threads: u32,
    /// Image decoding/augmentation threads, separate from libtorch's.
    pub data_workers: u32,
    /// Batches the loader prepares ahead of the training loop.
    pub prefetch: u32,
    /// How activations and conv weights are laid out in memory (see [`MemoryFormat`]).
    pub memory_format: MemoryFormat,
}

/// The memory layout of 4-D activations and conv weights. `channels_last` (NHWC strides
/// behind NCHW-shaped tensors) lets libtorch's CPU convolutions (oneDNN) skip the reorders
/// they do around every NCHW conv; `contiguous` is PyTorch's default NCHW.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryFormat {
    #[default]
    ChannelsLast,
    Contiguous,
}

impl std::str::FromStr for MemoryFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "channels_last" => Ok(MemoryFormat::ChannelsLast),
            "contiguous" => Ok(MemoryFormat::Contiguous),
            _ => Err(format!(
                "unknown memory format `{s}`: expected channels_last or contiguous"
            )),
        }
    }
}

impl std::fmt::Display for MemoryFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemoryFormat::ChannelsLast => "channels_last",
            MemoryFormat::Contiguous => "contiguous",
        })
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            name: "chestxray".into(),
            data: DataConfig::default(),
            augment: AugmentConfig::default(),
            model: ModelConfig::default(),
            train: TrainConfig::default(),
            runtime: RuntimeConfig::default(),
            search: SearchConfig::default(),
            eval: EvalConfig::default(),
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            root: PathBuf::from("data/nih"),
            metadata: None,
            train_val_list: None,
            test_list: None,
            bbox_list: None,
            images: None,
            protocol: SplitProtocol::Official,
            split_file: None,
            val_fraction: 0.1,
            test_fraction: None,
            seed: 42,
            allow_missing_images: false,
            filters: FilterConfig::default(),
            generic: None,
            source: None,
            uncertain: None,
            uncertain_per_label: BTreeMap::new(),
            blank: None,
            readers: None,
            labeler: None,
            sources: Vec::new(),
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            arch: Arch::MuxnetM,
            weights: Some(PathBuf::from("weights/muxnet_m_imagenet.safetensors")),
            from_scratch: false,
            drop_rate: None,
            drop_path_rate: None,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            resolution: 224,
            epochs: 10,
            batch_size: 32,
            optimizer: OptimizerKind::Adamw,
            lr: 1e-3,
            backbone_lr_factor: 0.1,
            // AdamW's decay is decoupled (w -= lr * wd * w per step), so 1e-4 shrinks weights
            // by a negligible 1e-7 per step at lr 1e-3. 0.05 is the AdamW value of the DeiT
            // and ConvNeXt recipes (timm's train.py defaults to 2e-5, which is next to no
            // regularisation here). Over 10 epochs of NIH at batch 32 (~27k steps) a head
            // weight with no gradient keeps at least e^(−27k·1e-3·0.05) ≈ 26% of itself (about
            // half under the cosine schedule's mean lr), a backbone weight at lr × 0.1 at
            // least 87%: a real pull towards zero that does not erase the pretrained weights.
            weight_decay: 0.05,
            warmup_epochs: 1.0,
            min_lr: 1e-6,
            freeze_backbone_epochs: 0,
            unfreeze_warmup_epochs: 1.0,
            grad_clip_norm: Some(5.0),
            seed: 0,
            accum_steps: 1,
            loss: LossKind::Bce,
            pos_weight: false,
            focal_gamma: 2.0,
            ema_decay: None,
            select_by: SelectBy::ValMeanAuroc,
            early_stopping: None,
            class_balanced: false,
            balance_weighting: BalanceWeighting::Sqrt,
            max_repeat: None,
            log_every: 20,
            checkpoint_every_steps: None,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            device: "auto".into(),
            torch_threads: 0,
            data_workers: 2,
            prefetch: 4,
            memory_format: MemoryFormat::default(),
        }
    }
}

/// Where a config value came from, for error messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// A line of the pipeline file (None when the key is not written in the file).
    File { path: PathBuf, line: Option<usize> },
    /// A `--set key=value` argument.
    Override(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File {
                path,
                line: Some(l),
            } => write!(f, "{}, line {l}", path.display()),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::Override(arg) => write!(f, "--set {arg}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("pipeline `{name}` not found (looked for {tried}); available pipelines: {available}")]
    NotFound {
        name: String,
        tried: String,
        available: String,
    },
    #[error("{}: cannot read pipeline file: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: invalid YAML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{origin}: key `{key}`: {message}{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    Invalid {
        origin: Origin,
        key: String,
        message: String,
        suggestion: Option<String>,
    },
    #[error("--set {arg}: {message}")]
    BadOverride { arg: String, message: String },
}

impl ConfigError {
    /// The full key path the error is about, when it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A loaded pipeline: the typed config plus where it came from.
#[derive(Debug, Clone)]
pub struct LoadedPipeline {
    pub config: PipelineConfig,
    pub source: PathBuf,
    pub overrides: Vec<String>,
}

/// Resolves `--pipeline NAME`: a bare name (no folder, no extension) is
/// `<pipelines_dir>/NAME.yaml` when that exists, so a folder `./NAME` beside it does not
/// shadow it; otherwise an existing file path is taken as is, then `<pipelines_dir>/NAME.yaml`.
pub fn resolve_pipeline_path(name: &str, pipelines_dir: &Path) -> Result<PathBuf, ConfigError> {
    let as_path = PathBuf::from(name);
    let candidate = pipelines_dir.join(format!("{name}.yaml"));
    let bare = !name.contains(['/', '\\']) && as_path.extension().is_none();
    if bare && candidate.is_file() {
        return Ok(candidate);
    }
    if as_path.is_file() {
        return Ok(as_path);
    }
    if candidate.is_file() {
        return Ok(candidate);
    }
    if as_path.is_dir() {
        return Err(ConfigError::Io {
            path: as_path,
            source: std::io::Error::other(format!(
                "is a folder, not a pipeline YAML file, and {} does not exist",
                candidate.display()
            )),
        });
    }
    let mut available: Vec<String> = std::fs::read_dir(pipelines_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let p = e.path();
                    if p.extension()? != "yaml" {
                        return None;
                    }
                    Some(p.file_stem()?.to_string_lossy().into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    available.sort();
    Err(ConfigError::NotFound {
        name: name.into(),
        tried: format!("{} and {}", as_path.display(), candidate.display()),
        available: if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        },
    })
}

/// Loads a pipeline file and applies `--set key=value` overrides.
pub fn load(path: &Path, overrides: &[String]) -> Result<LoadedPipeline, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let config = parse(&text, path, overrides)?;
    Ok(LoadedPipeline {
        config,
        source: path.to_path_buf(),
        overrides: overrides.to_vec(),
    })
}

/// Parses pipeline YAML text; `path` is only used in messages.
pub fn parse(text: &str, path: &Path, overrides: &[String]) -> Result<PipelineConfig, ConfigError> {
    let only_comments = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if only_comments {
        return Err(ConfigError::Syntax {
            path: path.to_path_buf(),
            message: "the file is empty: a pipeline needs at least `name:` (see pipelines/chestxray.yaml for every key)".into(),
        });
    }
    // YAML indents with spaces only; the parser reports a tab at the line before it.
    if let Some(n) = text.lines().position(|l| {
        l.chars()
            .take_while(|c| c.is_whitespace())
            .any(|c| c == '\t')
    }) {
        return Err(ConfigError::Syntax {
            path: path.to_path_buf(),
            message: format!(
                "line {}: a tab in the indentation (YAML indents with spaces only)",
                n + 1
            ),
        });
    }
    let mut value: Value = {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
    };
    if value.is_null() {
        value = Value::Object(Default::default());
    }
    let lines = KeyLines::scan(text);
    let mut set_keys: Vec<(String, String)> = Vec::new();
    for arg in overrides {
        let key = apply_override(&mut value, arg)?;
        set_keys.push((key, arg.clone()));
    }
    let origin_of = |key: &str| -> Origin {
        // The latest override of this key or of a parent of it wins.
        for (k, arg) in set_keys.iter().rev() {
            if key == k || key.starts_with(&format!("{k}.")) || key.starts_with(&format!("{k}[")) {
                return Origin::Override(arg.clone());
            }
        }
        Origin::File {
            path: path.to_path_buf(),
            line: lines.line_of(key),
        }
    };

    let config: PipelineConfig = serde_path_to_error::deserialize(value).map_err(|err| {
        let parent = err.path().to_string();
        let parent = if parent == "." { String::new() } else { parent };
        let message = err.inner().to_string();
        let (key, suggestion) = match parse_unknown_field(&message) {
            Some((field, expected)) => {
                // serde_path_to_error's path may or may not already end at the unknown key.
                let key = if parent.ends_with(&field) {
                    parent.clone()
                } else {
                    join_key(&parent, &field)
                };
                (key, closest(&field, &expected))
            }
            None => (parent, None),
        };
        ConfigError::Invalid {
            origin: origin_of(&key),
            key,
            message,
            suggestion,
        }
    })?;
    config.validate().map_err(|(key, message)| {
        let origin = origin_of(&key);
        // A rule across keys can fail because of an override of another key: name them.
        let message = match (&origin, set_keys.is_empty()) {
            (Origin::File { .. }, false) => format!(
                "{message} (with {})",
                set_keys
                    .iter()
                    .map(|(_, a)| format!("--set {a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => message,
        };
        ConfigError::Invalid {
            origin,
            key,
            message,
            suggestion: None,
        }
    })?;
    Ok(config)
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Reads serde's "unknown field `x`, expected one of `a`, `b`" message.
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), expected))
}

/// The closest candidate by edit distance, when it is close enough to be a likely typo.
pub fn closest(word: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

/// Applies one `a.b.c=value` override; the value is read as a YAML scalar or flow collection,
/// so `3e-4` is a number, `true` a bool and `[PA, AP]` a list. Returns the key.
fn apply_override(root: &mut Value, arg: &str) -> Result<String, ConfigError> {
    let bad = |message: &str| ConfigError::BadOverride {
        arg: arg.to_string(),
        message: message.to_string(),
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=VALUE, for example --set train.lr=3e-4"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(bad("the key must be a dotted path such as data.root"));
    }
    let parsed: Value = if raw.trim().is_empty() {
        Value::Null
    } else {
        serde_saphyr::from_str(raw).map_err(|e| bad(&format!("cannot read the value: {e}")))?
    };
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let obj = match node {
            Value::Object(m) => m,
            Value::Null => {
                *node = Value::Object(Default::default());
                match node {
                    Value::Object(m) => m,
                    _ => unreachable!("just set to an object"),
                }
            }
            _ => {
                return Err(bad(&format!(
                    "`{}` is not a section, so it has no key `{part}`",
                    parts[..i].join(".")
                )))
            }
        };
        if i + 1 == parts.len() {
            obj.insert(part.to_string(), parsed);
            return Ok(key.to_string());
        }
        node = obj
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    unreachable!("a non-empty key has a last part")
}

impl PipelineConfig {
    /// Checks values serde cannot: ranges and cross-key rules. Errors carry the key path.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.search.check()?;
        self.eval.check()?;
        if self.name.trim().is_empty()
            || self.name.contains(['/', '\\'])
            || self.name.starts_with('.')
        {
            return invalid(
                "name",
                format!("`{}` is not usable as a folder name", self.name),
            );
        }
        self.data.check()?;
        self.model.check()?;
        self.train.check()?;
        self.augment.check(self.train.resolution)?;
        self.runtime.check()
    }

    /// The config as YAML, for a run directory's `config.resolved.yaml`.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_else(|e| format!("# could not serialise: {e}\n"))
    }
}

/// A device request: `auto`, `cpu`, `cuda`, `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda(usize),
}

pub fn parse_device(s: &str) -> Result<DeviceRequest, String> {
    match s {
        "auto" => Ok(DeviceRequest::Auto),
        "cpu" => Ok(DeviceRequest::Cpu),
        "cuda" => Ok(DeviceRequest::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceRequest::Cuda)
            .ok_or_else(|| format!("unknown device `{s}`: expected auto, cpu, cuda or cuda:N")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_key_suggestion() {
        let c: Vec<String> = ["lr", "epochs", "batch_size"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(closest("batchsize", &c).as_deref(), Some("batch_size"));
        assert_eq!(closest("epoch", &c).as_deref(), Some("epochs"));
        assert_eq!(closest("completely_else", &c), None);
    }

    #[test]
    fn override_creates_and_replaces() {
        let mut v: Value = serde_json::json!({"train": {"lr": 0.1}});
        apply_override(&mut v, "train.lr=3e-4").unwrap();
        apply_override(&mut v, "data.filters.views=[PA, AP]").unwrap();
        assert_eq!(v["train"]["lr"], serde_json::json!(3e-4));
        assert_eq!(
            v["data"]["filters"]["views"],
            serde_json::json!(["PA", "AP"])
        );
        assert!(apply_override(&mut v, "train.lr").is_err());
        assert!(apply_override(&mut v, "train.lr.x=1").is_err());
    }

    #[test]
    fn devices() {
        assert_eq!(parse_device("cuda:1"), Ok(DeviceRequest::Cuda(1)));
        assert!(parse_device("gpu").is_err());
    }
}
