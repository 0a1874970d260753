//! Evaluation: scoring predictions (AUROC as scikit-learn computes it, AP, bootstrap CIs by
//! patient, thresholds, calibration) from a run or from any model's predictions file. The
//! metric functions themselves are `crate::metrics` (training validates with them too).

pub mod adjudicated;
pub mod calibrate;
#[cfg(feature = "torch")]
pub mod export;
#[cfg(feature = "torch")]
pub mod external;
pub mod job;
pub mod join;
pub mod predictions;
#[cfg(feature = "torch")]
pub mod run_eval;
pub mod scoring;
pub mod shift;
pub mod subgroups;
