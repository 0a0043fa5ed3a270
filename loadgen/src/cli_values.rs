//! Parsers for loadgen's command-line values: counts (`200k`), durations (`5s`), sizes
//! (`4KiB`), source-address ranges (`127.0.0.2-127.0.0.40`, `127.0.0.0/16`) and transport
//! mixes (`ws=70,sse=25,poll=5`).
//!
//! Every parser is exact (decimal fractions are computed in integers, never in floating
//! point), rejects what it does not understand with a message that quotes the input, and
//! never wraps around on overflow. They fit clap's `value_parser = parse_count` directly.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The most source addresses `parse_ip_range` returns. 65,536 addresses (a /16) give
/// billions of (source address, port) pairs, far beyond what one host can hold open,
/// while keeping the list small (256 KiB). A whole `127.0.0.0/8` is refused: name a
/// slice of it (`127.0.0.0/16`, `127.0.0.2-127.0.0.40`).
pub const MAX_SOURCE_ADDRS: u64 = 1 << 16;

/// A client transport of Switchboard (PROTOCOL.md): `GET /ws`, `GET /sse`, `GET /poll`.
/// Serialised (JSON, map keys too) as `"ws"`, `"sse"`, `"poll"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Ws,
    Sse,
    Poll,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Ws, Transport::Sse, Transport::Poll];

    /// The lowercase name used on the command line and in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = String;

    /// `ws` (or `websocket`), `sse`, `poll` (or `longpoll`, `long-poll`); case-insensitive.
    fn from_str(s: &str) -> Result<Transport, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ws" | "websocket" => Ok(Transport::Ws),
            "sse" => Ok(Transport::Sse),
            "poll" | "longpoll" | "long-poll" => Ok(Transport::Poll),
            _ => Err(format!("unknown transport {s:?}: expected ws, sse or poll")),
        }
    }
}

/// A decimal number split into its digits: `1.25` is `mantissa = 125, frac_digits = 2`.
struct Decimal {
    mantissa: u128,
    frac_digits: u32,
}

/// At most this many digits after the point (keeps `10^frac_digits` and the products in u128).
const MAX_FRAC_DIGITS: u32 = 18;
/// At most this many digits before the point.
const MAX_INT_DIGITS: usize = 20;

fn parse_decimal(num: &str, whole: &str) -> Result<Decimal, String> {
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(format!("{whole:?}: a number is missing"));
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{whole:?}: {num:?} is not a number"));
    }
    if int.len() > MAX_INT_DIGITS || frac.len() > MAX_FRAC_DIGITS as usize {
        return Err(format!("{whole:?}: too many digits"));
    }
    let mut mantissa: u128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa * 10 + u128::from(b - b'0');
    }
    Ok(Decimal {
        mantissa,
        frac_digits: frac.len() as u32,
    })
}

/// `number * multiplier`, which must come out whole.
fn scale(d: &Decimal, multiplier: u128, whole: &str) -> Result<u128, String> {
    let product = d
        .mantissa
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{whole:?} is too large"))?;
    let div = 10u128.pow(d.frac_digits);
    if product % div != 0 {
        return Err(format!("{whole:?} is not a whole number"));
    }
    Ok(product / div)
}

/// Splits `12.5kB` into (`12.5`, `kB`).
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// A count: `200000`, `200_000`, `200k`, `1m`, `1.5k`, `2G`. Suffixes (case-insensitive)
/// are decimal: `k` = 1,000, `m` = 1,000,000 (million, not milli), `g` = 10^9. The result
/// must be a whole number (`1.5k` = 1500; `1.0005k` is refused).
pub fn parse_count(s: &str) -> Result<u64, String> {
    let t: String = s.trim().chars().filter(|&c| c != '_').collect();
    if t.is_empty() {
        return Err("empty count".to_string());
    }
    if t.starts_with('-') {
        return Err(format!("{s:?}: a count cannot be negative"));
    }
    let (num, suffix) = split_number(&t);
    let mult: u128 = match suffix.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown suffix {suffix:?} (a count is a number, optionally followed by k, m or g)"
            ));
        }
    };
    let v = scale(&parse_decimal(num, s)?, mult, s)?;
    u64::try_from(v).map_err(|_| format!("{s:?} is too large"))
}

/// A duration: `30s`, `500ms`, `2m`, `1h`, `1.5s`, `250us`, compound `1m30s`, or a bare
/// number of seconds (`30`, `0.5`). Units: `ns`, `us` (or `µs`), `ms`, `s`, `m` (or `min`),
/// `h`, `d`. Exact to the nanosecond.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".to_string());
    }
    if t.starts_with('-') {
        return Err(format!("{s:?}: a duration cannot be negative"));
    }
    let mut rest = t;
    let mut nanos: u128 = 0;
    let mut parts = 0;
    while !rest.is_empty() {
        let (num, after) = split_number(rest);
        if num.is_empty() {
            return Err(format!("{s:?}: expected a number at {rest:?}"));
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let unit = &after[..unit_end];
        rest = &after[unit_end..];
        let per: u128 = match unit {
            "" if parts == 0 && rest.is_empty() => 1_000_000_000,
            "" => return Err(format!("{s:?}: a unit is missing after {num:?}")),
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" | "sec" => 1_000_000_000,
            "m" | "min" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            _ => {
                return Err(format!(
                    "{s:?}: unknown unit {unit:?} (use ns, us, ms, s, m, h or d)"
                ));
            }
        };
        let part =
            scale(&parse_decimal(num, s)?, per, s).map_err(|e| format!("{e} (of nanoseconds)"))?;
        nanos = nanos
            .checked_add(part)
            .ok_or_else(|| format!("{s:?} is too long"))?;
        parts += 1;
    }
    let n = u64::try_from(nanos).map_err(|_| format!("{s:?} is too long"))?;
    Ok(Duration::from_nanos(n))
}

/// A size in bytes: `64`, `64B`, `4KiB`, `1MiB`, `1GiB` (binary: 1024^n) or `1kB`, `1MB`,
/// `1GB` (decimal: 1000^n). Case-insensitive (`KB` = `kB` = 1000); a bare `k`/`m`/`g` is
/// refused as ambiguous. Fractions must come out whole (`1.5KiB` = 1536).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t: String = s.trim().chars().filter(|&c| c != '_').collect();
    if t.is_empty() {
        return Err("empty size".to_string());
    }
    if t.starts_with('-') {
        return Err(format!("{s:?}: a size cannot be negative"));
    }
    let (num, unit) = split_number(&t);
    let unit_l = unit.trim().to_ascii_lowercase();
    let mult: u128 = match unit_l.as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "k" | "m" | "g" => {
            return Err(format!(
                "{s:?}: ambiguous unit {unit:?}: write {u}B (decimal) or {u}iB (binary)",
                u = unit.to_ascii_uppercase()
            ));
        }
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use B, kB, MB, GB, KiB, MiB or GiB)"
            ));
        }
    };
    let v = scale(&parse_decimal(num, s)?, mult, s)?;
    usize::try_from(v).map_err(|_| format!("{s:?} is too large"))
}

fn parse_v4(s: &str, whole: &str) -> Result<Ipv4Addr, String> {
    s.trim()
        .parse::<Ipv4Addr>()
        .map_err(|_| format!("{whole:?}: {s:?} is not an IPv4 address"))
}

/// Source addresses: a comma-separated list whose items are single addresses
/// (`127.0.0.2`), inclusive ranges (`127.0.0.2-127.0.0.40`) or CIDR blocks
/// (`127.0.0.0/16`). A CIDR block of prefix /30 or shorter yields its usable hosts: the
/// network address (all host bits 0) and the broadcast address (all 1) are left out, as
/// neither can be a source address of a TCP connection in general; a /31 yields both
/// addresses (RFC 3021) and a /32 the one. Order is kept; an address given twice, an
/// empty or reversed range, and more than [`MAX_SOURCE_ADDRS`] addresses in total are
/// errors.
pub fn parse_ip_range(s: &str) -> Result<Vec<Ipv4Addr>, String> {
    if s.trim().is_empty() {
        return Err("empty address list".to_string());
    }
    // First pass: the (first, last) spans and their size, so that a huge block is refused
    // before anything is materialised.
    let mut spans: Vec<(u32, u32)> = Vec::new();
    let mut total: u64 = 0;
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("{s:?}: empty item in the list"));
        }
        let (first, last) = if let Some((a, b)) = item.split_once('-') {
            let (a, b) = (u32::from(parse_v4(a, s)?), u32::from(parse_v4(b, s)?));
            if a > b {
                return Err(format!("{s:?}: range {item:?} ends before it starts"));
            }
            (a, b)
        } else if let Some((a, p)) = item.split_once('/') {
            let base = u32::from(parse_v4(a, s)?);
            let prefix: u32 = p
                .trim()
                .parse()
                .ok()
                .filter(|&p| p <= 32)
                .ok_or_else(|| format!("{s:?}: {p:?} is not a prefix length (0 to 32)"))?;
            let host_bits = 32 - prefix;
            let mask: u32 = if prefix == 0 {
                0
            } else {
                u32::MAX << host_bits
            };
            if base & !mask != 0 {
                return Err(format!(
                    "{s:?}: {item:?} has host bits set (the block starts at {})",
                    Ipv4Addr::from(base & mask)
                ));
            }
            let net = base & mask;
            let bcast = net | !mask;
            if prefix <= 30 {
                (net + 1, bcast - 1)
            } else {
                (net, bcast)
            }
        } else {
            let a = u32::from(parse_v4(item, s)?);
            (a, a)
        };
        total += u64::from(last - first) + 1;
        if total > MAX_SOURCE_ADDRS {
            return Err(format!(
                "{s:?} names more than {MAX_SOURCE_ADDRS} addresses (MAX_SOURCE_ADDRS); a few \
                 dozen are enough for millions of connections: give a smaller block such as \
                 127.0.0.0/24 or a range such as 127.0.0.2-127.0.0.40"
            ));
        }
        spans.push((first, last));
    }
    let mut seen = HashSet::with_capacity(total as usize);
    let mut out = Vec::with_capacity(total as usize);
    for (first, last) in spans {
        for a in first..=last {
            if !seen.insert(a) {
                return Err(format!("{s:?}: {} is given twice", Ipv4Addr::from(a)));
            }
            out.push(Ipv4Addr::from(a));
        }
    }
    Ok(out)
}

/// A transport mix: `ws=70,sse=25,poll=5`. Weights are relative (need not sum to 100);
/// a bare name weighs 1 (`ws` alone is all WebSocket). A transport given twice, a weight
/// that is not a whole number, and a mix whose weights are all zero are errors.
pub fn parse_mix(s: &str) -> Result<Vec<(Transport, u32)>, String> {
    if s.trim().is_empty() {
        return Err("empty transport mix".to_string());
    }
    let mut out: Vec<(Transport, u32)> = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("{s:?}: empty item in the mix"));
        }
        let (name, weight) = match item.split_once('=') {
            Some((n, w)) => {
                let w = w.trim();
                let w: u32 = w
                    .parse()
                    .map_err(|_| format!("{s:?}: weight {w:?} of {n:?} is not a whole number"))?;
                (n, w)
            }
            None => (item, 1),
        };
        let t: Transport = name.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if out.iter().any(|&(o, _)| o == t) {
            return Err(format!("{s:?}: {t} is given twice"));
        }
        out.push((t, weight));
    }
    if out.iter().all(|&(_, w)| w == 0) {
        return Err(format!("{s:?}: every weight is zero"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("200000", 200_000),
            ("200_000", 200_000),
            ("200k", 200_000),
            ("200K", 200_000),
            ("1m", 1_000_000),
            ("1M", 1_000_000),
            ("1.5k", 1_500),
            ("0.5k", 500),
            (".5k", 500),
            ("2g", 2_000_000_000),
            ("  10k ", 10_000),
            ("18446744073709551615", u64::MAX),
        ];
        for &(s, want) in ok {
            assert_eq!(parse_count(s), Ok(want), "{s}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("k", "missing"),
            ("-5", "negative"),
            ("1.0005k", "whole"),
            ("1.5", "whole"),
            ("10x", "unknown suffix"),
            ("10kk", "unknown suffix"),
            ("1.2.3", "not a number"),
            ("18446744073709551616", "too large"),
            ("99999999999999999999g", "too large"),
        ];
        for &(s, frag) in bad {
            let e = parse_count(s).expect_err(s);
            assert!(e.contains(frag), "{s}: {e}");
        }
    }

    #[test]
    fn durations() {
        let ok: &[(&str, Duration)] = &[
            ("30s", Duration::from_secs(30)),
            ("30", Duration::from_secs(30)),
            ("0.5", Duration::from_millis(500)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("2min", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("1.5s", Duration::from_millis(1500)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("1m30s", Duration::from_secs(90)),
            ("1h2m3s4ms", Duration::from_millis(3_723_004)),
            ("0", Duration::ZERO),
        ];
        for &(s, want) in ok {
            assert_eq!(parse_duration(s), Ok(want), "{s}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("s", "expected a number"),
            ("-1s", "negative"),
            ("5x", "unknown unit"),
            ("1m30", "unit is missing"),
            ("1.5ns", "whole"),
            ("1000000d", "too long"),
            ("1..5s", "not a number"),
        ];
        for &(s, frag) in bad {
            let e = parse_duration(s).expect_err(s);
            assert!(e.contains(frag), "{s}: {e}");
        }
    }

    #[test]
    fn sizes() {
        let ok: &[(&str, usize)] = &[
            ("64", 64),
            ("64B", 64),
            ("64b", 64),
            ("4KiB", 4096),
            ("4kib", 4096),
            ("1MiB", 1 << 20),
            ("1GiB", 1 << 30),
            ("1kB", 1000),
            ("1KB", 1000),
            ("2MB", 2_000_000),
            ("1GB", 1_000_000_000),
            ("1.5KiB", 1536),
            ("0.5kB", 500),
            ("1_024", 1024),
        ];
        for &(s, want) in ok {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("4k", "ambiguous"),
            ("4M", "ambiguous"),
            ("4TB", "unknown unit"),
            ("1.3B", "whole"),
            ("-1", "negative"),
            ("KiB", "missing"),
            ("99999999999999999999GiB", "too large"),
        ];
        for &(s, frag) in bad {
            let e = parse_size(s).expect_err(s);
            assert!(e.contains(frag), "{s}: {e}");
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn ip_ranges() {
        assert_eq!(parse_ip_range("127.0.0.1").unwrap(), vec![ip("127.0.0.1")]);
        let r = parse_ip_range("127.0.0.2-127.0.0.40").unwrap();
        assert_eq!(r.len(), 39);
        assert_eq!(r[0], ip("127.0.0.2"));
        assert_eq!(r[38], ip("127.0.0.40"));
        // Ranges may cross an octet.
        let r = parse_ip_range("10.0.0.254-10.0.1.1").unwrap();
        assert_eq!(
            r,
            ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"].map(ip)
        );
        // CIDR: usable hosts only for /30 and shorter.
        let r = parse_ip_range("127.0.0.0/24").unwrap();
        assert_eq!(r.len(), 254);
        assert_eq!(r[0], ip("127.0.0.1"));
        assert_eq!(r[253], ip("127.0.0.254"));
        assert_eq!(
            parse_ip_range("10.0.0.0/30").unwrap(),
            ["10.0.0.1", "10.0.0.2"].map(ip)
        );
        assert_eq!(
            parse_ip_range("10.0.0.4/31").unwrap(),
            ["10.0.0.4", "10.0.0.5"].map(ip)
        );
        assert_eq!(parse_ip_range("10.0.0.9/32").unwrap(), [ip("10.0.0.9")]);
        assert_eq!(parse_ip_range("127.0.0.0/16").unwrap().len(), 65_534);
        // Lists mix the forms and keep their order.
        assert_eq!(
            parse_ip_range("127.0.0.9, 127.0.0.2-127.0.0.3,10.0.0.0/30").unwrap(),
            [
                "127.0.0.9",
                "127.0.0.2",
                "127.0.0.3",
                "10.0.0.1",
                "10.0.0.2"
            ]
            .map(ip)
        );

        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("127.0.0.1,", "empty item"),
            ("127.0.0.256", "not an IPv4"),
            ("localhost", "not an IPv4"),
            ("::1", "not an IPv4"),
            ("127.0.0.9-127.0.0.2", "ends before"),
            ("127.0.0.0/33", "prefix"),
            ("127.0.0.0/x", "prefix"),
            ("127.0.0.1/24", "host bits"),
            ("127.0.0.0/8", "MAX_SOURCE_ADDRS"),
            ("0.0.0.0/0", "MAX_SOURCE_ADDRS"),
            ("10.0.0.0/16,10.1.0.0/29", "MAX_SOURCE_ADDRS"),
            ("127.0.0.2-127.0.0.5,127.0.0.4", "given twice"),
        ];
        for &(s, frag) in bad {
            match parse_ip_range(s) {
                Ok(v) => panic!("{s}: accepted ({} addresses)", v.len()),
                Err(e) => assert!(e.contains(frag), "{s}: {e}"),
            }
        }
        // Exactly at the cap is accepted.
        assert_eq!(
            parse_ip_range("10.0.0.0/16,10.1.0.0/31").map(|v| v.len()),
            Ok(MAX_SOURCE_ADDRS as usize)
        );
    }

    #[test]
    fn mixes() {
        use Transport::*;
        assert_eq!(
            parse_mix("ws=70,sse=25,poll=5").unwrap(),
            vec![(Ws, 70), (Sse, 25), (Poll, 5)]
        );
        assert_eq!(parse_mix("ws").unwrap(), vec![(Ws, 1)]);
        assert_eq!(
            parse_mix(" SSE = 3 , websocket=1, long-poll=0").unwrap(),
            vec![(Sse, 3), (Ws, 1), (Poll, 0)]
        );
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("ws=1,", "empty item"),
            ("tcp=1", "unknown transport"),
            ("ws=x", "not a whole number"),
            ("ws=-1", "not a whole number"),
            ("ws=1,ws=2", "twice"),
            ("ws=0,sse=0", "zero"),
        ];
        for &(s, frag) in bad {
            let e = parse_mix(s).expect_err(s);
            assert!(e.contains(frag), "{s}: {e}");
        }
    }

    #[test]
    fn transport_names() {
        for t in Transport::ALL {
            assert_eq!(t.as_str().parse::<Transport>(), Ok(t));
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.as_str())
            );
        }
    }
}
