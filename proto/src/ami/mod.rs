//! The Asterisk Manager Interface (AMI) codec, shared by `ami-sim` (the server side:
//! it reads clients' actions and writes responses and events) and the engine's AMI
//! client (which reads a PBX's event stream). Pure code over bytes, as the rest of
//! this crate. The protocol as Switchboard speaks it is described in the project's
//! AMI notes; everything here is checked against captures of Asterisk 16 and 22
//! (`proto/tests/fixtures/ami/`).
//!
//! - [`parser`]: the streaming, zero-copy reader ([`Parser`] -> [`Item`]s), with the
//!   client role (banner, responses, events, Asterisk 13 `Response: Follows`) and
//!   the server role (Asterisk's own limits and error answers);
//! - [`writer`]: the banner, messages, actions, events and error responses;
//! - [`classes`]: the event/permission classes and the `Privilege:` header;
//! - [`names`]: [`NameSet`], names matched case-insensitively once per message;
//! - [`auth`]: the key of the MD5 challenge login.

pub mod auth;
pub mod classes;
pub mod names;
pub mod parser;
pub mod writer;

pub use auth::md5_key;
pub use classes::{Classes, ClassesError};
pub use names::NameSet;
pub use parser::{
    BANNER_PREFIX, CLIENT_MAX_LINE, CLIENT_MAX_MESSAGE, END_COMMAND, Field, Fields, Item, Message,
    MessageKind, OwnedItem, OwnedMessage, ParseError, Parser, Rejection, RequestError, Role,
    SERVER_MAX_HEADERS, SERVER_MAX_LINE, decode_text, parse_banner,
};
pub use writer::{
    MessageWriter, write_action, write_banner, write_command_follows, write_error, write_login,
    write_login_md5, write_message,
};
