//! The user-space side of the rule bucket arrays (layout and purpose in
//! `include/couic.h`): which bucket a rule hashes to, and a bucket's value
//! decoded for editing. No copy of the buckets is kept here: the kernel
//! array is the only one, `RuleTable` reads the buckets a change touches,
//! edits them with [`Bucket`] and writes them back.
//!
//! Over 400 lines: the last 170 are its unit tests, among them the check
//! that the hash matches the program's.

use std::mem::offset_of;

use super::types::{
    couic_b4_bucket, couic_b4_slot, couic_b6_bucket, couic_b6_slot, couic_bucket_slots,
};

/// Size of every bucket: one cache line.
pub const BUCKET_SIZE: usize = 64;
const _: () = assert!(size_of::<couic_b4_bucket>() == BUCKET_SIZE);
const _: () = assert!(size_of::<couic_b6_bucket>() == BUCKET_SIZE);

/// The multiplier of `couic_bucket_of()` in `bpf/couic.bpf.c`.
const HASH_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// A slot's rule word: the tag id below, the prefix length above.
const TAG_BITS: u32 = couic_bucket_slots::COUIC_RULE_TAG_BITS.0;
const TAG_MASK: u32 = (1 << TAG_BITS) - 1;

/// Tag ids a slot can hold.
pub const MAX_TAGS: u32 = 1 << TAG_BITS;

/// Where the fields of a family's bucket sit, taken from the generated
/// layouts so that `include/couic.h` stays the only definition.
#[derive(Debug)]
struct Geometry {
    addr_len: usize,
    slot_size: usize,
    rule_at: usize,
    slots: usize,
    count_at: usize,
    overflow_at: usize,
}

const V4: Geometry = Geometry {
    addr_len: 4,
    slot_size: size_of::<couic_b4_slot>(),
    rule_at: offset_of!(couic_b4_slot, rule),
    slots: couic_bucket_slots::COUIC_B4_SLOTS.0 as usize,
    count_at: offset_of!(couic_b4_bucket, count),
    overflow_at: offset_of!(couic_b4_bucket, overflow),
};

const V6: Geometry = Geometry {
    addr_len: 16,
    slot_size: size_of::<couic_b6_slot>(),
    rule_at: offset_of!(couic_b6_slot, rule),
    slots: couic_bucket_slots::COUIC_B6_SLOTS.0 as usize,
    count_at: offset_of!(couic_b6_bucket, count),
    overflow_at: offset_of!(couic_b6_bucket, overflow),
};

fn geometry(ipv4: bool) -> &'static Geometry {
    if ipv4 {
        &V4
    } else {
        &V6
    }
}

/// How the rules of one table are spread over its bucket array.
#[derive(Debug, Clone, Copy)]
pub struct BucketIndex {
    bits: u8,
    seed: u64,
}

impl BucketIndex {
    /// Buckets for `capacity` rules: at most 4 per IPv4 bucket of 7 slots
    /// and 1 per IPv6 bucket of 3 when full, so few buckets spill (about
    /// 5 % of IPv4 buckets, 2 % of their rules, at capacity; fewer below).
    /// IPv4 at 4 per bucket measured faster than at 2 with many rules when
    /// other load competes for the caches: half the array, more of it in
    /// cache and in the TLB. IPv6 at 2 per bucket of 3 spilled too much.
    /// A power of two, at least 2.
    pub fn buckets_for(ipv4: bool, capacity: u32) -> u32 {
        let wanted = if ipv4 { capacity.div_ceil(4) } else { capacity };
        wanted.max(2).checked_next_power_of_two().unwrap_or(1 << 31)
    }

    /// An index over `buckets` (a power of two, at least 2) hashed with `seed`.
    pub fn new(buckets: u32, seed: u64) -> Self {
        assert!(buckets >= 2 && buckets.is_power_of_two());
        BucketIndex {
            bits: buckets.trailing_zeros() as u8,
            seed,
        }
    }

    /// log2 of the number of buckets, as the program needs it.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The bucket of rule (`addr`, `len`), `addr` masked to `len`: the
    /// address read as a number, 64 bits (or its only 32) at a time, the
    /// high half of the hash folded down before each 64 bits after the
    /// first.
    pub fn bucket_of(&self, addr: &[u8], len: u8) -> u32 {
        let start = (self.seed ^ u64::from(len)).wrapping_mul(HASH_MUL);
        let h = addr.chunks(8).enumerate().fold(start, |h, (i, part)| {
            let w = part.iter().fold(0u64, |w, &byte| w << 8 | u64::from(byte));
            let h = if i > 0 { h ^ h >> 32 } else { h };
            (h ^ w).wrapping_mul(HASH_MUL)
        });
        (h >> (64 - u32::from(self.bits))) as u32
    }
}

/// One bucket's value, as the kernel stores it, with the edits a change
/// makes. Slots `0..count` are in use; the rest are zero.
#[derive(Clone)]
pub struct Bucket {
    geo: &'static Geometry,
    bytes: [u8; BUCKET_SIZE],
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules: Vec<(&[u8], u8, u32)> = (0..self.count())
            .map(|s| (self.addr(s), self.len(s), self.tag(s)))
            .collect();
        f.debug_struct("Bucket")
            .field("rules", &rules)
            .field("overflow", &self.overflow())
            .finish()
    }
}

impl Bucket {
    #[cfg(test)]
    pub fn empty(ipv4: bool) -> Self {
        Bucket {
            geo: geometry(ipv4),
            bytes: [0; BUCKET_SIZE],
        }
    }

    /// A bucket read from the kernel.
    pub fn from_bytes(ipv4: bool, bytes: [u8; BUCKET_SIZE]) -> Self {
        Bucket {
            geo: geometry(ipv4),
            bytes,
        }
    }

    /// The value to write back.
    pub fn bytes(&self) -> &[u8; BUCKET_SIZE] {
        &self.bytes
    }

    fn u16_at(&self, at: usize) -> u16 {
        u16::from_ne_bytes([self.bytes[at], self.bytes[at + 1]])
    }

    fn set_u16_at(&mut self, at: usize, v: u16) {
        self.bytes[at..at + 2].copy_from_slice(&v.to_ne_bytes());
    }

    /// Slots in use. A corrupt count is read as "all slots".
    pub fn count(&self) -> usize {
        usize::from(self.u16_at(self.geo.count_at)).min(self.geo.slots)
    }

    /// How many rules of this bucket went to the overflow hash.
    pub fn overflow(&self) -> u16 {
        self.u16_at(self.geo.overflow_at)
    }

    /// One more rule spilled. Saturates: only "any" matters to the program.
    pub fn spill_one(&mut self) {
        let n = self.overflow().saturating_add(1);
        self.set_u16_at(self.geo.overflow_at, n);
    }

    /// One spilled rule left the hash. A saturated count stays, since the
    /// true number is no longer known; the program then just looks.
    pub fn unspill_one(&mut self) {
        let n = self.overflow();
        if n != u16::MAX {
            self.set_u16_at(self.geo.overflow_at, n.saturating_sub(1));
        }
    }

    fn slot_at(&self, slot: usize) -> usize {
        slot * self.geo.slot_size
    }

    fn addr(&self, slot: usize) -> &[u8] {
        let at = self.slot_at(slot);
        &self.bytes[at..at + self.geo.addr_len]
    }

    fn rule(&self, slot: usize) -> u32 {
        let at = self.slot_at(slot) + self.geo.rule_at;
        u32::from_ne_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes"))
    }

    fn set_rule(&mut self, slot: usize, rule: u32) {
        let at = self.slot_at(slot) + self.geo.rule_at;
        self.bytes[at..at + 4].copy_from_slice(&rule.to_ne_bytes());
    }

    pub fn tag(&self, slot: usize) -> u32 {
        self.rule(slot) & TAG_MASK
    }

    /// The prefix length of the rule in `slot`.
    pub fn len(&self, slot: usize) -> u8 {
        (self.rule(slot) >> TAG_BITS) as u8
    }

    pub fn set_tag(&mut self, slot: usize, tag: u32) {
        debug_assert!(tag <= TAG_MASK);
        let rule = self.rule(slot) & !TAG_MASK | tag & TAG_MASK;
        self.set_rule(slot, rule);
    }

    /// The slot holding rule (`addr`, `len`).
    pub fn find(&self, addr: &[u8], len: u8) -> Option<usize> {
        (0..self.count()).find(|&s| self.addr(s) == addr && self.len(s) == len)
    }

    /// Puts rule (`addr`, `len`) in the first free slot; false when the
    /// bucket is full.
    pub fn push(&mut self, addr: &[u8], len: u8, tag: u32) -> bool {
        let slot = self.count();
        if slot == self.geo.slots {
            return false;
        }
        let at = self.slot_at(slot);
        self.bytes[at..at + self.geo.addr_len].copy_from_slice(addr);
        self.set_rule(slot, u32::from(len) << TAG_BITS | tag & TAG_MASK);
        self.set_u16_at(self.geo.count_at, slot as u16 + 1);
        true
    }

    /// Empties `slot`: the last slot moves into it, so a reader racing the
    /// write sees every other rule at one slot or another.
    pub fn take(&mut self, slot: usize) {
        let last = self.count() - 1;
        let size = self.geo.slot_size;
        let (to, from) = (self.slot_at(slot), self.slot_at(last));
        self.bytes.copy_within(from..from + size, to);
        self.bytes[from..from + size].fill(0);
        self.set_u16_at(self.geo.count_at, last as u16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(i: u32) -> Vec<u8> {
        i.to_be_bytes().to_vec()
    }

    #[test]
    fn sizing_keeps_buckets_lightly_loaded() {
        assert_eq!(BucketIndex::buckets_for(true, 262_144), 65_536);
        assert_eq!(BucketIndex::buckets_for(false, 262_144), 262_144);
        assert_eq!(BucketIndex::buckets_for(true, 1000), 256);
        assert_eq!(BucketIndex::buckets_for(true, 0), 2);
        assert_eq!(BucketIndex::new(1024, 7).bits(), 10);
    }

    #[test]
    fn hash_matches_the_program_formula() {
        let t = BucketIndex::new(1 << 12, 0x1234);
        let addr = [192, 0, 2, 1];
        let start = (0x1234u64 ^ 32).wrapping_mul(HASH_MUL);
        let expect = ((start ^ 0xc000_0201).wrapping_mul(HASH_MUL) >> (64 - 12)) as u32;
        assert_eq!(t.bucket_of(&addr, 32), expect);
        // IPv6: the high 64 bits, then the high half folded down, then the
        // low 64 bits.
        let addr6: [u8; 16] = std::array::from_fn(|i| i as u8 * 17);
        let n = u128::from_be_bytes(addr6);
        let start = (0x1234u64 ^ 128).wrapping_mul(HASH_MUL);
        let h = (start ^ (n >> 64) as u64).wrapping_mul(HASH_MUL);
        let h = (h ^ h >> 32 ^ n as u64).wrapping_mul(HASH_MUL);
        assert_eq!(t.bucket_of(&addr6, 128), (h >> (64 - 12)) as u32);
        // The length is hashed too: a /24 and its first host part ways.
        let net = [192, 0, 2, 0];
        assert!((0..64).any(|s| {
            let t = BucketIndex::new(1 << 12, s);
            t.bucket_of(&net, 24) != t.bucket_of(&net, 32)
        }));
        // Different seeds spread the same hosts differently.
        let other = BucketIndex::new(1 << 12, 0x4321);
        assert!((0..64)
            .map(v4)
            .any(|a| t.bucket_of(&a, 32) != other.bucket_of(&a, 32)));
    }

    /// Rules as (address, prefix length).
    type Rules = Vec<(Vec<u8>, u8)>;

    /// Rules over full buckets of `slots`, if `rules` went into `t`.
    fn spilled(t: &BucketIndex, slots: usize, rules: &Rules) -> usize {
        let mut per = std::collections::HashMap::<u32, usize>::new();
        for (a, len) in rules {
            *per.entry(t.bucket_of(a, *len)).or_default() += 1;
        }
        per.values().map(|&n| n.saturating_sub(slots)).sum()
    }

    #[test]
    fn regular_rules_spread_at_least_as_well_as_random_ones() {
        // A full IPv4 table of 262,144 rules over 65,536 buckets of 7:
        // random rules spill about 5,500 (Poisson); consecutive hosts or
        // /24s, or a host per /24, must not pile up beyond that (the hash
        // of the words in network order spilled 110,000 consecutive hosts).
        let t = BucketIndex::new(BucketIndex::buckets_for(true, 1 << 18), 0x5eed);
        let n = 1u32 << 18;
        let base = u32::from_be_bytes([11, 0, 0, 0]);
        let shapes: [(&str, Rules); 3] = [
            ("hosts", (0..n).map(|i| (v4(base + i), 32)).collect()),
            ("/24s", (0..n).map(|i| (v4(base + (i << 8)), 24)).collect()),
            (
                "a host per /24",
                (0..n).map(|i| (v4(base + (i << 8) + 1), 32)).collect(),
            ),
        ];
        for (shape, rules) in &shapes {
            let s = spilled(&t, 7, rules);
            assert!(s < 6_000, "{shape}: {s} rules spilled");
        }
        // IPv6, 262,144 buckets of 3: random rules spill about 6,000.
        let t = BucketIndex::new(BucketIndex::buckets_for(false, 1 << 18), 0x5eed);
        let base = 0x2001_0db8u128 << 96;
        let v6 = |a: u128| a.to_be_bytes().to_vec();
        let shapes: [(&str, Rules); 3] = [
            (
                "hosts",
                (0..n).map(|i| (v6(base | u128::from(i)), 128)).collect(),
            ),
            (
                "/64s",
                (0..n)
                    .map(|i| (v6(base | u128::from(i) << 64), 64))
                    .collect(),
            ),
            (
                "/48s",
                (0..n)
                    .map(|i| (v6(base | u128::from(i) << 80), 48))
                    .collect(),
            ),
        ];
        for (shape, rules) in &shapes {
            let s = spilled(&t, 3, rules);
            assert!(s < 8_000, "{shape}: {s} rules spilled");
        }
    }

    #[test]
    fn an_ipv4_bucket_fills_its_seven_slots_in_the_kernel_layout() {
        let mut b = Bucket::empty(true);
        for i in 0..7 {
            assert!(b.push(&v4(i), 32, 100 + i));
        }
        assert!(!b.push(&v4(7), 32, 0), "an eighth rule does not fit");
        let bytes = b.bytes();
        assert_eq!(u16::from_ne_bytes([bytes[56], bytes[57]]), 7, "count");
        assert_eq!(&bytes[8..12], &v4(1)[..]);
        let rule = u32::from_ne_bytes(bytes[12..16].try_into().unwrap());
        assert_eq!(rule, 32 << 24 | 101, "length above the tag");
        assert_eq!(b.find(&v4(6), 32), Some(6));
        assert_eq!(b.find(&v4(6), 31), None, "same address, other length");
        assert_eq!(b.find(&v4(7), 32), None);

        // The last slot moves into the freed one and its old place is zeroed.
        b.take(1);
        assert_eq!(b.count(), 6);
        assert_eq!(b.find(&v4(6), 32), Some(1));
        assert_eq!(b.tag(1), 106);
        assert!(b.bytes()[48..56].iter().all(|x| *x == 0));
        b.set_tag(1, 9);
        assert_eq!(b.tag(b.find(&v4(6), 32).unwrap()), 9);
        assert_eq!(b.len(1), 32, "re-tagging keeps the length");
    }

    #[test]
    fn overflow_counts_spills_and_saturates() {
        let mut b = Bucket::empty(true);
        b.spill_one();
        b.spill_one();
        assert_eq!(b.overflow(), 2);
        assert_eq!(u16::from_ne_bytes([b.bytes()[58], b.bytes()[59]]), 2);
        b.unspill_one();
        b.unspill_one();
        b.unspill_one();
        assert_eq!(b.overflow(), 0, "never below zero");
        let mut full = [0u8; BUCKET_SIZE];
        full[58..60].copy_from_slice(&u16::MAX.to_ne_bytes());
        let mut b = Bucket::from_bytes(true, full);
        b.spill_one();
        b.unspill_one();
        assert_eq!(b.overflow(), u16::MAX, "a saturated count stays");
    }

    #[test]
    fn ipv6_buckets_hold_three_hosts() {
        let hosts: Vec<[u8; 16]> = (1u128..=4)
            .map(|i| (0x2001_0db8u128 << 96 | i).to_be_bytes())
            .collect();
        let mut b = Bucket::empty(false);
        let fitted: Vec<bool> = hosts.iter().map(|a| b.push(a, 128, 5)).collect();
        assert_eq!(fitted, [true, true, true, false]);
        assert_eq!(u16::from_ne_bytes([b.bytes()[60], b.bytes()[61]]), 3);
        assert_eq!(&b.bytes()[20..36], &hosts[1][..]);
        let rule = u32::from_ne_bytes(b.bytes()[36..40].try_into().unwrap());
        assert_eq!(rule, 128 << 24 | 5);
        b.take(2);
        b.take(0);
        assert_eq!(b.find(&hosts[1], 128), Some(0));
        assert_eq!(b.count(), 1);
        // A count the program never wrote is clamped, not trusted.
        let mut bytes = [0u8; BUCKET_SIZE];
        bytes[60..62].copy_from_slice(&9u16.to_ne_bytes());
        assert_eq!(Bucket::from_bytes(false, bytes).count(), 3);
    }
}
