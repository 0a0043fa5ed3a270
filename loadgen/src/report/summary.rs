//! The table printed at the end of a run.

use std::io::{self, Write};

use super::Report;
use crate::measure::{Percentiles, UserSource};

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A signed, rounded byte figure: `9,453 B`, `-120 B`.
fn bytes_f(v: f64) -> String {
    let r = v.round();
    let sign = if r < 0.0 { "-" } else { "" };
    format!("{sign}{} B", thousands(r.abs() as u64))
}

/// Microseconds with a unit a human reads: `850µs`, `12.3ms`, `1.20s`.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        let ms = us as f64 / 1e3;
        if ms < 10.0 {
            format!("{ms:.2}ms")
        } else if ms < 100.0 {
            format!("{ms:.1}ms")
        } else {
            format!("{ms:.0}ms")
        }
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn latency_row(out: &mut impl Write, name: &str, p: &Percentiles) -> io::Result<()> {
    writeln!(
        out,
        "  {name:<14}{:>11}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}",
        thousands(p.count),
        fmt_us(p.min),
        fmt_us(p.p50),
        fmt_us(p.p90),
        fmt_us(p.p99),
        fmt_us(p.p999),
        fmt_us(p.max),
        fmt_us(p.mean.round() as u64),
    )
}

/// Prints the end-of-run table (like wrk or oha): what ran where, connections, errors,
/// latency percentiles, delivery accounting, memory per connection beside the floor, and
/// the target's CPU per delivery. Sections with nothing measured are left out.
pub fn print_summary(r: &Report, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "loadgen {} · {} · {} · {:.1} s",
        r.scenario, r.transport, r.started_at, r.duration_s
    )?;
    if r.mix.len() > 1 {
        let mix: Vec<String> = r
            .mix
            .iter()
            .map(|m| format!("{}={}", m.transport, m.weight))
            .collect();
        writeln!(out, "  mix        {}", mix.join(","))?;
    }
    writeln!(out, "  command    {}", r.command_line)?;
    let h = &r.host;
    let mut host = vec![
        h.kernel.clone().unwrap_or_else(|| "kernel ?".into()),
        format!("{} cores", h.cores),
    ];
    if let Some(m) = h.memory_total_bytes {
        host.push(gib(m));
    }
    if let (Some(s), Some(hd)) = (h.limits.nofile_soft, h.limits.nofile_hard) {
        host.push(format!("nofile {s}/{hd}"));
    }
    if let Some([a, b]) = h.limits.ip_local_port_range {
        host.push(format!("ports {a}-{b}"));
    }
    writeln!(out, "  host       {}", host.join(" · "))?;
    if let Some(p) = &r.peer {
        writeln!(out, "  peer       {}", p.name)?;
    }
    if r.target.url.is_some() || !r.target.processes.is_empty() {
        let procs: Vec<String> = r
            .target
            .processes
            .iter()
            .map(|p| format!("{} (pid {})", p.name.as_deref().unwrap_or("?"), p.pid))
            .collect();
        let mut t = r.target.url.clone().unwrap_or_default();
        if !procs.is_empty() {
            if !t.is_empty() {
                t.push_str(" · ");
            }
            t.push_str(&procs.join(", "));
        }
        writeln!(out, "  target     {t}")?;
    }
    writeln!(out)?;

    let pct = if r.connections_target > 0 {
        format!(
            " ({:.1}%)",
            r.connections_established as f64 * 100.0 / r.connections_target as f64
        )
    } else {
        String::new()
    };
    writeln!(
        out,
        "Connections  {} / {} established{pct}",
        thousands(r.connections_established),
        thousands(r.connections_target)
    )?;
    if r.errors.is_empty() {
        writeln!(out, "Errors       none")?;
    } else {
        let mut kinds: Vec<(&String, &u64)> = r.errors.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let list: Vec<String> = kinds
            .iter()
            .map(|(k, v)| format!("{k} {}", thousands(**v)))
            .collect();
        writeln!(
            out,
            "Errors       {} total: {}",
            thousands(r.errors_total()),
            list.join(", ")
        )?;
    }

    let l = &r.latency_us;
    if l.connect.is_some() || l.first_message.is_some() || l.delivery.is_some() {
        writeln!(out)?;
        writeln!(
            out,
            "Latency       {:>11}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}",
            "count", "min", "p50", "p90", "p99", "p99.9", "max", "mean"
        )?;
        if let Some(p) = &l.connect {
            latency_row(out, "connect", p)?;
        }
        if let Some(p) = &l.first_message {
            latency_row(out, "first message", p)?;
        }
        if let Some(p) = &l.delivery {
            latency_row(out, "delivery", p)?;
        }
        if l.delivery_by_transport.len() > 1 {
            for (t, p) in &l.delivery_by_transport {
                latency_row(out, &format!("  {t}"), p)?;
            }
        }
    }

    if r.expected > 0 || r.delivered > 0 {
        writeln!(out)?;
        let rate = r
            .deliveries_per_sec
            .map(|d| format!(" · {}/s", thousands(d.round() as u64)))
            .unwrap_or_default();
        writeln!(
            out,
            "Delivery     {} delivered of {} expected · {} lost · {} duplicates · {} reordered{rate}",
            thousands(r.delivered),
            thousands(r.expected),
            thousands(r.lost),
            thousands(r.duplicates),
            thousands(r.reordered),
        )?;
    }

    let m = &r.memory;
    if m.kernel_bytes_per_conn.is_some() || m.floor_kernel_bytes_per_conn.is_some() {
        writeln!(out)?;
        writeln!(
            out,
            "Memory       per connection, over {} connections (plateau − pre-ramp)",
            thousands(m.connections_measured)
        )?;
        if let Some(u) = m.user_bytes_per_conn {
            let src = match m.user_source {
                UserSource::SmapsRollup => "anonymous RSS, smaps_rollup",
                _ => "RssAnon, status",
            };
            let rss = m
                .user_rss_bytes_per_conn
                .map(|v| format!("; RSS {}", bytes_f(v)))
                .unwrap_or_default();
            writeln!(out, "  user       {:>10}  ({src}{rss})", bytes_f(u))?;
        }
        if let Some(k) = m.kernel_bytes_per_conn {
            writeln!(
                out,
                "  kernel     {:>10}  (Slab, host-wide: both ends on loopback)",
                bytes_f(k)
            )?;
        }
        if let Some(f) = m.floor_kernel_bytes_per_conn {
            let n = m.floor.as_ref().map_or(0, |f| f.connections);
            writeln!(
                out,
                "  floor      {:>10}  (Slab, {} bare idle pairs)",
                bytes_f(f),
                thousands(n)
            )?;
        }
        if let Some(x) = m.kernel_to_floor {
            writeln!(
                out,
                "  vs floor   {:>10}  (kernel / floor)",
                format!("{x:.2}×")
            )?;
        }
    }

    if let Some(c) = &r.target_cpu {
        writeln!(out)?;
        let per = r
            .target_cpu_us_per_delivery
            .map(|v| format!("{v:.2} µs per delivery · "))
            .unwrap_or_default();
        writeln!(
            out,
            "Target CPU   {per}{:.2} s CPU over {:.1} s ({} deliveries)",
            c.seconds,
            c.wall_s,
            thousands(c.deliveries)
        )?;
    }
    for (i, n) in r.notes.iter().enumerate() {
        if i == 0 {
            writeln!(out)?;
        }
        writeln!(out, "Note         {n}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(200_000), "200,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_us(850), "850µs");
        assert_eq!(fmt_us(1_234), "1.23ms");
        assert_eq!(fmt_us(12_345), "12.3ms");
        assert_eq!(fmt_us(123_456), "123ms");
        assert_eq!(fmt_us(1_200_000), "1.20s");
        assert_eq!(bytes_f(9_453.4), "9,453 B");
        assert_eq!(bytes_f(-120.2), "-120 B");
    }
}
