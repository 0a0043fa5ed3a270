//! The JSON report against its JSON Schema (`loadgen/report.schema.json`, draft 2020-12):
//! a report built from real measurements (this process sampled through `/proc`, real
//! loopback socket pairs for the floor, real histograms) must validate; the issue's field
//! names must sit at the paths it names; the example in SCHEMA.md must validate and
//! deserialise; and the schema must reject what it should.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use loadgen::cli_values::Transport;
use loadgen::measure::{Latency, SeqCounts, TargetSampler, Timeline};
use loadgen::report::{self, Memory, Peer, Report};
use serde_json::{Value, json};

/// The tests of this file run one at a time: `measured_report` measures this
/// process's memory growth, which another test allocating or freeing meanwhile (the
/// JSON Schema validators do) would blur.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn manifest(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn schema() -> Value {
    let text = std::fs::read_to_string(manifest("report.schema.json")).expect("schema file");
    serde_json::from_str(&text).expect("schema is JSON")
}

fn validator() -> jsonschema::Validator {
    let s = schema();
    jsonschema::meta::validate(&s).expect("a valid draft 2020-12 schema");
    jsonschema::draft202012::new(&s).expect("schema compiles")
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// A report from real measurements, as the scenario code builds one.
fn measured_report() -> Report {
    let t0 = Instant::now();
    let ms = || t0.elapsed().as_millis() as u64;
    let me = std::process::id();
    let argv = [
        "loadgen",
        "hold",
        "--url",
        "ws://127.0.0.1:8080/ws?topic=room.{i}",
        "--target-pid",
        "1",
    ];
    let mut r = Report::new("hold", &[(Transport::Ws, 1)], argv);
    r.target = report::target_info(Some("http://127.0.0.1:8080"), &[me]);
    r.connections_target = 4_000;
    r.parameters.insert("topics_per_conn".into(), json!(1));
    r.parameters.insert("ramp".into(), json!("10s"));

    // A "ramp": this process grows by 8 MiB per step while "connections" grow by 1,000.
    let mut sampler = TargetSampler::new(&[me]).expect("sampler on self");
    let mut samples = vec![sampler.sample(0, ms()).unwrap()];
    let mut hold: Vec<Vec<u8>> = Vec::new();
    for step in 1..=4u64 {
        hold.push(vec![1u8; 8 << 20]);
        samples.push(sampler.sample(step * 1_000, ms()).unwrap());
    }
    let last = samples.len() - 1;
    r.memory = Memory::from_samples(samples, 0, last, sampler.user_source());
    r.connections_established = 4_000;
    drop(hold);

    // The floor: real idle loopback pairs, measured the same way (kernel only).
    let mut kernel = TargetSampler::new(&[]).unwrap();
    let before = kernel.sample(0, ms()).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut pairs = Vec::new();
    for _ in 0..200 {
        let c = TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        pairs.push((c, s));
    }
    let after = kernel.sample(pairs.len() as u64, ms()).unwrap();
    r.memory.set_floor(
        "idle loopback TCP pairs (std, both ends)",
        before,
        after,
        false,
    );
    drop(pairs);

    // Latencies recorded on two "threads" and merged.
    let (mut c1, mut c2) = (Latency::new(), Latency::new());
    for i in 0..2_000u64 {
        c1.record_us(100 + i % 300);
        c2.record(Duration::from_micros(150 + i % 500));
    }
    c1.merge(&c2);
    r.latency_us.connect = c1.summary();
    let mut d = Latency::new();
    for i in 0..10_000u64 {
        d.record_us(200 + (i * 37) % 5_000);
    }
    r.latency_us.delivery = d.summary();
    r.latency_us.first_message = Latency::new().summary(); // not measured: null
    r.latency_us
        .delivery_by_transport
        .insert(Transport::Ws, d.percentiles());

    // Sequences: 4,000 subscribers x 5 messages, one lost, one duplicated.
    let mut counts = SeqCounts::default();
    let mut timeline = Timeline::new();
    for sub in 0..4_000u64 {
        let mut last = 0;
        for seq in 1..=5u64 {
            if sub == 7 && seq == 3 {
                continue;
            }
            counts.observe(&mut last, seq);
            timeline.add(seq, 1);
        }
        if sub == 9 {
            counts.observe(&mut last, 5);
        }
    }
    r.set_sequences(&counts, 20_000);
    r.deliveries_over_time = timeline.points();
    r.deliveries_per_sec = loadgen::measure::rate(counts.delivered, Duration::from_secs(5));

    let cpu0 = sampler.sample(4_000, ms()).unwrap();
    let cpu1 = sampler.sample(4_000, ms() + 1).unwrap();
    r.set_target_cpu(&cpu0, &cpu1, counts.delivered);

    r.add_error("connect_refused", 3);
    r.add_error("handshake_status_503", 1);
    r.notes.push("a test report, not a benchmark".into());
    r.duration_s = t0.elapsed().as_secs_f64();
    r
}

#[test]
fn measured_report_validates_and_round_trips() {
    let _serial = serial();
    let v = validator();
    let r = measured_report();
    let value = serde_json::to_value(&r).unwrap();
    let errs = errors(&v, &value);
    assert!(errs.is_empty(), "{errs:#?}\n{}", r.to_json_pretty());

    // The figures came out of real measurements.
    assert!(
        r.memory.user_bytes_per_conn.unwrap() > 4_000.0,
        "{:?}",
        r.memory
    );
    assert!(r.memory.floor_kernel_bytes_per_conn.is_some());
    assert_eq!((r.lost, r.duplicates, r.reordered), (1, 1, 0));

    // write_json -> file -> Report: identical.
    let dir = std::env::temp_dir().join(format!("loadgen-report-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.json");
    report::write_json(&r, &path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with("}\n"));
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn issue_field_names_are_where_the_issue_says() {
    let _serial = serial();
    let r = measured_report();
    let v = serde_json::to_value(&r).unwrap();
    for top in [
        "scenario",
        "transport",
        "connections_target",
        "connections_established",
        "errors",
        "deliveries_per_sec",
        "delivered",
        "expected",
        "lost",
        "duplicates",
        "reordered",
        "target_cpu_us_per_delivery",
        "host",
        "command_line",
    ] {
        assert!(v.get(top).is_some(), "missing {top}");
    }
    for ptr in [
        "/memory/user_bytes_per_conn",
        "/memory/kernel_bytes_per_conn",
        "/memory/floor_kernel_bytes_per_conn",
        "/host/kernel",
        "/host/cores",
        "/host/memory_total_bytes",
        "/host/limits/nofile_soft",
        "/host/limits/somaxconn",
        "/host/limits/ip_local_port_range",
        "/host/loadgen_version",
        "/errors/connect_refused",
    ] {
        assert!(v.pointer(ptr).is_some(), "missing {ptr}");
    }
    for kind in ["connect", "delivery"] {
        for q in ["p50", "p90", "p99", "p999", "max"] {
            let ptr = format!("/latency_us/{kind}/{q}");
            assert!(v.pointer(&ptr).is_some_and(Value::is_u64), "missing {ptr}");
        }
    }
    assert_eq!(
        v["command_line"],
        "loadgen hold --url 'ws://127.0.0.1:8080/ws?topic=room.{i}' --target-pid 1"
    );
    assert_eq!(v["latency_us"]["first_message"], Value::Null);
}

#[test]
fn schema_md_example_validates_and_deserialises() {
    let _serial = serial();
    let md = std::fs::read_to_string(manifest("SCHEMA.md")).unwrap();
    let start = md
        .find("```json\n")
        .expect("a ```json example in SCHEMA.md")
        + 8;
    let len = md[start..].find("\n```").unwrap();
    let example: Value = serde_json::from_str(&md[start..start + len]).expect("example is JSON");
    let v = validator();
    let errs = errors(&v, &example);
    assert!(errs.is_empty(), "{errs:#?}");
    let r: Report = serde_json::from_value(example).expect("example is a Report");
    assert_eq!(r.scenario, "fanout");
}

#[test]
fn schema_rejects_what_it_should() {
    let _serial = serial();
    let v = validator();
    let good = serde_json::to_value(measured_report()).unwrap();
    assert!(v.is_valid(&good));

    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut x = good.clone();
        f(&mut x);
        x
    };
    let bad = [
        (
            "missing field",
            mutate(&|x| {
                x["memory"]
                    .as_object_mut()
                    .unwrap()
                    .remove("user_bytes_per_conn");
            }),
        ),
        (
            "unknown field",
            mutate(&|x| {
                x["surprise"] = json!(1);
            }),
        ),
        (
            "negative count",
            mutate(&|x| {
                x["lost"] = json!(-1);
            }),
        ),
        (
            "fractional count",
            mutate(&|x| {
                x["delivered"] = json!(1.5);
            }),
        ),
        (
            "bad transport",
            mutate(&|x| {
                x["transport"] = json!("tcp");
            }),
        ),
        (
            "bad error kind",
            mutate(&|x| {
                x["errors"]["Connect Refused"] = json!(1);
            }),
        ),
        (
            "percentile missing p999",
            mutate(&|x| {
                x["latency_us"]["connect"]
                    .as_object_mut()
                    .unwrap()
                    .remove("p999");
            }),
        ),
        (
            "bad limit",
            mutate(&|x| {
                x["host"]["limits"]["nofile_soft"] = json!("lots");
            }),
        ),
        (
            "bad per-transport key",
            mutate(&|x| {
                x["latency_us"]["delivery_by_transport"]["tcp"] =
                    x["latency_us"]["delivery"].clone();
            }),
        ),
    ];
    for (what, x) in bad {
        assert!(!v.is_valid(&x), "schema accepted: {what}");
    }
}

#[test]
fn no_target_report_is_valid_too() {
    let _serial = serial();
    // The floor scenario: no pid, no transport, nothing delivered.
    let mut r = Report::new("floor", &[], ["loadgen", "floor", "--pairs", "10k"]);
    let mut k = TargetSampler::new(&[]).unwrap();
    let a = k.sample(0, 0).unwrap();
    let b = k.sample(0, 1).unwrap();
    r.memory = Memory::from_samples(vec![a, b], 0, 1, k.user_source());
    r.peer = Some(Peer {
        name: "node-ws".into(),
        url_templates: [(Transport::Ws, "ws://127.0.0.1:9000/?t={topic}".to_string())].into(),
        publish: None,
    });
    let value = serde_json::to_value(&r).unwrap();
    let errs = errors(&validator(), &value);
    assert!(errs.is_empty(), "{errs:#?}");
    assert_eq!(value["memory"]["user_bytes_per_conn"], Value::Null);
    assert_eq!(
        value["memory"]["kernel_bytes_per_conn"],
        Value::Null,
        "no growth, no figure"
    );
    assert_eq!(value["transport"], "none");
}
