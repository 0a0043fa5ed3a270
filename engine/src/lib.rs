//! Switchboard, a push engine for the real-time web.
//!
//! One shard per core (or more), each a thread owning an io_uring ring, a listener, a
//! fixed-file table and a provided-buffer ring, holds many WebSocket and SSE
//! connections with a few dozen bytes of state each; a router thread sequences every
//! publish and hands the encoded bytes to the shards that have subscribers.
//!
//! - [`uring`] (the `switchboard-uring` crate): every `unsafe`: rings, tokens, buffer
//!   rings, operations; this crate forbids `unsafe` itself.
//! - [`shard`]: the connection shard: event loop, connections, HTTP, WebSocket, SSE.
//! - [`pubsub`]: the router and the links between it and the shards (and the AMI thread).
//! - [`ami`]: the AMI ingest shard: a session with an Asterisk PBX, its state model,
//!   the `ami.*` topics with snapshots, and the action gateway.
//! - [`config`], [`metrics`], [`server`]: settings, counters, start-up.
//! - [`auth`]: JWT HS256 verification, topic grants, token extraction, origins (pure).
//!
//! The wire codecs are in the `switchboard-proto` crate: pure functions over bytes.
#![forbid(unsafe_code)]

pub mod ami;
pub mod auth;
pub mod config;
pub mod metrics;
pub mod pubsub;
pub mod server;
pub mod shard;
pub use switchboard_uring as uring;
