//! Filtering never stops: a blocked source sends at a steady rate through a
//! veth pair (namespaces made by the test) while couic is stopped and
//! started, killed with SIGKILL, and restarted with new capacities (new
//! maps, a new program swapped onto the pinned link). Not one of its
//! packets reaches the receiving namespace; an allowed source's keep
//! arriving all along; after `couic --detach` the blocked ones arrive too.

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use couic_testkit::net::{VethPair, RX_V4, TX_V4};
use couic_testkit::{wait_until, Daemon, Spec};
use serde_json::json;

const COUIC: &str = env!("CARGO_BIN_EXE_couic");
const ALLOWED: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
const PATIENCE: Duration = Duration::from_secs(20);

type Counts = Arc<Mutex<HashMap<IpAddr, u64>>>;

/// Stops the sender and the receiver when dropped, a failed assertion
/// included (the scope joins them after).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn count(counts: &Counts, ip: Ipv4Addr) -> u64 {
    counts
        .lock()
        .unwrap()
        .get(&IpAddr::V4(ip))
        .copied()
        .unwrap_or(0)
}

/// Waits until more of the allowed source's packets arrived than `before`:
/// traffic went on.
fn allowed_flows(counts: &Counts, before: u64) {
    assert!(
        wait_until(PATIENCE, || count(counts, ALLOWED) > before + 20),
        "the allowed source's packets stopped arriving"
    );
}

/// The id of the program on the receiving interface.
fn prog_id(pair: &VethPair) -> String {
    let out = pair.rx.ip(&["link", "show", "dev", &pair.rx_if]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("prog/xdp id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no XDP program on {}: {text}", pair.rx_if))
        .to_string()
}

fn restarted(d: &mut Daemon, what: &str) {
    d.spawn().unwrap();
    d.wait_ready().unwrap();
    let (status, body) = d.call("GET", &format!("/v1/drop/{TX_V4}/32"), None);
    assert_eq!(status, 200, "{what}: the durable entry is back: {body}");
}

#[test]
fn a_blocked_source_never_gets_through_restarts_kills_and_new_capacities() {
    let pair = VethPair::new();
    pair.tx
        .ip(&["addr", "add", &format!("{ALLOWED}/24"), "dev", &pair.tx_if]);
    let spec = Spec::new(COUIC)
        .attach(&[&pair.rx_if], "auto")
        .netns(pair.rx.path())
        .env("RUST_LOG", "info")
        .limits(1024, 1024);
    let mut d = Daemon::start(spec).unwrap();
    let (status, body) = d.call(
        "POST",
        "/v1/drop",
        Some(json!({"cidr": format!("{TX_V4}/32"), "tag": "gap", "expiration": 0})),
    );
    assert_eq!(status, 201, "{body}");

    let receiver = pair.rx.enter(|| UdpSocket::bind((RX_V4, 0)).unwrap());
    receiver
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let to = SocketAddr::new(IpAddr::V4(RX_V4), receiver.local_addr().unwrap().port());
    let senders: Vec<UdpSocket> = [TX_V4, ALLOWED]
        .map(|from| pair.tx.enter(move || UdpSocket::bind((from, 0)).unwrap()))
        .into();
    let counts: Counts = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));

    std::thread::scope(|s| {
        let (counts_in, stop_in) = (counts.clone(), stop.clone());
        s.spawn(move || {
            let mut buf = [0u8; 256];
            while !stop_in.load(Ordering::Relaxed) {
                if let Ok((_, from)) = receiver.recv_from(&mut buf) {
                    *counts_in.lock().unwrap().entry(from.ip()).or_default() += 1;
                }
            }
        });
        let stop_out = stop.clone();
        s.spawn(move || {
            // A packet from each source every millisecond.
            while !stop_out.load(Ordering::Relaxed) {
                for socket in &senders {
                    let _ = socket.send_to(b"couic", to);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });

        let _stop = StopOnDrop(stop.clone());
        allowed_flows(&counts, 0);
        assert_eq!(count(&counts, TX_V4), 0, "blocked from the start");

        // Stopped (SIGTERM), then started.
        let before = count(&counts, ALLOWED);
        d.sigterm().unwrap();
        assert!(d.wait_exit(PATIENCE).unwrap().success(), "{}", d.log());
        allowed_flows(&counts, before);
        restarted(&mut d, "SIGTERM");
        assert_eq!(count(&counts, TX_V4), 0, "through SIGTERM and start");
        assert!(
            d.log().contains("filtering was not interrupted"),
            "the program was swapped on the pinned link: {}",
            d.log()
        );

        // Killed, then started.
        let before = count(&counts, ALLOWED);
        d.kill();
        allowed_flows(&counts, before);
        restarted(&mut d, "SIGKILL");
        assert_eq!(count(&counts, TX_V4), 0, "through SIGKILL and start");

        // New capacities: new maps, filled, then the program swapped.
        let config = fs::read_to_string(d.config()).unwrap();
        let bigger = config.replace("drop_max_entries = 1024", "drop_max_entries = 8192");
        assert_ne!(config, bigger);
        fs::write(d.config(), bigger).unwrap();
        let before = count(&counts, ALLOWED);
        let old_program = prog_id(&pair);
        d.sigterm().unwrap();
        assert!(d.wait_exit(PATIENCE).unwrap().success());
        restarted(&mut d, "new capacities");
        assert_ne!(
            prog_id(&pair),
            old_program,
            "a new program on the same link"
        );
        allowed_flows(&counts, before);
        let (_, stats) = d.call("GET", "/v1/stats", None);
        assert_eq!(stats["drop_cidr_count"], 1, "{stats}");
        assert_eq!(count(&counts, TX_V4), 0, "through a capacity change");

        // Stopped for good: the blocked source gets through, which is
        // also what shows the counting above could see it.
        d.sigterm().unwrap();
        assert!(d.wait_exit(PATIENCE).unwrap().success());
        assert_eq!(
            count(&counts, TX_V4),
            0,
            "still filtered while couic is down"
        );
        let detach = d.detach().unwrap();
        assert!(detach.status.success(), "{detach:?}");
        assert!(
            wait_until(PATIENCE, || count(&counts, TX_V4) > 20),
            "after --detach the blocked source's packets arrive"
        );
    });
}

/// `xdp.<action>.rx_packets` of `GET /v1/stats`.
fn xdp_packets(d: &Daemon, action: &str) -> u64 {
    let (status, stats) = d.call("GET", "/v1/stats", None);
    assert_eq!(status, 200, "{stats}");
    stats["xdp"][action]["rx_packets"].as_u64().unwrap_or(0)
}

#[test]
fn set_rules_are_in_the_maps_before_the_program_sees_a_packet() {
    // The only traffic on the link is a flood from a source a set file
    // blocks, started before couic: the program must pass none of it.
    let pair = VethPair::new();
    // No IPv6 on the sender: its link-local chatter (router solicitations,
    // MLD) would be passed, rightly.
    let sysctl = format!("net.ipv6.conf.{}.disable_ipv6=1", pair.tx_if);
    let out = Command::new("ip")
        .args(["netns", "exec", &pair.tx.name, "sysctl", "-qw", &sysctl])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let spec = Spec::new(COUIC)
        .attach(&[&pair.rx_if], "auto")
        .netns(pair.rx.path())
        .limits(1024, 1024);
    let mut d = Daemon::new(spec).unwrap();
    fs::create_dir_all(d.work().join("sets/drop")).unwrap();
    d.write_set("drop", "flood", &format!("{TX_V4}/32\n"))
        .unwrap();
    let sender = pair.tx.enter(|| UdpSocket::bind((TX_V4, 0)).unwrap());
    let to = SocketAddr::new(IpAddr::V4(RX_V4), 9);
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let _stop = StopOnDrop(stop.clone());
        let flooding = stop.clone();
        s.spawn(move || {
            while !flooding.load(Ordering::Relaxed) {
                let _ = sender.send_to(b"couic", to);
            }
        });
        d.spawn().unwrap();
        d.wait_ready().unwrap();
        assert!(
            wait_until(PATIENCE, || xdp_packets(&d, "XDP_DROP") > 1000),
            "the flood reaches the program"
        );
        assert_eq!(
            xdp_packets(&d, "XDP_PASS"),
            0,
            "a packet went through before the set was in the maps"
        );
    });
}

#[test]
fn a_second_couic_on_the_same_interface_names_the_program_in_its_way() {
    let pair = VethPair::new();
    let spec = || {
        Spec::new(COUIC)
            .attach(&[&pair.rx_if], "native")
            .netns(pair.rx.path())
            .limits(1024, 1024)
    };
    let _first = Daemon::start(spec()).unwrap();
    // Its own working directory, so its own pins: a second instance.
    let mut second = Daemon::new(spec()).unwrap();
    let (status, out) = second.run_to_exit(PATIENCE).unwrap();
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("another XDP program is attached") && out.contains("name couic"),
        "the error says what is in the way: {out}"
    );
}
