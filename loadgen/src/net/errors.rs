//! Failures by kind, as the report names them (`connect_refused`, `handshake_timeout`,
//! `reset`, ...), mapped from the errno of the operation that failed, and whether a
//! failed attempt is worth retrying.

/// A fixed failure kind. Parameterised ones (`handshake_status_<code>`,
/// `ws_close_<code>`) are counted by name beside these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ErrorKind {
    /// The destination refused the connection (`ECONNREFUSED`: nothing listens, or its
    /// accept queue overflowed with `tcp_abort_on_overflow`).
    ConnectRefused = 1,
    /// The connect did not finish within `--connect-timeout` (SYNs dropped: a full accept
    /// queue) or the kernel gave up (`ETIMEDOUT`).
    ConnectTimeout,
    /// No (source address, port) left for this destination (`EADDRNOTAVAIL`), or the
    /// source address is not local.
    AddrUnavailable,
    /// `EADDRINUSE` from bind or connect.
    AddrInUse,
    /// Creating the socket failed (`EMFILE`/`ENFILE`/`ENOMEM`...).
    SocketFailed,
    /// Setting `IP_BIND_ADDRESS_NO_PORT` failed.
    SockoptFailed,
    /// Any other bind error.
    BindFailed,
    /// Any other connect error (`ENETUNREACH`, ...).
    ConnectFailed,
    /// No complete handshake answer within `--handshake-timeout`.
    HandshakeTimeout,
    /// An answer that is no valid handshake (bad `Sec-WebSocket-Accept`, not an event
    /// stream, malformed head).
    HandshakeInvalid,
    /// The connection was reset (`ECONNRESET`, `EPIPE`).
    Reset,
    /// The server closed the connection (EOF) without a WebSocket close.
    Eof,
    /// The server broke the protocol (a bad frame, an unparsable event stream).
    Protocol,
    /// Any other receive error.
    RecvFailed,
    /// Any other send error.
    SendFailed,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::AddrUnavailable,
        ErrorKind::AddrInUse,
        ErrorKind::SocketFailed,
        ErrorKind::SockoptFailed,
        ErrorKind::BindFailed,
        ErrorKind::ConnectFailed,
        ErrorKind::HandshakeTimeout,
        ErrorKind::HandshakeInvalid,
        ErrorKind::Reset,
        ErrorKind::Eof,
        ErrorKind::Protocol,
        ErrorKind::RecvFailed,
        ErrorKind::SendFailed,
    ];
    pub const COUNT: usize = ErrorKind::ALL.len() + 1;

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::AddrUnavailable => "addr_unavailable",
            ErrorKind::AddrInUse => "addr_in_use",
            ErrorKind::SocketFailed => "socket_failed",
            ErrorKind::SockoptFailed => "sockopt_failed",
            ErrorKind::BindFailed => "bind_failed",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::HandshakeTimeout => "handshake_timeout",
            ErrorKind::HandshakeInvalid => "handshake_invalid",
            ErrorKind::Reset => "reset",
            ErrorKind::Eof => "eof",
            ErrorKind::Protocol => "protocol",
            ErrorKind::RecvFailed => "recv_failed",
            ErrorKind::SendFailed => "send_failed",
        }
    }

    pub fn from_u8(v: u8) -> Option<ErrorKind> {
        ErrorKind::ALL.get(usize::from(v).checked_sub(1)?).copied()
    }

    /// Whether a connection that failed this way before it was established is tried
    /// again (after a backoff): transient conditions yes, a server that answers with a
    /// broken handshake or protocol no.
    pub fn retryable(self) -> bool {
        !matches!(
            self,
            ErrorKind::HandshakeInvalid | ErrorKind::Protocol | ErrorKind::SockoptFailed
        )
    }
}

/// Which operation of a connect chain failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainOp {
    Socket,
    SockOpt,
    Bind,
    Connect,
}

/// The kind of a chain operation's failure with `errno` (positive).
pub fn chain_error(op: ChainOp, errno: i32) -> ErrorKind {
    match (op, errno) {
        (_, libc::EADDRNOTAVAIL) => ErrorKind::AddrUnavailable,
        (_, libc::EADDRINUSE) => ErrorKind::AddrInUse,
        (ChainOp::Socket, _) => ErrorKind::SocketFailed,
        (ChainOp::SockOpt, _) => ErrorKind::SockoptFailed,
        (ChainOp::Bind, _) => ErrorKind::BindFailed,
        (ChainOp::Connect, libc::ECONNREFUSED) => ErrorKind::ConnectRefused,
        (ChainOp::Connect, libc::ETIMEDOUT | libc::ETIME) => ErrorKind::ConnectTimeout,
        (ChainOp::Connect, libc::ECONNRESET) => ErrorKind::Reset,
        (ChainOp::Connect, _) => ErrorKind::ConnectFailed,
    }
}

/// The kind of a receive (`send == false`) or send failure with `errno` (positive).
pub fn io_error(errno: i32, send: bool) -> ErrorKind {
    match errno {
        libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED => ErrorKind::Reset,
        libc::ETIMEDOUT => ErrorKind::Reset,
        _ if send => ErrorKind::SendFailed,
        _ => ErrorKind::RecvFailed,
    }
}

/// Whether a handshake answered with `status` is worth retrying (the server is busy).
pub fn status_retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// Failure counts: the fixed kinds in an array, the parameterised ones by name.
#[derive(Debug, Clone, Default)]
pub struct ErrorCounts {
    fixed: [u64; ErrorKind::COUNT],
    named: std::collections::BTreeMap<String, u64>,
}

impl ErrorCounts {
    pub fn add(&mut self, kind: ErrorKind) {
        self.fixed[kind as usize] += 1;
    }

    /// `handshake_status_<code>`, `ws_close_<code>`, ...
    pub fn add_named(&mut self, name: String) {
        *self.named.entry(name).or_insert(0) += 1;
    }

    pub fn total(&self) -> u64 {
        self.fixed.iter().sum::<u64>() + self.named.values().sum::<u64>()
    }

    pub fn merge(&mut self, other: &ErrorCounts) {
        for (a, b) in self.fixed.iter_mut().zip(other.fixed.iter()) {
            *a += b;
        }
        for (k, v) in &other.named {
            *self.named.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// Every non-zero count by name.
    pub fn by_name(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = ErrorKind::ALL
            .iter()
            .filter(|k| self.fixed[**k as usize] > 0)
            .map(|k| (k.name().to_string(), self.fixed[*k as usize]))
            .collect();
        out.extend(self.named.iter().map(|(k, v)| (k.clone(), *v)));
        out
    }

    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.fixed[kind as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_name_uniquely() {
        let mut names = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_u8(k as u8), Some(k));
            assert!(names.insert(k.name()));
        }
        assert_eq!(ErrorKind::from_u8(0), None);
        assert_eq!(ErrorKind::from_u8(200), None);
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(
            chain_error(ChainOp::Connect, libc::ECONNREFUSED),
            ErrorKind::ConnectRefused
        );
        assert_eq!(
            chain_error(ChainOp::Connect, libc::ETIME),
            ErrorKind::ConnectTimeout
        );
        assert_eq!(
            chain_error(ChainOp::Bind, libc::EADDRNOTAVAIL),
            ErrorKind::AddrUnavailable
        );
        assert_eq!(
            chain_error(ChainOp::Connect, libc::EADDRNOTAVAIL),
            ErrorKind::AddrUnavailable
        );
        assert_eq!(
            chain_error(ChainOp::Socket, libc::EMFILE),
            ErrorKind::SocketFailed
        );
        assert_eq!(
            chain_error(ChainOp::Bind, libc::EACCES),
            ErrorKind::BindFailed
        );
        assert_eq!(
            chain_error(ChainOp::Connect, libc::ENETUNREACH),
            ErrorKind::ConnectFailed
        );
        assert_eq!(io_error(libc::ECONNRESET, false), ErrorKind::Reset);
        assert_eq!(io_error(libc::EPIPE, true), ErrorKind::Reset);
        assert_eq!(io_error(libc::EIO, true), ErrorKind::SendFailed);
        assert_eq!(io_error(libc::EIO, false), ErrorKind::RecvFailed);
        assert!(status_retryable(503) && !status_retryable(404));
        assert!(ErrorKind::Eof.retryable() && !ErrorKind::Protocol.retryable());
    }

    #[test]
    fn counts_merge_and_name() {
        let mut a = ErrorCounts::default();
        a.add(ErrorKind::Reset);
        a.add(ErrorKind::Reset);
        a.add_named("handshake_status_503".into());
        let mut b = ErrorCounts::default();
        b.add(ErrorKind::Eof);
        b.add_named("handshake_status_503".into());
        a.merge(&b);
        assert_eq!(a.total(), 5);
        assert_eq!(
            a.by_name(),
            vec![
                ("reset".to_string(), 2),
                ("eof".to_string(), 1),
                ("handshake_status_503".to_string(), 2)
            ]
        );
    }
}
