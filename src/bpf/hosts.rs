//! The user-space side of one bucket array of exact hosts (layout and
//! purpose in `include/couic.h`): which bucket a host hashes to, what every
//! bucket holds, and the bytes of a bucket to write after it changed. Plain
//! data with no kernel handle; `KernelMaps` does the writing.

use super::as_bytes;
use super::types::{couic_b4_bucket, couic_b4_slot, couic_b6_bucket, couic_b6_slot};

const _: () = assert!(size_of::<couic_b4_bucket>() == 64);
const _: () = assert!(size_of::<couic_b6_bucket>() == 64);

/// The multiplier of `couic_bucket_of()` in `bpf/couic.bpf.c`.
const HASH_MUL: u64 = 0x9e37_79b9_7f4a_7c15;
const B4_SLOTS: usize = super::types::couic_bucket_slots::COUIC_B4_SLOTS.0 as usize;
const B6_SLOTS: usize = super::types::couic_bucket_slots::COUIC_B6_SLOTS.0 as usize;

/// An address as the program compares it: 4 or 16 bytes, network order.
pub type Addr = Vec<u8>;

/// Where a host sits: in a slot of `bucket`, or spilled from it into the
/// overflow hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub bucket: u32,
    pub spilled: bool,
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    /// In slot order, as written to the kernel.
    slots: Vec<(Addr, u32)>,
    spilled: Vec<(Addr, u32)>,
}

#[derive(Debug)]
pub struct HostTable {
    ipv4: bool,
    bits: u8,
    seed: u64,
    buckets: Vec<Bucket>,
}

impl HostTable {
    /// Buckets for `capacity` hosts: at most 2 per IPv4 bucket of 7 slots
    /// and 1 per IPv6 bucket of 3 when full, so few buckets ever spill.
    /// A power of two, at least 2.
    pub fn buckets_for(ipv4: bool, capacity: u32) -> u32 {
        let wanted = if ipv4 { capacity.div_ceil(2) } else { capacity };
        wanted.max(2).checked_next_power_of_two().unwrap_or(1 << 31)
    }

    /// A table of `buckets` (a power of two, at least 2) hashed with `seed`.
    pub fn new(ipv4: bool, buckets: u32, seed: u64) -> Self {
        assert!(buckets >= 2 && buckets.is_power_of_two());
        HostTable {
            ipv4,
            bits: buckets.trailing_zeros() as u8,
            seed,
            buckets: vec![Bucket::default(); buckets as usize],
        }
    }

    /// log2 of the number of buckets, as the program needs it.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    fn slots(&self) -> usize {
        if self.ipv4 {
            B4_SLOTS
        } else {
            B6_SLOTS
        }
    }

    /// The bucket of `addr`: the address read as native-endian 32-bit words,
    /// as the program loads them from the packet.
    pub fn bucket_of(&self, addr: &[u8]) -> u32 {
        let h = addr.chunks_exact(4).fold(self.seed, |h, w| {
            let w = u32::from_ne_bytes(w.try_into().expect("4 bytes"));
            (h ^ u64::from(w)).wrapping_mul(HASH_MUL)
        });
        (h >> (64 - u32::from(self.bits))) as u32
    }

    pub fn locate(&self, addr: &[u8]) -> Option<Place> {
        let bucket = self.bucket_of(addr);
        let b = &self.buckets[bucket as usize];
        let has = |list: &[(Addr, u32)]| list.iter().any(|(a, _)| a == addr);
        if has(&b.slots) {
            Some(Place {
                bucket,
                spilled: false,
            })
        } else if has(&b.spilled) {
            Some(Place {
                bucket,
                spilled: true,
            })
        } else {
            None
        }
    }

    /// Adds `addr`, or sets its tag if present (where it already is). Also
    /// returns the tag it had, so a failed kernel write can be undone.
    pub fn insert(&mut self, addr: &[u8], tag: u32) -> (Place, Option<u32>) {
        let slots = self.slots();
        let bucket = self.bucket_of(addr);
        let b = &mut self.buckets[bucket as usize];
        for (spilled, list) in [(false, &mut b.slots), (true, &mut b.spilled)] {
            if let Some(entry) = list.iter_mut().find(|(a, _)| a == addr) {
                let previous = std::mem::replace(&mut entry.1, tag);
                return (Place { bucket, spilled }, Some(previous));
            }
        }
        let spilled = b.slots.len() >= slots;
        let list = if spilled {
            &mut b.spilled
        } else {
            &mut b.slots
        };
        list.push((addr.to_vec(), tag));
        (Place { bucket, spilled }, None)
    }

    /// Takes `addr` out. The last slot moves into the freed one, so a
    /// reader racing the bucket write sees every other host at some slot.
    pub fn remove(&mut self, addr: &[u8]) -> Option<(Place, u32)> {
        let place = self.locate(addr)?;
        let b = &mut self.buckets[place.bucket as usize];
        let list = if place.spilled {
            &mut b.spilled
        } else {
            &mut b.slots
        };
        let at = list.iter().position(|(a, _)| a == addr)?;
        Some((place, list.swap_remove(at).1))
    }

    /// Undoes an [`insert`](Self::insert) that returned `previous`.
    pub fn undo_insert(&mut self, addr: &[u8], previous: Option<u32>) {
        match previous {
            Some(tag) => {
                self.insert(addr, tag);
            }
            None => {
                self.remove(addr);
            }
        }
    }

    /// The bucket's value as the kernel stores it.
    pub fn bucket_bytes(&self, bucket: u32) -> Vec<u8> {
        let b = &self.buckets[bucket as usize];
        let count = b.slots.len() as u16;
        // Only "any spilled" matters to the program; saturate, never wrap.
        let overflow = b.spilled.len().min(usize::from(u16::MAX)) as u16;
        if self.ipv4 {
            let mut v = couic_b4_bucket {
                count,
                overflow,
                ..Default::default()
            };
            for (slot, (addr, tag)) in v.slot.iter_mut().zip(&b.slots) {
                *slot = couic_b4_slot {
                    addr: addr[..].try_into().expect("IPv4"),
                    tag_id: *tag,
                };
            }
            as_bytes(&v).to_vec()
        } else {
            let mut v = couic_b6_bucket {
                count,
                overflow,
                ..Default::default()
            };
            for (slot, (addr, tag)) in v.slot.iter_mut().zip(&b.slots) {
                *slot = couic_b6_slot {
                    addr: addr[..].try_into().expect("IPv6"),
                    tag_id: *tag,
                };
            }
            as_bytes(&v).to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(i: u32) -> Addr {
        i.to_be_bytes().to_vec()
    }

    /// Addresses that all hash to bucket 0 of `t`.
    fn colliding(t: &HostTable, n: usize) -> Vec<Addr> {
        (0u32..)
            .map(v4)
            .filter(|a| t.bucket_of(a) == 0)
            .take(n)
            .collect()
    }

    #[test]
    fn sizing_keeps_buckets_lightly_loaded() {
        assert_eq!(HostTable::buckets_for(true, 262_144), 131_072);
        assert_eq!(HostTable::buckets_for(false, 262_144), 262_144);
        assert_eq!(HostTable::buckets_for(true, 1000), 512);
        assert_eq!(HostTable::buckets_for(true, 0), 2);
        assert_eq!(HostTable::new(true, 1024, 7).bits(), 10);
    }

    #[test]
    fn hash_matches_the_program_formula() {
        let t = HostTable::new(true, 1 << 12, 0x1234);
        let addr = [192, 0, 2, 1];
        let w = u64::from(u32::from_ne_bytes(addr));
        let expect = ((0x1234 ^ w).wrapping_mul(HASH_MUL) >> (64 - 12)) as u32;
        assert_eq!(t.bucket_of(&addr), expect);
        // Different seeds spread the same hosts differently.
        let other = HostTable::new(true, 1 << 12, 0x4321);
        assert!((0..64)
            .map(v4)
            .any(|a| t.bucket_of(&a) != other.bucket_of(&a)));
    }

    #[test]
    fn a_full_bucket_spills_and_flags_it() {
        let mut t = HostTable::new(true, 16, 99);
        let hosts = colliding(&t, B4_SLOTS + 2);
        for (i, a) in hosts.iter().enumerate() {
            let (place, previous) = t.insert(a, i as u32);
            assert_eq!(
                place,
                Place {
                    bucket: 0,
                    spilled: i >= B4_SLOTS
                }
            );
            assert_eq!(previous, None);
        }
        let bytes = t.bucket_bytes(0);
        assert_eq!(bytes.len(), 64);
        assert_eq!(
            u16::from_ne_bytes([bytes[56], bytes[57]]),
            B4_SLOTS as u16,
            "count"
        );
        assert_eq!(u16::from_ne_bytes([bytes[58], bytes[59]]), 2, "overflow");
        assert_eq!(&bytes[0..4], &hosts[0][..]);
        assert_eq!(u32::from_ne_bytes(bytes[4..8].try_into().unwrap()), 0);

        // Removing a slotted host moves the last slot into its place; the
        // spilled ones stay spilled until they are removed.
        assert_eq!(
            t.remove(&hosts[1]),
            Some((
                Place {
                    bucket: 0,
                    spilled: false
                },
                1
            ))
        );
        let bytes = t.bucket_bytes(0);
        assert_eq!(&bytes[8..12], &hosts[B4_SLOTS - 1][..]);
        assert_eq!(
            u16::from_ne_bytes([bytes[56], bytes[57]]),
            B4_SLOTS as u16 - 1
        );
        assert_eq!(
            t.locate(&hosts[B4_SLOTS]),
            Some(Place {
                bucket: 0,
                spilled: true
            })
        );
        for a in &hosts[B4_SLOTS..] {
            assert!(t.remove(a).unwrap().0.spilled);
        }
        assert_eq!(
            u16::from_ne_bytes([t.bucket_bytes(0)[58], t.bucket_bytes(0)[59]]),
            0
        );
        assert_eq!(t.remove(&hosts[1]), None);
    }

    #[test]
    fn reinsert_sets_the_tag_in_place_and_undo_restores_it() {
        let mut t = HostTable::new(false, 4, 5);
        let a: Addr = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
            .to_vec();
        let (first, _) = t.insert(&a, 3);
        let (again, previous) = t.insert(&a, 9);
        assert_eq!((first, previous), (again, Some(3)));
        let bytes = t.bucket_bytes(first.bucket);
        assert_eq!(&bytes[0..16], &a[..]);
        assert_eq!(u32::from_ne_bytes(bytes[16..20].try_into().unwrap()), 9);
        t.undo_insert(&a, previous);
        assert_eq!(t.remove(&a).map(|(_, tag)| tag), Some(3));
        t.insert(&a, 1);
        t.undo_insert(&a, None);
        assert_eq!(t.locate(&a), None);
        assert!(t.bucket_bytes(first.bucket).iter().all(|b| *b == 0));
    }

    #[test]
    fn ipv6_buckets_hold_three_hosts() {
        let mut t = HostTable::new(false, 2, 1);
        let hosts: Vec<Addr> = (0u128..)
            .map(|i| (0x2001_0db8u128 << 96 | i).to_be_bytes().to_vec())
            .filter(|a| t.bucket_of(a) == 1)
            .take(4)
            .collect();
        let spilled: Vec<bool> = hosts.iter().map(|a| t.insert(a, 0).0.spilled).collect();
        assert_eq!(spilled, [false, false, false, true]);
        let bytes = t.bucket_bytes(1);
        assert_eq!(u16::from_ne_bytes([bytes[60], bytes[61]]), 3);
        assert_eq!(u16::from_ne_bytes([bytes[62], bytes[63]]), 1);
    }
}
