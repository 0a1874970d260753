//! TorchScript export: a module traced through libtorch that takes a normalised
//! [N, 3, R, R] float32 tensor and returns logits, and `model.json` beside it with everything
//! needed to feed it (eval stages, label order, thresholds, the source checkpoint's sha256).
//! `torch.jit.load` in Python, TorchServe and Triton's PyTorch backend read the module.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{CModule, Device, Kind, Tensor};

use super::device::torch_error_line;
use super::folded::FoldedNetwork;
use crate::config::augment::Stage;
use crate::config::Arch;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("tracing the model failed: {0}")]
    Trace(String),
}

fn ferr(path: &Path, message: impl ToString) -> ExportError {
    ExportError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The format tag of `model.json`.
pub const EXPORT_FORMAT: &str = "muxmed-torchscript-1";

/// `model.json`: how to feed the exported module and read its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportManifest {
    pub format: String,
    pub arch: Arch,
    /// The input side R: the module takes [N, 3, R, R] float32, NCHW.
    pub resolution: u32,
    /// Every decoded image is first resized (shorter side) and centre-cropped to this square,
    /// then goes through `eval_stages`.
    pub working_size: u32,
    /// Working-size samples are rounded to this type (8 or 16 bits), as the training cache
    /// stored them.
    #[serde(default)]
    pub cache_dtype: crate::config::augment::CacheDtype,
    pub eval_stages: Vec<Stage>,
    /// The same steps as plain numbers when the eval stages are the usual resize, centre
    /// crop, grey to RGB and normalise (what the README's Python lines use).
    pub preprocessing: Option<Preprocessing>,
    /// Output order of the logits; `sigmoid(logits)` are the probabilities.
    pub labels: Vec<String>,
    /// Operating thresholds chosen on the run's validation split, when it has them.
    pub thresholds: Option<Vec<LabelThreshold>>,
    pub thresholds_source: Option<String>,
    /// Per-label temperatures fitted on the run's validation split: the calibrated
    /// probability of label l is `sigmoid(logit_l / T_l)` (a label not listed keeps
    /// `sigmoid(logit_l)`); the thresholds above apply to calibrated probabilities.
    #[serde(default)]
    pub temperatures: Option<std::collections::BTreeMap<String, f64>>,
    #[serde(default)]
    pub temperatures_source: Option<String>,
    pub checkpoint: String,
    pub checkpoint_sha256: String,
    pub muxmed_version: String,
}

/// The eval stages as sizes and normalisation constants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// Resize the shorter side to this (after the working-size square), if any.
    pub resize: Option<u32>,
    pub center_crop: Option<u32>,
    /// The grey image is repeated into 3 channels.
    pub grey_to_rgb: bool,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelThreshold {
    pub label: String,
    /// Youden's J optimum on the validation split.
    pub youden: Option<f64>,
    /// The threshold reaching `sensitivity_target` on the validation split.
    pub at_sensitivity: Option<f64>,
    pub sensitivity_target: f64,
}

impl ExportManifest {
    /// `model.json` beside `model.pt`.
    pub fn path_for(model: &Path) -> PathBuf {
        model.with_extension("json")
    }

    pub fn read(path: &Path) -> Result<Self, ExportError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "no such file".to_string()
            } else {
                e.to_string()
            };
            ferr(
                path,
                format!("cannot read the export's spec ({why}): `muxmed export` writes it beside the module, with the module's stem and .json"),
            )
        })?;
        let m: Self = serde_json::from_str(&text).map_err(|e| {
            ferr(
                path,
                format!("not an export spec written by `muxmed export` ({e})"),
            )
        })?;
        if m.format != EXPORT_FORMAT {
            return Err(ferr(
                path,
                format!("format `{}`, expected `{EXPORT_FORMAT}`", m.format),
            ));
        }
        Ok(m)
    }

    pub fn write(&self, path: &Path) -> Result<(), ExportError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ferr(path, e))?;
        crate::io::write_atomic(path, text.as_bytes()).map_err(|e| ferr(path, e))
    }
}

/// The flat form of `stages` when they are [resize (shorter)], [center_crop], to_rgb and one
/// normalisation, in that order; `None` for anything else.
pub fn flat_preprocessing(stages: &[Stage]) -> Option<Preprocessing> {
    use crate::config::augment::ResizeMode;
    let mut p = Preprocessing {
        resize: None,
        center_crop: None,
        grey_to_rgb: false,
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
    };
    let mut normalised = false;
    for s in stages {
        match s {
            Stage::Resize {
                size,
                mode: ResizeMode::Shorter,
                ..
            } if p.resize.is_none() && p.center_crop.is_none() && !p.grey_to_rgb => {
                p.resize = Some(*size)
            }
            Stage::CenterCrop { size } if p.center_crop.is_none() && !p.grey_to_rgb => {
                p.center_crop = Some(*size)
            }
            Stage::ToRgb if !p.grey_to_rgb => p.grey_to_rgb = true,
            Stage::NormalizeImagenet if p.grey_to_rgb && !normalised => {
                p.mean = crate::config::augment::IMAGENET_MEAN.to_vec();
                p.std = crate::config::augment::IMAGENET_STD.to_vec();
                normalised = true;
            }
            Stage::Normalize { mean, std } if p.grey_to_rgb && !normalised => {
                p.mean = mean.clone();
                p.std = std.clone();
                normalised = true;
            }
            _ => return None,
        }
    }
    (p.grey_to_rgb && normalised).then_some(p)
}

/// Traces the inference model `net` (BatchNorm folded, weights in its memory format; the
/// input's conversion to that format is part of the trace) on a [2, 3, R, R] input and
/// saves the module atomically. The network's reshapes leave the batch axis free, so the
/// module takes any N.
pub fn trace(
    net: &FoldedNetwork,
    device: Device,
    resolution: i64,
    out: &Path,
) -> Result<(), ExportError> {
    let x = Tensor::zeros([2, 3, resolution, resolution], (Kind::Float, device));
    let mut forward = |xs: &[Tensor]| vec![net.forward(&xs[0])];
    let module = CModule::create_by_tracing("MuxmedClassifier", "forward", &[x], &mut forward)
        .map_err(|e| ExportError::Trace(e.to_string()))?;
    let tmp = out.with_extension("pt.tmp");
    let saved = module
        .save(&tmp)
        .map_err(|e| ferr(&tmp, torch_error_line(&e)))
        .and_then(|()| std::fs::rename(&tmp, out).map_err(|e| ferr(out, e)));
    if saved.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    saved
}

/// An exported module loaded for inference.
pub struct Scripted {
    module: CModule,
}

impl Scripted {
    pub fn load(path: &Path, device: Device) -> Result<Self, ExportError> {
        if !path.is_file() {
            return Err(ferr(
                path,
                "no exported module here: `muxmed export --checkpoint RUN/best.safetensors --out FILE.pt` writes one",
            ));
        }
        let mut module = CModule::load_on_device(path, device).map_err(|e| {
            ferr(
                path,
                format!(
                    "not a TorchScript module written by `muxmed export` ({})",
                    torch_error_line(&e)
                ),
            )
        })?;
        module.set_eval();
        Ok(Scripted { module })
    }

    /// Logits for a normalised [N, 3, R, R] batch.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, ExportError> {
        self.module
            .forward_ts(&[x])
            .map_err(|e| ExportError::Trace(e.to_string()))
    }
}
