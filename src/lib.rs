//! muxmed: fine-tune MUXNet backbones (Lu, Deb, Boddeti, CVPR 2020) on ChestX-Ray14.
//!
//! The modules follow the data's path: `config` → `data` → `model` → `train` → `eval` → `report`.

pub mod config;
pub mod data;
pub mod doctor;
pub mod eval;
pub mod io;
pub mod model;
pub mod progress;
pub mod report;
pub mod train;
