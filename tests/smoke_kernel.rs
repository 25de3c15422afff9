//! Quick check that an entry written through the Firewall reaches the data path.

use couic::bpf::{self, Capacities};
use couic::firewall::{Firewall, NewEntry};
use couic::store::Origin;
use couic_common::Policy;

fn ipv4_frame(src: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20];
    f[12] = 0x08; // IPv4
    f[14] = 0x45;
    f[26..30].copy_from_slice(&src);
    f
}

#[test]
fn drop_entry_drops_and_removal_passes() {
    let loaded = bpf::load(Capacities::default()).expect("load (run as root)");
    let mut fw = Firewall::new(loaded.maps, Capacities::default());
    let frame = ipv4_frame([192, 0, 2, 7]);
    assert_eq!(bpf::test_run(&loaded.program, &frame, 1).unwrap().0, 2, "XDP_PASS before");
    let entry = NewEntry { cidr: "192.0.2.0/24".parse().unwrap(), tag: "t".into(), expiration: 0, metadata: None };
    let (res, _) = fw.add(Policy::Drop, vec![entry], Origin::Api, false, 1);
    assert!(res[0].is_ok());
    assert_eq!(bpf::test_run(&loaded.program, &frame, 1).unwrap().0, 1, "XDP_DROP");
    let (res, _) = fw.remove(Policy::Drop, vec!["192.0.2.0/24".parse().unwrap()], true, false);
    assert!(res[0].is_ok());
    assert_eq!(bpf::test_run(&loaded.program, &frame, 1).unwrap().0, 2, "XDP_PASS after");
    let snap = fw.snapshot().unwrap();
    assert_eq!(snap.xdp[1].packets, 1);
    assert_eq!(snap.xdp[2].packets, 2);
}
