//! `muxmed search`: the paper's multi-objective architecture search, on chest X-rays.
//!
//! NSGA-II (Deb et al. 2002) over a categorical genome of the authors' block-string grammar
//! ([`space`]), with three objectives: 1 − val mean AUROC after proxy training, parameters
//! and multiply-adds (counted analytically), and optional budgets as constraints under
//! constrained domination. [`pareto`] holds dominance, sorting, crowding and hypervolume,
//! [`nsga2`] selection, variation and survival, [`engine`] the resumable loop, [`archive`] the
//! search directory, [`select`] the trade-off choice, and (with libtorch) [`proxy`] the
//! training that scores a candidate.

pub mod archive;
pub mod engine;
pub mod figures;
pub mod nsga2;
pub mod outputs;
pub mod pareto;
#[cfg(feature = "torch")]
pub mod proxy;
#[cfg(feature = "torch")]
pub mod run;
pub mod select;
pub mod space;
pub mod surrogate;
