//! loadgen as a library: the binary (`main.rs`) is a thin wrapper over these modules.
//! Every io_uring operation goes through `switchboard-uring`; this crate forbids `unsafe`.
#![forbid(unsafe_code)]

pub mod body;
pub mod cli;
pub mod cli_values;
pub mod measure;
pub mod net;
pub mod publisher;
pub mod report;
pub mod scenarios;
