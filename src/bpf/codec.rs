//! Byte layouts: rules, keys, counters and blocks to and from the
//! skeleton's `types::` structs, as the kernel stores them.

use std::mem::offset_of;

use couic_common::Cidr;

use super::blocks::Block;
use super::types::{
    couic_active, couic_b4_block, couic_b6_block, couic_b6_lens, couic_counter, couic_rule,
    couic_v4_key, couic_v6_key,
};

// The byte views below rely on these layouts having no padding.
const _: () = assert!(size_of::<couic_v4_key>() == 8);
const _: () = assert!(size_of::<couic_v6_key>() == 20);
const _: () = assert!(size_of::<couic_rule>() == 4);
const _: () = assert!(size_of::<couic_counter>() == 16);
const _: () = assert!(size_of::<couic_active>() == 24);
const _: () = assert!(size_of::<couic_b4_block>() == 8);
const _: () = assert!(size_of::<couic_b6_block>() == 8);
const _: () = assert!(size_of::<couic_b6_lens>() == 16);

/// The overflow hash key of `cidr` (network byte order, as the program
/// builds it).
pub fn key_bytes(cidr: Cidr) -> Vec<u8> {
    let cidr = cidr.normalized();
    let prefix = u32::from(cidr.prefix_len());
    let key: Vec<u8> = match cidr.addr() {
        std::net::IpAddr::V4(a) => as_bytes(&couic_v4_key {
            prefixlen: prefix,
            addr: a.octets(),
        })
        .to_vec(),
        std::net::IpAddr::V6(a) => as_bytes(&couic_v6_key {
            prefixlen: prefix,
            addr: a.octets(),
        })
        .to_vec(),
    };
    key
}

pub fn rule_bytes(slot: u32) -> [u8; 4] {
    let mut out = [0; 4];
    out.copy_from_slice(as_bytes(&couic_rule { tag_id: slot }));
    out
}

/// Views a padding-free `repr(C)` value as its bytes.
pub fn as_bytes<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: only called with the generated key/value structs, which are
    // repr(C), Copy and padding-free (asserted above), so every byte is
    // initialised; the slice borrows `value` and cannot outlive it.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

pub fn counter_from(bytes: &[u8]) -> couic_counter {
    let mut c = couic_counter::default();
    if bytes.len() >= 16 {
        c.packets = u64::from_ne_bytes(bytes[0..8].try_into().expect("8 bytes"));
        c.bytes = u64::from_ne_bytes(bytes[8..16].try_into().expect("8 bytes"));
    }
    c
}

/// A rule as the program probes it: its address (network order, masked to
/// its length) and its prefix length.
#[derive(PartialEq, Eq, Hash)]
pub struct Rule {
    bytes: [u8; 16],
    size: usize,
    pub len: u8,
}

impl Rule {
    pub fn of(cidr: Cidr) -> Self {
        let cidr = cidr.normalized();
        let mut bytes = [0; 16];
        let size = match cidr.addr() {
            std::net::IpAddr::V4(a) => {
                bytes[..4].copy_from_slice(&a.octets());
                4
            }
            std::net::IpAddr::V6(a) => {
                bytes = a.octets();
                16
            }
        };
        Rule {
            bytes,
            size,
            len: cidr.prefix_len(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.size]
    }
}

pub fn block_size(ipv4: bool) -> usize {
    if ipv4 {
        size_of::<couic_b4_block>()
    } else {
        size_of::<couic_b6_block>()
    }
}

/// An IPv4 block read from the kernel.
pub fn block4_from(v: &[u8]) -> Block {
    let half = |at: usize| u32::from_ne_bytes(v[at..at + 4].try_into().expect("4 bytes"));
    Block {
        lens: u128::from(half(offset_of!(couic_b4_block, lens))),
        sub: half(offset_of!(couic_b4_block, sub)),
    }
}

/// An IPv6 block read from the kernel: its parts from the block, its
/// lengths and hosts from its `couic_b6_lens`.
pub fn block6_from(v: &[u8], lens: u128) -> Block {
    let at = offset_of!(couic_b6_block, sub);
    Block {
        lens,
        sub: u32::from_ne_bytes(v[at..at + 4].try_into().expect("4 bytes")),
    }
}

/// The lengths of a `couic_b6_lens` read from the kernel.
pub fn lens_from(v: &[u8]) -> u128 {
    let word = |at: usize| u64::from_ne_bytes(v[at..at + 8].try_into().expect("8 bytes"));
    let at = offset_of!(couic_b6_lens, lens);
    u128::from(word(at)) | u128::from(word(at + 8)) << 64
}

pub fn lens_bytes(lens: u128) -> Vec<u8> {
    as_bytes(&couic_b6_lens {
        lens: [lens as u64, (lens >> 64) as u64],
    })
    .to_vec()
}

/// A block's value as the kernel stores it.
pub fn block_bytes(ipv4: bool, block: Block) -> Vec<u8> {
    if ipv4 {
        as_bytes(&couic_b4_block {
            lens: block.lens as u32,
            sub: block.sub,
        })
        .to_vec()
    } else {
        let (len, more) = block.two_lengths();
        as_bytes(&couic_b6_block {
            sub: block.sub,
            hosts: block.lens as u8,
            len,
            more: u8::from(more),
        })
        .to_vec()
    }
}
