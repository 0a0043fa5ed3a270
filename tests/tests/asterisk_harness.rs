//! Tests of the real-Asterisk harness (`switchboard_e2e::asterisk`): each test starts its
//! own private Asterisk 16 on loopback and talks AMI to it over plain TCP.
//!
//! Without Asterisk installed these tests print a note and pass, unless `CI` is set: then
//! they fail (`.ci/run` installs Asterisk and sets `CI`). Every wait is bounded; no sleep
//! is used as an assertion.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use switchboard_e2e::asterisk::*;
use switchboard_e2e::*;

const CALL_TIMEOUT: Duration = Duration::from_secs(20);

fn users() -> Vec<AmiUser> {
    vec![
        AmiUser::admin("admin", "s3cret"),
        AmiUser::new("reader", "r3ad", "call,agent", ""),
    ]
}

/// A started PBX, or `None` when Asterisk is missing outside CI.
fn pbx() -> Option<Asterisk> {
    if !Asterisk::require() {
        return None;
    }
    let pbx = Asterisk::start(&users());
    eprintln!(
        "asterisk {} (AMI {}) on {} started in {:.2?}",
        pbx.version(),
        pbx.ami_version(),
        pbx.ami_addr(),
        pbx.start_time()
    );
    Some(pbx)
}

fn admin(pbx: &Asterisk) -> Ami {
    let mut ami = Ami::connect(pbx.ami_addr());
    ami.login("admin", "s3cret");
    ami
}

/// Collects every message until `done` says so (panics after `timeout`).
fn collect_until(
    ami: &mut Ami,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&[AmiMsg]) -> bool,
) -> Vec<AmiMsg> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        match ami.next(left) {
            Some(m) => got.push(m),
            None => panic!(
                "no {what} within {timeout:?}; events so far: {:?}",
                got.iter()
                    .map(|m| format!(
                        "{} {}",
                        m.event().unwrap_or("-"),
                        m.get("Channel").unwrap_or("")
                    ))
                    .collect::<Vec<_>>()
            ),
        }
    }
    got
}

fn count(msgs: &[AmiMsg], event: &str) -> usize {
    msgs.iter().filter(|m| m.event() == Some(event)).count()
}

#[test]
fn starts_private_pbx_with_banner_version_and_cli() {
    let Some(pbx) = pbx() else { return };
    let addr = pbx.ami_addr();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr.port(), 5038);
    assert!(pbx.version().starts_with("16."), "{}", pbx.version());
    // Asterisk 16 speaks AMI 5.0.x.
    let minor = pbx
        .banner()
        .strip_prefix("Asterisk Call Manager/5.0.")
        .unwrap_or_else(|| panic!("banner {:?}", pbx.banner()));
    assert!(
        minor.chars().all(|c| c.is_ascii_digit()),
        "{}",
        pbx.banner()
    );
    assert_eq!(
        pbx.ami_version(),
        &pbx.banner()["Asterisk Call Manager/".len()..]
    );
    let ami = Ami::connect(addr);
    assert_eq!(ami.banner(), pbx.banner());

    // The CLI goes to this PBX's own control socket; the configuration is the private one.
    assert!(pbx.cli("core show version").contains(pbx.version()));
    let dir = pbx.dir().display().to_string();
    let settings = pbx.cli("core show settings");
    assert!(
        settings.contains(&format!("{dir}/etc/asterisk.conf")),
        "{settings}"
    );
    assert!(settings.contains(&format!("{dir}/run")), "{settings}");
    let manager = pbx.cli("manager show settings");
    assert!(
        manager.contains("127.0.0.1") && manager.contains(&addr.port().to_string()),
        "{manager}"
    );
    let users = pbx.cli("manager show users");
    assert!(
        users.contains("admin") && users.contains("reader"),
        "{users}"
    );
    let modules = pbx.cli("module show");
    for m in MODULES {
        assert!(modules.contains(m), "{m} not loaded:\n{modules}");
    }
    assert!(!modules.contains("chan_sip") && !modules.contains("chan_pjsip"));
    let plan = pbx.cli("dialplan show 300@lab");
    assert!(plan.contains("Queue(support"), "{plan}");
    let moh = pbx.cli("moh show classes");
    assert!(
        moh.contains("Class: default") && moh.contains("Mode: files"),
        "{moh}"
    );
}

#[test]
fn plain_md5_bad_and_read_only_logins() {
    let Some(pbx) = pbx() else { return };
    // Plain: accepted, then FullyBooted.
    let mut ami = Ami::connect(pbx.ami_addr());
    ami.login("admin", "s3cret");
    ami.expect_event("FullyBooted", |_| true);
    ami.action("Ping", "p1", &[]);
    assert_eq!(ami.response("p1").get("Ping"), Some("Pong"));

    // MD5 challenge.
    let mut md5 = Ami::connect(pbx.ami_addr());
    md5.login_md5("admin", "s3cret");
    md5.action("Ping", "p2", &[]);
    assert_eq!(md5.response("p2").response(), Some("Success"));

    // Wrong secret: Authentication failed, then the socket closes.
    let mut bad = Ami::connect(pbx.ami_addr());
    bad.action("Login", "l", &[("Username", "admin"), ("Secret", "nope")]);
    let r = bad.response("l");
    assert_eq!(
        (r.response(), r.get("Message")),
        (Some("Error"), Some("Authentication failed"))
    );
    assert!(bad.next(DEFAULT_TIMEOUT).is_none() && bad.is_closed());

    // A user without write classes may not originate.
    let mut reader = Ami::connect(pbx.ami_addr());
    reader.login("reader", "r3ad");
    reader.action(
        "Originate",
        "o",
        &[("Channel", "Local/200@lab"), ("Application", "Wait")],
    );
    let r = reader.response("o");
    assert_eq!(
        (r.response(), r.get("Message")),
        (Some("Error"), Some("Permission denied"))
    );
}

#[test]
fn local_call_from_newchannel_to_hangup_shares_one_linkedid() {
    let Some(pbx) = pbx() else { return };
    let mut ami = admin(&pbx);
    // call200 dials 200: A and B, each a pair of Local half-channels.
    ami.originate_wait("o1", "Local/call200@lab");
    let up = collect_until(&mut ami, "two BridgeEnter", CALL_TIMEOUT, |m| {
        count(m, "BridgeEnter") == 2
    });
    let dial_end = up
        .iter()
        .find(|m| {
            m.event() == Some("DialEnd")
                && m.get("DestChannel")
                    .is_some_and(|c| c.starts_with("Local/200@lab-"))
        })
        .expect("DialEnd for the B leg");
    assert_eq!(dial_end.get("DialStatus"), Some("ANSWER"));
    let channels: BTreeSet<String> = up
        .iter()
        .filter(|m| m.event() == Some("Newchannel"))
        .map(|m| m.get("Channel").unwrap().to_string())
        .collect();
    assert_eq!(channels.len(), 4, "{channels:?}");
    assert!(count(&up, "BridgeCreate") == 1 && count(&up, "DialBegin") >= 1);
    assert!(up.iter().all(|m| m.event() != Some("Hangup")));
    let ami_channel = channels
        .iter()
        .find(|c| c.starts_with("Local/call200@lab-") && c.ends_with(";1"))
        .expect("the originated channel")
        .clone();
    // Timestamps are on (timestampevents).
    assert!(
        up.iter()
            .filter(|m| m.event().is_some())
            .all(|m| m.get("Timestamp").is_some())
    );

    ami.action("Hangup", "h1", &[("Channel", &ami_channel)]);
    let down = collect_until(&mut ami, "four Hangup", CALL_TIMEOUT, |m| {
        count(m, "Hangup") == 4
    });
    let all: Vec<&AmiMsg> = up.iter().chain(&down).collect();
    let hung: BTreeSet<String> = down
        .iter()
        .filter(|m| m.event() == Some("Hangup"))
        .map(|m| m.get("Channel").unwrap().to_string())
        .collect();
    assert_eq!(hung, channels);
    let linkedids: BTreeSet<&str> = all
        .iter()
        .filter(|m| matches!(m.event(), Some("Newchannel" | "Hangup")))
        .map(|m| m.get("Linkedid").unwrap())
        .collect();
    assert_eq!(linkedids.len(), 1, "{linkedids:?}");
    let originate = all
        .iter()
        .find(|m| m.event() == Some("OriginateResponse"))
        .expect("OriginateResponse");
    assert_eq!(
        (
            originate.get("ActionID"),
            originate.get("Response"),
            originate.get("Reason")
        ),
        (Some("o1"), Some("Success"), Some("4"))
    );
    assert!(
        wait_until(DEFAULT_TIMEOUT, || pbx
            .cli("core show channels")
            .contains("0 active channels")),
        "{}",
        pbx.cli("core show channels")
    );
}

#[test]
fn queue_call_is_answered_by_a_member() {
    let Some(pbx) = pbx() else { return };
    let mut ami = admin(&pbx);
    ami.originate_wait("q1", "Local/300@lab");
    let got = collect_until(&mut ami, "AgentConnect", CALL_TIMEOUT, |m| {
        count(m, "AgentConnect") == 1
    });
    let join = got
        .iter()
        .find(|m| m.event() == Some("QueueCallerJoin"))
        .expect("QueueCallerJoin");
    assert_eq!(join.get("Queue"), Some("support"));
    let called: BTreeSet<&str> = got
        .iter()
        .filter(|m| m.event() == Some("AgentCalled"))
        .map(|m| m.get("Interface").unwrap())
        .collect();
    assert_eq!(
        called,
        BTreeSet::from(["Local/agent1@agents/n", "Local/agent2@agents/n"])
    );
    assert!(count(&got, "MusicOnHoldStart") >= 1);
    let connect = got.last().unwrap();
    assert_eq!(
        (connect.get("Queue"), connect.get("Interface")),
        (Some("support"), Some("Local/agent1@agents/n"))
    );
    let caller = connect.get("Channel").unwrap().to_string();

    ami.action("Hangup", "h", &[("Channel", &caller)]);
    let done = ami.expect_event("AgentComplete", |_| true);
    assert_eq!(
        (done.get("Queue"), done.get("Reason")),
        (Some("support"), Some("caller"))
    );
}

#[test]
fn queue_status_lists_support_with_two_members() {
    let Some(pbx) = pbx() else { return };
    let mut ami = admin(&pbx);
    ami.action("QueueStatus", "qs", &[("Queue", "support")]);
    let r = ami.response("qs");
    assert_eq!(
        (r.response(), r.get("EventList")),
        (Some("Success"), Some("start")),
        "{}",
        r.raw
    );
    let items = collect_until(&mut ami, "QueueStatusComplete", DEFAULT_TIMEOUT, |m| {
        m.last()
            .is_some_and(|m| m.event() == Some("QueueStatusComplete"))
    });
    let params = items
        .iter()
        .find(|m| m.event() == Some("QueueParams"))
        .expect("QueueParams");
    assert_eq!(
        (
            params.get("Queue"),
            params.get("Strategy"),
            params.get("ActionID")
        ),
        (Some("support"), Some("ringall"), Some("qs"))
    );
    let members: BTreeMap<&str, &str> = items
        .iter()
        .filter(|m| m.event() == Some("QueueMember"))
        .map(|m| (m.get("Name").unwrap(), m.get("Location").unwrap()))
        .collect();
    assert_eq!(
        members,
        BTreeMap::from([
            ("agent1", "Local/agent1@agents/n"),
            ("agent2", "Local/agent2@agents/n")
        ])
    );
    let complete = items.last().unwrap();
    assert_eq!(
        (complete.get("EventList"), complete.get("ListItems")),
        (Some("Complete"), Some("3"))
    );
}

#[test]
fn dial_statuses_moh_and_mixmonitor() {
    let Some(pbx) = pbx() else { return };
    let mut ami = admin(&pbx);
    for (exten, status) in [("call203", "BUSY"), ("call204", "CONGESTION")] {
        ami.originate_wait(exten, &format!("Local/{exten}@lab"));
        let end = ami.expect_event("DialEnd", |m| {
            m.get("DestChannel")
                .is_some_and(|c| c.starts_with(&format!("Local/{}@lab-", &exten[4..])))
        });
        assert_eq!(end.get("DialStatus"), Some(status), "{}", end.raw);
    }

    ami.originate_wait("moh", "Local/moh@lab");
    let start = ami.expect_event("MusicOnHoldStart", |_| true);
    assert_eq!(start.get("Class"), Some("default"));
    let held = start.get("Channel").unwrap().to_string();
    let file = pbx.dir().join("spool/monitor/e2e.wav");
    let file_s = file.display().to_string();
    ami.action("MixMonitor", "mm", &[("Channel", &held), ("File", &file_s)]);
    assert_eq!(ami.response("mm").response(), Some("Success"));
    ami.expect_event("MixMonitorStart", |m| m.get("Channel") == Some(&*held));
    ami.action("StopMixMonitor", "smm", &[("Channel", &held)]);
    assert_eq!(ami.response("smm").response(), Some("Success"));
    ami.expect_event("MixMonitorStop", |m| m.get("Channel") == Some(&*held));
    ami.action("Hangup", "h", &[("Channel", &held)]);
    ami.expect_event("MusicOnHoldStop", |m| m.get("Channel") == Some(&*held));
    assert!(wait_until(DEFAULT_TIMEOUT, || file.is_file()), "{file_s}");
}

#[test]
fn restart_brings_the_ami_back_on_the_same_port() {
    let Some(mut pbx) = pbx() else { return };
    let addr = pbx.ami_addr();
    let first_pid = pbx.pid();
    let mut ami = admin(&pbx);

    // Graceful stop: the session ends, the port is closed.
    pbx.stop();
    assert!(!pbx.is_running());
    assert!(!Path::new(&format!("/proc/{first_pid}")).exists());
    assert!(wait_until(DEFAULT_TIMEOUT, || {
        ami.next(Duration::from_millis(100));
        ami.is_closed()
    }));
    assert!(Ami::try_connect(addr).is_err());

    pbx.restart();
    assert_eq!(pbx.ami_addr(), addr);
    assert_ne!(pbx.pid(), first_pid);
    assert!(pbx.is_running());
    let mut again = admin(&pbx);
    again.expect_event("FullyBooted", |_| true);
    eprintln!("restart took {:.2?}", pbx.start_time());

    // A crash (SIGKILL leaves the control socket behind), then back again.
    pbx.kill();
    assert!(wait_until(DEFAULT_TIMEOUT, || {
        again.next(Duration::from_millis(100));
        again.is_closed()
    }));
    pbx.restart();
    assert_eq!(pbx.ami_addr(), addr);
    let mut third = admin(&pbx);
    third.action("Ping", "p", &[]);
    assert_eq!(third.response("p").get("Ping"), Some("Pong"));
}

#[test]
fn drop_kills_the_pbx_and_removes_its_directory() {
    let Some(pbx) = pbx() else { return };
    let (pid, dir) = (pbx.pid(), pbx.dir().to_path_buf());
    assert!(dir.join("etc/asterisk.conf").is_file() && dir.join("run/asterisk.ctl").exists());
    drop(pbx);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    if std::env::var_os(KEEP_ENV).is_none() {
        assert!(!dir.exists(), "{}", dir.display());
    }
}
