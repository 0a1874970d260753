//! Everything between the NIH files on disk and a batch of tensors.

pub mod augment;
pub mod boxes;
pub mod cache;
pub mod commands;
pub mod dataset;
pub mod dicom;
pub mod files;
pub mod geometry;
pub mod google2019;
pub mod image;
pub mod loader;
pub mod manifest;
pub mod manifest_dir;
pub mod nih;
pub mod sources;
pub mod split;
pub mod synth;
pub mod synth_formats;
