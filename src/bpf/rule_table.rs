//! One rule table (a policy and family) and its transactions: inserting,
//! re-tagging and removing rules in its buckets, overflow hash and blocks,
//! step by step in the order that keeps the data path from missing a rule;
//! and the reads tests make of where a rule landed.

use std::collections::HashSet;
use std::io;

use couic_common::Cidr;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::blocks::Blocks;
use super::codec::{key_bytes, rule_bytes, Rule};
use super::counters::Active;
use super::sys::{batch_items, copy_error, read_bucket};
use super::table_edit::BucketEdit;
use super::BucketIndex;

/// A table's handles and what the daemon keeps of it: its buckets, how
/// rules spread over them, its overflow hash, and its blocks in the kernel
/// and as counts.
pub struct RuleTable {
    /// Its place in `couic_table` order (its short lengths in couic_active).
    pub(super) number: usize,
    pub(super) ipv4: bool,
    pub(super) buckets: MapHandle,
    pub(super) index: BucketIndex,
    pub(super) overflow: MapHandle,
    pub(super) block_map: MapHandle,
    /// IPv6 only: each block's lengths in full (see `couic_b6_lens`).
    pub(super) lens_map: Option<MapHandle>,
    pub(super) blocks: Blocks,
    /// Rules held, hosts and prefixes (see [`set_of`]): a rule set's flag
    /// in couic_active is up while it holds any.
    pub(super) held: [usize; 2],
}

/// An insert under way: where each item goes, filled in by
/// [`RuleTable::place`] and carried through the steps of
/// [`RuleTable::insert`].
struct Insertion<'a> {
    items: &'a [(Cidr, u32)],
    edit: BucketEdit,
    errors: Vec<Option<io::Error>>,
    /// Items that go to the overflow hash, with whether the hash did not
    /// hold them yet; the others land in a slot of their bucket.
    spills: Vec<(usize, bool)>,
    /// Per item, once the hash took it: whether it was new there.
    spilled: Vec<Option<bool>>,
    /// Items the table did not hold (each rule once).
    fresh: Vec<usize>,
}

/// A removal under way, filled in by [`RuleTable::find`].
struct Removal<'a> {
    cidrs: &'a [Cidr],
    edit: BucketEdit,
    errors: Vec<Option<io::Error>>,
    /// Items taken from a slot of their bucket.
    slotted: Vec<bool>,
    /// Items to delete from the overflow hash.
    spills: Vec<usize>,
}

impl RuleTable {
    /// Inserts (or re-tags) `items`, as (CIDR, tag slot). One result per
    /// item. The steps run in this order, each after what it relies on.
    pub fn insert(&mut self, items: &[(Cidr, u32)], active: &mut Active) -> Vec<io::Result<()>> {
        // 1. In memory: each item's slot, or its spill into the hash.
        let mut ins = self.place(items);
        // 2. The flags of the sets that get their first rule go up before
        // the rule is written: the data path skips a set flagged empty.
        // 3. The blocks mark the new rules before the kernel holds them.
        let ready = self.raise(&ins, active).and_then(|()| {
            let fresh = ins.fresh.iter().map(|&i| items[i].0);
            self.count_in(fresh, active)
        });
        if let Err(e) = ready {
            self.lower_empty(active);
            return items.iter().map(|_| Err(copy_error(&e))).collect();
        }
        // 4. The overflow hash takes the spills before a bucket flags them.
        self.write_spills(&mut ins);
        // 5. The buckets: slotted rules listed, spills flagged.
        self.write_slots(&mut ins);
        // 6. Rules that did not land count out again; a bit left set a
        // moment only costs a probe. Those that did count as held, and a
        // flag raised for none goes down again.
        let failed = ins.fresh.iter().filter(|&&i| ins.errors[i].is_some());
        let _ = self.count_out(failed.map(|&i| items[i].0), active);
        for &i in &ins.fresh {
            if ins.errors[i].is_none() {
                self.held[set_of(items[i].0)] += 1;
            }
        }
        self.lower_empty(active);
        results(ins.errors)
    }

    /// Raises the flags of the sets `ins` adds rules to that held none.
    fn raise(&self, ins: &Insertion, active: &mut Active) -> io::Result<()> {
        let mut adds = [false; 2];
        for &i in &ins.fresh {
            adds[set_of(ins.items[i].0)] = true;
        }
        for set in (0..2).filter(|&s| adds[s] && self.held[s] == 0) {
            active.raise(2 * self.number + set)?;
        }
        Ok(())
    }

    /// Lowers the flags of the sets that hold no rule.
    fn lower_empty(&self, active: &mut Active) {
        for set in (0..2).filter(|&s| self.held[s] == 0) {
            if let Err(e) = active.lower(2 * self.number + set) {
                tracing::error!(error = %e, "cannot update couic_active");
            }
        }
    }

    /// Insert, in memory only: reads the buckets of `items` and puts each
    /// in a slot of its bucket, or lists it for the overflow hash.
    fn place<'a>(&self, items: &'a [(Cidr, u32)]) -> Insertion<'a> {
        let rules: Vec<Rule> = items.iter().map(|(c, _)| Rule::of(*c)).collect();
        let mut edit = self.read_buckets(&rules);
        let mut errors: Vec<Option<io::Error>> = items.iter().map(|_| None).collect();
        let mut spills: Vec<(usize, bool)> = Vec::new();
        let mut spilled_now: HashSet<&Rule> = HashSet::new();
        // Rules the table did not hold: they are counted in the blocks
        // before the kernel sees them.
        let mut fresh = vec![false; items.len()];
        for (i, ((cidr, tag), rule)) in items.iter().zip(&rules).enumerate() {
            let b = match edit.bucket(i) {
                Ok(b) => b,
                Err(e) => {
                    errors[i] = Some(e);
                    continue;
                }
            };
            if let Some(slot) = b.find(rule.bytes(), rule.len) {
                b.set_tag(slot, *tag);
            } else if spilled_now.contains(rule) || (b.overflow() > 0 && self.in_overflow(*cidr)) {
                // Already in the hash: re-tagged there, the bucket unchanged.
                spills.push((i, false));
                continue;
            } else {
                fresh[i] = true;
                if !b.push(rule.bytes(), rule.len, *tag) {
                    spilled_now.insert(rule);
                    spills.push((i, true));
                    continue;
                }
            }
            edit.touch(i);
        }
        Insertion {
            items,
            edit,
            errors,
            spills,
            spilled: items.iter().map(|_| None).collect(),
            fresh: (0..items.len()).filter(|&i| fresh[i]).collect(),
        }
    }

    /// Insert, after the blocks: spilled rules go into the overflow hash
    /// before their bucket, which flags them, is written.
    fn write_spills(&self, ins: &mut Insertion) {
        let items = ins.items;
        let keys: Vec<Vec<u8>> = ins
            .spills
            .iter()
            .map(|&(i, _)| key_bytes(items[i].0))
            .collect();
        let values: Vec<Vec<u8>> = ins
            .spills
            .iter()
            .map(|&(i, _)| rule_bytes(items[i].1).to_vec())
            .collect();
        let written = batch_items(&self.overflow, &keys, Some(&values));
        for (&(i, new), r) in ins.spills.iter().zip(written) {
            match r {
                Err(e) => ins.errors[i] = Some(e),
                Ok(()) => {
                    ins.spilled[i] = Some(new);
                    if new {
                        ins.edit.bucket(i).expect("read above").spill_one();
                        ins.edit.touch(i);
                    }
                }
            }
        }
    }

    /// Insert, last: the buckets, which list the slotted rules and flag the
    /// spilled ones.
    fn write_slots(&self, ins: &mut Insertion) {
        for (bucket, error) in self.write_buckets(&ins.edit) {
            // The kernel kept the bucket as it was: what it would have held
            // fails, and a new spill it would have flagged leaves the hash.
            for i in ins.edit.items_of(bucket) {
                match ins.spilled[i] {
                    Some(false) => continue,
                    Some(true) => {
                        let key = [key_bytes(ins.items[i].0)];
                        let _ = batch_items(&self.overflow, &key, None);
                    }
                    None => {}
                }
                if ins.errors[i].is_none() {
                    ins.errors[i] = Some(copy_error(&error));
                }
            }
        }
    }

    /// Deletes `cidrs`. One result per item. The steps run in this order,
    /// each after what it relies on.
    pub fn remove(&mut self, cidrs: &[Cidr], active: &mut Active) -> Vec<io::Result<()>> {
        // 1. In memory: each item taken from its slot, or listed as spilled.
        let mut rm = self.find(cidrs);
        // 2. Spilled rules leave the hash while their bucket still flags it.
        self.delete_spills(&mut rm);
        // 3. The buckets, without the slotted rules and those spills.
        self.write_taken(&mut rm);
        // 4. Gone rules count out of the blocks only now: until the bucket
        // lost them, the program had to find them.
        let gone = (0..cidrs.len()).filter(|&i| rm.errors[i].is_none());
        let _ = self.count_out(gone.clone().map(|i| cidrs[i]), active);
        // 5. Last, the flag of a set left empty goes down.
        for i in gone {
            let held = &mut self.held[set_of(cidrs[i])];
            *held = held.saturating_sub(1);
        }
        self.lower_empty(active);
        results(rm.errors)
    }

    /// Removal, in memory only: reads the buckets of `cidrs` and takes each
    /// from its slot, or lists it for the overflow hash if its bucket
    /// spilled.
    fn find<'a>(&self, cidrs: &'a [Cidr]) -> Removal<'a> {
        let rules: Vec<Rule> = cidrs.iter().map(|c| Rule::of(*c)).collect();
        let mut edit = self.read_buckets(&rules);
        let mut errors: Vec<Option<io::Error>> = cidrs.iter().map(|_| None).collect();
        let mut slotted = vec![false; cidrs.len()];
        let mut spills: Vec<usize> = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let b = match edit.bucket(i) {
                Ok(b) => b,
                Err(e) => {
                    errors[i] = Some(e);
                    continue;
                }
            };
            if let Some(slot) = b.find(rule.bytes(), rule.len) {
                b.take(slot);
                slotted[i] = true;
                edit.touch(i);
            } else if b.overflow() > 0 {
                spills.push(i);
            } else {
                errors[i] = Some(io::Error::from_raw_os_error(libc::ENOENT));
            }
        }
        Removal {
            cidrs,
            edit,
            errors,
            slotted,
            spills,
        }
    }

    /// Removal, first: spilled rules leave the overflow hash; their bucket
    /// counts one spill less once written.
    fn delete_spills(&self, rm: &mut Removal) {
        let keys: Vec<Vec<u8>> = rm.spills.iter().map(|&i| key_bytes(rm.cidrs[i])).collect();
        let deleted = batch_items(&self.overflow, &keys, None);
        for (&i, r) in rm.spills.iter().zip(deleted) {
            match r {
                Err(e) => rm.errors[i] = Some(e),
                Ok(()) => {
                    rm.edit.bucket(i).expect("read above").unspill_one();
                    rm.edit.touch(i);
                }
            }
        }
    }

    /// Removal, then: the buckets, without the slotted rules.
    fn write_taken(&self, rm: &mut Removal) {
        for (bucket, error) in self.write_buckets(&rm.edit) {
            // Slotted rules are still in the kernel's bucket; spilled ones
            // already left the hash, so their removal stands.
            for i in rm.edit.items_of(bucket) {
                if rm.slotted[i] {
                    rm.errors[i] = Some(copy_error(&error));
                }
            }
        }
    }

    /// Whether `cidr` is listed in a slot of its bucket (`Some(false)`) or
    /// spilled into the overflow hash (`Some(true)`), read from the kernel.
    pub fn rule_place(&self, cidr: Cidr) -> io::Result<Option<bool>> {
        let rule = Rule::of(cidr);
        let bucket = self.index.bucket_of(rule.bytes(), rule.len);
        let b = read_bucket(&self.buckets, self.ipv4, bucket)?;
        Ok(if b.find(rule.bytes(), rule.len).is_some() {
            Some(false)
        } else if self.in_overflow(cidr) {
            Some(true)
        } else {
            None
        })
    }

    /// The host bits of the block of `host`, read from the kernel (bit E:
    /// the E-th eighth of the block holds hosts), and which of them is the
    /// host's own eighth.
    pub fn host_bits(&self, host: Cidr) -> io::Result<(u8, u8)> {
        let (block, eighth) = self
            .blocks
            .host_place(host)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let read = self.read_blocks(&[block]).pop().expect("one block read");
        Ok((read?.lens as u8, eighth))
    }

    /// Whether the overflow hash holds `cidr`.
    fn in_overflow(&self, cidr: Cidr) -> bool {
        matches!(
            self.overflow.lookup(&key_bytes(cidr), MapFlags::ANY),
            Ok(Some(_))
        )
    }
}

/// The rule set of `cidr` within its table: 0 for hosts, 1 for prefixes,
/// as in `couic_map_index`.
fn set_of(cidr: Cidr) -> usize {
    usize::from(!cidr.is_host())
}

fn results(errors: Vec<Option<io::Error>>) -> Vec<io::Result<()>> {
    errors.into_iter().map(|e| e.map_or(Ok(()), Err)).collect()
}
