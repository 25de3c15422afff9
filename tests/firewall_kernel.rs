//! Firewall semantics against the real kernel maps: the program is loaded
//! (not attached) and frames go through BPF_PROG_TEST_RUN.

use couic::bpf::{self, Capacities, Loaded};
use couic::firewall::{ChangeKind, Firewall, NewEntry, WriteError};
use couic::origin::Origin;
use couic_common::{Cidr, Policy};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn setup(caps: Capacities) -> (libbpf_rs::ProgramHandle, Firewall) {
    let Loaded { program, maps } = bpf::load(caps).expect("load the program (run as root)");
    (program, Firewall::new(maps, caps))
}

fn entry(net: &str, tag: &str, expiration: u64) -> NewEntry {
    NewEntry {
        cidr: cidr(net),
        tag: tag.into(),
        expiration,
        metadata: None,
    }
}

fn cidr(s: &str) -> Cidr {
    s.parse::<Cidr>().unwrap().normalized()
}

fn frame_from(src: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20];
    f[12] = 0x08;
    f[14] = 0x45;
    f[26..30].copy_from_slice(&src);
    f
}

fn verdict(prog: &libbpf_rs::ProgramHandle, src: [u8; 4]) -> u32 {
    bpf::test_run(prog, &frame_from(src), 1).unwrap().0
}

#[test]
fn full_family_is_refused_and_atomic_batches_apply_nothing() {
    let caps = Capacities {
        drop: 2,
        ignore: 2,
        tags: 16,
    };
    let (prog, mut fw) = setup(caps);
    let batch = vec![
        entry("10.0.0.1/32", "a", 0),
        entry("10.0.0.2/32", "a", 0),
        entry("10.0.0.3/32", "a", 0),
    ];
    let (res, changes) = fw.add(Policy::Drop, batch.clone(), &Origin::api("test"), true, 1);
    assert!(changes.is_empty());
    assert!(matches!(res[0], Err(WriteError::Aborted)));
    assert!(matches!(res[2], Err(WriteError::Full { max: 2 })));
    assert_eq!(fw.store().len(Policy::Drop), 0);
    assert_eq!(
        verdict(&prog, [10, 0, 0, 1]),
        XDP_PASS,
        "nothing reached the kernel"
    );

    let (res, changes) = fw.add(Policy::Drop, batch, &Origin::api("test"), false, 1);
    assert!(res[0].is_ok() && res[1].is_ok());
    assert_eq!(
        res[2].as_ref().unwrap_err().to_string(),
        "couic underlying ebpf map is full: max 2 entries"
    );
    assert_eq!(changes.len(), 2);
    assert_eq!(verdict(&prog, [10, 0, 0, 2]), XDP_DROP);
    assert_eq!(verdict(&prog, [10, 0, 0, 3]), XDP_PASS);
    // The limit is per family: IPv6 still has room.
    let (res, _) = fw.add(
        Policy::Drop,
        vec![entry("2001:db8::1/128", "", 0)],
        &Origin::api("test"),
        false,
        1,
    );
    assert!(res[0].is_ok());
}

#[test]
fn duplicates_within_a_batch_and_across_calls() {
    let (_prog, mut fw) = setup(Capacities::default());
    let (res, _) = fw.add(
        Policy::Drop,
        vec![entry("192.0.2.1/24", "", 0), entry("192.0.2.0/24", "", 0)],
        &Origin::api("test"),
        false,
        1,
    );
    assert!(res[0].is_ok());
    assert_eq!(
        res[1].as_ref().unwrap_err().to_string(),
        "192.0.2.0/24 already exists"
    );
    let (res, _) = fw.add(
        Policy::Ignore,
        vec![entry("192.0.2.0/24", "", 0)],
        &Origin::api("test"),
        false,
        1,
    );
    assert!(res[0].is_ok(), "the other policy is independent");
    let (res, _) = fw.remove(
        Policy::Drop,
        vec![cidr("192.0.2.0/24"), cidr("192.0.2.0/24")],
        true,
        false,
    );
    assert!(res[0].is_ok());
    assert!(matches!(res[1], Err(WriteError::NotFound(_))));
    assert!(fw
        .store()
        .get(Policy::Ignore, cidr("192.0.2.0/24"))
        .is_some());
}

#[test]
fn ignore_wins_and_check_explains_it() {
    let (prog, mut fw) = setup(Capacities::default());
    fw.add(
        Policy::Drop,
        vec![entry("198.51.100.7/32", "bad", 0)],
        &Origin::api("test"),
        false,
        1,
    );
    assert_eq!(verdict(&prog, [198, 51, 100, 7]), XDP_DROP);
    fw.add(
        Policy::Ignore,
        vec![entry("198.51.0.0/16", "friends", 0)],
        &Origin::peer("node-b"),
        false,
        1,
    );
    assert_eq!(
        verdict(&prog, [198, 51, 100, 7]),
        XDP_PASS,
        "ignore /16 beats drop /32"
    );
    let v = fw.check("198.51.100.7".parse().unwrap());
    assert_eq!(v.policy, Some(Policy::Ignore));
    let e = v.entry.unwrap();
    assert_eq!(
        (e.tag.as_str(), &e.origin),
        ("friends", &Origin::peer("node-b"))
    );
    assert_eq!(fw.check("203.0.113.1".parse().unwrap()).policy, None);
}

#[test]
fn tag_counters_count_exactly_and_restart_when_a_tag_returns() {
    let (prog, mut fw) = setup(Capacities::default());
    fw.add(
        Policy::Drop,
        vec![
            entry("203.0.113.0/24", "scan", 0),
            entry("203.0.113.9/32", "", 0),
        ],
        &Origin::api("test"),
        false,
        1,
    );
    for _ in 0..3 {
        assert_eq!(verdict(&prog, [203, 0, 113, 5]), XDP_DROP);
    }
    assert_eq!(
        verdict(&prog, [203, 0, 113, 9]),
        XDP_DROP,
        "the /32 is the longest match"
    );
    let snap = fw.snapshot().unwrap();
    let tag = |name: &str| {
        snap.drop_tags
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.packets)
    };
    assert_eq!(tag("scan"), Some(3));
    assert_eq!(tag(""), Some(1));
    assert_eq!(snap.xdp[1].packets, 4);
    assert_eq!(snap.xdp[1].bytes, 4 * 34);

    fw.remove(Policy::Drop, vec![cidr("203.0.113.0/24")], true, false);
    assert!(fw
        .snapshot()
        .unwrap()
        .drop_tags
        .iter()
        .all(|(n, _)| n != "scan"));
    fw.add(
        Policy::Drop,
        vec![entry("203.0.113.0/24", "scan", 0)],
        &Origin::api("test"),
        false,
        1,
    );
    let snap = fw.snapshot().unwrap();
    assert_eq!(
        snap.drop_tags
            .iter()
            .find(|(n, _)| n == "scan")
            .unwrap()
            .1
            .packets,
        0
    );
}

#[test]
fn expiry_removes_only_entries_still_due() {
    let (prog, mut fw) = setup(Capacities::default());
    fw.add(
        Policy::Drop,
        vec![
            entry("192.0.2.10/32", "", 100),
            entry("192.0.2.11/32", "", 200),
        ],
        &Origin::api("test"),
        false,
        1,
    );
    let due = vec![
        (Policy::Drop, cidr("192.0.2.10/32"), 100),
        (Policy::Drop, cidr("192.0.2.11/32"), 200),
    ];
    assert!(fw.expire(&due, 99).is_empty());
    let changes = fw.expire(&due, 100);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].kind, ChangeKind::Removed);
    assert_eq!(verdict(&prog, [192, 0, 2, 10]), XDP_PASS);
    assert_eq!(verdict(&prog, [192, 0, 2, 11]), XDP_DROP);
    // Re-added with another expiration: the stale index item is ignored.
    fw.remove(Policy::Drop, vec![cidr("192.0.2.11/32")], true, false);
    fw.add(
        Policy::Drop,
        vec![entry("192.0.2.11/32", "", 500)],
        &Origin::api("test"),
        false,
        1,
    );
    assert!(fw.expire(&due, 300).is_empty());
    assert!(fw
        .store()
        .get(Policy::Drop, cidr("192.0.2.11/32"))
        .is_some());
}
