//! Weights in and out: strict safetensors loading that lists every missing, unexpected or
//! wrong-shape tensor; a backbone-only load that replaces the classifier explicitly; atomic
//! safetensors writing with metadata; and import of the authors' `torch.save` checkpoints.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::{nn, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid safetensors file: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error("{}: does not match the model: {}", path.display(), summarise(.problems))]
    Mismatch {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("{}: tensor `{name}` has dtype {dtype:?}; only F32, F64, F16 and BF16 weights can be loaded", path.display())]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{}: cannot read the checkpoint: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    #[error("{}: cannot write: {message}", path.display())]
    Write { path: PathBuf, message: String },
}

/// How many mismatches there are of each kind, with the first few of each: a wrong
/// architecture would otherwise list hundreds of lines.
fn summarise(problems: &[String]) -> String {
    const PER_KIND: usize = 4;
    let kinds = ["missing", "wrong shape", "unexpected"];
    let of = |kind: &str| -> Vec<&String> {
        problems
            .iter()
            .filter(|p| p.trim_start().starts_with(kind))
            .collect()
    };
    let mut out = format!(
        "{} missing, {} unexpected, {} with the wrong shape (is it the same architecture?)",
        of("missing").len(),
        of("unexpected").len(),
        of("wrong shape").len()
    );
    for kind in kinds {
        let all = of(kind);
        for p in all.iter().take(PER_KIND) {
            out += "\n";
            out += p;
        }
        if all.len() > PER_KIND {
            out += &format!("\n  ... and {} more {kind}", all.len() - PER_KIND);
        }
    }
    out
}

/// Keys PyTorch saves that carry no weights.
fn is_ignorable(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// What a load did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LoadReport {
    pub loaded: usize,
    /// Tensors left at their fresh initialisation, with the file's shape if it had one.
    pub replaced: Vec<String>,
}

/// Loads every variable of `vs` from a safetensors file. Any missing, unexpected or
/// wrong-shape tensor is an error listing all of them.
pub fn load_strict(vs: &nn::VarStore, path: &Path) -> Result<LoadReport, WeightsError> {
    load_with(vs, path, |_| false)
}

/// Loads the backbone and keeps a freshly initialised classifier (keys `classifier.*`), e.g.
/// an ImageNet checkpoint (1000 classes) into a 14-class model. The report says what was
/// replaced. Everything else is as strict as [`load_strict`].
pub fn load_backbone(vs: &nn::VarStore, path: &Path) -> Result<LoadReport, WeightsError> {
    load_with(vs, path, |name| name.starts_with("classifier."))
}

fn load_with(
    vs: &nn::VarStore,
    path: &Path,
    keep_fresh: impl Fn(&str) -> bool,
) -> Result<LoadReport, WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| WeightsError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let file: HashMap<String, TensorView> = st.tensors().into_iter().collect();
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut problems = Vec::new();
    let mut report = LoadReport::default();
    for (name, var) in &vars {
        match file.get(name) {
            None if keep_fresh(name) => report.replaced.push(format!("{name} (not in file)")),
            None => problems.push(format!("  missing: {name} {:?}", var.size())),
            Some(v) => {
                let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
                if shape != var.size() {
                    if keep_fresh(name) {
                        report
                            .replaced
                            .push(format!("{name} (file {shape:?} -> model {:?})", var.size()));
                    } else {
                        problems.push(format!(
                            "  wrong shape: {name}: file {shape:?}, model {:?}",
                            var.size()
                        ));
                    }
                }
            }
        }
    }
    let mut unexpected: Vec<&String> = file
        .keys()
        .filter(|k| !vars.contains_key(*k) && !is_ignorable(k))
        .collect();
    unexpected.sort();
    problems.extend(unexpected.iter().map(|k| format!("  unexpected: {k}")));
    if !problems.is_empty() {
        return Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            problems,
        });
    }
    tch::no_grad(|| -> Result<(), WeightsError> {
        for (name, var) in &vars {
            let Some(v) = file.get(name) else { continue };
            if report
                .replaced
                .iter()
                .any(|r| r.starts_with(&format!("{name} ")))
            {
                continue;
            }
            let t = view_to_tensor(v).map_err(|dtype| WeightsError::Dtype {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype,
            })?;
            let mut var = var.shallow_clone();
            var.copy_(&t.to_kind(var.kind()).to_device(var.device()));
            report.loaded += 1;
        }
        Ok(())
    })?;
    Ok(report)
}

fn view_to_tensor(v: &TensorView) -> Result<Tensor, String> {
    let kind = match v.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        other => return Err(format!("{other:?}")),
    };
    let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::from_data_size(v.data(), &shape, kind))
}

/// Reads every tensor of a safetensors file (e.g. a golden fixture) by name.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>, WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| WeightsError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let t = view_to_tensor(&v).map_err(|dtype| WeightsError::Dtype {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype,
            })?;
            Ok((name, t))
        })
        .collect()
}

/// Writes named tensors as safetensors with string metadata, atomically (temp file + rename).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), WeightsError> {
    let werr = |message: String| WeightsError::Write {
        path: path.to_path_buf(),
        message,
    };
    let mut buffers: Vec<(String, Vec<u8>, Vec<usize>, Dtype)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.detach().to_device(tch::Device::Cpu).contiguous();
        let (dtype, kind) = match t.kind() {
            Kind::Double => (Dtype::F64, Kind::Double),
            Kind::Int64 => (Dtype::I64, Kind::Int64),
            _ => (Dtype::F32, Kind::Float),
        };
        let t = t.to_kind(kind);
        let numel = t.numel();
        let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
        t.copy_data_u8(&mut data, numel);
        let shape = t.size().iter().map(|&d| d as usize).collect();
        buffers.push((name.clone(), data, shape, dtype));
    }
    let views: Vec<(String, TensorView)> = buffers
        .iter()
        .map(|(n, d, s, dt)| {
            TensorView::new(*dt, s.clone(), d)
                .map(|v| (n.clone(), v))
                .map_err(|e| werr(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| werr(e.to_string()))?;
    crate::io::write_atomic(path, &bytes).map_err(|e| werr(e.to_string()))
}

/// Saves every variable of a VarStore (sorted by name) with metadata.
pub fn save_varstore(
    vs: &nn::VarStore,
    path: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<(), WeightsError> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    write_safetensors(path, &vars, metadata)
}

/// The metadata stored in a safetensors file.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>, WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| WeightsError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(meta
        .metadata()
        .clone()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default())
}

pub fn sha256_file(path: &Path) -> Result<String, WeightsError> {
    crate::io::sha256_file(path).map_err(|source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A state dict read from a `torch.save` checkpoint.
pub struct ImportedCheckpoint {
    /// Tensors with any `module.` prefix stripped and `num_batches_tracked` dropped.
    pub tensors: Vec<(String, Tensor)>,
    /// Which entry was used: `state_dict_ema`, `state_dict`, or `(top level)`.
    pub source_key: String,
}

/// Reads a PyTorch checkpoint (zip or pre-1.6 legacy format) without Python: the EMA weights
/// (`state_dict_ema`) when present, as the authors' evaluation uses them, else `state_dict`,
/// else a bare state dict.
pub fn read_torch_checkpoint(path: &Path) -> Result<ImportedCheckpoint, WeightsError> {
    use pytorch_reader::PytorchReader;
    let cerr = |message: String| WeightsError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    if !path.is_file() {
        return Err(WeightsError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let mut found = None;
    for key in ["state_dict_ema", "state_dict"] {
        if let Ok(r) = PytorchReader::with_top_level_key(path, key) {
            if !r.is_empty() {
                found = Some((r, key.to_string()));
                break;
            }
        }
    }
    let (reader, source_key) = match found {
        Some(f) => f,
        None => {
            let r = PytorchReader::new(path).map_err(|e| {
                cerr(format!(
                    "not a PyTorch checkpoint this reader understands ({e}); looked for `state_dict_ema`, `state_dict` and top-level tensors"
                ))
            })?;
            if r.is_empty() {
                return Err(cerr(
                    "no state dict found: neither `state_dict_ema` nor `state_dict` holds tensors, and there are no top-level tensors".to_string(),
                ));
            }
            (r, "(top level)".to_string())
        }
    };
    let mut names = reader.keys();
    names.sort();
    let mut tensors = Vec::new();
    for name in names {
        if is_ignorable(&name) {
            continue;
        }
        let t = reader
            .get(&name)
            .ok_or_else(|| cerr(format!("tensor `{name}` vanished")))?;
        let kind = match t.dtype() {
            pytorch_reader::DType::F32 => Kind::Float,
            pytorch_reader::DType::F64 => Kind::Double,
            pytorch_reader::DType::F16 => Kind::Half,
            pytorch_reader::DType::BF16 => Kind::BFloat16,
            pytorch_reader::DType::I64 => Kind::Int64,
            other => {
                return Err(cerr(format!(
                    "tensor `{name}` has unsupported dtype {other:?}"
                )))
            }
        };
        let data = t
            .read()
            .map_err(|e| cerr(format!("tensor `{name}`: {e}")))?;
        let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::from_data_size(&data, &shape, kind);
        let clean = name.strip_prefix("module.").unwrap_or(&name);
        // torchvision's published DenseNet checkpoints use the older `norm.1` naming.
        let clean =
            super::densenet::remap_torchvision_key(clean).unwrap_or_else(|| clean.to_string());
        tensors.push((clean, tensor));
    }
    Ok(ImportedCheckpoint {
        tensors,
        source_key,
    })
}
