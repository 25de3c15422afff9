//! End to end through a veth pair: two namespaces made by the test, couic
//! attached in native mode on the receiving end, rules changed through the
//! MapWriter actor, UDP sent from the other namespace.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use couic::actors::map_writer::{AddEntries, MapWriter, ReadSnapshot, RemoveEntries};
use couic::actors::messages::Origin;
use couic::bpf::{self, Capacities, Counter, Loaded};
use couic::clock::{SharedClock, SystemClock};
use couic::config::OperationMode;
use couic::firewall::{Firewall, NewEntry};
use couic::xdp::{self, AttachMode};
use couic_common::{Cidr, Policy};
use couic_testkit::net::{send_udp, Receiver, VethPair, RX_V4, RX_V6, TX_V4, TX_V6};

const BURST: usize = 40;
const PAYLOAD: usize = 100;
const PATIENCE: Duration = Duration::from_secs(1);

fn origin() -> Origin {
    Origin::api("e2e")
}

fn cidr(s: &str) -> Cidr {
    s.parse::<Cidr>().unwrap().normalized()
}

async fn add(writer: &Addr<MapWriter>, policy: Policy, net: &str, tag: &str) {
    let entry = NewEntry {
        cidr: cidr(net),
        tag: tag.into(),
        expiration: 0,
        metadata: None,
    };
    let msg = AddEntries {
        policy,
        entries: vec![entry],
        origin: origin(),
        atomic: false,
    };
    let results = writer.send(msg).await.expect("MapWriter alive").await;
    results[0].as_ref().expect("entry added");
}

async fn remove(writer: &Addr<MapWriter>, policy: Policy, net: &str) {
    let msg = RemoveEntries {
        policy,
        cidrs: vec![cidr(net)],
        origin: origin(),
        protect_sets: false,
        atomic: false,
    };
    let results = writer.send(msg).await.expect("MapWriter alive").await;
    results[0].as_ref().expect("entry removed");
}

async fn tag_counter(writer: &Addr<MapWriter>, policy: Policy, tag: &str) -> Counter {
    let snap = writer
        .send(ReadSnapshot)
        .await
        .expect("MapWriter alive")
        .expect("read counters");
    let tags = match policy {
        Policy::Drop => snap.drop_tags,
        Policy::Ignore => snap.ignore_tags,
    };
    tags.into_iter()
        .find(|(name, _)| name == tag)
        .map(|(_, c)| c)
        .unwrap_or_default()
}

/// Sends a burst from `src` in the sending namespace and counts what the
/// receiver got.
fn burst(pair: &VethPair, rx: &Receiver, src: IpAddr, dst: IpAddr) -> usize {
    send_udp(
        &pair.tx,
        SocketAddr::new(src, 0),
        SocketAddr::new(dst, rx.port()),
        BURST,
        PAYLOAD,
    );
    rx.count(BURST, PATIENCE)
}

/// Bytes of one datagram as XDP sees it: Ethernet + IP + UDP + payload.
fn frame_len(src: IpAddr) -> u64 {
    let ip = if src.is_ipv4() { 20 } else { 40 };
    (14 + ip + 8 + PAYLOAD) as u64
}

#[test]
fn drop_and_ignore_rules_act_on_live_traffic() {
    let pair = VethPair::new();
    let Loaded { program, maps } = bpf::load(Capacities::default()).expect("load (run as root)");
    let rx_if = pair.rx_if.clone();
    let (program, link) = pair.rx.enter(move || {
        let link = xdp::attach(&program, &rx_if, OperationMode::Native);
        (program, link)
    });
    let link = link.expect("native attach on veth");
    assert_eq!(link.mode, AttachMode::Native);
    assert!(pair.rx.has_xdp(&pair.rx_if));

    let rx4 = Receiver::bind(&pair.rx, SocketAddr::new(RX_V4.into(), 0));
    let rx6 = Receiver::bind(&pair.rx, SocketAddr::new(RX_V6.into(), 0));
    let (tx4, tx6): (IpAddr, IpAddr) = (TX_V4.into(), TX_V6.into());
    let (to4, to6): (IpAddr, IpAddr) = (RX_V4.into(), RX_V6.into());

    System::new().block_on(async {
        let clock: SharedClock = Arc::new(SystemClock);
        let writer = MapWriter::new(
            Firewall::new(maps, Capacities::default()),
            clock,
            Vec::new(),
        )
        .start();

        // No rule: everything arrives (this also settles ARP and ND).
        assert_eq!(burst(&pair, &rx4, tx4, to4), BURST, "IPv4 before any rule");
        assert_eq!(burst(&pair, &rx6, tx6, to6), BURST, "IPv6 before any rule");

        // Drop rules: nothing arrives, and each tag counted every packet.
        add(&writer, Policy::Drop, &format!("{TX_V4}/32"), "e2e4").await;
        add(&writer, Policy::Drop, &format!("{TX_V6}/128"), "e2e6").await;
        assert_eq!(burst(&pair, &rx4, tx4, to4), 0, "IPv4 with a drop rule");
        assert_eq!(burst(&pair, &rx6, tx6, to6), 0, "IPv6 with a drop rule");
        let n = BURST as u64;
        assert_eq!(
            tag_counter(&writer, Policy::Drop, "e2e4").await,
            Counter {
                packets: n,
                bytes: n * frame_len(tx4)
            }
        );
        assert_eq!(
            tag_counter(&writer, Policy::Drop, "e2e6").await,
            Counter {
                packets: n,
                bytes: n * frame_len(tx6)
            }
        );

        // An ignore rule on a wider prefix overrides the host drop rules.
        add(&writer, Policy::Ignore, "10.99.0.0/16", "lan4").await;
        add(&writer, Policy::Ignore, "fd00:99::/32", "lan6").await;
        assert_eq!(
            burst(&pair, &rx4, tx4, to4),
            BURST,
            "IPv4 ignored despite /32 drop"
        );
        assert_eq!(
            burst(&pair, &rx6, tx6, to6),
            BURST,
            "IPv6 ignored despite /128 drop"
        );
        assert_eq!(
            tag_counter(&writer, Policy::Ignore, "lan4").await.packets,
            n
        );
        assert_eq!(
            tag_counter(&writer, Policy::Ignore, "lan6").await.packets,
            n
        );
        assert_eq!(
            tag_counter(&writer, Policy::Drop, "e2e4").await.packets,
            n,
            "no new drops"
        );

        // Without the ignore rules the drops are back; without the drop
        // rules traffic passes again.
        remove(&writer, Policy::Ignore, "10.99.0.0/16").await;
        remove(&writer, Policy::Ignore, "fd00:99::/32").await;
        assert_eq!(burst(&pair, &rx4, tx4, to4), 0, "IPv4 dropped again");
        remove(&writer, Policy::Drop, &format!("{TX_V4}/32")).await;
        remove(&writer, Policy::Drop, &format!("{TX_V6}/128")).await;
        assert_eq!(burst(&pair, &rx4, tx4, to4), BURST, "IPv4 after removal");
        assert_eq!(burst(&pair, &rx6, tx6, to6), BURST, "IPv6 after removal");
    });

    drop(link);
    assert!(!pair.rx.has_xdp(&pair.rx_if), "dropping the link detaches");
    drop(program);
}

#[test]
fn generic_mode_filters_too() {
    let pair = VethPair::new();
    let caps = Capacities {
        drop: 16,
        ignore: 16,
        tags: 8,
    };
    let Loaded { program, maps } = bpf::load(caps).expect("load (run as root)");
    let rx_if = pair.rx_if.clone();
    let (_program, link) = pair.rx.enter(move || {
        let link = xdp::attach(&program, &rx_if, OperationMode::Generic);
        (program, link)
    });
    let link = link.expect("generic attach");
    assert_eq!(link.mode, AttachMode::Generic);
    let rx4 = Receiver::bind(&pair.rx, SocketAddr::new(RX_V4.into(), 0));
    let (tx4, to4): (IpAddr, IpAddr) = (TX_V4.into(), RX_V4.into());
    let mut fw = Firewall::new(maps, caps);
    assert_eq!(burst(&pair, &rx4, tx4, to4), BURST);
    let entry = NewEntry {
        cidr: cidr("10.99.0.0/24"),
        tag: "g".into(),
        expiration: 0,
        metadata: None,
    };
    let (results, _) = fw.add(
        Policy::Drop,
        vec![entry],
        &couic::origin::Origin::api("e2e"),
        false,
        1,
    );
    assert!(results[0].is_ok());
    assert_eq!(burst(&pair, &rx4, tx4, to4), 0);
    let snap = fw.snapshot().unwrap();
    assert_eq!(
        snap.drop_tags
            .iter()
            .find(|(t, _)| t == "g")
            .unwrap()
            .1
            .packets,
        BURST as u64
    );
}
