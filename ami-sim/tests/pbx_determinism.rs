//! Determinism: the same config, seed and start give the same bytes, whatever the times
//! `advance` is called at; actions at the same times give the same bytes again; another
//! seed gives another stream.

use ami_sim::pbx::{Pbx, PbxConfig, ScenarioMix};

const T0: u64 = 1_795_249_000_000_000;

fn cfg() -> PbxConfig {
    PbxConfig {
        calls_per_sec: 1.0,
        mix: ScenarioMix::uniform(),
        ..PbxConfig::default()
    }
}

/// The stream of `secs` seconds, advanced at the given step sizes (cycled), with
/// optional actions at fixed times.
fn stream(config: PbxConfig, seed: u64, secs: u64, steps_us: &[u64], actions: bool) -> Vec<u8> {
    let mut pbx = Pbx::new(config, seed, T0);
    let mut out = Vec::new();
    let mut bytes = Vec::new();
    let end = T0 + secs * 1_000_000;
    let mut t = T0;
    let mut i = 0;
    let mut next_action = T0 + 30_000_000;
    while t < end {
        let mut next = (t + steps_us[i % steps_us.len()]).min(end);
        i += 1;
        if actions && next >= next_action {
            next = next_action;
        }
        pbx.advance(next, &mut out);
        for e in out.drain(..) {
            bytes.extend_from_slice(&e.bytes);
        }
        if actions && next == next_action {
            // Actions run at fixed times, whatever the advance steps were.
            for r in pbx.action(
                next,
                "QueuePause",
                &[("Interface", "PJSIP/106"), ("Paused", "true")],
                Some("d1"),
            ) {
                bytes.extend_from_slice(&r);
            }
            for r in pbx.action(
                next,
                "Originate",
                &[
                    ("Channel", "PJSIP/110"),
                    ("Exten", "111"),
                    ("Context", "from-internal"),
                ],
                Some("d2"),
            ) {
                bytes.extend_from_slice(&r);
            }
            for r in pbx.action(next, "CoreShowChannels", &[], Some("d3")) {
                bytes.extend_from_slice(&r);
            }
            next_action += 45_000_000;
        }
        t = next;
    }
    bytes
}

#[test]
fn same_seed_same_bytes() {
    let a = stream(cfg(), 7, 600, &[1_000_000], false);
    let b = stream(cfg(), 7, 600, &[1_000_000], false);
    assert!(a.len() > 100_000, "a real stream ({} bytes)", a.len());
    assert!(a == b, "two runs differ");
}

#[test]
fn advance_granularity_does_not_matter() {
    let one = stream(cfg(), 3, 300, &[300_000_000], false);
    let many = stream(
        cfg(),
        3,
        300,
        &[1, 999, 13_000, 250_000, 1_700_000, 7],
        false,
    );
    let mid = stream(cfg(), 3, 300, &[1_000_000], false);
    assert!(one == many, "one big advance vs many small ones differ");
    assert!(one == mid);
}

#[test]
fn actions_at_the_same_times_give_the_same_bytes() {
    let a = stream(cfg(), 5, 300, &[1_000_000], true);
    let b = stream(cfg(), 5, 300, &[77, 3_333_333, 20_000], true);
    assert!(a == b, "with actions, granularity changed the stream");
}

#[test]
fn another_seed_another_stream() {
    let a = stream(cfg(), 1, 300, &[1_000_000], false);
    let b = stream(cfg(), 2, 300, &[1_000_000], false);
    assert!(a != b);
}

#[test]
fn stress_mode_and_quiet_mode_are_deterministic_too() {
    let stress = PbxConfig {
        events_per_sec: Some(5_000.0),
        noise: false,
        ..PbxConfig::default()
    };
    let a = stream(stress.clone(), 9, 20, &[10_000], false);
    let b = stream(stress, 9, 20, &[1_000_000, 3], false);
    assert!(a.len() > 50_000);
    assert!(a == b);
}

#[test]
fn noise_off_changes_only_the_noise() {
    // The calls are the same with and without noise: the quiet stream is the noisy one
    // without VarSet, Newexten and DeviceStateChange.
    let noisy = stream(cfg(), 4, 300, &[1_000_000], false);
    let quiet = stream(
        PbxConfig {
            noise: false,
            ..cfg()
        },
        4,
        300,
        &[1_000_000],
        false,
    );
    let strip = |b: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(b)
            .split("\r\n\r\n")
            .filter(|m| {
                !(m.starts_with("Event: VarSet")
                    || m.starts_with("Event: Newexten")
                    || m.starts_with("Event: DeviceStateChange"))
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(strip(&noisy), strip(&quiet));
    assert!(quiet.len() < noisy.len() / 2);
}
