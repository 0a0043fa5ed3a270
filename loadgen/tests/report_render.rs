//! SVG plots (well-formed XML, the expected series) and the summary table (its content),
//! from a synthetic report with known numbers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use loadgen::cli_values::Transport;
use loadgen::measure::{Latency, MemSample, SecondCount, UserSource};
use loadgen::report::{self, Memory, Report};

fn sample(at_ms: u64, conns: u64) -> MemSample {
    MemSample {
        at_ms,
        connections: conns,
        user_rss_bytes: 40_000_000 + conns * 700,
        user_anon_bytes: 20_000_000 + conns * 517,
        kernel_slab_bytes: 300_000_000 + conns * 9_453,
        kernel_sunreclaim_bytes: 30_000_000 + conns * 5_000,
        sockstat_tcp_inuse: 10 + 2 * conns,
        sockstat_tcp_mem_pages: 350,
        target_cpu_ticks: at_ms / 10,
    }
}

fn synthetic() -> Report {
    let mut r = Report::new(
        "fanout",
        &[(Transport::Ws, 70), (Transport::Sse, 30)],
        ["loadgen", "fanout", "--subscribers", "200k", "--rate", "20"],
    );
    r.duration_s = 62.34;
    r.connections_target = 200_000;
    r.connections_established = 199_990;
    r.errors = BTreeMap::from([("connect_timeout".to_string(), 7), ("reset".to_string(), 3)]);
    let samples: Vec<MemSample> = (0..=20).map(|i| sample(i * 500, i * 10_000)).collect();
    r.memory = Memory::from_samples(samples, 0, 20, UserSource::SmapsRollup);
    r.memory.set_floor(
        "idle loopback TCP pairs",
        sample(0, 0),
        MemSample {
            kernel_slab_bytes: 300_000_000 + 10_000 * 7_900,
            ..sample(0, 10_000)
        },
        false,
    );
    let mut connect = Latency::new();
    let mut ws = Latency::new();
    let mut sse = Latency::new();
    for i in 0..200_000u64 {
        connect.record_us(80 + i % 400);
        if i % 10 < 7 {
            ws.record_us(300 + i % 2_000);
        } else {
            sse.record_us(500 + i % 3_000);
        }
    }
    let mut all = ws.clone();
    all.merge(&sse);
    r.latency_us.connect = connect.summary();
    r.latency_us.delivery = all.summary();
    r.latency_us.delivery_by_transport = BTreeMap::from([
        (Transport::Ws, ws.percentiles()),
        (Transport::Sse, sse.percentiles()),
    ]);
    r.delivered = 1_200_000;
    r.expected = 1_200_000;
    r.deliveries_per_sec = Some(20_000.0);
    r.deliveries_over_time = (0..60)
        .map(|s| SecondCount {
            second: s,
            count: 20_000,
        })
        .collect();
    r.set_target_cpu(
        &sample(10_000, 200_000),
        &sample(70_000, 200_000),
        1_200_000,
    );
    r.notes.push("synthetic".into());
    r
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("loadgen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn series_names(doc: &roxmltree::Document) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.attribute("class") == Some("series"))
        .map(|n| n.attribute("data-series").unwrap().to_string())
        .collect()
}

#[test]
fn svgs_are_well_formed_with_their_series() {
    let r = synthetic();
    let dir = temp_dir("svg").join("nested");
    let written = report::write_svgs(&r, &dir).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "fanout-memory.svg",
            "fanout-latency.svg",
            "fanout-deliveries.svg",
            "fanout-connections.svg"
        ]
    );
    let expect: [&[&str]; 4] = [
        &[
            "user (anonymous RSS)",
            "kernel (Slab)",
            "kernel floor (bare pairs)",
        ],
        &["connect", "delivery", "delivery (ws)", "delivery (sse)"],
        &["delivered/s"],
        &["connections"],
    ];
    for (path, want) in written.iter().zip(expect) {
        let text = std::fs::read_to_string(path).unwrap();
        let doc = roxmltree::Document::parse(&text)
            .unwrap_or_else(|e| panic!("{}: not well-formed XML: {e}", path.display()));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        assert_eq!(series_names(&doc), want, "{}", path.display());
        // Every series has a polyline with one point per data point, all finite numbers.
        for s in doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("series"))
        {
            let pl = s.children().find(|c| c.has_tag_name("polyline")).unwrap();
            let pts = pl.attribute("points").unwrap();
            assert!(!pts.is_empty());
            for xy in pts.split(' ') {
                let (x, y) = xy.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!(
                    (0.0..=860.0).contains(&x) && (0.0..=500.0).contains(&y),
                    "{xy}"
                );
            }
        }
    }
    // Memory: 21 samples; latency: 5 percentiles per series.
    let mem = std::fs::read_to_string(&written[0]).unwrap();
    let doc = roxmltree::Document::parse(&mem).unwrap();
    let user = doc
        .descendants()
        .find(|n| n.attribute("data-series") == Some("user (anonymous RSS)"))
        .unwrap();
    let n = user
        .children()
        .find(|c| c.has_tag_name("polyline"))
        .unwrap()
        .attribute("points")
        .unwrap();
    assert_eq!(n.split(' ').count(), 21);
    let lat = std::fs::read_to_string(&written[1]).unwrap();
    assert!(lat.contains(">p99.9<"));
    if std::env::var_os("LOADGEN_KEEP_SVG").is_none() {
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }
}

#[test]
fn svgs_only_for_what_was_measured() {
    // Nothing measured: nothing plotted (and no error).
    let r = Report::new("hold", &[(Transport::Sse, 1)], ["loadgen"]);
    let dir = temp_dir("svg-empty");
    assert!(report::write_svgs(&r, &dir).unwrap().is_empty());
    // A name with odd characters still makes a safe file name; XML escapes the title.
    let mut r = synthetic();
    r.scenario = "a/b <c>&".into();
    let written = report::write_svgs(&r, &dir).unwrap();
    assert!(
        written[0].ends_with("a_b__c__-memory.svg"),
        "{:?}",
        written[0]
    );
    let text = std::fs::read_to_string(&written[0]).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let title = doc.descendants().find(|n| n.has_tag_name("title")).unwrap();
    assert_eq!(title.text(), Some("a/b <c>&: target memory vs connections"));
    std::fs::remove_dir_all(&dir).unwrap();
    // An unwritable directory is an error naming it.
    let e = report::write_svgs(&r, std::path::Path::new("/proc/loadgen-cannot")).unwrap_err();
    assert!(e.to_string().contains("/proc/loadgen-cannot"), "{e}");
}

#[test]
fn summary_table() {
    let r = synthetic();
    let mut out = Vec::new();
    report::print_summary(&r, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    println!("{text}");
    let has = |s: &str| assert!(text.contains(s), "missing {s:?} in\n{text}");
    has("loadgen fanout · mix · ");
    has("62.3 s");
    has("  mix        ws=70,sse=30");
    has("  command    loadgen fanout --subscribers 200k --rate 20");
    has("Connections  199,990 / 200,000 established (100.0%)");
    has("Errors       10 total: connect_timeout 7, reset 3");
    has("Latency             count      min      p50      p90      p99    p99.9      max     mean");
    has("  connect           200,000     80µs");
    has("  delivery          200,000");
    has("    ws              140,000");
    has("    sse              60,000");
    has(
        "Delivery     1,200,000 delivered of 1,200,000 expected · 0 lost · 0 duplicates · 0 reordered · 20,000/s",
    );
    has("over 200,000 connections (plateau − pre-ramp)");
    has("  user            517 B  (anonymous RSS, smaps_rollup; RSS 700 B)");
    has("  kernel        9,453 B  (Slab, host-wide: both ends on loopback)");
    has("  floor         7,900 B  (Slab, 10,000 bare idle pairs)");
    has("  vs floor        1.20×  (kernel / floor)");
    has("µs per delivery");
    has("Note         synthetic");
    assert!(text.lines().count() < 40, "compact");
    assert!(
        text.lines().all(|l| l.chars().count() <= 120),
        "narrow enough for a terminal"
    );

    // An empty report prints only what it has.
    let r = Report::new("hold", &[(Transport::Ws, 1)], ["loadgen", "hold"]);
    let mut out = Vec::new();
    report::print_summary(&r, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("Errors       none"));
    assert!(!text.contains("Latency") && !text.contains("Memory") && !text.contains("Delivery"));
}
