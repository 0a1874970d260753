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

/// Set (to anything) to keep glibc's malloc defaults ([`tune_malloc`] does nothing).
pub const MALLOC_DEFAULTS_ENV: &str = "MUXMED_MALLOC_DEFAULTS";

/// Makes glibc's malloc keep freed memory for reuse instead of handing it back to the
/// kernel: no `mmap` for large blocks (by default every block above a threshold that starts
/// at 128 KiB and adapts up to 32 MiB gets its own mapping, unmapped on free) and no
/// trimming of the heap's top below 2 GiB. libtorch's CPU allocator is plain malloc, so a
/// training step otherwise maps, page-faults in (zeroing every 4 KiB page) and unmaps its
/// large activations again on every step (MUXNet-m, batch 32, 224²: 5.6M minor page faults
/// in a 20 s benchmark, 0.73M with this; the speed and memory figures are in the README's
/// "Speed"). Process-wide: `muxmed-torch` calls it first thing (`cli::with_torch`), before
/// any tensor exists. Threads other than the main one allocate from arenas of at most
/// 64 MiB, which still map larger blocks; muxmed's training, evaluation and inference
/// allocate their tensors on the main thread. A no-op off glibc, and when the environment
/// sets [`MALLOC_DEFAULTS_ENV`] (to any value): for a machine short of memory, or to measure
/// what the setting is worth.
pub fn tune_malloc() {
    if std::env::var_os(MALLOC_DEFAULTS_ENV).is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads
    // allocate (at the start of main), and glibc's malloc takes its own lock for it anyway.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
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

/// The message of a panic raised by a tch call that libtorch failed in, on one line: the
/// `Torch("...")` text without `unwrap`'s wrapper and without libtorch's C++ stack
/// ("Exception raised from ..."), which tch's Debug output keeps with escaped newlines.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    first_line(text)
}

/// A libtorch error on one line, without its C++ stack.
pub fn torch_error_line(e: &tch::TchError) -> String {
    first_line(&e.to_string())
}

/// The text of a libtorch message up to its first line break (escaped or not), without
/// tch's `Torch("...")` wrapper.
fn first_line(text: &str) -> String {
    let inner = text.find("Torch(\"").map_or(text, |i| &text[i + 7..]);
    let cut = [
        "\\nException raised from",
        "\nException raised from",
        "\\n",
        "\n",
    ]
    .iter()
    .filter_map(|m| inner.find(m))
    .min()
    .unwrap_or(inner.len());
    inner[..cut].trim().trim_end_matches(['"', ')']).to_string()
}

#[cfg(test)]
mod panic_tests {
    #[test]
    fn a_libtorch_panic_is_its_first_line() {
        let text = String::from(
            "called `Result::unwrap()` on an `Err` value: Torch(\"Kernel size can't be greater than actual input size\\nException raised from check_shape_forward at Convolution.cpp:770\\nframe #0: ...\")",
        );
        let payload: Box<dyn std::any::Any + Send> = Box::new(text);
        assert_eq!(
            super::panic_message(payload.as_ref()),
            "Kernel size can't be greater than actual input size"
        );
        let plain: Box<dyn std::any::Any + Send> = Box::new("index out of range");
        assert_eq!(super::panic_message(plain.as_ref()), "index out of range");
    }
}
