//! End to end with the real `couic` binary: set files loaded at start drop
//! live traffic on a veth in namespaces made by the test; a line added and
//! `POST /v1/sets/reload` drops a new source, the line removed and reloaded
//! lets it through again. A bad set file stops startup, naming file, line
//! and reason.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use couic::dirs::{Layout, Owner};
use couic_testkit::net::{send_udp, Receiver, VethPair, RX_V4, RX_V6, TX_V4, TX_V6};
use couic_testkit::{Daemon, Spec};

const COUIC: &str = env!("CARGO_BIN_EXE_couic");
const BURST: usize = 20;
/// How long a start that must fail may take to exit.
const EXIT: Duration = Duration::from_secs(10);

/// couic from `spec`, logging at info level, its working directory laid
/// out as the daemon makes it so that set files can be written before it
/// starts.
fn prepare(spec: Spec) -> Daemon {
    let d = Daemon::new(spec.env("RUST_LOG", "info")).unwrap();
    Layout::prepare(&d.work(), Owner::current()).unwrap();
    d
}

fn burst(pair: &VethPair, rx: &Receiver, src: IpAddr, dst: IpAddr) -> usize {
    send_udp(
        &pair.tx,
        SocketAddr::new(src, 0),
        SocketAddr::new(dst, rx.port()),
        BURST,
        64,
    );
    rx.count(BURST, Duration::from_secs(1))
}

/// Packets couic dropped under `tag` (`GET /v1/stats/tags/drop`): a burst
/// that did not arrive must also have been counted, or it was lost on the
/// way and proves nothing.
fn dropped(d: &Daemon, tag: &str) -> u64 {
    let (status, body) = d.call("GET", "/v1/stats/tags/drop", None);
    assert_eq!(status, 200, "{body}");
    body["tags"][tag]["rx_packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter for {tag}: {body}"))
}

#[test]
fn set_lines_drop_live_traffic_after_reload_and_stop_after_removal() {
    let pair = VethPair::new();
    let spec = Spec::new(COUIC)
        .attach(&[&pair.rx_if], "generic")
        .netns(pair.rx.path());
    let mut d = prepare(spec);
    // Loaded at start: the sender's IPv6 address.
    d.write_set("drop", "boot", &format!("# loaded at start\n{TX_V6}/128\n"))
        .unwrap();
    d.write_set("drop", "live", "# nothing yet\n").unwrap();
    d.spawn().unwrap();
    d.wait_ready().unwrap();

    let rx4 = Receiver::bind(&pair.rx, SocketAddr::new(RX_V4.into(), 0));
    let rx6 = Receiver::bind(&pair.rx, SocketAddr::new(RX_V6.into(), 0));
    let (tx4, tx6): (IpAddr, IpAddr) = (TX_V4.into(), TX_V6.into());
    let (to4, to6): (IpAddr, IpAddr) = (RX_V4.into(), RX_V6.into());
    assert_eq!(
        burst(&pair, &rx6, tx6, to6),
        0,
        "the set loaded at start drops IPv6"
    );
    assert_eq!(
        dropped(&d, "boot.couic"),
        BURST as u64,
        "couic dropped them"
    );
    assert_eq!(
        burst(&pair, &rx4, tx4, to4),
        BURST,
        "IPv4 passes before the reload"
    );

    d.write_set("drop", "live", &format!("# the sender\n{TX_V4}/32\n"))
        .unwrap();
    let (status, body) = d.call("POST", "/v1/sets/reload", None);
    assert_eq!(
        (status, body),
        (201, serde_json::json!({"reload_status": "OK"}))
    );
    let (status, body) = d.call("GET", &format!("/v1/drop/{TX_V4}/32"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tag"], "live.couic", "{body}");
    assert_eq!(burst(&pair, &rx4, tx4, to4), 0, "dropped after the reload");
    assert_eq!(
        dropped(&d, "live.couic"),
        BURST as u64,
        "couic dropped them"
    );

    d.write_set("drop", "live", "").unwrap();
    let (status, body) = d.call("POST", "/v1/sets/reload", None);
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        burst(&pair, &rx4, tx4, to4),
        BURST,
        "passes once the line is gone"
    );
    assert_eq!(
        burst(&pair, &rx6, tx6, to6),
        0,
        "the other set still applies"
    );
    assert_eq!(dropped(&d, "boot.couic"), 2 * BURST as u64);

    let log = d.log();
    assert!(log.contains("sets reload: policy=ignore"), "{log}");
    assert!(
        log.contains("sets reload: policy=drop, updated=0, removed=1, created=0"),
        "{log}"
    );
}

#[test]
fn a_bad_set_file_stops_startup() {
    let mut d = prepare(Spec::new(COUIC));
    d.write_set("ignore", "office", "10.0.0.0/8").unwrap();
    let bad = d
        .write_set("drop", "typo", "192.0.2.1/32\n192.0.2.300/32\n")
        .unwrap();
    let (status, log) = d.run_to_exit(EXIT).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    let expected = format!(
        "error parsing set: {}. Offending line: 192.0.2.300/32 (line 2: ",
        bad.display()
    );
    assert!(log.contains(&expected), "{log}");
    assert!(!d.socket().exists(), "nothing served");

    // Wrong mode is fatal too.
    fs::remove_file(&bad).unwrap();
    let open = d.write_set("drop", "open", "192.0.2.1/32").unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    let (status, log) = d.run_to_exit(EXIT).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "Set file {} has wrong permissions",
            open.display()
        )),
        "{log}"
    );
}
