//! Evaluation: metrics (AUROC as scikit-learn computes it, AP, bootstrap CIs by patient,
//! thresholds, calibration) and scoring of predictions files.

pub mod metrics;
pub mod predictions;
