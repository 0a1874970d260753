//! Evaluation: scoring predictions (AUROC as scikit-learn computes it, AP, bootstrap CIs by
//! patient, thresholds, calibration) from a run or from any model's predictions file.

/// The metric functions live at ground level (training validates with them too).
#[cfg(feature = "torch")]
pub mod export;
pub mod predictions;
#[cfg(feature = "torch")]
pub mod run_eval;
