//! SVG plots of a report, written by hand: a few line charts need axes, ticks, polylines
//! and a legend, which is less code than configuring a plotting crate, has no
//! dependencies and gives byte-for-byte reproducible files. Each series is a
//! `<g class="series" data-series="NAME">` so that tests and scripts can find it.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::Report;
use super::summary::thousands;
use crate::measure::UserSource;

const W: f64 = 860.0;
const H: f64 = 500.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = W - 210.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = H - 60.0;
const PALETTE: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];
/// Series with at most this many points also get a marker per point.
const MARKERS_UP_TO: usize = 60;

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

struct Chart {
    title: String,
    x_label: String,
    y_label: String,
    series: Vec<Series>,
    /// Categorical x axis: point `i` of a series sits at category `i`.
    x_categories: Option<Vec<String>>,
    log_y: bool,
    y_from_zero: bool,
    x_fmt: fn(f64) -> String,
    y_fmt: fn(f64) -> String,
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => o.push(c),
        }
    }
    o
}

/// Compact number: `200k`, `1.5M`, `12.5`, `0.25`.
fn si(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if x == x.trunc() {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{suffix}")
}

/// Latency ticks (powers of ten on a log axis): `100µs`, `1ms`, `10ms`, `1s`.
fn us_tick(v: f64) -> String {
    if v < 1_000.0 {
        format!("{}µs", si(v))
    } else if v < 1_000_000.0 {
        format!("{}ms", si(v / 1e3))
    } else {
        format!("{}s", si(v / 1e6))
    }
}

/// A plain number with thousands separators when whole (`1,500`), else two decimals at most.
fn plain(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        let s = thousands(v.abs() as u64);
        if v < 0.0 { format!("-{s}") } else { s }
    } else {
        si(v)
    }
}

/// A "nice" linear axis over [lo, hi]: (start, end, step).
fn nice_axis(lo: f64, hi: f64) -> (f64, f64, f64) {
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo, lo + 1.0) };
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let step = mag
        * if norm <= 1.0 {
            1.0
        } else if norm <= 2.0 {
            2.0
        } else if norm <= 5.0 {
            5.0
        } else {
            10.0
        };
    ((lo / step).floor() * step, (hi / step).ceil() * step, step)
}

fn render(c: &Chart) -> String {
    let all: Vec<(f64, f64)> = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &all {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    if all.is_empty() {
        (xmin, xmax, ymin, ymax) = (0.0, 1.0, 0.0, 1.0);
    }

    // X mapping.
    let (x0, x1, xstep) = match &c.x_categories {
        Some(cats) => (-0.5, cats.len() as f64 - 0.5, 1.0),
        None => nice_axis(xmin, xmax),
    };
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * (RIGHT - LEFT);

    // Y mapping.
    let (ylo, yhi, yticks): (f64, f64, Vec<f64>) = if c.log_y {
        let lo = 10f64.powf(ymin.max(1.0).log10().floor());
        let mut hi = 10f64.powf(ymax.max(1.0).log10().ceil());
        if hi <= lo {
            hi = lo * 10.0;
        }
        let mut t = Vec::new();
        let mut v = lo;
        while v <= hi * 1.000_001 {
            t.push(v);
            v *= 10.0;
        }
        (lo, hi, t)
    } else {
        let lo = if c.y_from_zero { ymin.min(0.0) } else { ymin };
        // 4 % headroom so that a flat series at the maximum does not sit on the frame.
        let hi = ymax.max(lo);
        let (a, b, step) = nice_axis(lo, hi + (hi - lo).abs() * 0.04);
        let n = ((b - a) / step).round() as usize;
        (a, b, (0..=n).map(|i| a + step * i as f64).collect())
    };
    let sy = |y: f64| {
        let f = if c.log_y {
            (y.max(ylo).log10() - ylo.log10()) / (yhi.log10() - ylo.log10())
        } else {
            (y - ylo) / (yhi - ylo)
        };
        BOTTOM - f * (BOTTOM - TOP)
    };

    let mut o = String::with_capacity(8192);
    let _ = writeln!(o, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, "<title>{}</title>", esc(&c.title));
    let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="28" font-size="16" font-weight="bold">{}</text>"#,
        esc(&c.title)
    );

    // Grid, ticks and labels.
    let _ = writeln!(o, r##"<g class="axes" stroke="#ccc" stroke-width="1">"##);
    if c.log_y {
        for &t in &yticks {
            for m in [2.0, 5.0] {
                if t * m < yhi {
                    let y = sy(t * m);
                    let _ = writeln!(
                        o,
                        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}" stroke="#eee"/>"##
                    );
                }
            }
        }
    }
    for &t in &yticks {
        let y = sy(t);
        let _ = writeln!(
            o,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}"/>"#
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" stroke="none" fill="black">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            esc(&(c.y_fmt)(t))
        );
    }
    match &c.x_categories {
        Some(cats) => {
            for (i, cat) in cats.iter().enumerate() {
                let x = sx(i as f64);
                let _ = writeln!(
                    o,
                    r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{BOTTOM}"/>"#
                );
                let _ = writeln!(
                    o,
                    r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle" stroke="none" fill="black">{}</text>"#,
                    BOTTOM + 18.0,
                    esc(cat)
                );
            }
        }
        None => {
            let n = ((x1 - x0) / xstep).round() as usize;
            for i in 0..=n {
                let t = x0 + xstep * i as f64;
                let x = sx(t);
                let _ = writeln!(
                    o,
                    r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{BOTTOM}"/>"#
                );
                let _ = writeln!(
                    o,
                    r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle" stroke="none" fill="black">{}</text>"#,
                    BOTTOM + 18.0,
                    esc(&(c.x_fmt)(t))
                );
            }
        }
    }
    let _ = writeln!(
        o,
        r#"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        RIGHT - LEFT,
        BOTTOM - TOP
    );
    let _ = writeln!(o, "</g>");
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        (LEFT + RIGHT) / 2.0,
        H - 18.0,
        esc(&c.x_label)
    );
    let _ = writeln!(
        o,
        r#"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (TOP + BOTTOM) / 2.0,
        esc(&c.y_label)
    );

    // Series and legend.
    for (i, s) in c.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| (sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            o,
            r#"<g class="series" data-series="{}" stroke="{color}" fill="{color}">"#,
            esc(&s.name)
        );
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let mut list = String::with_capacity(pts.len() * 14);
        for (x, y) in &pts {
            let _ = write!(list, "{x:.1},{y:.1} ");
        }
        let _ = writeln!(
            o,
            r#"<polyline fill="none" stroke-width="2"{dash} points="{}"/>"#,
            list.trim_end()
        );
        if pts.len() <= MARKERS_UP_TO && !s.dashed {
            for (x, y) in &pts {
                let _ = writeln!(o, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3"/>"#);
            }
        }
        let _ = writeln!(o, "</g>");
        let ly = TOP + 10.0 + 22.0 * i as f64;
        let _ = writeln!(
            o,
            r#"<g class="legend"><line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"{dash}/><text x="{:.1}" y="{:.1}">{}</text></g>"#,
            RIGHT + 14.0,
            RIGHT + 40.0,
            RIGHT + 46.0,
            ly + 4.0,
            esc(&s.name)
        );
    }
    let _ = writeln!(o, "</svg>");
    o
}

const MIB: f64 = (1u64 << 20) as f64;

fn memory_chart(r: &Report) -> Option<Chart> {
    let m = &r.memory;
    if m.samples.len() < 2 {
        return None;
    }
    let base = m.pre_ramp.unwrap_or(m.samples[0]);
    let mut series = Vec::new();
    if m.user_source != UserSource::None {
        series.push(Series {
            name: "user (anonymous RSS)".into(),
            points: m
                .samples
                .iter()
                .map(|s| {
                    let d = s.user_anon_bytes as f64 - base.user_anon_bytes as f64;
                    (s.connections as f64, d / MIB)
                })
                .collect(),
            dashed: false,
        });
    }
    series.push(Series {
        name: "kernel (Slab)".into(),
        points: m
            .samples
            .iter()
            .map(|s| {
                let d = s.kernel_slab_bytes as f64 - base.kernel_slab_bytes as f64;
                (s.connections as f64, d / MIB)
            })
            .collect(),
        dashed: false,
    });
    if let Some(f) = m.floor_kernel_bytes_per_conn {
        let top = m.samples.iter().map(|s| s.connections).max().unwrap_or(0);
        let c0 = base.connections;
        series.push(Series {
            name: "kernel floor (bare pairs)".into(),
            points: vec![
                (c0 as f64, 0.0),
                (top as f64, f * top.saturating_sub(c0) as f64 / MIB),
            ],
            dashed: true,
        });
    }
    Some(Chart {
        title: format!("{}: target memory vs connections", r.scenario),
        x_label: "connections established".into(),
        y_label: "MiB above the pre-ramp sample".into(),
        series,
        x_categories: None,
        log_y: false,
        y_from_zero: true,
        x_fmt: si,
        y_fmt: plain,
    })
}

fn latency_chart(r: &Report) -> Option<Chart> {
    let l = &r.latency_us;
    let mut named: Vec<(String, &crate::measure::Percentiles)> = Vec::new();
    if let Some(p) = &l.connect {
        named.push(("connect".into(), p));
    }
    if let Some(p) = &l.first_message {
        named.push(("first message".into(), p));
    }
    if let Some(p) = &l.delivery {
        named.push(("delivery".into(), p));
    }
    if l.delivery_by_transport.len() > 1 {
        for (t, p) in &l.delivery_by_transport {
            named.push((format!("delivery ({t})"), p));
        }
    }
    if named.is_empty() {
        return None;
    }
    let series = named
        .into_iter()
        .map(|(name, p)| Series {
            name,
            points: [p.p50, p.p90, p.p99, p.p999, p.max]
                .iter()
                .enumerate()
                .map(|(i, &v)| (i as f64, v as f64))
                .collect(),
            dashed: false,
        })
        .collect();
    Some(Chart {
        title: format!("{}: latency percentiles", r.scenario),
        x_label: "percentile".into(),
        y_label: "latency (log scale)".into(),
        series,
        x_categories: Some(
            ["p50", "p90", "p99", "p99.9", "max"]
                .map(String::from)
                .to_vec(),
        ),
        log_y: true,
        y_from_zero: false,
        x_fmt: si,
        y_fmt: us_tick,
    })
}

fn deliveries_chart(r: &Report) -> Option<Chart> {
    if r.deliveries_over_time.is_empty() {
        return None;
    }
    Some(Chart {
        title: format!("{}: deliveries over time", r.scenario),
        x_label: "seconds since start".into(),
        y_label: "messages delivered per second".into(),
        series: vec![Series {
            name: "delivered/s".into(),
            points: r
                .deliveries_over_time
                .iter()
                .map(|p| (p.second as f64, p.count as f64))
                .collect(),
            dashed: false,
        }],
        x_categories: None,
        log_y: false,
        y_from_zero: true,
        x_fmt: si,
        y_fmt: si,
    })
}

fn connections_chart(r: &Report) -> Option<Chart> {
    let s = &r.memory.samples;
    if s.len() < 2 {
        return None;
    }
    Some(Chart {
        title: format!("{}: connections over time", r.scenario),
        x_label: "seconds since start".into(),
        y_label: "connections established".into(),
        series: vec![Series {
            name: "connections".into(),
            points: s
                .iter()
                .map(|m| (m.at_ms as f64 / 1000.0, m.connections as f64))
                .collect(),
            dashed: false,
        }],
        x_categories: None,
        log_y: false,
        y_from_zero: true,
        x_fmt: si,
        y_fmt: si,
    })
}

/// Writes the plots the report has data for into `dir` (created if missing) and returns
/// their paths: `SCENARIO-memory.svg` (user and kernel memory above the pre-ramp sample vs
/// connections, with the floor's slope dashed), `SCENARIO-latency.svg` (p50 .. max of
/// connect, first message and delivery, log scale), `SCENARIO-deliveries.svg` (deliveries
/// per second) and `SCENARIO-connections.svg` (the ramp).
pub fn write_svgs(report: &Report, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let ctx = |p: &Path, e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    fs::create_dir_all(dir).map_err(|e| ctx(dir, e))?;
    let stem: String = report
        .scenario
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let charts = [
        ("memory", memory_chart(report)),
        ("latency", latency_chart(report)),
        ("deliveries", deliveries_chart(report)),
        ("connections", connections_chart(report)),
    ];
    let mut written = Vec::new();
    for (name, chart) in charts {
        if let Some(c) = chart {
            let path = dir.join(format!("{stem}-{name}.svg"));
            fs::write(&path, render(&c)).map_err(|e| ctx(&path, e))?;
            written.push(path);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes() {
        assert_eq!(nice_axis(0.0, 200_000.0), (0.0, 200_000.0, 50_000.0));
        assert_eq!(nice_axis(0.0, 97.0), (0.0, 100.0, 20.0));
        let (a, b, s) = nice_axis(5.0, 5.0);
        assert!(a <= 5.0 && b > 5.0 && s > 0.0);
        assert_eq!(si(200_000.0), "200k");
        assert_eq!(si(1_500_000.0), "1.5M");
        assert_eq!(si(12.5), "12.5");
        assert_eq!(si(0.25), "0.25");
        assert_eq!(si(-40.0), "-40");
        assert_eq!(si(5_000.0), "5k");
        assert_eq!(plain(1_500.0), "1,500");
        assert_eq!(plain(-2.5), "-2.5");
        assert_eq!(us_tick(100.0), "100µs");
        assert_eq!(us_tick(1_000.0), "1ms");
        assert_eq!(us_tick(10_000_000.0), "10s");
        assert_eq!(esc("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
