//! The entry store: every rule of both policies, as user space knows it.
//!
//! A plain struct, owned by the MapWriter actor, which changes it only after
//! the kernel maps accepted the same change. Records are compact (the tag is
//! an interned id) so 262,144 + 65,536 entries fit in a few tens of MB.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use couic_common::{Cidr, Entry, Policy, SET_TAG_SUFFIX};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

use crate::tags::{TagId, TagTable};

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Api,
    Peer,
    Set,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub creation: u64,
    pub expiration: u64,
    pub tag: TagId,
    pub origin: Origin,
}

/// An entry with its tag text, as handed out of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub cidr: Cidr,
    /// "" when untagged.
    pub tag: String,
    pub creation: u64,
    pub expiration: u64,
    pub origin: Origin,
}

impl StoredEntry {
    pub fn is_set_entry(&self) -> bool {
        self.origin == Origin::Set || self.tag.ends_with(SET_TAG_SUFFIX)
    }

    /// The API's entry. GET and list render an untagged entry as `""`; POST
    /// responses and `add` reports as `null` (`untagged_as_null`).
    pub fn to_wire(&self, untagged_as_null: bool) -> Entry {
        let tag = if self.tag.is_empty() && untagged_as_null {
            None
        } else {
            Some(self.tag.clone())
        };
        Entry {
            creation: self.creation,
            cidr: self.cidr.to_string(),
            tag,
            expiration: self.expiration,
        }
    }
}

/// An API or peer entry hidden by a set entry of the same CIDR, kept aside
/// until the set line goes away (§18.13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    /// "" when untagged. Kept as text: the tag holds no counter slot while
    /// its entry is hidden.
    pub tag: String,
    pub creation: u64,
    pub expiration: u64,
    pub origin: Origin,
}

/// Hashing for the maps keyed by CIDR that every write and lookup goes
/// through: a multiply-rotate mix with a per-process random seed.
///
/// SipHash cost more than anything else on the bulk path (a key is hashed
/// as several small writes). Keys come from authenticated clients and a
/// family holds at most its capacity, and the random seed keeps colliding
/// key sets from being computed in advance.
#[derive(Debug, Clone, Copy)]
pub struct KeyedState {
    seed: u64,
}

impl Default for KeyedState {
    fn default() -> Self {
        KeyedState {
            seed: RandomState::new().hash_one(0x0063_6f75_6963_u64),
        }
    }
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;

    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher(self.seed)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct KeyedHasher(u64);

const MIX: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl KeyedHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(MIX);
    }
}

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_u128(&mut self, n: u128) {
        self.mix(n as u64);
        self.mix((n >> 64) as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.mix(n as u64);
    }

    /// The SplitMix64 finaliser: every output bit depends on every input
    /// bit, so both the bucket index (low bits) and the control byte (top
    /// bits) vary between neighbouring addresses.
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A map keyed by CIDR (or one family's network) with [`KeyedState`].
pub type CidrMap<K, V> = HashMap<K, V, KeyedState>;

#[derive(Debug)]
struct Family<K> {
    entries: CidrMap<K, Record>,
}

impl<K: Eq + Hash + Copy> Family<K> {
    fn new() -> Self {
        Family {
            entries: CidrMap::default(),
        }
    }
}

/// One policy: IPv4 and IPv6 entries, each family bounded by `capacity`.
#[derive(Debug)]
struct PolicyStore {
    v4: Family<Ipv4Net>,
    v6: Family<Ipv6Net>,
    capacity: usize,
    /// Tags of this policy's entries and their slots in its counter array.
    tags: TagTable,
    /// Entries hidden by set entries, by CIDR.
    shadows: HashMap<Cidr, Shadowed>,
}

impl PolicyStore {
    fn new(capacity: usize, tag_slots: u32) -> Self {
        PolicyStore {
            v4: Family::new(),
            v6: Family::new(),
            capacity,
            tags: TagTable::new(tag_slots),
            shadows: HashMap::new(),
        }
    }

    fn get(&self, cidr: Cidr) -> Option<&Record> {
        match cidr.net() {
            IpNet::V4(n) => self.v4.entries.get(&n),
            IpNet::V6(n) => self.v6.entries.get(&n),
        }
    }

    fn insert(&mut self, cidr: Cidr, record: Record) -> Option<Record> {
        match cidr.net() {
            IpNet::V4(n) => self.v4.entries.insert(n, record),
            IpNet::V6(n) => self.v6.entries.insert(n, record),
        }
    }

    fn remove(&mut self, cidr: Cidr) -> Option<Record> {
        match cidr.net() {
            IpNet::V4(n) => self.v4.entries.remove(&n),
            IpNet::V6(n) => self.v6.entries.remove(&n),
        }
    }

    fn family_len(&self, ipv4: bool) -> usize {
        if ipv4 {
            self.v4.entries.len()
        } else {
            self.v6.entries.len()
        }
    }

    fn iter(&self) -> impl Iterator<Item = (Cidr, &Record)> {
        let v4 = self.v4.entries.iter().map(|(n, r)| (Cidr::from(*n), r));
        let v6 = self.v6.entries.iter().map(|(n, r)| (Cidr::from(*n), r));
        v4.chain(v6)
    }
}

#[derive(Debug)]
pub struct EntryStore {
    drop: PolicyStore,
    ignore: PolicyStore,
}

impl EntryStore {
    pub fn new(drop_capacity: usize, ignore_capacity: usize, tag_slots: u32) -> Self {
        EntryStore {
            drop: PolicyStore::new(drop_capacity, tag_slots),
            ignore: PolicyStore::new(ignore_capacity, tag_slots),
        }
    }

    pub fn tags(&self, policy: Policy) -> &TagTable {
        &self.policy(policy).tags
    }

    pub fn tags_mut(&mut self, policy: Policy) -> &mut TagTable {
        &mut self.policy_mut(policy).tags
    }

    fn policy(&self, policy: Policy) -> &PolicyStore {
        match policy {
            Policy::Drop => &self.drop,
            Policy::Ignore => &self.ignore,
        }
    }

    fn policy_mut(&mut self, policy: Policy) -> &mut PolicyStore {
        match policy {
            Policy::Drop => &mut self.drop,
            Policy::Ignore => &mut self.ignore,
        }
    }

    /// Maximum entries per family of `policy`.
    pub fn capacity(&self, policy: Policy) -> usize {
        self.policy(policy).capacity
    }

    pub fn len(&self, policy: Policy) -> usize {
        let p = self.policy(policy);
        p.family_len(true) + p.family_len(false)
    }

    pub fn family_len(&self, policy: Policy, ipv4: bool) -> usize {
        self.policy(policy).family_len(ipv4)
    }

    pub fn record(&self, policy: Policy, cidr: Cidr) -> Option<Record> {
        self.policy(policy).get(cidr).copied()
    }

    /// As [`StoredEntry::is_set_entry`], without copying the tag.
    pub fn is_set_record(&self, policy: Policy, record: &Record) -> bool {
        record.origin == Origin::Set || self.tags(policy).name(record.tag).ends_with(SET_TAG_SUFFIX)
    }

    pub fn get(&self, policy: Policy, cidr: Cidr) -> Option<StoredEntry> {
        self.record(policy, cidr)
            .map(|r| self.view(policy, cidr, &r))
    }

    /// Inserts or replaces; the caller holds a tag reference for `record.tag`
    /// and gets back the replaced record, whose reference it must release.
    pub fn insert(&mut self, policy: Policy, cidr: Cidr, record: Record) -> Option<Record> {
        self.policy_mut(policy).insert(cidr, record)
    }

    /// Removes and releases the entry's tag reference.
    pub fn remove(&mut self, policy: Policy, cidr: Cidr) -> Option<StoredEntry> {
        let record = self.policy_mut(policy).remove(cidr)?;
        let entry = self.view(policy, cidr, &record);
        self.tags_mut(policy).release(record.tag);
        Some(entry)
    }

    pub fn view(&self, policy: Policy, cidr: Cidr, record: &Record) -> StoredEntry {
        StoredEntry {
            cidr,
            tag: self.tags(policy).name(record.tag).to_string(),
            creation: record.creation,
            expiration: record.expiration,
            origin: record.origin,
        }
    }

    /// IPv4 entries first, then IPv6; order within a family is unspecified.
    pub fn iter(&self, policy: Policy) -> impl Iterator<Item = (Cidr, &Record)> {
        self.policy(policy).iter()
    }

    pub fn list(&self, policy: Policy) -> Vec<StoredEntry> {
        self.iter(policy)
            .map(|(c, r)| self.view(policy, c, r))
            .collect()
    }

    /// Keeps `entry` aside while a set entry hides its CIDR.
    pub fn shadow(&mut self, policy: Policy, cidr: Cidr, entry: Shadowed) {
        self.policy_mut(policy).shadows.insert(cidr, entry);
    }

    /// Takes back the entry hidden under `cidr`, if any.
    pub fn take_shadow(&mut self, policy: Policy, cidr: Cidr) -> Option<Shadowed> {
        self.policy_mut(policy).shadows.remove(&cidr)
    }

    pub fn shadowed(&self, policy: Policy, cidr: Cidr) -> Option<&Shadowed> {
        self.policy(policy).shadows.get(&cidr)
    }

    pub fn shadow_count(&self, policy: Policy) -> usize {
        self.policy(policy).shadows.len()
    }

    /// The most specific entry of `policy` containing `ip`, if any.
    pub fn longest_match(&self, policy: Policy, ip: std::net::IpAddr) -> Option<StoredEntry> {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        (0..=max).rev().find_map(|len| {
            let cidr = Cidr::new(ip, len).ok()?.normalized();
            self.get(policy, cidr)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse::<Cidr>().unwrap().normalized()
    }

    fn add(store: &mut EntryStore, p: Policy, c: &str, tag: &str) {
        let id = store.tags_mut(p).acquire(tag).id;
        let rec = Record {
            creation: 1,
            expiration: 0,
            tag: id,
            origin: Origin::Api,
        };
        assert!(store.insert(p, cidr(c), rec).is_none());
    }

    #[test]
    fn families_are_counted_apart_and_listed_v4_first() {
        let mut s = EntryStore::new(10, 10, 16);
        add(&mut s, Policy::Drop, "2001:db8::/32", "x");
        add(&mut s, Policy::Drop, "10.0.0.0/8", "");
        add(&mut s, Policy::Ignore, "10.0.0.0/8", "y");
        assert_eq!(s.len(Policy::Drop), 2);
        assert_eq!(s.family_len(Policy::Drop, true), 1);
        let list = s.list(Policy::Drop);
        assert_eq!(list[0].cidr.to_string(), "10.0.0.0/8");
        assert_eq!(list[0].to_wire(true).tag, None);
        assert_eq!(list[0].to_wire(false).tag.as_deref(), Some(""));
        assert_eq!(list[1].tag, "x");
    }

    #[test]
    fn remove_releases_the_tag() {
        let mut s = EntryStore::new(10, 10, 16);
        add(&mut s, Policy::Drop, "1.2.3.4/32", "t");
        let e = s.remove(Policy::Drop, cidr("1.2.3.4/32")).unwrap();
        assert_eq!(e.tag, "t");
        assert_eq!(s.tags(Policy::Drop).in_use(), 0);
        assert!(s.remove(Policy::Drop, cidr("1.2.3.4/32")).is_none());
    }

    #[test]
    fn neighbouring_hosts_hash_apart() {
        let state = KeyedState::default();
        let hashes: Vec<u64> = (0..4096u32)
            .map(|i| state.hash_one(cidr(&format!("10.0.{}.{}/32", i >> 8, i & 255)).net()))
            .collect();
        let distinct: std::collections::HashSet<u64> = hashes.iter().copied().collect();
        assert_eq!(distinct.len(), hashes.len());
        // hashbrown takes the bucket from the low bits, the tag from the top 7.
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
        let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 2000, "{}", low.len());
        assert_eq!(top.len(), 128);
    }

    #[test]
    fn neighbouring_cidrs_hash_apart() {
        let state = KeyedState::default();
        // Bucket indexes (low bits) of 4096 neighbouring hosts: about as
        // many distinct values as random ones would give (~2590 of 4096).
        let buckets: std::collections::HashSet<u64> = (0..4096u32)
            .map(|i| state.hash_one(cidr(&format!("10.0.{}.{}/32", i / 256, i % 256))) & 0xfff)
            .collect();
        assert!(buckets.len() > 2400, "{}", buckets.len());
        assert_ne!(
            state.hash_one(cidr("10.0.0.0/24")),
            state.hash_one(cidr("10.0.0.0/25"))
        );
    }

    #[test]
    fn longest_match_prefers_the_longest_prefix() {
        let mut s = EntryStore::new(10, 10, 16);
        add(&mut s, Policy::Drop, "10.0.0.0/8", "wide");
        add(&mut s, Policy::Drop, "10.1.0.0/16", "narrow");
        let hit = s
            .longest_match(Policy::Drop, "10.1.2.3".parse().unwrap())
            .unwrap();
        assert_eq!(hit.tag, "narrow");
        assert!(s
            .longest_match(Policy::Drop, "11.0.0.1".parse().unwrap())
            .is_none());
    }
}
