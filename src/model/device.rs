//! Where tensors live: the device a run asks for, loader batches as tensors on it, and named
//! tensors copied into a VarStore.

use std::collections::BTreeMap;

use tch::{nn, Device, Tensor};

use crate::config::{self, DeviceRequest};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("--device {0}: CUDA is not available here (see `muxmed doctor`)")]
    NoCuda(String),
    #[error("{0}")]
    Unknown(String),
    #[error("checkpoint has no tensor `{0}`")]
    MissingTensor(String),
}

/// The device for `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn pick_device(req: &str) -> Result<Device, DeviceError> {
    Ok(
        match config::parse_device(req).map_err(DeviceError::Unknown)? {
            DeviceRequest::Auto => Device::cuda_if_available(),
            DeviceRequest::Cpu => Device::Cpu,
            DeviceRequest::Cuda(i) => {
                if !tch::Cuda::is_available() {
                    return Err(DeviceError::NoCuda(req.to_string()));
                }
                Device::Cuda(i)
            }
        },
    )
}

/// Turns a loader batch (row-major N x C x H x W) into a tensor on `device`.
pub fn batch_tensor(images: &[f32], shape: [usize; 4], device: Device) -> Tensor {
    let s: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Tensor::from_slice(images)
        .view(s.as_slice())
        .to_device(device)
}

/// Copies the tensors named like `vs`'s variables (under `prefix`) into it.
pub fn load_into(
    vs: &nn::VarStore,
    t: &BTreeMap<String, Tensor>,
    prefix: &str,
) -> Result<(), DeviceError> {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let key = format!("{prefix}{name}");
            let src = t.get(&key).ok_or(DeviceError::MissingTensor(key))?;
            var.copy_(&src.to_device(var.device()).to_kind(var.kind()));
        }
        Ok(())
    })
}
