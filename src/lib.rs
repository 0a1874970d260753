//! muxmed: fine-tune MUXNet backbones (Lu, Deb, Boddeti, CVPR 2020) on ChestX-Ray14.
//!
//! The modules follow the data's path: `config` → `data` → `model` → `run` → `train` → `eval` →
//! `report` → `explain` → `compare` → `search`, then `cli` (the command line of both
//! binaries), over a ground of shared helpers (`labels`, `io`, `progress`, `metrics`, `plot`, `process`). Imports
//! only flow that way.

pub mod cli;
pub mod compare;
pub mod config;
pub mod data;
pub mod doctor;
pub mod eval;
#[cfg(feature = "torch")]
pub mod explain;
pub mod io;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod process;
pub mod progress;
pub mod report;
pub mod run;
pub mod search;
pub mod train;
