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

#[derive(Debug)]
pub struct Missing(Vec<String>);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this kernel's io_uring lacks what switchboard needs: {}",
            self.0.join("; ")
        )
    }
}

impl std::error::Error for Missing {}

/// Checks the kernel release and every required opcode against `ring`.
pub fn check(ring: &Ring) -> Result<(), Missing> {
    let mut missing = Vec::new();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match parse_release(release.trim()) {
        Some(v) if v >= MIN_KERNEL => {}
        Some((major, minor)) => missing.push(format!(
            "Linux {}.{}+ (this is {major}.{minor})",
            MIN_KERNEL.0, MIN_KERNEL.1
        )),
        None => tracing::warn!(
            "cannot read the kernel release ({release:?}); trusting the opcode probe"
        ),
    }
    match ring.probe() {
        Ok(probe) => {
            for &(code, name, since) in REQUIRED_OPS {
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
        Err(Missing(missing))
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
