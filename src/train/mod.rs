//! Training: schedule, optimiser with saved state, checkpoints, the loop.

#[cfg(feature = "torch")]
pub mod optim;
pub mod schedule;
