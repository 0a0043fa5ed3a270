//! WebSocket (RFC 6455): a pure, streaming, zero-copy codec shared by the server
//! (engine), the load generator and test clients. No I/O: the caller moves the bytes.
//!
//! - [`frame`]: opcodes, header parsing/encoding, masking, whole-frame encoders;
//! - [`reader`]: the streaming frame reader ([`Reader`] -> [`Event`]s);
//! - [`close`]: close codes and close payloads;
//! - [`utf8`]: the incremental, fail-fast UTF-8 validator for text messages;
//! - [`handshake`]: the HTTP/1.1 upgrade, server and client side.

pub mod close;
pub mod frame;
pub mod handshake;
pub mod reader;
pub mod utf8;

pub use frame::{
    FrameError, FrameHeader, Opcode, apply_mask, encode_frame, encode_header, parse_header,
};
pub use handshake::{
    HandshakeError, accept_key, check_server_response, client_key, server_handshake,
    write_client_request, write_response,
};
pub use reader::{Event, ReadError, Reader};
pub use utf8::{Utf8Error, Utf8Validator};

/// Which end of the connection we are. It decides masking (§5.1): frames from a client
/// are masked, frames from a server are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// We are the server: incoming frames must be masked, outgoing ones are not.
    Server,
    /// We are the client: incoming frames must not be masked, outgoing ones are.
    Client,
}
