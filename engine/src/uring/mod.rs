//! Every `unsafe` of the engine lives here: ring setup and the kernel-feature probe,
//! `user_data` tokens, the provided-buffer ring, and the operations the shards submit.
//! Each unsafe block states which buffer or descriptor outlives which completion; the
//! rest of the engine uses only the safe API below.
#![allow(unsafe_code)]

mod bufring;
pub mod probe;
mod ring;
mod token;

pub use bufring::BufRing;
pub use ring::{Completion, Ring, RingParams, TaskRun};
pub use token::{GENERATION_MASK, Kind, Token, next_generation};
