//! Firewall::reload_sets against the real kernel maps (run as root): the
//! difference is applied, API entries hidden by set lines come back, and a
//! reload that does not fit changes nothing.

use couic::bpf::{self, Capacities};
use couic::firewall::{ChangeKind, Firewall, NewEntry, WriteError};
use couic::origin::Origin;
use couic::sets::SetsTarget;
use couic_common::{Cidr, Policy};

const PASS: u32 = 2;
const DROP: u32 = 1;

fn frame(src: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20];
    f[12] = 0x08;
    f[14] = 0x45;
    f[26..30].copy_from_slice(&src);
    f
}

fn cidr(s: &str) -> Cidr {
    s.parse::<Cidr>().unwrap().normalized()
}

fn target(drop: &[(&str, &[&str])], ignore: &[(&str, &[&str])]) -> SetsTarget {
    let mut t = SetsTarget::default();
    for (policy, files) in [(Policy::Drop, drop), (Policy::Ignore, ignore)] {
        for (stem, lines) in files {
            t.policy_mut(policy)
                .add_file(stem, lines.iter().map(|l| l.parse::<Cidr>().unwrap()));
        }
    }
    t
}

fn api_add(fw: &mut Firewall, c: &str, tag: &str, expiration: u64) {
    let e = NewEntry {
        cidr: cidr(c),
        tag: tag.into(),
        expiration,
        metadata: None,
    };
    let (res, _) = fw.add(Policy::Drop, vec![e], &Origin::api("test"), false, 100);
    res[0].as_ref().expect("api add");
}

struct Fixture {
    fw: Firewall,
    program: libbpf_rs::ProgramHandle,
}

impl Fixture {
    fn new(drop: u32) -> Self {
        let caps = Capacities {
            drop,
            ignore: 4,
            tags: 16,
        };
        let loaded = bpf::load(caps).expect("load the XDP program (run as root)");
        Fixture {
            fw: Firewall::new(loaded.maps, caps),
            program: loaded.program,
        }
    }

    fn verdict(&self, src: [u8; 4]) -> u32 {
        bpf::test_run(&self.program, &frame(src), 1).unwrap().0
    }

    fn tag(&self, c: &str) -> Option<String> {
        self.fw.store().get(Policy::Drop, cidr(c)).map(|e| e.tag)
    }
}

#[test]
fn applies_the_difference_and_restores_hidden_entries() {
    let mut f = Fixture::new(64);
    api_add(&mut f.fw, "10.0.0.0/24", "fail2ban", 0);
    let t = target(
        &[
            ("a", &["10.0.0.7/24", "1.1.1.1/32"]),
            ("b", &["1.1.1.1/32", "2.2.2.2/32"]),
        ],
        &[],
    );

    let (res, changes) = f.fw.reload_sets(&t, 200);
    let counts = res.unwrap();
    assert_eq!(counts[0].0, Policy::Ignore);
    assert_eq!(
        (
            counts[1].1.created,
            counts[1].1.updated,
            counts[1].1.removed
        ),
        (3, 0, 0)
    );
    // The API entry is hidden (not removed) and three set entries appear.
    let count = |kind| changes.iter().filter(|c| c.kind == kind).count();
    assert_eq!(count(ChangeKind::Added), 3);
    assert_eq!(count(ChangeKind::Hidden), 1);
    assert_eq!(count(ChangeKind::Removed), 0);
    assert_eq!(
        f.tag("1.1.1.1/32").as_deref(),
        Some("a.couic"),
        "first file in name order wins"
    );
    assert_eq!(f.tag("10.0.0.0/24").as_deref(), Some("a.couic"));
    let set_entry = f.fw.store().get(Policy::Drop, cidr("10.0.0.0/24")).unwrap();
    assert_eq!(
        (set_entry.expiration, set_entry.creation, set_entry.origin),
        (0, 200, Origin::Set)
    );
    assert_eq!(f.fw.store().shadow_count(Policy::Drop), 1);
    assert_eq!(f.verdict([2, 2, 2, 2]), DROP);
    assert_eq!(f.verdict([10, 0, 0, 9]), DROP);

    // API: a set entry cannot be added again nor deleted.
    let e = NewEntry {
        cidr: cidr("2.2.2.2/32"),
        tag: String::new(),
        expiration: 0,
        metadata: None,
    };
    let (res, _) =
        f.fw.add(Policy::Drop, vec![e], &Origin::api("test"), false, 300);
    assert!(matches!(res[0], Err(WriteError::Duplicate(_))));
    let (res, _) =
        f.fw.remove(Policy::Drop, vec![cidr("2.2.2.2/32")], true, false);
    assert!(matches!(res[0], Err(WriteError::SetEntry(_))));

    // The same files again: nothing to do, creation kept.
    let (res, changes) = f.fw.reload_sets(&t, 300);
    assert_eq!(res.unwrap()[1].1, Default::default());
    assert!(changes.is_empty());
    assert_eq!(
        f.fw.store()
            .get(Policy::Drop, cidr("1.1.1.1/32"))
            .unwrap()
            .creation,
        200
    );

    // The line hiding the API entry goes: the API entry comes back as it was.
    let t = target(
        &[("a", &["1.1.1.1/32"]), ("b", &["1.1.1.1/32", "2.2.2.2/32"])],
        &[],
    );
    let (res, changes) = f.fw.reload_sets(&t, 400);
    let c = res.unwrap()[1].1;
    assert_eq!((c.removed, c.restored, c.created), (1, 1, 0));
    let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.kind).collect();
    assert_eq!(kinds, [ChangeKind::Removed, ChangeKind::Restored]);
    let back = f.fw.store().get(Policy::Drop, cidr("10.0.0.0/24")).unwrap();
    assert_eq!(
        (back.tag.as_str(), back.creation, back.origin),
        ("fail2ban", 100, Origin::api("test"))
    );
    assert_eq!(f.fw.store().shadow_count(Policy::Drop), 0);
    assert_eq!(
        f.verdict([10, 0, 0, 9]),
        DROP,
        "still dropped, now by the API entry"
    );
    let (res, _) =
        f.fw.remove(Policy::Drop, vec![cidr("10.0.0.0/24")], true, false);
    assert!(res[0].is_ok(), "the restored entry is an API entry again");
    assert_eq!(f.verdict([10, 0, 0, 9]), PASS);

    // File `a` renamed to `c`: 1.1.1.1 now first appears in `b`.
    let t = target(
        &[("b", &["1.1.1.1/32", "2.2.2.2/32"]), ("c", &["1.1.1.1/32"])],
        &[],
    );
    let (res, _) = f.fw.reload_sets(&t, 500);
    assert_eq!(res.unwrap()[1].1.updated, 1);
    assert_eq!(f.tag("1.1.1.1/32").as_deref(), Some("b.couic"));

    // Every file gone: every set entry goes.
    let (res, _) = f.fw.reload_sets(&SetsTarget::default(), 600);
    assert_eq!(res.unwrap()[1].1.removed, 2);
    assert_eq!(f.fw.store().len(Policy::Drop), 0);
    assert_eq!(f.verdict([2, 2, 2, 2]), PASS);
}

#[test]
fn a_hidden_entry_that_expired_does_not_come_back() {
    let mut f = Fixture::new(64);
    api_add(&mut f.fw, "3.3.3.3/32", "short", 1_000);
    let (res, _) =
        f.fw.reload_sets(&target(&[("s", &["3.3.3.3/32"])], &[]), 500);
    res.unwrap();
    // The Expirer would try at 1000: the set entry (expiration 0) stays.
    assert!(f
        .fw
        .expire(&[(Policy::Drop, cidr("3.3.3.3/32"), 1_000)], 1_000)
        .is_empty());
    let (res, _) = f.fw.reload_sets(&SetsTarget::default(), 2_000);
    let c = res.unwrap()[1].1;
    assert_eq!((c.removed, c.restored), (1, 0));
    assert!(f.fw.store().get(Policy::Drop, cidr("3.3.3.3/32")).is_none());
    assert_eq!(f.verdict([3, 3, 3, 3]), PASS);
}

#[test]
fn a_reload_that_does_not_fit_changes_nothing() {
    let mut f = Fixture::new(4);
    api_add(&mut f.fw, "9.9.9.9/32", "", 0);
    let (res, _) = f.fw.reload_sets(
        &target(
            &[("a", &["1.0.0.1/32", "1.0.0.2/32"])],
            &[("i", &["8.8.8.8/32"])],
        ),
        10,
    );
    res.unwrap();

    // 1 API + 4 set entries > 4, even though ignore fits and comes first.
    let lines = ["1.0.0.1/32", "1.0.0.2/32", "1.0.0.3/32", "1.0.0.4/32"];
    let t = target(&[("a", &lines)], &[("i", &["8.8.8.8/32", "8.8.4.4/32"])]);
    let (res, changes) = f.fw.reload_sets(&t, 20);
    let err = res.unwrap_err();
    assert!(matches!(err, WriteError::Full { max: 4 }));
    assert_eq!(
        err.to_string(),
        "couic underlying ebpf map is full: max 4 entries"
    );
    assert!(changes.is_empty());
    assert_eq!(f.fw.store().len(Policy::Ignore), 1);
    assert_eq!(f.fw.store().len(Policy::Drop), 3);
    assert_eq!(f.verdict([1, 0, 0, 3]), PASS);

    // Covering the API entry does not need room; replacing lines neither.
    let t = target(&[("a", &["1.0.0.3/32", "1.0.0.4/32", "9.9.9.9/32"])], &[]);
    let (res, _) = f.fw.reload_sets(&t, 30);
    res.unwrap();
    assert_eq!(f.fw.store().len(Policy::Drop), 3);
    assert_eq!(f.verdict([1, 0, 0, 1]), PASS);
    assert_eq!(f.verdict([1, 0, 0, 4]), DROP);
}

#[test]
fn one_changed_line_in_a_big_set_is_one_map_change() {
    let mut f = Fixture::new(1 << 16);
    let lines: Vec<String> = (0..50_000u32)
        .map(|i| format!("10.{}.{}.1/32", i >> 8 & 0xff, i & 0xff))
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (res, changes) = f.fw.reload_sets(&target(&[("big", &refs)], &[]), 1);
    assert_eq!(res.unwrap()[1].1.created, 50_000);
    assert_eq!(changes.len(), 50_000);

    let mut edited = refs.clone();
    edited[123] = "192.0.2.1/32";
    let (res, changes) = f.fw.reload_sets(&target(&[("big", &edited)], &[]), 2);
    let c = res.unwrap()[1].1;
    assert_eq!((c.created, c.removed, c.updated), (1, 1, 0));
    assert_eq!(changes.len(), 2);
    assert_eq!(f.verdict([192, 0, 2, 1]), DROP);
    assert_eq!(f.verdict([10, 0, 123, 1]), PASS);
}
