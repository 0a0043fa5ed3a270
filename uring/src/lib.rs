//! Every `unsafe` of Switchboard's io_uring programs lives here: ring setup and the
//! kernel-feature probe, `user_data` tokens, the provided-buffer ring, the operations
//! the engine's shards and loadgen's threads submit, and the signal mask and `sigwait`.
//! Each unsafe block states which buffer or descriptor outlives which completion; the
//! engine and loadgen use only the safe API below (both forbid `unsafe` themselves).

mod bufring;
mod connect;
pub mod probe;
mod ring;
pub mod signals;
mod token;

pub use bufring::BufRing;
pub use connect::ConnectSpec;
pub use ring::{Completion, Ring, RingParams, TaskRun};
pub use token::{GENERATION_MASK, Kind, Token, next_generation};
