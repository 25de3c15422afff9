//! The entry store: every rule of both policies, as user space knows it.
//!
//! A plain struct, owned by the MapWriter actor, which changes it only after
//! the kernel maps accepted the same change. Records are compact (the tag is
//! an interned id) so 262,144 + 65,536 entries fit in a few tens of MB.

use std::collections::HashMap;
use std::hash::Hash;

use couic_common::{Cidr, Entry, Policy, SET_TAG_SUFFIX};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::hash::CidrMap;
use crate::origin::{Origin, OriginId, OriginTable};
use crate::tags::{TagId, TagTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub creation: u64,
    pub expiration: u64,
    pub tag: TagId,
    pub origin: OriginId,
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

impl Shadowed {
    /// The entry hidden at `cidr`, as it will come back.
    pub fn view(&self, cidr: Cidr) -> StoredEntry {
        StoredEntry {
            cidr,
            tag: self.tag.clone(),
            creation: self.creation,
            expiration: self.expiration,
            origin: self.origin.clone(),
        }
    }
}

impl StoredEntry {
    pub fn is_set_entry(&self) -> bool {
        self.origin == Origin::Set || self.tag.ends_with(SET_TAG_SUFFIX)
    }

    /// The API's entry. GET and list render an untagged entry as `""`; POST
    /// responses and `add` reports as `null` (`untagged_as_null`).
    pub fn to_wire(&self, untagged_as_null: bool) -> Entry {
        let tag = couic_common::wire_tag(&self.tag, untagged_as_null);
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
    origins: OriginTable,
}

impl EntryStore {
    pub fn new(drop_capacity: usize, ignore_capacity: usize, tag_slots: u32) -> Self {
        EntryStore {
            drop: PolicyStore::new(drop_capacity, tag_slots),
            ignore: PolicyStore::new(ignore_capacity, tag_slots),
            origins: OriginTable::default(),
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

    /// The id records keep for `origin`.
    pub fn origin_id(&mut self, origin: &Origin) -> OriginId {
        self.origins.intern(origin)
    }

    /// The id records keep for `origin`, if any record ever had it.
    pub fn find_origin(&self, origin: &Origin) -> Option<OriginId> {
        self.origins.find(origin)
    }

    /// The origin a record keeps.
    pub fn origin(&self, id: OriginId) -> &Origin {
        self.origins.get(id)
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
        record.origin == OriginId::SET
            || self.tags(policy).name(record.tag).ends_with(SET_TAG_SUFFIX)
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
            origin: self.origins.get(record.origin).clone(),
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

    /// The entries hidden under set entries, as they will come back.
    pub fn shadows(&self, policy: Policy) -> impl Iterator<Item = StoredEntry> + '_ {
        self.policy(policy)
            .shadows
            .iter()
            .map(|(cidr, s)| s.view(*cidr))
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
        let origin = store.origin_id(&Origin::api("test"));
        let rec = Record {
            creation: 1,
            expiration: 0,
            tag: id,
            origin,
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
