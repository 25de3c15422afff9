//! Tag interning and kernel counter slots.
//!
//! Entries refer to their tag by a [`TagId`], so 300,000 entries with a few
//! tags cost one small string each tag, not each entry. A tag also needs a
//! slot in the kernel's per-tag counter arrays; slots are bounded by the
//! configured tag capacity, allocated when a tag gets its first entry and
//! freed when its last entry goes, so counters stay stable while a tag has
//! entries. Tags beyond capacity share [`TagTable::overflow_slot`], whose
//! counts are not attributed to any tag (the entries themselves still work).

use std::collections::HashMap;

/// Handle of an interned tag string. `TagId::UNTAGGED` is the empty tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagId(u32);

impl TagId {
    pub const UNTAGGED: TagId = TagId(0);
}

#[derive(Debug)]
struct TagInfo {
    name: String,
    refs: usize,
    slot: u32,
}

/// Acquiring a tag for a new entry: its id and, when the tag just got a
/// fresh kernel slot, that slot (whose counters must be zeroed first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    pub id: TagId,
    pub slot: u32,
    pub fresh_slot: bool,
}

#[derive(Debug)]
pub struct TagTable {
    by_name: HashMap<String, TagId>,
    infos: HashMap<TagId, TagInfo>,
    next_id: u32,
    free_slots: Vec<u32>,
    next_slot: u32,
    /// Slots 0..overflow are attributable; `overflow` itself is shared.
    overflow: u32,
}

impl TagTable {
    /// `slots` is the size of the kernel counter arrays (at least 2).
    pub fn new(slots: u32) -> Self {
        assert!(slots >= 2, "the tag table needs at least two slots");
        let mut table = TagTable {
            by_name: HashMap::new(),
            infos: HashMap::new(),
            next_id: 1,
            free_slots: Vec::new(),
            next_slot: 0,
            overflow: slots - 1,
        };
        table.by_name.insert(String::new(), TagId::UNTAGGED);
        table
    }

    pub fn overflow_slot(&self) -> u32 {
        self.overflow
    }

    /// Takes one reference on `name` ("" = untagged) for a new entry.
    pub fn acquire(&mut self, name: &str) -> Acquired {
        let id = match self.by_name.get(name) {
            Some(id) => *id,
            None => {
                let id = TagId(self.next_id);
                self.next_id += 1;
                self.by_name.insert(name.to_string(), id);
                id
            }
        };
        if let Some(info) = self.infos.get_mut(&id) {
            info.refs += 1;
            return Acquired {
                id,
                slot: info.slot,
                fresh_slot: false,
            };
        }
        let slot = self.take_slot();
        self.infos.insert(
            id,
            TagInfo {
                name: name.to_string(),
                refs: 1,
                slot,
            },
        );
        Acquired {
            id,
            slot,
            fresh_slot: slot != self.overflow,
        }
    }

    /// Takes `n` more references on a tag that already has one (entries of
    /// a batch sharing a tag: the name is looked up once).
    pub fn retain(&mut self, id: TagId, n: usize) {
        let info = self.infos.get_mut(&id).expect("retain needs a held tag");
        info.refs += n;
    }

    /// Drops one reference; the last one frees the tag and its slot.
    pub fn release(&mut self, id: TagId) {
        let Some(info) = self.infos.get_mut(&id) else {
            return;
        };
        info.refs -= 1;
        if info.refs > 0 {
            return;
        }
        let info = self.infos.remove(&id).expect("present above");
        if info.slot != self.overflow {
            self.free_slots.push(info.slot);
        }
        if id != TagId::UNTAGGED {
            self.by_name.remove(&info.name);
        }
    }

    /// The id of a tag that has entries (or the untagged id).
    pub fn id_of(&self, name: &str) -> TagId {
        self.by_name.get(name).copied().unwrap_or(TagId::UNTAGGED)
    }

    pub fn name(&self, id: TagId) -> &str {
        self.infos.get(&id).map(|i| i.name.as_str()).unwrap_or("")
    }

    pub fn slot(&self, id: TagId) -> u32 {
        self.infos.get(&id).map(|i| i.slot).unwrap_or(self.overflow)
    }

    /// Tags with entries and an attributable slot: (name, slot).
    pub fn counted(&self) -> impl Iterator<Item = (&str, u32)> {
        self.infos
            .values()
            .filter(|i| i.slot != self.overflow)
            .map(|i| (i.name.as_str(), i.slot))
    }

    pub fn in_use(&self) -> usize {
        self.infos.len()
    }

    fn take_slot(&mut self) -> u32 {
        if let Some(slot) = self.free_slots.pop() {
            return slot;
        }
        if self.next_slot < self.overflow {
            self.next_slot += 1;
            return self.next_slot - 1;
        }
        self.overflow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_while_referenced_and_recycled_after() {
        let mut t = TagTable::new(3);
        let a = t.acquire("a");
        assert!(a.fresh_slot);
        let a2 = t.acquire("a");
        assert_eq!((a2.id, a2.slot, a2.fresh_slot), (a.id, a.slot, false));
        let b = t.acquire("b");
        assert_ne!(a.slot, b.slot);
        // Capacity 3 = two attributable slots and the overflow.
        let c = t.acquire("c");
        assert_eq!((c.slot, c.fresh_slot), (t.overflow_slot(), false));
        assert_eq!(t.counted().count(), 2);

        t.release(a.id);
        assert_eq!(t.name(a.id), "a");
        t.release(a.id);
        assert_eq!(t.name(a.id), "");
        let d = t.acquire("d");
        assert_eq!((d.slot, d.fresh_slot), (a.slot, true));
        assert_eq!(t.name(d.id), "d");
    }

    #[test]
    fn retained_references_are_released_one_by_one() {
        let mut t = TagTable::new(4);
        let a = t.acquire("a");
        t.retain(a.id, 2);
        t.release(a.id);
        t.release(a.id);
        assert_eq!(t.name(a.id), "a");
        t.release(a.id);
        assert_eq!(t.in_use(), 0);
    }

    #[test]
    fn untagged_is_id_zero() {
        let mut t = TagTable::new(8);
        let u = t.acquire("");
        assert_eq!(u.id, TagId::UNTAGGED);
        t.release(u.id);
        assert_eq!(t.acquire("").id, TagId::UNTAGGED);
    }
}
