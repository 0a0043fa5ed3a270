//! Where connections go and where they come from: URL templates (`ws://HOST:PORT/path
//! ?topic={topic}`, `http://...` for SSE and publishing) parsed into an address, a
//! `Host` header and a path template; and the source addresses connections are bound to,
//! spread over `127.0.0.0/8` so that (source address, source port, destination) never
//! runs out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use crate::cli_values::Transport;

/// The placeholder of a URL template.
pub const TOPIC_PLACEHOLDER: &str = "{topic}";

/// Connections per source address when loadgen picks the addresses itself. One address
/// could reach ~28,000 ports per destination (`ip_local_port_range` 32768-60999), but
/// the kernel picks the port of an `IP_BIND_ADDRESS_NO_PORT` connect by a linear probe
/// from an offset hashed on (source, destination): every connect from one address to one
/// server port walks past the ports already used (`__inet_hash_connect` and
/// `__inet_check_established` were 93% of all CPU at 120k connections with 20,000 per
/// address, and the ramp fell to ~2,500 connects/s). 500 per address keeps the walk
/// short; `127.0.0.0/8` has addresses to spare (2,000 for a million connections).
pub const CONNS_PER_SOURCE: u64 = 500;

/// One endpoint: a resolved address, the `Host` header to send, and the request target
/// (path and query) with `{topic}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub transport: Transport,
    pub addr: SocketAddr,
    pub host: String,
    pub target_template: String,
    /// The template as given (for the report).
    pub url: String,
}

impl Endpoint {
    /// The request target for `topic`.
    pub fn target(&self, topic: &str) -> String {
        expand(&self.target_template, topic)
    }
}

/// Replaces every `{topic}` of `template` with `topic` (which must be URL-safe: loadgen's
/// topic names are letters, digits, `-` and `.`).
pub fn expand(template: &str, topic: &str) -> String {
    template.replace(TOPIC_PLACEHOLDER, topic)
}

/// What a URL is used for: a subscription (the scheme picks the transport: `ws://` is a
/// WebSocket, `http://` an event stream) or the publish API (`http://` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Subscribe,
    Publish,
}

/// Parses `scheme://host[:port][/path][?query]`. TLS schemes are refused (loadgen speaks
/// plain TCP on loopback); the host is resolved now (the first address).
pub fn parse_url(url: &str, usage: Use) -> Result<Endpoint, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!("{url:?}: not a URL (expected ws://HOST:PORT/... or http://HOST:PORT/...)")
    })?;
    let transport = match (scheme.to_ascii_lowercase().as_str(), usage) {
        ("ws", Use::Subscribe) => Transport::Ws,
        ("http", _) => Transport::Sse,
        ("wss" | "https", _) => {
            return Err(format!(
                "{url:?}: TLS is not supported (use ws:// or http://)"
            ));
        }
        ("ws", Use::Publish) => {
            return Err(format!("{url:?}: the publish URL must be http://"));
        }
        _ => return Err(format!("{url:?}: unknown scheme {scheme:?}")),
    };
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?}: expected HOST:PORT after the scheme"));
    }
    let default_port = if transport == Transport::Ws || scheme.eq_ignore_ascii_case("http") {
        80
    } else {
        443
    };
    let (host, port) = split_host_port(authority, default_port)
        .ok_or_else(|| format!("{url:?}: bad HOST:PORT {authority:?}"))?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("{url:?}: cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url:?}: {host:?} resolves to no address"))?;
    if target
        .chars()
        .any(|c| c.is_ascii_whitespace() || c.is_control())
    {
        return Err(format!(
            "{url:?}: the path may not contain spaces or control characters"
        ));
    }
    Ok(Endpoint {
        transport,
        addr,
        host: authority.to_string(),
        target_template: target,
        url: url.to_string(),
    })
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host.to_string(), port.parse().ok()?)),
        Some(_) => None,
        None => Some((authority.to_string(), default_port)),
    }
}

/// Switchboard's endpoints (PROTOCOL.md) behind `--target http://HOST:PORT`: `/ws` and
/// `/sse` with the topic in the query, `/publish/<topic>`.
/// Switchboard's URL templates, from its `--target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    pub ws: String,
    pub sse: String,
    pub poll: String,
    pub publish: String,
}

pub fn switchboard_templates(target: &str) -> Result<Templates, String> {
    let base = target.trim_end_matches('/');
    let Some(authority) = base.strip_prefix("http://") else {
        return Err(format!(
            "--target {target:?}: expected http://HOST:PORT (Switchboard's address)"
        ));
    };
    if authority.contains('/') {
        return Err(format!(
            "--target {target:?}: give only http://HOST:PORT; for other paths use --subscribe-url/--publish-url"
        ));
    }
    Ok(Templates {
        ws: format!("ws://{authority}/ws?topic={TOPIC_PLACEHOLDER}"),
        sse: format!("http://{authority}/sse?topic={TOPIC_PLACEHOLDER}"),
        poll: format!("http://{authority}/poll?topic={TOPIC_PLACEHOLDER}"),
        publish: format!("http://{authority}/publish/{TOPIC_PLACEHOLDER}"),
    })
}

/// The default source addresses for `connections` connections to `dst`: none when `dst`
/// is not on loopback (binding a 127.x address would make it unreachable), else
/// 127.0.1.1 upwards, one address per [`CONNS_PER_SOURCE`] connections (at least one).
pub fn default_sources(connections: u64, dst: SocketAddr) -> Vec<Ipv4Addr> {
    if !is_loopback_v4(dst) {
        return Vec::new();
    }
    let n = connections.div_ceil(CONNS_PER_SOURCE).max(1);
    spread(n)
}

/// `n` addresses from 127.0.1.1 upwards, skipping host parts 0 and 255.
pub fn spread(n: u64) -> Vec<Ipv4Addr> {
    let mut out = Vec::with_capacity(n as usize);
    let mut a = u32::from(Ipv4Addr::new(127, 0, 1, 1));
    while (out.len() as u64) < n {
        let last = (a & 0xff) as u8;
        if last != 0 && last != 255 {
            out.push(Ipv4Addr::from(a));
        }
        a += 1;
        if a > u32::from(Ipv4Addr::new(127, 255, 255, 254)) {
            break;
        }
    }
    out
}

pub fn is_loopback_v4(addr: SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V4(ip) if ip.is_loopback())
}

/// The source address of connection `id`: connections take the addresses in turn, so
/// each address carries `connections / sources.len()` of them (± 1).
pub fn source_for(id: u32, sources: &[Ipv4Addr]) -> Option<SocketAddr> {
    if sources.is_empty() {
        return None;
    }
    let ip = sources[id as usize % sources.len()];
    Some(SocketAddr::new(IpAddr::V4(ip), 0))
}

/// Ephemeral ports one source address can use towards one destination.
pub fn local_port_count() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            let (lo, hi) = (it.next()??, it.next()??);
            (hi >= lo).then_some(hi - lo + 1)
        })
        .unwrap_or(28_232)
}

/// Checks that `sources` can carry `connections` to one destination: at most the port
/// range per address.
pub fn check_sources(connections: u64, sources: &[Ipv4Addr]) -> Result<(), String> {
    if sources.is_empty() {
        return Ok(());
    }
    let per = connections.div_ceil(sources.len() as u64);
    let ports = local_port_count();
    if per > ports {
        return Err(format!(
            "{connections} connections over {} source addresses is {per} per address, more than \
             the {ports} ephemeral ports of net.ipv4.ip_local_port_range: give more addresses \
             (--source-ips 127.0.1.1-{})",
            sources.len(),
            spread(connections.div_ceil(CONNS_PER_SOURCE))
                .last()
                .copied()
                .unwrap_or(Ipv4Addr::new(127, 0, 1, 1))
        ));
    }
    Ok(())
}

/// The transport of connection `id` under a mix of weights: a deterministic weighted
/// round robin, so that any `total_weight` consecutive ids hold each transport exactly
/// `weight` times.
pub fn transport_for(id: u32, mix: &[(Transport, u32)]) -> Transport {
    let total: u32 = mix.iter().map(|&(_, w)| w).sum();
    if total == 0 {
        return mix.first().map_or(Transport::Ws, |&(t, _)| t);
    }
    let mut r = id % total;
    for &(t, w) in mix {
        if r < w {
            return t;
        }
        r -= w;
    }
    unreachable!("r < total")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_templates() {
        let e = parse_url("ws://127.0.0.1:18081/sub/{topic}", Use::Subscribe).unwrap();
        assert_eq!(e.transport, Transport::Ws);
        assert_eq!(e.addr, "127.0.0.1:18081".parse().unwrap());
        assert_eq!(e.host, "127.0.0.1:18081");
        assert_eq!(e.target("lg.x.3"), "/sub/lg.x.3");

        let e = parse_url(
            "http://127.0.0.1:8080/sse?topic={topic}&topic=b",
            Use::Subscribe,
        )
        .unwrap();
        assert_eq!(e.transport, Transport::Sse);
        assert_eq!(e.target("a"), "/sse?topic=a&topic=b");

        let e = parse_url("http://localhost:9/pub/{topic}/x{topic}", Use::Publish).unwrap();
        assert_eq!(e.target("t"), "/pub/t/xt");
        assert_eq!(e.addr.port(), 9);

        let e = parse_url("ws://127.0.0.1:1?topic={topic}", Use::Subscribe).unwrap();
        assert_eq!(e.target("q"), "/?topic=q");
        let e = parse_url("http://127.0.0.1", Use::Publish).unwrap();
        assert_eq!((e.addr.port(), e.target("q").as_str()), (80, "/"));
        let e = parse_url("ws://[::1]:5/x", Use::Subscribe).unwrap();
        assert_eq!(e.addr, "[::1]:5".parse().unwrap());

        for bad in [
            "127.0.0.1:80/x",
            "wss://127.0.0.1:1/",
            "https://127.0.0.1:1/",
            "ftp://127.0.0.1:1/",
            "ws://:80/",
            "ws://127.0.0.1:notaport/",
            "ws://127.0.0.1:1/a b",
        ] {
            assert!(parse_url(bad, Use::Subscribe).is_err(), "{bad}");
        }
        assert!(parse_url("ws://127.0.0.1:1/", Use::Publish).is_err());
    }

    #[test]
    fn switchboard_endpoints() {
        let t = switchboard_templates("http://127.0.0.1:8080/").unwrap();
        assert_eq!(t.ws, "ws://127.0.0.1:8080/ws?topic={topic}");
        assert_eq!(t.sse, "http://127.0.0.1:8080/sse?topic={topic}");
        assert_eq!(t.poll, "http://127.0.0.1:8080/poll?topic={topic}");
        assert_eq!(t.publish, "http://127.0.0.1:8080/publish/{topic}");
        assert!(switchboard_templates("ws://127.0.0.1:8080").is_err());
        assert!(switchboard_templates("http://127.0.0.1:8080/x").is_err());
        assert_eq!(expand("/a/{topic}?t={topic}", "z"), "/a/z?t=z");
    }

    #[test]
    fn source_addresses_spread_and_suffice() {
        let dst: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(default_sources(1, dst), vec![Ipv4Addr::new(127, 0, 1, 1)]);
        let s = default_sources(200_000, dst);
        assert_eq!(s.len(), 400);
        // 254 usable host parts per /24: the 255th address starts the next one.
        assert_eq!(s[253], Ipv4Addr::new(127, 0, 1, 254));
        assert_eq!(s[399], Ipv4Addr::new(127, 0, 2, 146));
        assert!(default_sources(10, "10.0.0.1:80".parse().unwrap()).is_empty());
        // Host parts 0 and 255 are skipped when the spread crosses a /24.
        let s = spread(300);
        assert_eq!(s.len(), 300);
        assert!(s.iter().all(|a| a.octets()[3] != 0 && a.octets()[3] != 255));
        assert_eq!(s[254], Ipv4Addr::new(127, 0, 2, 1));
        // Round robin: every address carries its share.
        let s = spread(3);
        let mut counts = [0; 3];
        for id in 0..3000 {
            let a = source_for(id, &s).unwrap();
            counts[s.iter().position(|x| IpAddr::V4(*x) == a.ip()).unwrap()] += 1;
            assert_eq!(a.port(), 0);
        }
        assert_eq!(counts, [1000, 1000, 1000]);
        assert_eq!(source_for(5, &[]), None);
        assert!(check_sources(1_000_000, &spread(50)).is_ok());
        assert!(check_sources(1_000_000, &spread(2)).is_err());
        assert!(check_sources(5, &[]).is_ok());
    }

    #[test]
    fn mixes_are_exact_over_each_period() {
        let mix = [
            (Transport::Ws, 70),
            (Transport::Sse, 25),
            (Transport::Poll, 5),
        ];
        let mut n = [0u32; 3];
        for id in 0..1000 {
            match transport_for(id, &mix) {
                Transport::Ws => n[0] += 1,
                Transport::Sse => n[1] += 1,
                Transport::Poll => n[2] += 1,
            }
        }
        assert_eq!(n, [700, 250, 50]);
        assert_eq!(transport_for(3, &[(Transport::Sse, 1)]), Transport::Sse);
        assert_eq!(
            transport_for(3, &[(Transport::Ws, 0), (Transport::Sse, 2)]),
            Transport::Sse
        );
    }
}
