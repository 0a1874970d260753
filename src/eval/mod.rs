//! Evaluation: metrics (AUROC as scikit-learn computes it, AP, bootstrap CIs by patient,
//! thresholds, calibration) and scoring of predictions files.

#[cfg(feature = "torch")]
pub mod inference;
pub mod metrics;
pub mod predictions;
#[cfg(feature = "torch")]
pub mod run_eval;
