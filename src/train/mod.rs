//! `muxmed train`: the fine-tuning loop and the run directory it writes.
//!
//! [`train`] orchestrates; each part has its own module: [`session`] (opening a new or
//! resumed run), [`epoch`] (one pass over the train split), [`step`] (the recipe: one
//! optimiser step, shared with `bench model` and the search's proxy), [`validate`], [`best`] (the best
//! checkpoint rule and early stopping), [`ema`], [`loss`], [`optim`], and [`schedule`]; checkpoints
//! are [`crate::run::checkpoint`]'s.

pub mod schedule;

#[cfg(feature = "torch")]
pub mod bench;
#[cfg(feature = "torch")]
pub mod best;
#[cfg(feature = "torch")]
pub mod ema;
#[cfg(feature = "torch")]
pub mod epoch;
#[cfg(feature = "torch")]
pub mod loss;
#[cfg(feature = "torch")]
pub mod optim;
#[cfg(feature = "torch")]
pub mod session;
#[cfg(feature = "torch")]
pub mod step;
#[cfg(feature = "torch")]
pub mod validate;

#[cfg(feature = "torch")]
mod orchestrate;
#[cfg(feature = "torch")]
pub use orchestrate::{train, TrainArgs, TrainError, TrainOutcome};
