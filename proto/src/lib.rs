//! Switchboard's wire codecs. Everything here is a pure function (or a small state
//! machine) over bytes: no sockets, no clocks, no runtime, no `unsafe`. The engine,
//! loadgen and ami-sim share these, and they are tested byte by byte and in fragments.
#![forbid(unsafe_code)]

pub mod address;
pub mod ami;
pub mod control;
pub mod envelope;
pub mod http1;
pub mod position;
pub mod scan;
pub mod sse;
pub mod swar;
pub mod topic;
pub mod ws;
