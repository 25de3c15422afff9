//! Crafted frames for the XDP program tests, the verdicts the program
//! returns, and rule batches written straight to its maps.
//! Namespaces, veth pairs and the daemon harness are in `couic-testkit`
//! (`tests/kit`).
//!
//! A test binary includes this module with `mod common;` and may use only
//! part of it.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use couic::bpf::KernelMaps;
use couic_common::Cidr;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

// ---------------------------------------------------------------- frames

/// Builds a frame layer by layer: Ethernet, optional VLAN tags, then a
/// network header and a payload.
#[derive(Clone, Default)]
pub struct Frame {
    tags: Vec<u16>,
    bytes: Vec<u8>,
}

impl Frame {
    /// Ethernet header with zero MACs; the EtherType is written by `l3`.
    pub fn eth() -> Self {
        Frame {
            tags: Vec::new(),
            bytes: Vec::new(),
        }
    }

    /// Adds a VLAN tag (`tpid` is 0x8100 or 0x88a8), outermost first.
    pub fn vlan(mut self, tpid: u16) -> Self {
        self.tags.push(tpid);
        self
    }

    /// The frame carrying `ethertype` and the network-layer `payload`.
    pub fn l3(self, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        for (i, tpid) in self.tags.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // TCI: VLAN id
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&self.bytes);
        f.extend_from_slice(payload);
        f
    }

    pub fn ipv4(self, src: Ipv4Addr) -> Vec<u8> {
        self.l3(ETH_P_IP, &ipv4_header(src, 5, 8))
    }

    pub fn ipv6(self, src: Ipv6Addr) -> Vec<u8> {
        self.l3(ETH_P_IPV6, &ipv6_header(src, 8))
    }
}

/// An IPv4 header of `ihl` 32-bit words (options are NOPs) announcing
/// `payload` bytes of UDP, followed by that payload (zeros).
pub fn ipv4_header(src: Ipv4Addr, ihl: u8, payload: usize) -> Vec<u8> {
    let hlen = usize::from(ihl.max(5)) * 4;
    let total = (hlen + payload) as u16;
    let mut h = vec![0u8; hlen + payload];
    h[0] = 0x40 | (ihl & 0x0f);
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[8] = 64;
    h[9] = 17;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&[192, 0, 2, 254]);
    for b in &mut h[20..hlen] {
        *b = 1; // IPOPT_NOOP
    }
    h
}

pub fn ipv6_header(src: Ipv6Addr, payload: usize) -> Vec<u8> {
    let mut h = vec![0u8; 40 + payload];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    h[6] = 17;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&"2001:db8:ffff::1".parse::<Ipv6Addr>().unwrap().octets());
    h
}

// ---------------------------------------------------------------- batches

/// Inserts `items` into rule set `index`: one result per item, all Ok.
pub fn insert_all(maps: &mut KernelMaps, index: usize, items: &[(Cidr, u32)]) {
    all_ok(maps.insert(index, items), items.len());
}

/// Removes `cidrs` from rule set `index`: one result per item, all Ok.
pub fn remove_all(maps: &mut KernelMaps, index: usize, cidrs: &[Cidr]) {
    all_ok(maps.remove(index, cidrs), cidrs.len());
}

/// `items` results, every one Ok. An empty or short list is not a pass.
fn all_ok(results: Vec<std::io::Result<()>>, items: usize) {
    assert!(items > 0, "a batch of nothing proves nothing");
    assert_eq!(results.len(), items, "one result per item");
    let failed: Vec<_> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
        .take(10)
        .collect();
    assert!(failed.is_empty(), "items failed (first 10): {failed:?}");
}
