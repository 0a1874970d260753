//! `muxmed doctor`: what muxmed runs on, and whether libtorch works.

use std::path::Path;

/// One line of the doctor's report.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub value: String,
}

/// Facts that do not need libtorch.
pub fn static_checks(data_root: &Path, manifests: &Path, reports: &Path) -> Vec<Check> {
    let dir = |p: &Path| {
        format!(
            "{} ({})",
            p.display(),
            if p.is_dir() { "exists" } else { "missing" }
        )
    };
    vec![
        Check {
            name: "muxmed",
            value: env!("CARGO_PKG_VERSION").to_string(),
        },
        Check {
            name: "data root",
            value: dir(data_root),
        },
        Check {
            name: "manifests",
            value: dir(manifests),
        },
        Check {
            name: "reports",
            value: dir(reports),
        },
        Check {
            name: "cpu cores",
            value: std::thread::available_parallelism()
                .map(|n| n.get().to_string())
                .unwrap_or_else(|_| "unknown".into()),
        },
    ]
}

#[cfg(feature = "torch")]
pub mod torch {
    use super::Check;
    use tch::{Cuda, Device, Kind, Tensor};

    /// libtorch facts, and a small tensor operation whose result is checked.
    pub fn checks() -> (Vec<Check>, Result<(), String>) {
        let lib = env!("MUXMED_LIBTORCH_LIB");
        let mut out = vec![
            Check {
                name: "libtorch version",
                value: format!(
                    "{} (compiled against; tch 0.26.0)",
                    env!("MUXMED_LIBTORCH_VERSION")
                ),
            },
            Check {
                name: "libtorch found at",
                value: if lib.is_empty() {
                    "unknown".into()
                } else {
                    lib.into()
                },
            },
            Check {
                name: "torch threads",
                value: format!(
                    "{} intra-op, {} inter-op",
                    tch::get_num_threads(),
                    tch::get_num_interop_threads()
                ),
            },
            Check {
                name: "cuda",
                value: format!(
                    "available: {}, devices: {}",
                    Cuda::is_available(),
                    Cuda::device_count()
                ),
            },
            Check {
                name: "cudnn",
                value: format!("available: {}", Cuda::cudnn_is_available()),
            },
            Check {
                name: "mkl / mkldnn / openmp",
                value: format!(
                    "{} / {} / {}",
                    tch::utils::has_mkl(),
                    tch::utils::has_mkldnn(),
                    tch::utils::has_openmp()
                ),
            },
        ];
        let probe = std::panic::catch_unwind(|| -> Result<(), String> {
            let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
            let b = a.matmul(&a).sum(Kind::Float);
            let v = b.f_double_value(&[]).map_err(|e| e.to_string())?;
            // [[1,2],[3,4]]^2 = [[7,10],[15,22]], sum 54.
            if (v - 54.0).abs() > 1e-6 {
                return Err(format!("2x2 matmul gave sum {v}, expected 54"));
            }
            Ok(())
        })
        .unwrap_or_else(|_| Err("libtorch panicked on a 2x2 matmul".into()));
        out.push(Check {
            name: "tensor op (cpu)",
            value: match &probe {
                Ok(()) => "ok".into(),
                Err(e) => format!("FAILED: {e}"),
            },
        });
        if Cuda::is_available() {
            let r = Tensor::ones([2], (Kind::Float, Device::Cuda(0)))
                .sum(Kind::Float)
                .f_double_value(&[]);
            out.push(Check {
                name: "tensor op (cuda:0)",
                value: match r {
                    Ok(v) if (v - 2.0).abs() < 1e-6 => "ok".into(),
                    Ok(v) => format!("FAILED: got {v}"),
                    Err(e) => format!("FAILED: {e}"),
                },
            });
        }
        (out, probe)
    }
}
