//! The integration tests, linked into one binary: each test file used to be its own binary of
//! 400-650 MB (polars and libtorch linked into every one), which filled the disk of a clean
//! CI build. `e2e` stays a binary of its own: its exact-resume tests need libtorch's
//! process-global random generator to themselves.

mod adjudicated;
mod bench_model;
#[path = "../common/bin.rs"]
mod bin;
mod calibration;
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
mod manifest_formats;
mod manifest_generic;
mod manifest_real;
mod metrics_fixtures;
mod model_finetune;
mod model_layout;
mod model_parity;
mod model_weights;
mod report_figures;
mod search;
mod subgroups;
mod synth_data;
#[path = "../common/tolerance.rs"]
#[allow(dead_code)]
mod tolerance;

pub use bin::muxmed;
