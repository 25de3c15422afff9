//! What a rule table's transactions read and write below their steps: the
//! buckets one change touches ([`BucketEdit`]), and the blocks, counted in
//! or out and published (with the table's short lengths in couic_active).

use std::io;

use couic_common::Cidr;

use super::blocks::{Block, BlockChange};
use super::buckets::Bucket;
use super::codec::{
    block4_from, block6_from, block_bytes, block_size, lens_bytes, lens_from, Rule,
};
use super::counters::Active;
use super::rule_table::RuleTable;
use super::sys::{self, batch_items, copy_error, read_many};
use super::types::couic_b6_lens;

/// The buckets one change touches, read from the kernel, and which of them
/// the change edited.
pub struct BucketEdit {
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
    pub fn bucket(&mut self, item: usize) -> io::Result<&mut Bucket> {
        let k = self.position[item];
        self.read[k].as_mut().map_err(|e| copy_error(e))
    }

    /// Marks the bucket of `item` as to be written.
    pub fn touch(&mut self, item: usize) {
        let k = self.position[item];
        self.dirty.push(k);
    }

    /// The items that fall in `bucket`.
    pub fn items_of(&self, bucket: u32) -> impl Iterator<Item = usize> + '_ {
        (0..self.of_item.len()).filter(move |&i| self.of_item[i] == bucket)
    }
}

impl RuleTable {
    /// Reads the buckets that `rules` hash to, each once.
    pub(super) fn read_buckets(&self, rules: &[Rule]) -> BucketEdit {
        let of_item: Vec<u32> = rules
            .iter()
            .map(|r| self.index.bucket_of(r.bytes(), r.len))
            .collect();
        let mut ids = of_item.clone();
        ids.sort_unstable();
        ids.dedup();
        let position = of_item
            .iter()
            .map(|b| ids.binary_search(b).expect("every item's bucket is listed"))
            .collect();
        let read = sys::read_buckets(&self.buckets, self.ipv4, &ids);
        BucketEdit {
            of_item,
            position,
            ids,
            read,
            dirty: Vec::new(),
        }
    }

    /// Writes the changed buckets of `edit`; returns those the kernel
    /// refused, with the error.
    pub(super) fn write_buckets(&self, edit: &BucketEdit) -> Vec<(u32, io::Error)> {
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
            .zip(batch_items(&self.buckets, &keys, Some(&values)))
            .filter_map(|(k, r)| r.err().map(|e| (edit.ids[k], e)))
            .collect()
    }

    /// Counts new rules into the blocks and writes what changed, before the
    /// rules are written. On failure they count out.
    pub(super) fn count_in(
        &mut self,
        cidrs: impl Iterator<Item = Cidr> + Clone,
        active: &mut Active,
    ) -> io::Result<()> {
        let mut change = BlockChange::default();
        for cidr in cidrs.clone() {
            self.blocks.add_to(cidr, &mut change);
        }
        let written = self.publish_blocks(&change, active);
        if written.is_err() {
            for cidr in cidrs {
                self.blocks.remove(cidr);
            }
            let _ = self.publish_blocks(&self.blocks.refresh(&change), active);
        }
        written
    }

    /// Counts rules out of the blocks and writes what changed.
    pub(super) fn count_out(
        &mut self,
        cidrs: impl Iterator<Item = Cidr>,
        active: &mut Active,
    ) -> io::Result<()> {
        let mut change = BlockChange::default();
        for cidr in cidrs {
            self.blocks.remove_from(cidr, &mut change);
        }
        self.publish_blocks(&change, active)
    }

    /// Edits the blocks as `change` says: each is read back from the
    /// kernel, edited and written. Then couic_active, if the short lengths
    /// changed.
    fn publish_blocks(&self, change: &BlockChange, active: &mut Active) -> io::Result<()> {
        let ids: Vec<u32> = change.blocks.keys().copied().collect();
        let mut edited = Vec::with_capacity(ids.len());
        for (edit, block) in change.blocks.values().zip(self.read_blocks(&ids)) {
            let mut block = block?;
            edit.apply(&mut block);
            edited.push(block);
        }
        self.write_blocks(&ids, &edited)?;
        if change.short {
            active.set_short(self.number, self.blocks.short_lens())?;
        }
        Ok(())
    }

    /// Blocks `ids` (sorted, unique), read from the kernel.
    pub(super) fn read_blocks(&self, ids: &[u32]) -> Vec<io::Result<Block>> {
        let size = block_size(self.ipv4);
        let read = read_many(&self.block_map, ids, size, <[u8]>::to_vec);
        let Some(lens_map) = &self.lens_map else {
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

    /// Writes `blocks` as blocks `ids`. IPv6 lengths in full go first: a
    /// block that says it has more than two finds them there.
    fn write_blocks(&self, ids: &[u32], blocks: &[Block]) -> io::Result<()> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| id.to_ne_bytes().to_vec()).collect();
        if let Some(lens_map) = &self.lens_map {
            let values: Vec<Vec<u8>> = blocks.iter().map(|b| lens_bytes(b.lens)).collect();
            batch_items(lens_map, &keys, Some(&values))
                .into_iter()
                .collect::<io::Result<()>>()?;
        }
        let values: Vec<Vec<u8>> = blocks.iter().map(|b| block_bytes(self.ipv4, *b)).collect();
        batch_items(&self.block_map, &keys, Some(&values))
            .into_iter()
            .collect()
    }
}
