//! Training: schedule, optimiser with saved state, checkpoints, the loop.

#[cfg(feature = "torch")]
pub mod optim;
#[cfg(feature = "torch")]
pub mod run;
pub mod schedule;
