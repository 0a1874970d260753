//! End to end on tiny synthetic datasets, one module per command. One binary of its own:
//! its exact-resume tests need libtorch's process-global random generator to themselves (the
//! training tests take `support::torch_lock`), apart from the `suite` binary's tests.
#![cfg(feature = "torch")]

#[path = "../common/bin.rs"]
mod bin;
#[path = "../common/tolerance.rs"]
#[allow(dead_code)]
mod tolerance;

mod compare;
mod dicom;
mod evaluate;
mod explain;
mod export;
mod external;
mod resume;
mod search;
mod support;
mod train;
