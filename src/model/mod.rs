//! The backbone: MUXNet (and its MUXConv layer) from block strings, plus counts and, with
//! libtorch, the tch modules, weights I/O and the DenseNet-121 baseline.

pub mod count;
pub mod spec;

#[cfg(feature = "torch")]
pub mod blocks;
#[cfg(feature = "torch")]
pub mod commands;
#[cfg(feature = "torch")]
pub mod densenet;
#[cfg(feature = "torch")]
pub mod device;
#[cfg(feature = "torch")]
pub mod export;
#[cfg(feature = "torch")]
pub mod folded;
#[cfg(feature = "torch")]
pub mod gradcam;
#[cfg(feature = "torch")]
pub mod inference;
#[cfg(feature = "torch")]
pub mod layers;
#[cfg(feature = "torch")]
pub mod layout;
#[cfg(feature = "torch")]
pub mod muxnet;
#[cfg(feature = "torch")]
pub mod network;
#[cfg(feature = "torch")]
pub mod weights;

pub use spec::ArchSpec;
