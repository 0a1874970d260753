//! Everything between the NIH files on disk and a batch of tensors.

/// The 14 ChestX-Ray14 findings in the order published models use (CheXNet, Wang et al. 2017).
pub const LABELS: [&str; 14] = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
];

/// The metadata's marker for an image with none of the 14 findings.
pub const NO_FINDING: &str = "No Finding";

pub mod augment;
pub mod cache;
pub mod dataset;
pub mod generic;
pub mod image;
pub mod loader;
pub mod manifest;
pub mod nih;
pub mod synth;
pub mod tools;
