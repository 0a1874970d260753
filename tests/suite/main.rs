//! The integration tests, linked into one binary: each test file used to be its own binary of
//! 400-650 MB (polars and libtorch linked into every one), which filled the disk of a clean
//! CI build. `train_e2e` stays a binary of its own: its exact-resume tests need libtorch's
//! process-global random generator to themselves.

mod bench_model;
mod cli_model;
mod cli_output;
mod compare;
mod config_errors;
mod data_pipeline;
mod delong_fixture;
mod dicom;
mod evaluate_predictions;
mod front_end;
mod gradcam;
mod manifest_generic;
mod manifest_real;
mod metrics_fixtures;
mod model_finetune;
mod model_layout;
mod model_parity;
mod model_weights;
mod report_figures;
mod search;
mod synth_data;
#[path = "../common/tolerance.rs"]
#[allow(dead_code)]
mod tolerance;

/// The `muxmed` binary, run from the crate's folder as a user of the README runs it.
pub fn muxmed() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_muxmed"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}
