//! The XDP program on crafted frames through BPF_PROG_TEST_RUN: parsing
//! (VLAN, QinQ, IPv4 options, malformed and truncated frames), verdicts
//! (longest prefix, ignore over drop) and exact counters.
//!
//! Each test loads its own copy of the program, so its maps and counters
//! are its own and the tests run in parallel.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::*;
use couic::bpf::{self, Capacities, Counter, Loaded, STAT_MALFORMED};
use couic::firewall::{Firewall, NewEntry, Snapshot};
use couic::origin::Origin;
use couic_common::{Cidr, Policy};
use libbpf_rs::ProgramHandle;

struct Prog {
    program: ProgramHandle,
    fw: Firewall,
}

impl Prog {
    fn load() -> Self {
        let caps = Capacities {
            drop: 1024,
            ignore: 1024,
            tags: 64,
        };
        let Loaded { program, maps } = bpf::load(caps).expect("load the program (run as root)");
        Prog {
            program,
            fw: Firewall::new(maps, caps),
        }
    }

    fn add(&mut self, policy: Policy, cidr: &str, tag: &str) {
        let cidr: Cidr = cidr.parse::<Cidr>().unwrap().normalized();
        let entry = NewEntry {
            cidr,
            tag: tag.into(),
            expiration: 0,
            metadata: None,
        };
        let (results, _) = self
            .fw
            .add(policy, vec![entry], &Origin::api("test"), false, 1);
        results[0].as_ref().expect("add entry");
    }

    fn remove(&mut self, policy: Policy, cidr: &str) {
        let cidr: Cidr = cidr.parse::<Cidr>().unwrap().normalized();
        let (results, _) = self.fw.remove(policy, vec![cidr], false, false);
        results[0].as_ref().expect("remove entry");
    }

    fn run(&self, frame: &[u8]) -> u32 {
        bpf::test_run(&self.program, frame, 1)
            .expect("BPF_PROG_TEST_RUN")
            .0
    }

    fn snapshot(&self) -> Snapshot {
        self.fw.snapshot().expect("read counters")
    }

    fn tag(&self, policy: Policy, tag: &str) -> Counter {
        let snap = self.snapshot();
        let tags = match policy {
            Policy::Drop => snap.drop_tags,
            Policy::Ignore => snap.ignore_tags,
        };
        tags.into_iter()
            .find(|(name, _)| name == tag)
            .map(|(_, c)| c)
            .unwrap_or_default()
    }
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn frame_from(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => Frame::eth().ipv4(a),
        IpAddr::V6(a) => Frame::eth().ipv6(a),
    }
}

fn counter(packets: u64, bytes: usize) -> Counter {
    Counter {
        packets,
        bytes: bytes as u64,
    }
}

#[test]
fn ipv4_and_ipv6_sources_are_dropped_only_when_listed() {
    let mut p = Prog::load();
    let (a4, b4) = (
        IpAddr::V4(v4("198.51.100.7")),
        IpAddr::V4(v4("198.51.100.8")),
    );
    let (a6, b6) = (IpAddr::V6(v6("2001:db8::7")), IpAddr::V6(v6("2001:db8::8")));
    for ip in [a4, b4, a6, b6] {
        assert_eq!(p.run(&frame_from(ip)), XDP_PASS, "{ip} before any rule");
    }
    p.add(Policy::Drop, "198.51.100.7/32", "h4");
    p.add(Policy::Drop, "2001:db8::7/128", "h6");
    assert_eq!(p.run(&frame_from(a4)), XDP_DROP);
    assert_eq!(p.run(&frame_from(b4)), XDP_PASS);
    assert_eq!(p.run(&frame_from(a6)), XDP_DROP);
    assert_eq!(p.run(&frame_from(b6)), XDP_PASS);
    p.remove(Policy::Drop, "198.51.100.7/32");
    p.remove(Policy::Drop, "2001:db8::7/128");
    assert_eq!(p.run(&frame_from(a4)), XDP_PASS, "after removal");
    assert_eq!(p.run(&frame_from(a6)), XDP_PASS, "after removal");
}

#[test]
fn vlan_and_qinq_frames_are_filtered_like_untagged_ones() {
    let mut p = Prog::load();
    p.add(Policy::Drop, "203.0.113.0/24", "net4");
    p.add(Policy::Drop, "2001:db8:1::/48", "net6");
    let src4 = v4("203.0.113.9");
    let src6 = v6("2001:db8:1::9");
    let stacks: [&[u16]; 5] = [
        &[],
        &[ETH_P_8021Q],
        &[ETH_P_8021AD],
        &[ETH_P_8021AD, ETH_P_8021Q],
        &[ETH_P_8021Q, ETH_P_8021Q],
    ];
    for tags in stacks {
        let tagged = || tags.iter().fold(Frame::eth(), |f, t| f.vlan(*t));
        assert_eq!(
            p.run(&tagged().ipv4(src4)),
            XDP_DROP,
            "IPv4 under {tags:x?}"
        );
        assert_eq!(
            p.run(&tagged().ipv6(src6)),
            XDP_DROP,
            "IPv6 under {tags:x?}"
        );
        assert_eq!(
            p.run(&tagged().ipv4(v4("192.0.2.1"))),
            XDP_PASS,
            "unlisted under {tags:x?}"
        );
    }
    // A third tag is beyond what is parsed: the frame passes, unjudged and
    // not malformed.
    let three = Frame::eth()
        .vlan(ETH_P_8021AD)
        .vlan(ETH_P_8021Q)
        .vlan(ETH_P_8021Q)
        .ipv4(src4);
    assert_eq!(p.run(&three), XDP_PASS);
    let snap = p.snapshot();
    assert_eq!(snap.xdp[STAT_MALFORMED].packets, 0);
    assert_eq!(p.tag(Policy::Drop, "net4").packets, 5);
    assert_eq!(p.tag(Policy::Drop, "net6").packets, 5);
}

#[test]
fn ipv4_options_are_skipped_and_short_ihl_is_malformed() {
    let mut p = Prog::load();
    p.add(Policy::Drop, "192.0.2.0/24", "t");
    let src = v4("192.0.2.55");
    for ihl in 5..=15 {
        let frame = Frame::eth().l3(ETH_P_IP, &ipv4_header(src, ihl, 8));
        assert_eq!(p.run(&frame), XDP_DROP, "ihl {ihl}");
        let frame = Frame::eth()
            .vlan(ETH_P_8021Q)
            .l3(ETH_P_IP, &ipv4_header(src, ihl, 0));
        assert_eq!(p.run(&frame), XDP_DROP, "ihl {ihl} under a tag, no payload");
    }
    for ihl in 0..5 {
        let mut header = ipv4_header(src, 5, 8);
        header[0] = 0x40 | ihl;
        assert_eq!(
            p.run(&Frame::eth().l3(ETH_P_IP, &header)),
            XDP_PASS,
            "ihl {ihl}"
        );
    }
    // An IPv4 EtherType with a version-6 header, and the reverse.
    let mut header = ipv4_header(src, 5, 8);
    header[0] = 0x65;
    assert_eq!(p.run(&Frame::eth().l3(ETH_P_IP, &header)), XDP_PASS);
    let mut header = ipv6_header(v6("2001:db8::1"), 8);
    header[0] = 0x45;
    assert_eq!(p.run(&Frame::eth().l3(ETH_P_IPV6, &header)), XDP_PASS);

    let snap = p.snapshot();
    assert_eq!(snap.xdp[STAT_MALFORMED].packets, 5 + 2);
    assert_eq!(snap.xdp[XDP_DROP as usize].packets, 22);
    assert_eq!(
        snap.xdp[XDP_PASS as usize].packets, 7,
        "malformed frames pass"
    );
}

#[test]
fn frames_truncated_in_each_header_pass_and_count_as_malformed() {
    let mut p = Prog::load();
    p.add(Policy::Drop, "0.0.0.0/0", "all4");
    p.add(Policy::Drop, "::/0", "all6");
    let src4 = v4("192.0.2.1");
    let src6 = v6("2001:db8::1");
    let full4 = Frame::eth().ipv4(src4);
    let full6 = Frame::eth().ipv6(src6);
    let q4 = Frame::eth().vlan(ETH_P_8021Q).ipv4(src4);
    let qq6 = Frame::eth().vlan(ETH_P_8021AD).vlan(ETH_P_8021Q).ipv6(src6);
    let opts = Frame::eth().l3(ETH_P_IP, &ipv4_header(src4, 10, 0));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("IPv4 header cut at 19 bytes", full4[..14 + 19].to_vec()),
        ("IPv4 header cut at 1 byte", full4[..15].to_vec()),
        ("no IPv4 header at all", full4[..14].to_vec()),
        ("IPv4 options cut", opts[..14 + 30].to_vec()),
        ("IPv6 header cut at 39 bytes", full6[..14 + 39].to_vec()),
        ("no IPv6 header at all", full6[..14].to_vec()),
        ("802.1Q tag cut", q4[..16].to_vec()),
        ("IPv4 under 802.1Q cut", q4[..18 + 12].to_vec()),
        ("second tag of QinQ cut", qq6[..20].to_vec()),
        ("IPv6 under QinQ cut", qq6[..22 + 20].to_vec()),
    ];
    let mut bytes = 0;
    for (what, frame) in &cases {
        assert_eq!(p.run(frame), XDP_PASS, "{what}");
        bytes += frame.len();
    }
    // The same frames whole are judged (and dropped).
    for frame in [&full4, &full6, &q4, &qq6, &opts] {
        assert_eq!(p.run(frame), XDP_DROP);
    }
    let snap = p.snapshot();
    assert_eq!(snap.xdp[STAT_MALFORMED], counter(cases.len() as u64, bytes));
    assert_eq!(
        snap.xdp[XDP_PASS as usize],
        counter(cases.len() as u64, bytes)
    );
    assert_eq!(snap.xdp[XDP_ABORTED as usize].packets, 0);
    // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, so
    // that case cannot reach the program from here.
    assert!(bpf::test_run(&p.program, &full4[..13], 1).is_err());
}

#[test]
fn non_ip_frames_pass_uncounted_by_tags() {
    let mut p = Prog::load();
    p.add(Policy::Drop, "0.0.0.0/0", "all");
    let arp = Frame::eth().l3(ETH_P_ARP, &[0u8; 28]);
    let lldp = Frame::eth().l3(0x88cc, &[0u8; 40]);
    let arp_q = Frame::eth().vlan(ETH_P_8021Q).l3(ETH_P_ARP, &[0u8; 28]);
    for frame in [&arp, &lldp, &arp_q] {
        assert_eq!(p.run(frame), XDP_PASS);
    }
    let snap = p.snapshot();
    assert_eq!(
        snap.xdp[XDP_PASS as usize],
        counter(3, arp.len() + lldp.len() + arp_q.len())
    );
    assert_eq!(snap.xdp[STAT_MALFORMED].packets, 0);
    assert_eq!(p.tag(Policy::Drop, "all"), Counter::default());
}

#[test]
fn longest_prefix_names_the_counted_tag() {
    let mut p = Prog::load();
    p.add(Policy::Drop, "10.0.0.0/8", "p8");
    p.add(Policy::Drop, "10.1.0.0/16", "p16");
    p.add(Policy::Drop, "10.1.2.0/24", "p24");
    p.add(Policy::Drop, "10.1.2.3/32", "p32");
    p.add(Policy::Drop, "2001:db8::/32", "q32");
    p.add(Policy::Drop, "2001:db8:1::/48", "q48");
    p.add(Policy::Drop, "2001:db8:1::1/128", "q128");
    let sent = [
        ("10.1.2.3", "p32"),
        ("10.1.2.4", "p24"),
        ("10.1.3.4", "p16"),
        ("10.2.3.4", "p8"),
        ("2001:db8:1::1", "q128"),
        ("2001:db8:1::2", "q48"),
        ("2001:db8:2::1", "q32"),
    ];
    for (src, _) in sent {
        assert_eq!(p.run(&frame_from(src.parse().unwrap())), XDP_DROP, "{src}");
    }
    for (src, tag) in sent {
        let len = frame_from(src.parse().unwrap()).len();
        assert_eq!(
            p.tag(Policy::Drop, tag),
            counter(1, len),
            "tag {tag} ({src})"
        );
    }
    assert_eq!(p.run(&frame_from("11.0.0.1".parse().unwrap())), XDP_PASS);
    assert_eq!(p.run(&frame_from("2001:db9::1".parse().unwrap())), XDP_PASS);
}

#[test]
fn ignore_wins_over_a_longer_drop_prefix() {
    let mut p = Prog::load();
    p.add(Policy::Ignore, "10.0.0.0/8", "wide4");
    p.add(Policy::Drop, "10.1.2.3/32", "host4");
    p.add(Policy::Drop, "10.1.0.0/16", "net4");
    p.add(Policy::Ignore, "2001:db8::/32", "wide6");
    p.add(Policy::Drop, "2001:db8::1/128", "host6");
    // Same CIDR in both policies: ignore still wins.
    p.add(Policy::Ignore, "172.16.0.0/12", "both");
    p.add(Policy::Drop, "172.16.0.0/12", "both");

    for src in ["10.1.2.3", "10.1.9.9", "2001:db8::1", "172.16.5.5"] {
        assert_eq!(p.run(&frame_from(src.parse().unwrap())), XDP_PASS, "{src}");
    }
    let l4 = Frame::eth().ipv4(v4("10.0.0.1")).len();
    let l6 = Frame::eth().ipv6(v6("::1")).len();
    assert_eq!(p.tag(Policy::Ignore, "wide4"), counter(2, 2 * l4));
    assert_eq!(p.tag(Policy::Ignore, "wide6"), counter(1, l6));
    assert_eq!(p.tag(Policy::Ignore, "both"), counter(1, l4));
    for tag in ["host4", "net4", "host6", "both"] {
        assert_eq!(p.tag(Policy::Drop, tag), Counter::default(), "{tag}");
    }

    // Without the ignore rules the drop rules take effect.
    p.remove(Policy::Ignore, "10.0.0.0/8");
    p.remove(Policy::Ignore, "2001:db8::/32");
    p.remove(Policy::Ignore, "172.16.0.0/12");
    for src in ["10.1.2.3", "10.1.9.9", "2001:db8::1", "172.16.5.5"] {
        assert_eq!(p.run(&frame_from(src.parse().unwrap())), XDP_DROP, "{src}");
    }
    assert_eq!(p.tag(Policy::Drop, "host4").packets, 1);
    assert_eq!(p.tag(Policy::Drop, "net4").packets, 1);
}

/// Ignore hosts (/32, /128) live in their own host tables: each must let
/// its one address through a drop prefix, and only that address.
#[test]
fn an_ignore_host_lets_its_address_through_a_drop_prefix() {
    let mut p = Prog::load();
    p.add(Policy::Drop, "10.9.0.0/16", "net4");
    p.add(Policy::Ignore, "10.9.1.1/32", "me4");
    p.add(Policy::Drop, "2001:db8:9::/48", "net6");
    p.add(Policy::Ignore, "2001:db8:9::1/128", "me6");
    assert_eq!(p.run(&frame_from("10.9.1.1".parse().unwrap())), XDP_PASS);
    assert_eq!(p.run(&frame_from("10.9.1.2".parse().unwrap())), XDP_DROP);
    assert_eq!(
        p.run(&frame_from("2001:db8:9::1".parse().unwrap())),
        XDP_PASS
    );
    assert_eq!(
        p.run(&frame_from("2001:db8:9::2".parse().unwrap())),
        XDP_DROP
    );
    assert_eq!(p.tag(Policy::Ignore, "me4").packets, 1);
    assert_eq!(p.tag(Policy::Ignore, "me6").packets, 1);
    assert_eq!(p.tag(Policy::Drop, "net4").packets, 1);
    assert_eq!(p.tag(Policy::Drop, "net6").packets, 1);
}

#[test]
fn ipv4_mapped_ipv6_rules_never_match_ipv4_traffic() {
    let mut p = Prog::load();
    p.add(Policy::Drop, "::ffff:192.0.2.0/120", "mapped");
    assert_eq!(p.run(&Frame::eth().ipv4(v4("192.0.2.1"))), XDP_PASS);
    assert_eq!(p.run(&Frame::eth().ipv6(v6("::ffff:192.0.2.1"))), XDP_DROP);
}

#[test]
fn counters_add_up_exactly_per_action_and_tag() {
    let mut p = Prog::load();
    p.add(Policy::Drop, "198.51.100.0/24", "");
    p.add(Policy::Drop, "2001:db8::/64", "six");
    p.add(Policy::Ignore, "198.51.100.128/25", "ok");
    let dropped = Frame::eth().ipv4(v4("198.51.100.1"));
    let ignored = Frame::eth().vlan(ETH_P_8021Q).ipv4(v4("198.51.100.200"));
    let dropped6 = Frame::eth().ipv6(v6("2001:db8::5"));
    let passed = Frame::eth().ipv6(v6("2001:db9::5"));
    let repeat = |frame: &[u8], n: u32| assert!(bpf::test_run(&p.program, frame, n).is_ok());
    repeat(&dropped, 7);
    repeat(&ignored, 5);
    repeat(&dropped6, 3);
    repeat(&passed, 11);
    let snap = p.snapshot();
    assert_eq!(
        snap.xdp[XDP_DROP as usize],
        counter(10, 7 * dropped.len() + 3 * dropped6.len())
    );
    assert_eq!(
        snap.xdp[XDP_PASS as usize],
        counter(16, 5 * ignored.len() + 11 * passed.len())
    );
    assert_eq!(snap.xdp[XDP_ABORTED as usize], Counter::default());
    assert_eq!(snap.xdp[STAT_MALFORMED], Counter::default());
    assert_eq!(
        p.tag(Policy::Drop, ""),
        counter(7, 7 * dropped.len()),
        "untagged"
    );
    assert_eq!(p.tag(Policy::Drop, "six"), counter(3, 3 * dropped6.len()));
    assert_eq!(p.tag(Policy::Ignore, "ok"), counter(5, 5 * ignored.len()));
}

/// Hosts that share one bucket beyond its slots spill into the overflow
/// hash; the program finds them there, misses cleanly, and forgets them once
/// removed. Written through KernelMaps directly, to pick colliding hosts.
#[test]
fn a_spilled_bucket_is_looked_up_in_the_overflow_hash() {
    let Loaded { program, mut maps } = with_drop_capacity(1024);
    type Make = fn(u32) -> IpAddr;
    let cases: [(Make, usize); 2] = [
        (|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)), 7),
        (
            |i| IpAddr::V6(Ipv6Addr::from(0x2001_0db8u128 << 96 | u128::from(i))),
            3,
        ),
    ];
    for (k, (make, slots)) in cases.into_iter().enumerate() {
        let first_tag = 1 + 20 * k as u32;
        let index = bpf::rule_map_index(
            Policy::Drop,
            Cidr::new(make(0), if slots == 7 { 32 } else { 128 }).unwrap(),
        );
        let table = maps.bucket_index(index);
        let host = |ip: IpAddr| Cidr::new(ip, if ip.is_ipv4() { 32 } else { 128 }).unwrap();
        let len = if slots == 7 { 32 } else { 128 };
        let bucket = table.bucket_of(&octets(make(0)), len);
        let same: Vec<IpAddr> = (0..)
            .map(make)
            .filter(|ip| table.bucket_of(&octets(*ip), len) == bucket)
            .take(slots + 3)
            .collect();
        let (listed, unlisted) = same.split_at(slots + 2);
        let items: Vec<(Cidr, u32)> = listed
            .iter()
            .enumerate()
            .map(|(i, ip)| (host(*ip), first_tag + i as u32))
            .collect();
        insert_all(&mut maps, index, &items);
        for (i, ip) in listed.iter().enumerate() {
            assert_eq!(
                maps.rule_place(index, host(*ip)).unwrap(),
                Some(i >= slots),
                "{ip} is spilled iff its bucket was full"
            );
            let run = bpf::test_run(&program, &frame_from(*ip), 1).unwrap().0;
            assert_eq!(run, XDP_DROP, "{ip}");
            assert_eq!(
                maps.read_tag(Policy::Drop, first_tag + i as u32)
                    .unwrap()
                    .packets,
                1,
                "tag of {ip}"
            );
        }
        assert_eq!(
            bpf::test_run(&program, &frame_from(unlisted[0]), 1)
                .unwrap()
                .0,
            XDP_PASS
        );

        // Remove one slotted and one spilled host: both pass, the rest drop.
        let gone = [listed[0], listed[slots]];
        remove_all(&mut maps, index, &gone.map(host));
        for ip in listed {
            let want = if gone.contains(ip) {
                XDP_PASS
            } else {
                XDP_DROP
            };
            assert_eq!(
                bpf::test_run(&program, &frame_from(*ip), 1).unwrap().0,
                want,
                "{ip}"
            );
        }
        assert_eq!(maps.rule_place(index, host(gone[0])).unwrap(), None);
        assert_eq!(maps.rule_place(index, host(gone[1])).unwrap(), None);
        let again = maps.remove(index, &[host(gone[1])]);
        assert_eq!(
            again[0].as_ref().unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );

        // Re-tagging the host still spilled keeps it in the hash, under the
        // new tag, even though a slot is free again.
        let still = listed[slots + 1];
        let retag = 1 + first_tag + slots as u32 + 10;
        assert!(maps.insert(index, &[(host(still), retag)])[0].is_ok());
        assert_eq!(maps.rule_place(index, host(still)).unwrap(), Some(true));
        assert_eq!(
            bpf::test_run(&program, &frame_from(still), 1).unwrap().0,
            XDP_DROP
        );
        assert_eq!(maps.read_tag(Policy::Drop, retag).unwrap().packets, 1);
        // A new host of the bucket takes the free slot.
        assert!(maps.insert(index, &[(host(unlisted[0]), first_tag)])[0].is_ok());
        assert_eq!(
            maps.rule_place(index, host(unlisted[0])).unwrap(),
            Some(false)
        );
        assert!(maps.remove(index, &[host(unlisted[0])])[0].is_ok());

        let rest: Vec<Cidr> = listed
            .iter()
            .filter(|ip| !gone.contains(ip))
            .map(|ip| host(*ip))
            .collect();
        remove_all(&mut maps, index, &rest);
        for ip in listed {
            assert_eq!(
                bpf::test_run(&program, &frame_from(*ip), 1).unwrap().0,
                XDP_PASS,
                "{ip}"
            );
        }
    }
}

/// The program loaded for `drop` drop rules per family (16 ignore, 64
/// tags), every table flagged empty.
fn with_drop_capacity(drop: u32) -> Loaded {
    let caps = Capacities {
        drop,
        ignore: 16,
        tags: 64,
    };
    bpf::load(caps).expect("load the program (run as root)")
}

/// The program loaded with small tables (64 drop and 16 ignore rules per
/// family, 16 tags).
fn small_tables() -> Loaded {
    let caps = Capacities {
        drop: 64,
        ignore: 16,
        tags: 16,
    };
    bpf::load(caps).expect("load the program (run as root)")
}

/// The verdict on a frame from `ip`.
fn verdict_of(program: &ProgramHandle, ip: &str) -> u32 {
    let ip: IpAddr = ip.parse().unwrap();
    bpf::test_run(program, &frame_from(ip), 1).unwrap().0
}

/// Prefixes are found through their blocks: a prefix marks its length in
/// the parts of the blocks it meets, a re-tagged prefix is counted once, a
/// block keeps its bits while any prefix needs them, a prefix too wide to
/// mark is probed everywhere, and a spilled prefix is found in the overflow
/// hash.
#[test]
fn prefix_blocks_follow_prefixes_in_and_out() {
    let net = |s: &str| s.parse::<Cidr>().unwrap();
    let (d4, d6) = (
        bpf::rule_map_index(Policy::Drop, net("10.0.0.0/8")),
        bpf::rule_map_index(Policy::Drop, net("2001:db8::/32")),
    );
    let Loaded { program, mut maps } = small_tables();
    let verdict = |ip: &str| verdict_of(&program, ip);

    insert_all(&mut maps, d4, &[(net("10.0.0.0/8"), 1)]);
    assert_eq!(verdict("10.200.3.4"), XDP_DROP, "a /8 marks all its /16s");
    assert_eq!(verdict("11.0.0.1"), XDP_PASS);
    insert_all(
        &mut maps,
        d4,
        &[(net("10.1.2.0/24"), 2), (net("10.1.3.0/24"), 2)],
    );
    insert_all(&mut maps, d4, &[(net("10.1.2.0/24"), 3)]);
    assert_eq!(verdict("10.1.2.9"), XDP_DROP);
    assert_eq!(
        maps.read_tag(Policy::Drop, 3).unwrap().packets,
        1,
        "re-tagged"
    );
    remove_all(&mut maps, d4, &[net("10.0.0.0/8"), net("10.1.3.0/24")]);
    assert_eq!(verdict("10.200.3.4"), XDP_PASS);
    assert_eq!(
        verdict("10.1.2.9"),
        XDP_DROP,
        "10.1/16 keeps length 24 for the /24 counted once"
    );
    // Another part of the block, and another length in the same part.
    assert_eq!(verdict("10.1.200.1"), XDP_PASS);
    insert_all(
        &mut maps,
        d4,
        &[(net("10.1.200.0/22"), 4), (net("10.1.2.8/29"), 5)],
    );
    assert_eq!(verdict("10.1.203.1"), XDP_DROP);
    assert_eq!(verdict("10.1.2.9"), XDP_DROP);
    assert_eq!(
        maps.read_tag(Policy::Drop, 5).unwrap().packets,
        1,
        "/29 first"
    );
    assert_eq!(verdict("10.1.2.1"), XDP_DROP);
    assert_eq!(
        maps.read_tag(Policy::Drop, 3).unwrap().packets,
        3,
        "then /24"
    );
    remove_all(&mut maps, d4, &[net("10.1.2.0/24")]);
    assert_eq!(verdict("10.1.2.1"), XDP_PASS);
    assert_eq!(verdict("10.1.2.9"), XDP_DROP, "the /29 stays");
    // Too wide to mark: probed for every address.
    insert_all(&mut maps, d4, &[(net("0.0.0.0/0"), 6)]);
    assert_eq!(verdict("198.51.100.1"), XDP_DROP);
    assert_eq!(verdict("10.1.2.9"), XDP_DROP);
    assert_eq!(
        maps.read_tag(Policy::Drop, 5).unwrap().packets,
        3,
        "/29 beats /0"
    );
    remove_all(
        &mut maps,
        d4,
        &[net("0.0.0.0/0"), net("10.1.200.0/22"), net("10.1.2.8/29")],
    );
    for ip in ["198.51.100.1", "10.1.2.9", "10.1.203.1"] {
        assert_eq!(verdict(ip), XDP_PASS, "{ip}");
    }

    insert_all(&mut maps, d6, &[(net("2001:db8::/32"), 7)]);
    assert_eq!(verdict("2001:db8:1::1"), XDP_DROP);
    assert_eq!(verdict("2400:1::1"), XDP_PASS);
    insert_all(&mut maps, d6, &[(net("2400::/12"), 8)]);
    assert_eq!(verdict("2400:1::1"), XDP_DROP, "too wide to mark: probed");
    remove_all(&mut maps, d6, &[net("2400::/12")]);
    assert_eq!(verdict("2400:1::1"), XDP_PASS);
    // Lengths past 64 are in the block's high word.
    insert_all(&mut maps, d6, &[(net("2001:db8:1:0:8000::/65"), 9)]);
    assert_eq!(verdict("2001:db8:1:0:8000::1"), XDP_DROP);
    assert_eq!(maps.read_tag(Policy::Drop, 9).unwrap().packets, 1);
    assert_eq!(verdict("2001:db8:1::1"), XDP_DROP);
    assert_eq!(maps.read_tag(Policy::Drop, 7).unwrap().packets, 2);
    remove_all(&mut maps, d6, &[net("2001:db8::/32")]);
    assert_eq!(verdict("2001:db8:1::1"), XDP_PASS);
    assert_eq!(verdict("2001:db8:1:0:8000::1"), XDP_DROP);
    remove_all(&mut maps, d6, &[net("2001:db8:1:0:8000::/65")]);
    assert_eq!(verdict("2001:db8:1:0:8000::1"), XDP_PASS);
}

/// Prefixes share the buckets with hosts: a prefix whose bucket is full
/// spills into the overflow hash and is still found there.
#[test]
fn a_spilled_prefix_is_found_in_the_overflow_hash() {
    let index = bpf::rule_map_index(Policy::Drop, "10.0.0.0/24".parse().unwrap());
    let Loaded { program, mut maps } = small_tables();
    let table = maps.bucket_index(index);
    let bucket = table.bucket_of(&[10, 0, 0, 0], 24);
    // Nine /24s of one bucket: seven fill it, two spill.
    let same: Vec<Cidr> = (0u32..)
        .map(|i| Cidr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 8))), 24).unwrap())
        .filter(|c| table.bucket_of(&octets(c.addr()), 24) == bucket)
        .take(9)
        .collect();
    let items: Vec<(Cidr, u32)> = same.iter().map(|c| (*c, 1)).collect();
    insert_all(&mut maps, index, &items);
    for (i, c) in same.iter().enumerate() {
        assert_eq!(maps.rule_place(index, *c).unwrap(), Some(i >= 7), "{c}");
        let inside = match c.addr() {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) | 0x42)),
            IpAddr::V6(_) => unreachable!(),
        };
        let run = bpf::test_run(&program, &frame_from(inside), 1).unwrap().0;
        assert_eq!(run, XDP_DROP, "{inside} in {c}");
    }
    remove_all(&mut maps, index, &same);
    for c in &same {
        let run = bpf::test_run(&program, &frame_from(c.addr()), 1).unwrap().0;
        assert_eq!(run, XDP_PASS, "{c} removed");
    }
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A host is probed only where its block flags its eighth; the flag stays
/// while any host of that eighth does, and hosts still come before the
/// prefixes that cover them.
#[test]
fn hosts_are_found_while_their_eighth_of_the_block_is_flagged() {
    let net = |s: &str| s.parse::<Cidr>().unwrap();
    let index = |s: &str| bpf::rule_map_index(Policy::Drop, net(s));
    let Loaded { program, mut maps } = small_tables();
    let verdict = |ip: &str| verdict_of(&program, ip);
    let bits = |maps: &bpf::KernelMaps, s: &str| maps.host_bits(index(s), net(s)).unwrap();

    // 10.1.96.7 and 10.1.127.255: eighth 3 of 10.1/16; 10.1.255.1: eighth 7.
    let h4 = index("10.0.0.1/32");
    insert_all(
        &mut maps,
        h4,
        &[(net("10.1.96.7/32"), 1), (net("10.1.127.255/32"), 1)],
    );
    assert_eq!(bits(&maps, "10.1.96.7/32"), (1 << 3, 3));
    assert_eq!(verdict("10.1.96.7"), XDP_DROP);
    assert_eq!(verdict("10.1.96.8"), XDP_PASS);
    insert_all(&mut maps, h4, &[(net("10.1.255.1/32"), 1)]);
    assert_eq!(bits(&maps, "10.1.255.1/32"), (1 << 3 | 1 << 7, 7));
    remove_all(&mut maps, h4, &[net("10.1.96.7/32")]);
    assert_eq!(verdict("10.1.96.7"), XDP_PASS);
    assert_eq!(
        verdict("10.1.127.255"),
        XDP_DROP,
        "the eighth stays flagged for the host left"
    );
    remove_all(&mut maps, h4, &[net("10.1.127.255/32")]);
    assert_eq!(bits(&maps, "10.1.96.7/32"), (1 << 7, 3));
    assert_eq!(verdict("10.1.255.1"), XDP_DROP);

    // A host inside a prefix is still the longest match.
    insert_all(&mut maps, index("10.1.2.0/24"), &[(net("10.1.2.0/24"), 2)]);
    insert_all(&mut maps, h4, &[(net("10.1.2.9/32"), 3)]);
    assert_eq!(verdict("10.1.2.9"), XDP_DROP);
    assert_eq!(maps.read_tag(Policy::Drop, 3).unwrap().packets, 1);
    remove_all(&mut maps, h4, &[net("10.1.2.9/32"), net("10.1.255.1/32")]);
    assert_eq!(
        bits(&maps, "10.1.2.9/32"),
        (0, 0),
        "no host left in 10.1/16"
    );
    assert_eq!(verdict("10.1.2.9"), XDP_DROP);
    assert_eq!(
        maps.read_tag(Policy::Drop, 2).unwrap().packets,
        1,
        "the /24 once the host went"
    );
    assert_eq!(verdict("10.1.255.1"), XDP_PASS);

    // IPv6: eighths of the hashed /32, by the 3 bits after it.
    let h6 = index("2001:db8::1/128");
    insert_all(
        &mut maps,
        h6,
        &[
            (net("2001:db8:e000::1/128"), 4),
            (net("2001:db8::1/128"), 4),
        ],
    );
    assert_eq!(bits(&maps, "2001:db8:e000::1/128"), (1 << 7 | 1, 7));
    assert_eq!(verdict("2001:db8:e000::1"), XDP_DROP);
    assert_eq!(verdict("2001:db8::1"), XDP_DROP);
    assert_eq!(verdict("2001:db8:e000::2"), XDP_PASS);
    remove_all(&mut maps, h6, &[net("2001:db8:e000::1/128")]);
    assert_eq!(bits(&maps, "2001:db8:e000::1/128"), (1, 7));
    assert_eq!(verdict("2001:db8:e000::1"), XDP_PASS);
    assert_eq!(verdict("2001:db8::1"), XDP_DROP);
}

/// A batch of thousands of rules reads its buckets through mappings of the
/// array rather than one lookup each: what it reads must be what the
/// kernel holds, or a second batch into the same buckets would overwrite
/// the first's rules or list a re-tagged one twice.
#[test]
fn large_batches_into_buckets_already_in_use_keep_every_rule() {
    const N: u32 = 3000;
    // IPv6: 32,768 buckets, 512 pages, read in two mapped windows.
    let Loaded { program, mut maps } = with_drop_capacity(32_768);
    type Make = fn(u32) -> Cidr;
    let families: [Make; 2] = [
        |i| Cidr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 32).unwrap(),
        |i| {
            let a = Ipv6Addr::from(0x2001_0db8u128 << 96 | u128::from(i) << 16 | 1);
            Cidr::new(IpAddr::V6(a), 128).unwrap()
        },
    ];
    for make in families {
        let index = bpf::rule_map_index(Policy::Drop, make(0));
        // First the even hosts, tag 1; then the odd ones, tag 2, with the
        // first half of the even ones re-tagged 3, in one batch.
        let first: Vec<(Cidr, u32)> = (0..N).map(|i| (make(2 * i), 1)).collect();
        insert_all(&mut maps, index, &first);
        let second: Vec<(Cidr, u32)> = (0..N)
            .map(|i| (make(2 * i + 1), 2))
            .chain((0..N / 2).map(|i| (make(2 * i), 3)))
            .collect();
        insert_all(&mut maps, index, &second);
        for i in 0..2 * N {
            let cidr = make(i);
            assert!(
                maps.rule_place(index, cidr).unwrap().is_some(),
                "{cidr} is listed"
            );
            let frame = frame_from(cidr.addr());
            assert_eq!(
                bpf::test_run(&program, &frame, 1).unwrap().0,
                XDP_DROP,
                "{cidr}"
            );
        }
        let packets =
            |maps: &bpf::KernelMaps, tag| maps.read_tag(Policy::Drop, tag).unwrap().packets;
        assert_eq!(
            packets(&maps, 1),
            u64::from(N / 2),
            "even hosts not re-tagged"
        );
        assert_eq!(packets(&maps, 3), u64::from(N / 2), "re-tagged once each");
        assert_eq!(packets(&maps, 2), u64::from(N), "odd hosts");

        // A few more hosts whose buckets share one page past the first
        // (a mapping at an offset), added, then re-tagged in one batch.
        let table = maps.bucket_index(index);
        let len = make(0).prefix_len();
        let bucket = |c: Cidr| table.bucket_of(&octets(c.addr()), len);
        let near: Vec<Cidr> = (2 * N..)
            .map(make)
            .filter(|&c| (320..384).contains(&bucket(c)))
            .take(6)
            .collect();
        insert_all(
            &mut maps,
            index,
            &near.iter().map(|&c| (c, 4)).collect::<Vec<_>>(),
        );
        insert_all(
            &mut maps,
            index,
            &near.iter().map(|&c| (c, 5)).collect::<Vec<_>>(),
        );
        for &cidr in &near {
            let frame = frame_from(cidr.addr());
            assert_eq!(
                bpf::test_run(&program, &frame, 1).unwrap().0,
                XDP_DROP,
                "{cidr}"
            );
        }
        assert_eq!(
            (packets(&maps, 4), packets(&maps, 5)),
            (0, near.len() as u64)
        );
        for tag in [1, 2, 3, 5] {
            maps.reset_tag(Policy::Drop, tag).unwrap();
        }

        // And a large removal leaves nothing behind.
        let all: Vec<Cidr> = (0..2 * N).map(make).chain(near).collect();
        remove_all(&mut maps, index, &all);
        for cidr in all {
            assert_eq!(maps.rule_place(index, cidr).unwrap(), None, "{cidr}");
        }
    }
}

/// An IPv6 block lists up to two prefix lengths itself and keeps more in
/// an array of their own: either way the longest prefix matches, as
/// lengths come and go.
#[test]
fn ipv6_blocks_with_two_lengths_and_with_more() {
    let net = |s: &str| s.parse::<Cidr>().unwrap();
    let nets = bpf::rule_map_index(Policy::Drop, net("2001:db8::/48"));
    let Loaded { program, mut maps } = small_tables();
    let hits = |maps: &bpf::KernelMaps, ip: &str, tag: u32| {
        let before = maps.read_tag(Policy::Drop, tag).unwrap().packets;
        assert_eq!(verdict_of(&program, ip), XDP_DROP, "{ip}");
        maps.read_tag(Policy::Drop, tag).unwrap().packets - before
    };
    // Two lengths in the block of 2001:db8::/32.
    insert_all(
        &mut maps,
        nets,
        &[(net("2001:db8::/48"), 1), (net("2001:db8::/64"), 2)],
    );
    assert_eq!(hits(&maps, "2001:db8::1", 2), 1, "the /64");
    assert_eq!(hits(&maps, "2001:db8:0:1::1", 1), 1, "the /48 only");
    // A third and a fourth: the block now points to its full lengths.
    insert_all(
        &mut maps,
        nets,
        &[(net("2001:db8::/96"), 3), (net("2001:db8::/33"), 4)],
    );
    assert_eq!(hits(&maps, "2001:db8::1", 3), 1, "the /96");
    assert_eq!(
        hits(&maps, "2001:db8::1:0:0:1", 2),
        1,
        "the /64 outside the /96"
    );
    assert_eq!(hits(&maps, "2001:db8:0:1::1", 1), 1, "the /48");
    assert_eq!(hits(&maps, "2001:db8:1::1", 4), 1, "the /33");
    assert_eq!(
        verdict_of(&program, "2001:db8:8000::1"),
        XDP_PASS,
        "outside the /33"
    );
    // Back to two: the /96 and the /48 go.
    remove_all(
        &mut maps,
        nets,
        &[net("2001:db8::/96"), net("2001:db8::/48")],
    );
    assert_eq!(hits(&maps, "2001:db8::1", 2), 1, "the /64 again");
    assert_eq!(hits(&maps, "2001:db8:0:1::1", 4), 1, "the /33 now");
    remove_all(
        &mut maps,
        nets,
        &[net("2001:db8::/64"), net("2001:db8::/33")],
    );
    assert_eq!(verdict_of(&program, "2001:db8::1"), XDP_PASS);
}
