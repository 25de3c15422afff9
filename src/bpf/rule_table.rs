//! Transactions on the rule tables: inserting, re-tagging and removing
//! rules in a table's buckets, overflow hash and blocks, in the order that
//! keeps the data path from missing a rule; and the reads tests make of
//! where a rule landed.

use std::collections::HashSet;
use std::io;

use couic_common::Cidr;
use libbpf_rs::{MapCore, MapFlags};

use super::blocks::{self, BlockChange};
use super::buckets::Bucket;
use super::codec::{
    block4_from, block6_from, block_bytes, block_size, key_bytes, lens_bytes, lens_from,
    rule_bytes, Rule,
};
use super::sys::{self, batch_items, copy_error, read_bucket, read_many};
use super::types::couic_b6_lens;
use super::{holds_ipv4, BucketIndex, KernelMaps};

impl KernelMaps {
    /// Inserts (or re-tags) `items`, all of rule set `index` (see
    /// [`rule_map_index`]), as (CIDR, tag slot). One result per item.
    pub fn insert(&mut self, index: usize, items: &[(Cidr, u32)]) -> Vec<io::Result<()>> {
        let t = index / 2;
        let rules: Vec<Rule> = items.iter().map(|(c, _)| Rule::of(*c)).collect();
        let mut edit = self.read_buckets(t, &rules);
        let mut errors: Vec<Option<io::Error>> = items.iter().map(|_| None).collect();
        // Each item lands in a slot of its bucket, or in the overflow hash
        // (with whether the hash did not hold it yet).
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
            } else if spilled_now.contains(rule) || (b.overflow() > 0 && self.in_overflow(t, *cidr))
            {
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
        let counted: Vec<usize> = (0..items.len()).filter(|&i| fresh[i]).collect();
        if let Err(e) = self.count_in(t, counted.iter().map(|&i| items[i].0)) {
            return items.iter().map(|_| Err(copy_error(&e))).collect();
        }
        // Spilled rules go into the overflow hash before their bucket, which
        // flags them, is written.
        let keys: Vec<Vec<u8>> = spills.iter().map(|&(i, _)| key_bytes(items[i].0)).collect();
        let values: Vec<Vec<u8>> = spills
            .iter()
            .map(|&(i, _)| rule_bytes(items[i].1).to_vec())
            .collect();
        let mut spill_of: Vec<Option<bool>> = items.iter().map(|_| None).collect();
        for (&(i, new), r) in
            spills
                .iter()
                .zip(batch_items(&self.overflow[t], &keys, Some(&values)))
        {
            match r {
                Err(e) => errors[i] = Some(e),
                Ok(()) => {
                    spill_of[i] = Some(new);
                    if new {
                        edit.bucket(i).expect("read above").spill_one();
                        edit.touch(i);
                    }
                }
            }
        }
        for (bucket, error) in self.write_buckets(t, &edit) {
            // The kernel kept the bucket as it was: what it would have held
            // fails, and a new spill it would have flagged leaves the hash.
            for i in edit.items_of(bucket) {
                match spill_of[i] {
                    Some(false) => continue,
                    Some(true) => {
                        let _ = batch_items(&self.overflow[t], &[key_bytes(items[i].0)], None);
                    }
                    None => {}
                }
                if errors[i].is_none() {
                    errors[i] = Some(copy_error(&error));
                }
            }
        }
        // Rules that did not land count out again; a bit left set a moment
        // only costs a probe.
        let failed = counted.into_iter().filter(|&i| errors[i].is_some());
        let _ = self.count_out(t, failed.map(|i| items[i].0));
        errors.into_iter().map(|e| e.map_or(Ok(()), Err)).collect()
    }

    /// Deletes `cidrs`, all of rule set `index`. One result per item.
    pub fn remove(&mut self, index: usize, cidrs: &[Cidr]) -> Vec<io::Result<()>> {
        let t = index / 2;
        let rules: Vec<Rule> = cidrs.iter().map(|c| Rule::of(*c)).collect();
        let mut edit = self.read_buckets(t, &rules);
        let mut errors: Vec<Option<io::Error>> = cidrs.iter().map(|_| None).collect();
        let mut slotted = vec![false; cidrs.len()];
        let mut spilled: Vec<usize> = Vec::new();
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
                spilled.push(i);
            } else {
                errors[i] = Some(io::Error::from_raw_os_error(libc::ENOENT));
            }
        }
        let keys: Vec<Vec<u8>> = spilled.iter().map(|&i| key_bytes(cidrs[i])).collect();
        for (&i, r) in spilled
            .iter()
            .zip(batch_items(&self.overflow[t], &keys, None))
        {
            match r {
                Err(e) => errors[i] = Some(e),
                Ok(()) => {
                    edit.bucket(i).expect("read above").unspill_one();
                    edit.touch(i);
                }
            }
        }
        for (bucket, error) in self.write_buckets(t, &edit) {
            // Slotted rules are still in the kernel's bucket; spilled ones
            // already left the hash, so their removal stands.
            for i in edit.items_of(bucket) {
                if slotted[i] {
                    errors[i] = Some(copy_error(&error));
                }
            }
        }
        // Gone rules count out of the blocks only now: until the bucket lost
        // them, the program had to find them.
        let gone = (0..cidrs.len()).filter(|&i| errors[i].is_none());
        let _ = self.count_out(t, gone.map(|i| cidrs[i]));
        errors.into_iter().map(|e| e.map_or(Ok(()), Err)).collect()
    }

    /// Counts new rules of table `t` into its blocks and writes what
    /// changed, before the rules are written. On failure they count out.
    fn count_in(&mut self, t: usize, cidrs: impl Iterator<Item = Cidr> + Clone) -> io::Result<()> {
        let mut change = BlockChange::default();
        for cidr in cidrs.clone() {
            self.blocks[t].add_to(cidr, &mut change);
        }
        let written = self.publish_blocks(t, &change);
        if written.is_err() {
            for cidr in cidrs {
                self.blocks[t].remove(cidr);
            }
            let _ = self.publish_blocks(t, &self.blocks[t].refresh(&change));
        }
        written
    }

    /// Counts rules of table `t` out of its blocks and writes what changed.
    fn count_out(&mut self, t: usize, cidrs: impl Iterator<Item = Cidr>) -> io::Result<()> {
        let mut change = BlockChange::default();
        for cidr in cidrs {
            self.blocks[t].remove_from(cidr, &mut change);
        }
        self.publish_blocks(t, &change)
    }

    /// Edits the blocks of table `t` as `change` says: each is read back
    /// from the kernel, edited and written. Then couic_active, if the short
    /// lengths changed.
    fn publish_blocks(&self, t: usize, change: &BlockChange) -> io::Result<()> {
        let ids: Vec<u32> = change.blocks.keys().copied().collect();
        let mut edited = Vec::with_capacity(ids.len());
        for (edit, block) in change.blocks.values().zip(self.read_blocks(t, &ids)) {
            let mut block = block?;
            edit.apply(&mut block);
            edited.push(block);
        }
        self.write_blocks(t, &ids, &edited)?;
        if change.short {
            self.write_active()
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
        Ok(())
    }

    /// How rules of rule set `index` spread over the buckets of its table.
    pub fn bucket_index(&self, index: usize) -> BucketIndex {
        self.index[index / 2]
    }

    /// Whether `cidr` of rule set `index` is listed in a slot of its bucket
    /// (`Some(false)`) or spilled into the overflow hash (`Some(true)`),
    /// read from the kernel.
    pub fn rule_place(&self, index: usize, cidr: Cidr) -> io::Result<Option<bool>> {
        let t = index / 2;
        let rule = Rule::of(cidr);
        let bucket = self.index[t].bucket_of(rule.bytes(), rule.len);
        let b = read_bucket(&self.buckets[t], holds_ipv4(t), bucket)?;
        Ok(if b.find(rule.bytes(), rule.len).is_some() {
            Some(false)
        } else if self.in_overflow(t, cidr) {
            Some(true)
        } else {
            None
        })
    }

    /// The host bits of the block of `host` in rule set `index`, read from
    /// the kernel (bit E: the E-th eighth of the block holds hosts), and
    /// which of them is the host's own eighth.
    pub fn host_bits(&self, index: usize, host: Cidr) -> io::Result<(u8, u8)> {
        let t = index / 2;
        let (block, eighth) = self.blocks[t]
            .host_place(host)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let read = self.read_blocks(t, &[block]).pop().expect("one block read");
        Ok((read?.lens as u8, eighth))
    }

    /// Blocks `ids` (sorted, unique) of table `t`, read from the kernel.
    fn read_blocks(&self, t: usize, ids: &[u32]) -> Vec<io::Result<blocks::Block>> {
        let size = block_size(holds_ipv4(t));
        let read = read_many(&self.block_maps[t], ids, size, <[u8]>::to_vec);
        let Some(lens_map) = &self.lens_maps[t] else {
            return read
                .into_iter()
                .map(|v| v.map(|v| block4_from(&v)))
                .collect();
        };
        let lens = read_many(lens_map, ids, size_of::<couic_b6_lens>(), lens_from);
        read.into_iter()
            .zip(lens)
            .map(|(v, lens)| Ok(block6_from(&v?, lens?)))
            .collect()
    }

    /// Writes `blocks` as blocks `ids` of table `t`. IPv6 lengths in full
    /// go first: a block that says it has more than two finds them there.
    fn write_blocks(&self, t: usize, ids: &[u32], blocks: &[blocks::Block]) -> io::Result<()> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| id.to_ne_bytes().to_vec()).collect();
        if let Some(lens_map) = &self.lens_maps[t] {
            let values: Vec<Vec<u8>> = blocks.iter().map(|b| lens_bytes(b.lens)).collect();
            batch_items(lens_map, &keys, Some(&values))
                .into_iter()
                .collect::<io::Result<()>>()?;
        }
        let ipv4 = holds_ipv4(t);
        let values: Vec<Vec<u8>> = blocks.iter().map(|b| block_bytes(ipv4, *b)).collect();
        batch_items(&self.block_maps[t], &keys, Some(&values))
            .into_iter()
            .collect()
    }

    /// Whether the overflow hash of table `t` holds `cidr`.
    fn in_overflow(&self, t: usize, cidr: Cidr) -> bool {
        matches!(
            self.overflow[t].lookup(&key_bytes(cidr), MapFlags::ANY),
            Ok(Some(_))
        )
    }

    /// Reads the buckets of table `t` that `rules` hash to, each once.
    fn read_buckets(&self, t: usize, rules: &[Rule]) -> BucketEdit {
        let of_item: Vec<u32> = rules
            .iter()
            .map(|r| self.index[t].bucket_of(r.bytes(), r.len))
            .collect();
        let mut ids = of_item.clone();
        ids.sort_unstable();
        ids.dedup();
        let position = of_item
            .iter()
            .map(|b| ids.binary_search(b).expect("every item's bucket is listed"))
            .collect();
        let read = sys::read_buckets(&self.buckets[t], holds_ipv4(t), &ids);
        BucketEdit {
            of_item,
            position,
            ids,
            read,
            dirty: Vec::new(),
        }
    }

    /// Writes the changed buckets of `edit` into table `t`; returns those
    /// the kernel refused, with the error.
    fn write_buckets(&self, t: usize, edit: &BucketEdit) -> Vec<(u32, io::Error)> {
        let mut changed: Vec<usize> = edit.dirty.clone();
        changed.sort_unstable();
        changed.dedup();
        let keys: Vec<Vec<u8>> = changed
            .iter()
            .map(|&k| edit.ids[k].to_ne_bytes().to_vec())
            .collect();
        let values: Vec<Vec<u8>> = changed
            .iter()
            .map(|&k| match &edit.read[k] {
                Ok(b) => b.bytes().to_vec(),
                Err(_) => unreachable!("only buckets read are changed"),
            })
            .collect();
        changed
            .into_iter()
            .zip(batch_items(&self.buckets[t], &keys, Some(&values)))
            .filter_map(|(k, r)| r.err().map(|e| (edit.ids[k], e)))
            .collect()
    }
}

/// The buckets one change touches, read from the kernel, and which of them
/// the change edited.
struct BucketEdit {
    /// The bucket of each item, and its position in `ids`.
    of_item: Vec<u32>,
    position: Vec<usize>,
    /// The buckets, sorted and unique.
    ids: Vec<u32>,
    /// Each bucket of `ids` as read, or why it could not be read.
    read: Vec<io::Result<Bucket>>,
    /// Positions in `ids` of the edited buckets.
    dirty: Vec<usize>,
}

impl BucketEdit {
    /// The bucket of `item`, to edit.
    fn bucket(&mut self, item: usize) -> io::Result<&mut Bucket> {
        let k = self.position[item];
        self.read[k].as_mut().map_err(|e| copy_error(e))
    }

    /// Marks the bucket of `item` as to be written.
    fn touch(&mut self, item: usize) {
        let k = self.position[item];
        self.dirty.push(k);
    }

    /// The items that fall in `bucket`.
    fn items_of(&self, bucket: u32) -> impl Iterator<Item = usize> + '_ {
        (0..self.of_item.len()).filter(move |&i| self.of_item[i] == bucket)
    }
}
