//! Client connections without process descriptors: one linked chain creates a socket
//! straight into a chosen fixed-file slot (`IORING_OP_SOCKET`), sets
//! `IP_BIND_ADDRESS_NO_PORT` on it (`IORING_OP_URING_CMD`, `SOCKET_URING_OP_SETSOCKOPT`),
//! binds its source address (`IORING_OP_BIND`), connects (`IORING_OP_CONNECT`) and bounds
//! the connect with a linked timeout (`IORING_OP_LINK_TIMEOUT`). One submission, no
//! syscall per connection beyond the shared `io_uring_enter`, and the source port is
//! chosen at connect time from the whole (source, destination) four-tuple space, so a
//! source address is not limited to one use of each ephemeral port.
//!
//! Every entry of a chain posts exactly one completion (no `CQE_SKIP_SUCCESS`): a failed
//! link fails the rest with `-ECANCELED`, and the linked timeout completes either with
//! `-ETIME` (it fired; the connect completes with `-ECANCELED`) or with `-ECANCELED`
//! (the connect finished first). The caller counts completions against the number
//! [`Ring::connect_direct`] returns and reuses the slot only once all have arrived.

use std::net::SocketAddr;
use std::time::Duration;

use io_uring::{opcode, squeue, types};
use slab::Slab;

use super::ring::Ring;
use super::token::{Kind, Token};

/// Where and how a connect chain connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectSpec {
    /// The source address to bind (port 0: chosen by the kernel), or none.
    pub src: Option<SocketAddr>,
    pub dst: SocketAddr,
    /// Set `IP_BIND_ADDRESS_NO_PORT` before binding `src` (only with a source address):
    /// the port is then picked at connect time, unique per four-tuple rather than per
    /// source address.
    pub bind_no_port: bool,
    /// Bound on the connect itself (a linked timeout); none: the kernel's SYN retries.
    pub timeout: Option<Duration>,
}

/// `IP_BIND_ADDRESS_NO_PORT`'s value. A `static`: the kernel reads it when the command
/// runs, which may be after the submitting call returned.
static ONE: libc::c_int = 1;

/// A socket address in the kernel's layout.
#[derive(Clone, Copy)]
enum RawAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl RawAddr {
    fn new(addr: SocketAddr) -> RawAddr {
        match addr {
            SocketAddr::V4(a) => RawAddr::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => RawAddr::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            }),
        }
    }

    fn domain(&self) -> i32 {
        match self {
            RawAddr::V4(_) => libc::AF_INET,
            RawAddr::V6(_) => libc::AF_INET6,
        }
    }

    /// Pointer and length for an SQE; valid as long as `self` does not move.
    fn as_raw(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self {
            RawAddr::V4(a) => (
                (a as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            RawAddr::V6(a) => (
                (a as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

/// What a chain's entries point at. Boxed, so it stays put while the ring's table of
/// chains grows.
struct ChainArgs {
    src: Option<RawAddr>,
    dst: RawAddr,
    timeout: types::Timespec,
}

/// A connect chain in flight: its arguments, the caller's token, and how many of its
/// completions are still to come.
pub(super) struct InflightChain {
    args: Box<ChainArgs>,
    token: Token,
    remaining: u8,
}

impl Ring {
    /// Submits a connect chain for the fixed-file slot `token.slot`, which must be free
    /// or hold a socket the caller is done with (the new socket replaces it). Returns the
    /// number of completions the chain posts, one per entry, each carrying `token` with
    /// its own kind: [`Kind::Socket`], [`Kind::SockOpt`] (with `bind_no_port` and a
    /// source), [`Kind::Bind`] (with a source), [`Kind::Connect`], [`Kind::ConnectTimeout`]
    /// (with a timeout). The connect succeeded iff its completion's result is 0.
    pub fn connect_direct(&mut self, token: Token, spec: &ConnectSpec) -> u8 {
        let dst = RawAddr::new(spec.dst);
        let args = Box::new(ChainArgs {
            src: spec.src.map(RawAddr::new),
            dst,
            timeout: types::Timespec::from(spec.timeout.unwrap_or_default()),
        });
        let key = self.chains.vacant_key() as u32;
        let ud = |kind: Kind| Token::new(kind, 0, key).encode();
        let slot = token.slot;
        let fixed = types::Fixed(slot);
        let mut entries: Vec<squeue::Entry> = Vec::with_capacity(5);
        // No SOCK_CLOEXEC: a direct descriptor is no process descriptor, and the kernel
        // refuses the flag with a fixed-file slot (EINVAL).
        let dest = types::DestinationSlot::try_from_slot_target(slot)
            .unwrap_or_else(|s| panic!("fixed-file slot {s} out of range"));
        entries.push(
            opcode::Socket::new(dst.domain(), libc::SOCK_STREAM, 0)
                .file_index(Some(dest))
                .build()
                .user_data(ud(Kind::Socket)),
        );
        if let Some(src) = args.src.as_ref() {
            if spec.bind_no_port {
                entries.push(
                    opcode::SetSockOpt::new(
                        fixed,
                        libc::SOL_IP as u32,
                        libc::IP_BIND_ADDRESS_NO_PORT as u32,
                        (&ONE as *const libc::c_int).cast(),
                        size_of::<libc::c_int>() as u32,
                    )
                    .build()
                    .user_data(ud(Kind::SockOpt)),
                );
            }
            let (addr, len) = src.as_raw();
            entries.push(
                opcode::Bind::new(fixed, addr, len)
                    .build()
                    .user_data(ud(Kind::Bind)),
            );
        }
        let (addr, len) = args.dst.as_raw();
        entries.push(
            opcode::Connect::new(fixed, addr, len)
                .build()
                .user_data(ud(Kind::Connect)),
        );
        if spec.timeout.is_some() {
            entries.push(
                opcode::LinkTimeout::new(&args.timeout as *const types::Timespec)
                    .build()
                    .user_data(ud(Kind::ConnectTimeout)),
            );
        }
        let n = entries.len();
        for entry in entries.iter_mut().take(n - 1) {
            *entry = entry.clone().flags(squeue::Flags::IO_LINK);
        }
        let inserted = self.chains.insert(InflightChain {
            args,
            token,
            remaining: n as u8,
        });
        debug_assert_eq!(inserted as u32, key);
        self.push_chain(&entries);
        n as u8
    }

    /// Connect chains whose completions have not all arrived.
    pub fn chains_in_flight(&self) -> usize {
        self.chains.len()
    }

    /// On drop: the chains' arguments are leaked, not freed. The kernel copies addresses
    /// and timespecs when it prepares an entry, so nothing should read them after
    /// submission; but ring teardown runs asynchronously in the kernel, and a few bytes
    /// per unfinished chain at exit are cheaper than relying on that.
    pub(super) fn leak_chains(&mut self) {
        for chain in self.chains.drain() {
            std::mem::forget(chain.args);
        }
    }
}

/// One completion of chain `raw.slot` arrived: the caller's token with the completion's
/// kind; the chain's arguments are freed with its last completion.
pub(super) fn chain_completed(chains: &mut Slab<InflightChain>, raw: Token) -> Option<Token> {
    let key = raw.slot as usize;
    let chain = chains.get_mut(key)?;
    let token = Token {
        kind: raw.kind,
        ..chain.token
    };
    chain.remaining -= 1;
    if chain.remaining == 0 {
        chains.remove(key);
    }
    Some(token)
}
