//! The couic_active flags, read back from the kernel while rules come and
//! go: a rule set's flag is up exactly while it holds a rule, whoever
//! writes the rules (KernelMaps directly, or the Firewall). And the order:
//! a rule is never written while its flag is down, and a flag never goes
//! down while its last rule is still there. The order is seen by freezing a
//! map (user space can no longer write it, the program still reads it), so
//! that the step after it fails.

mod common;

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

use common::*;
use couic::bpf::{self, Capacities, Loaded, RULE_MAPS};
use couic::firewall::{Firewall, NewEntry};
use couic::origin::Origin;
use couic_common::{Cidr, Policy};
use libbpf_rs::{MapCore, MapFlags, MapHandle, ProgramHandle};

fn load() -> Loaded {
    let caps = Capacities {
        drop: 64,
        ignore: 16,
        tags: 16,
    };
    bpf::load(caps).expect("load the program (run as root)")
}

fn net(s: &str) -> Cidr {
    s.parse::<Cidr>().unwrap().normalized()
}

fn verdict(program: &ProgramHandle, ip: &str) -> u32 {
    let frame = match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => Frame::eth().ipv4(a),
        IpAddr::V6(a) => Frame::eth().ipv6(a),
    };
    bpf::test_run(program, &frame, 1).unwrap().0
}

/// The map of the program called `name`, found through the program's own
/// map ids (maps of other tests' copies have the same names).
fn map_named(program: &ProgramHandle, name: &str) -> MapHandle {
    let fd = program.as_fd().as_raw_fd();
    let info_len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = info_len;
    // SAFETY: `info` is a bpf_prog_info of `len` bytes, and no buffer is
    // given for the map ids: the kernel only writes `info` and `len`.
    let ret = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    assert_eq!(ret, 0, "program info");
    let mut ids = vec![0u32; info.nr_map_ids as usize];
    let mut info = libbpf_sys::bpf_prog_info {
        nr_map_ids: ids.len() as u32,
        map_ids: ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut len = info_len;
    // SAFETY: as above, and `ids` holds the `nr_map_ids` ids asked for.
    let ret = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    assert_eq!(ret, 0, "program map ids");
    ids.into_iter()
        .map(|id| MapHandle::from_map_id(id).expect("open a map of the program"))
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("the program uses no map {name}"))
}

/// The flags of couic_active as the kernel holds them, by
/// `couic_map_index`.
fn flags(program: &ProgramHandle) -> [u8; RULE_MAPS] {
    let value = map_named(program, "couic_active")
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .unwrap()
        .expect("couic_active has its one value");
    value[..RULE_MAPS].try_into().unwrap()
}

/// Flags up for rule sets `up`, down for the others.
fn only(up: &[usize]) -> [u8; RULE_MAPS] {
    std::array::from_fn(|set| u8::from(up.contains(&set)))
}

#[test]
fn a_flag_is_up_exactly_while_its_rule_set_holds_a_rule() {
    let Loaded { program, mut maps } = load();
    let index = |policy, s: &str| bpf::rule_map_index(policy, net(s));
    let hosts4 = index(Policy::Drop, "10.0.0.1/32");
    let nets4 = index(Policy::Drop, "10.9.0.0/16");
    let hosts6 = index(Policy::Drop, "2001:db8::1/128");
    let ignore4 = index(Policy::Ignore, "192.0.2.1/32");
    assert_eq!(flags(&program), only(&[]), "every set empty after load");
    assert_eq!(verdict(&program, "10.0.0.1"), XDP_PASS);

    // The first rule of an empty table: its flag is up and it drops.
    insert_all(&mut maps, hosts4, &[(net("10.0.0.1/32"), 1)]);
    assert_eq!(flags(&program), only(&[hosts4]));
    assert_eq!(verdict(&program, "10.0.0.1"), XDP_DROP);
    // Each set of each table has its own flag.
    insert_all(&mut maps, nets4, &[(net("10.9.0.0/16"), 1)]);
    insert_all(&mut maps, hosts6, &[(net("2001:db8::1/128"), 1)]);
    insert_all(&mut maps, ignore4, &[(net("192.0.2.1/32"), 1)]);
    assert_eq!(flags(&program), only(&[hosts4, nets4, hosts6, ignore4]));
    assert_eq!(verdict(&program, "10.9.1.1"), XDP_DROP);
    assert_eq!(verdict(&program, "2001:db8::1"), XDP_DROP);

    // A re-tag is no second rule, and a removal that finds nothing takes
    // none away.
    insert_all(&mut maps, hosts4, &[(net("10.0.0.1/32"), 2)]);
    insert_all(&mut maps, hosts4, &[(net("10.0.0.2/32"), 1)]);
    assert!(maps.remove(hosts4, &[net("10.0.0.3/32")])[0].is_err());
    remove_all(&mut maps, hosts4, &[net("10.0.0.1/32")]);
    assert_eq!(flags(&program)[hosts4], 1, "10.0.0.2 is still there");
    assert_eq!(verdict(&program, "10.0.0.1"), XDP_PASS);
    assert_eq!(verdict(&program, "10.0.0.2"), XDP_DROP);

    // The last rule gone, the flag is down; the other sets keep theirs.
    remove_all(&mut maps, hosts4, &[net("10.0.0.2/32")]);
    assert_eq!(flags(&program), only(&[nets4, hosts6, ignore4]));
    assert_eq!(verdict(&program, "10.0.0.2"), XDP_PASS);
    assert_eq!(verdict(&program, "10.9.1.1"), XDP_DROP);
    remove_all(&mut maps, nets4, &[net("10.9.0.0/16")]);
    remove_all(&mut maps, hosts6, &[net("2001:db8::1/128")]);
    remove_all(&mut maps, ignore4, &[net("192.0.2.1/32")]);
    assert_eq!(flags(&program), only(&[]));
}

#[test]
fn the_firewall_leaves_the_flags_to_the_kernel_maps() {
    let caps = Capacities {
        drop: 64,
        ignore: 16,
        tags: 16,
    };
    let Loaded { program, maps } = bpf::load(caps).expect("load the program (run as root)");
    let mut fw = Firewall::new(maps, caps);
    let entry = NewEntry {
        cidr: net("10.0.0.1/32"),
        tag: "t".into(),
        expiration: 0,
        metadata: None,
    };
    let (results, _) = fw.add(Policy::Drop, vec![entry], &Origin::api("test"), false, 1);
    results[0].as_ref().expect("added");
    let hosts4 = bpf::rule_map_index(Policy::Drop, net("10.0.0.1/32"));
    assert_eq!(flags(&program), only(&[hosts4]));
    assert_eq!(verdict(&program, "10.0.0.1"), XDP_DROP);
    let (results, _) = fw.remove(Policy::Drop, vec![net("10.0.0.1/32")], false, false);
    results[0].as_ref().expect("removed");
    assert_eq!(flags(&program), only(&[]));
    assert_eq!(verdict(&program, "10.0.0.1"), XDP_PASS);
}

/// With couic_active frozen, no flag can go up: the first rule of a set is
/// then refused before anything of it is written.
#[test]
fn a_rule_is_not_written_while_its_flag_cannot_go_up() {
    let Loaded { program, mut maps } = load();
    let hosts4 = bpf::rule_map_index(Policy::Drop, net("10.0.0.1/32"));
    map_named(&program, "couic_active").freeze().unwrap();

    let results = maps.insert(hosts4, &[(net("10.0.0.1/32"), 1)]);
    assert_eq!(
        results[0].as_ref().unwrap_err().raw_os_error(),
        Some(libc::EPERM)
    );
    assert_eq!(
        maps.rule_place(hosts4, net("10.0.0.1/32")).unwrap(),
        None,
        "nothing written while the flag is down"
    );
    assert_eq!(flags(&program), only(&[]));
    assert_eq!(verdict(&program, "10.0.0.1"), XDP_PASS);
}

/// With the IPv4 drop buckets frozen, the last rule cannot leave them: its
/// flag then stays up, and the program still finds the rule.
#[test]
fn a_flag_stays_up_while_its_last_rule_cannot_be_removed() {
    let Loaded { program, mut maps } = load();
    let hosts4 = bpf::rule_map_index(Policy::Drop, net("10.0.0.1/32"));
    insert_all(&mut maps, hosts4, &[(net("10.0.0.1/32"), 1)]);
    map_named(&program, "couic_d4_bkt").freeze().unwrap();

    let results = maps.remove(hosts4, &[net("10.0.0.1/32")]);
    assert!(results[0].is_err(), "the bucket cannot be written");
    assert_eq!(
        maps.rule_place(hosts4, net("10.0.0.1/32")).unwrap(),
        Some(false)
    );
    assert_eq!(flags(&program), only(&[hosts4]));
    assert_eq!(verdict(&program, "10.0.0.1"), XDP_DROP);
    // A failed insert into the same set leaves the flag up too: the table
    // still counts the rule it kept.
    assert!(maps.insert(hosts4, &[(net("10.0.0.2/32"), 1)])[0].is_err());
    assert_eq!(flags(&program), only(&[hosts4]));
    assert_eq!(verdict(&program, "10.0.0.1"), XDP_DROP);
}
