//! What the engine needs from the kernel, checked once at start-up so that a missing
//! feature is a clear message rather than a mysterious `EINVAL` on the first connection.

use std::fmt;

use io_uring::opcode;

use super::ring::Ring;

/// Opcodes the connection shards and the router submit, with the kernel that added the
/// form we use.
const REQUIRED_OPS: &[(u8, &str, &str)] = &[
    (
        opcode::AcceptMulti::CODE,
        "ACCEPT (multishot, into the fixed-file table)",
        "5.19",
    ),
    (
        opcode::RecvMulti::CODE,
        "RECV (multishot, provided-buffer ring)",
        "6.0",
    ),
    (opcode::Send::CODE, "SEND", "5.6"),
    (opcode::Shutdown::CODE, "SHUTDOWN", "5.11"),
    (
        opcode::AsyncCancel2::CODE,
        "ASYNC_CANCEL (by fixed file, all)",
        "5.19",
    ),
    (
        opcode::AsyncCancel::CODE,
        "ASYNC_CANCEL (by user_data)",
        "5.5",
    ),
    (opcode::Close::CODE, "CLOSE (fixed file)", "5.15"),
    (opcode::Timeout::CODE, "TIMEOUT", "5.4"),
    (opcode::MsgRingData::CODE, "MSG_RING", "5.18"),
];

/// The oldest kernel whose io_uring has every form of every operation above (multishot
/// recv is a flag, which the opcode probe cannot see).
pub const MIN_KERNEL: (u32, u32) = (6, 0);

/// What loadgen's threads submit: connect chains on direct descriptors, and the same
/// receive path as the shards.
const CLIENT_OPS: &[(u8, &str, &str)] = &[
    (
        opcode::Socket::CODE,
        "SOCKET (into a chosen fixed-file slot)",
        "5.19",
    ),
    (
        opcode::SetSockOpt::CODE,
        "URING_CMD (SOCKET_URING_OP_SETSOCKOPT)",
        "6.7",
    ),
    (opcode::Bind::CODE, "BIND", "6.11"),
    (opcode::Connect::CODE, "CONNECT", "5.5"),
    (opcode::LinkTimeout::CODE, "LINK_TIMEOUT", "5.5"),
    (
        opcode::RecvMulti::CODE,
        "RECV (multishot, provided-buffer ring)",
        "6.0",
    ),
    (opcode::Send::CODE, "SEND", "5.6"),
    (
        opcode::AcceptMulti::CODE,
        "ACCEPT (multishot, into the fixed-file table)",
        "5.19",
    ),
    (
        opcode::AsyncCancel2::CODE,
        "ASYNC_CANCEL (by fixed file, all)",
        "5.19",
    ),
    (
        opcode::AsyncCancel::CODE,
        "ASYNC_CANCEL (by user_data)",
        "5.5",
    ),
    (opcode::Close::CODE, "CLOSE (fixed file)", "5.15"),
    (opcode::Timeout::CODE, "TIMEOUT", "5.4"),
];

/// The oldest kernel with every client operation (`IORING_OP_BIND` came last; the
/// socket commands of `URING_CMD` are a sub-command the opcode probe cannot see).
pub const MIN_CLIENT_KERNEL: (u32, u32) = (6, 11);

#[derive(Debug)]
pub struct Missing {
    program: &'static str,
    what: Vec<String>,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this kernel's io_uring lacks what {} needs: {}",
            self.program,
            self.what.join("; ")
        )
    }
}

impl std::error::Error for Missing {}

/// Checks the kernel release and every opcode the engine's shards need against `ring`.
pub fn check(ring: &Ring) -> Result<(), Missing> {
    check_ops(ring, "switchboard", MIN_KERNEL, REQUIRED_OPS)
}

/// Checks the kernel release and every opcode loadgen's client threads need.
pub fn check_client(ring: &Ring) -> Result<(), Missing> {
    check_ops(ring, "loadgen", MIN_CLIENT_KERNEL, CLIENT_OPS)
}

fn check_ops(
    ring: &Ring,
    program: &'static str,
    min_kernel: (u32, u32),
    ops: &[(u8, &str, &str)],
) -> Result<(), Missing> {
    let mut missing = Vec::new();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match parse_release(release.trim()) {
        Some(v) if v >= min_kernel => {}
        Some((major, minor)) => missing.push(format!(
            "Linux {}.{}+ (this is {major}.{minor})",
            min_kernel.0, min_kernel.1
        )),
        None => tracing::warn!(
            "cannot read the kernel release ({release:?}); trusting the opcode probe"
        ),
    }
    match ring.probe() {
        Ok(probe) => {
            for &(code, name, since) in ops {
                if !probe.is_supported(code) {
                    missing.push(format!("IORING_OP_{name} (Linux {since}+)"));
                }
            }
        }
        Err(e) => missing.push(format!("IORING_REGISTER_PROBE failed ({e}; Linux 5.6+)")),
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Missing {
            program,
            what: missing,
        })
    }
}

/// `"6.18.44-fc"` -> `(6, 18)`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("6.1"), Some((6, 1)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("5.19.0").unwrap() < MIN_KERNEL);
    }
}
