//! Loading the XDP object and the typed operations on its maps.
//!
//! The skeleton is opened, sized from the config and loaded; then every map
//! and the program are taken as owned handles and the skeleton is let go.
//! [`KernelMaps`] is the only writable view of the maps and is owned by the
//! MapWriter actor.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::mem::{offset_of, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd};

use couic_common::{Cidr, Policy};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, ProgramHandle};

mod blocks;
mod buckets;
mod mapped;

mod skel {
    #![allow(clippy::all, non_camel_case_types, dead_code, unused_imports)]
    include!(concat!(env!("OUT_DIR"), "/couic.skel.rs"));
}

use blocks::{BlockChange, Blocks};
use buckets::{Bucket, BUCKET_SIZE};
pub use buckets::{BucketIndex, MAX_TAGS};
use mapped::MappedBuckets;
pub use skel::types;
use types::{
    couic_active, couic_b4_block, couic_b6_block, couic_b6_lens, couic_counter, couic_map_index,
    couic_rule, couic_stat, couic_v4_key, couic_v6_key,
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

pub const DEFAULT_DROP_MAX: u32 = types::couic_limits::COUIC_DROP_MAX.0;
pub const DEFAULT_IGNORE_MAX: u32 = types::couic_limits::COUIC_IGNORE_MAX.0;
pub const DEFAULT_TAG_MAX: u32 = types::couic_limits::COUIC_TAG_MAX.0;

/// Number of rule sets: hosts and shorter prefixes, per policy and family.
/// Both sets of a policy and family share one table (index / 2).
pub const RULE_MAPS: usize = couic_map_index::COUIC_MAP_COUNT.0 as usize;
/// Number of slots in couic_stats.
pub const STAT_SLOTS: usize = couic_stat::COUIC_STAT_MAX.0 as usize;
pub const STAT_MALFORMED: usize = couic_stat::COUIC_STAT_MALFORMED.0 as usize;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("cannot load the XDP program: {0} (couic needs CAP_BPF and CAP_NET_ADMIN)")]
    Load(#[source] libbpf_rs::Error),
    #[error("{op} on map {map}: {source}")]
    Map {
        op: &'static str,
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Map capacities chosen at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacities {
    pub drop: u32,
    pub ignore: u32,
    pub tags: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Capacities {
            drop: DEFAULT_DROP_MAX,
            ignore: DEFAULT_IGNORE_MAX,
            tags: DEFAULT_TAG_MAX,
        }
    }
}

/// The loaded object: the program (to attach or test-run) and its maps.
pub struct Loaded {
    pub program: ProgramHandle,
    pub maps: KernelMaps,
}

/// Names of the rule sets, in `couic_map_index` order.
const RULE_MAP_NAMES: [&str; RULE_MAPS] = [
    "ignore IPv4 hosts",
    "ignore IPv4 prefixes",
    "ignore IPv6 hosts",
    "ignore IPv6 prefixes",
    "drop IPv4 hosts",
    "drop IPv4 prefixes",
    "drop IPv6 hosts",
    "drop IPv6 prefixes",
];

/// Rule tables (buckets, overflow hash and blocks), one per policy and
/// family: ignore IPv4, ignore IPv6, drop IPv4, drop IPv6.
const TABLES: usize = types::couic_table::COUIC_TABLE_COUNT.0 as usize;

/// Opens, sizes and loads the object, then keeps owned handles only.
pub fn load(caps: Capacities) -> Result<Loaded, BpfError> {
    let mut storage = MaybeUninit::uninit();
    let mut open = skel::CouicSkelBuilder::default()
        .open(&mut storage)
        .map_err(BpfError::Load)?;
    // A seed of our own per load, so nobody can pick hosts that collide.
    let seed = RandomState::new().hash_one(std::process::id());
    let index = [
        BucketIndex::new(BucketIndex::buckets_for(true, caps.ignore), seed),
        BucketIndex::new(BucketIndex::buckets_for(false, caps.ignore), seed),
        BucketIndex::new(BucketIndex::buckets_for(true, caps.drop), seed),
        BucketIndex::new(BucketIndex::buckets_for(false, caps.drop), seed),
    ];
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .expect("the object has read-only globals");
    rodata.couic_seed = seed;
    rodata.couic_i4_bits = index[0].bits();
    rodata.couic_i6_bits = index[1].bits();
    rodata.couic_d4_bits = index[2].bits();
    rodata.couic_d6_bits = index[3].bits();
    let m = &mut open.maps;
    for (map, table) in [
        &mut m.couic_i4_bkt,
        &mut m.couic_i6_bkt,
        &mut m.couic_d4_bkt,
        &mut m.couic_d6_bkt,
    ]
    .into_iter()
    .zip(&index)
    {
        map.set_max_entries(1 << table.bits())
            .map_err(BpfError::Load)?;
    }
    for (map, cap) in [
        (&mut m.couic_i4_ovf, caps.ignore),
        (&mut m.couic_i6_ovf, caps.ignore),
        (&mut m.couic_d4_ovf, caps.drop),
        (&mut m.couic_d6_ovf, caps.drop),
        (&mut m.couic_tag_drop, caps.tags),
        (&mut m.couic_tag_ign, caps.tags),
    ] {
        map.set_max_entries(cap).map_err(BpfError::Load)?;
    }
    let skel = open.load().map_err(BpfError::Load)?;

    let m = &skel.maps;
    macro_rules! handle {
        ($map:expr) => {
            MapHandle::try_from(&$map).map_err(BpfError::Load)?
        };
    }
    let overflow = [
        handle!(m.couic_i4_ovf),
        handle!(m.couic_i6_ovf),
        handle!(m.couic_d4_ovf),
        handle!(m.couic_d6_ovf),
    ];
    let buckets = [
        handle!(m.couic_i4_bkt),
        handle!(m.couic_i6_bkt),
        handle!(m.couic_d4_bkt),
        handle!(m.couic_d6_bkt),
    ];
    let maps = KernelMaps {
        overflow,
        buckets,
        index,
        block_maps: [
            handle!(m.couic_i4_blk),
            handle!(m.couic_i6_blk),
            handle!(m.couic_d4_blk),
            handle!(m.couic_d6_blk),
        ],
        lens_maps: [
            None,
            Some(handle!(m.couic_i6_len)),
            None,
            Some(handle!(m.couic_d6_len)),
        ],
        blocks: [
            Blocks::new(true, seed),
            Blocks::new(false, seed),
            Blocks::new(true, seed),
            Blocks::new(false, seed),
        ],
        requested: [0; RULE_MAPS],
        active: handle!(m.couic_active),
        stats: handle!(m.couic_stats),
        tag_drop: handle!(m.couic_tag_drop),
        tag_ign: handle!(m.couic_tag_ign),
        cpus: libbpf_rs::num_possible_cpus().map_err(BpfError::Load)?,
    };
    let program = ProgramHandle::try_from(&skel.progs.couic).map_err(BpfError::Load)?;
    Ok(Loaded { program, maps })
}

/// Index in `couic_map_index` of the rule set of `cidr` for `policy`.
pub fn rule_map_index(policy: Policy, cidr: Cidr) -> usize {
    let base = match policy {
        Policy::Ignore => couic_map_index::COUIC_MAP_IGN4_HOST.0,
        Policy::Drop => couic_map_index::COUIC_MAP_DROP4_HOST.0,
    } as usize;
    base + if cidr.is_ipv4() { 0 } else { 2 } + if cidr.is_host() { 0 } else { 1 }
}

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
fn as_bytes<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: only called with the generated key/value structs, which are
    // repr(C), Copy and padding-free (asserted above), so every byte is
    // initialised; the slice borrows `value` and cannot outlive it.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

fn counter_from(bytes: &[u8]) -> couic_counter {
    let mut c = couic_counter::default();
    if bytes.len() >= 16 {
        c.packets = u64::from_ne_bytes(bytes[0..8].try_into().expect("8 bytes"));
        c.bytes = u64::from_ne_bytes(bytes[8..16].try_into().expect("8 bytes"));
    }
    c
}

/// Packets and bytes summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Owned handles on every map of the program. Only the MapWriter holds
/// one.
pub struct KernelMaps {
    /// Per table: its buckets, how rules spread over them, its overflow
    /// hash, and its blocks in the kernel and as counts.
    buckets: [MapHandle; TABLES],
    index: [BucketIndex; TABLES],
    overflow: [MapHandle; TABLES],
    block_maps: [MapHandle; TABLES],
    /// IPv6 only: each block's lengths in full (see `couic_b6_lens`).
    lens_maps: [Option<MapHandle>; TABLES],
    blocks: [Blocks; TABLES],
    /// The couic_active flags last asked for.
    requested: [u8; RULE_MAPS],
    active: MapHandle,
    stats: MapHandle,
    tag_drop: MapHandle,
    tag_ign: MapHandle,
    cpus: usize,
}

/// Outcome of a batch: how many leading items the kernel applied, and the
/// error that stopped it, if any.
struct BatchOutcome {
    applied: usize,
    error: Option<std::io::Error>,
}

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
        let ipv4 = holds_ipv4(t);
        let decode = |v: &[u8]| Bucket::from_bytes(ipv4, v.try_into().expect("one bucket"));
        let mut read = Vec::with_capacity(ids.len());
        for window in MappedBuckets::windows(&ids) {
            let mapped = MappedBuckets::worth_it(window)
                .then(|| MappedBuckets::of(&self.buckets[t], window).ok())
                .flatten();
            match mapped {
                Some(view) => {
                    read.extend(window.iter().map(|&id| view.bucket(id).map(|v| decode(&v))))
                }
                None => read.extend(read_many(&self.buckets[t], window, BUCKET_SIZE, decode)),
            }
        }
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

    /// Publishes which rule sets hold entries (see `couic_active`).
    pub fn set_active(&mut self, flags: [u8; RULE_MAPS]) -> Result<(), BpfError> {
        self.requested = flags;
        self.write_active()
    }

    /// couic_active: the flags asked for, and each table's short lengths.
    fn write_active(&self) -> Result<(), BpfError> {
        let mut value = couic_active {
            map: self.requested,
            ..Default::default()
        };
        for (t, lens) in value.short_lens.iter_mut().enumerate() {
            *lens = self.blocks[t].short_lens();
        }
        self.active
            .update(&0u32.to_ne_bytes(), as_bytes(&value), MapFlags::ANY)
            .map_err(|e| map_err("update", "couic_active", e))
    }

    /// couic_stats summed over CPUs, by `couic_stat` index.
    pub fn read_stats(&self) -> Result<[Counter; STAT_SLOTS], BpfError> {
        let mut out = [Counter::default(); STAT_SLOTS];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = self.read_percpu(&self.stats, "couic_stats", i as u32)?;
        }
        Ok(out)
    }

    pub fn read_tag(&self, policy: Policy, slot: u32) -> Result<Counter, BpfError> {
        let (map, name) = self.tag_map(policy);
        self.read_percpu(map, name, slot)
    }

    /// Zeroes a tag slot before a new tag uses it.
    pub fn reset_tag(&self, policy: Policy, slot: u32) -> Result<(), BpfError> {
        let (map, name) = self.tag_map(policy);
        let zero = vec![vec![0u8; size_of::<couic_counter>()]; self.cpus];
        map.update_percpu(&slot.to_ne_bytes(), &zero, MapFlags::ANY)
            .map_err(|e| map_err("reset", name, e))
    }

    pub fn rule_map_name(index: usize) -> &'static str {
        RULE_MAP_NAMES[index]
    }

    fn tag_map(&self, policy: Policy) -> (&MapHandle, &'static str) {
        match policy {
            Policy::Drop => (&self.tag_drop, "couic_tag_drop"),
            Policy::Ignore => (&self.tag_ign, "couic_tag_ign"),
        }
    }

    fn read_percpu(
        &self,
        map: &MapHandle,
        name: &'static str,
        index: u32,
    ) -> Result<Counter, BpfError> {
        let values = map
            .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| map_err("read", name, e))?
            .unwrap_or_default();
        Ok(values.iter().fold(Counter::default(), |acc, v| {
            let c = counter_from(v);
            Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            }
        }))
    }
}

/// Whether table `t` holds IPv4 rules: they alternate i4, i6, d4, d6.
fn holds_ipv4(t: usize) -> bool {
    t.is_multiple_of(2)
}

/// A rule as the program probes it: its address (network order, masked to
/// its length) and its prefix length.
#[derive(PartialEq, Eq, Hash)]
struct Rule {
    bytes: [u8; 16],
    size: usize,
    len: u8,
}

impl Rule {
    fn of(cidr: Cidr) -> Self {
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

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.size]
    }
}

fn block_size(ipv4: bool) -> usize {
    if ipv4 {
        size_of::<couic_b4_block>()
    } else {
        size_of::<couic_b6_block>()
    }
}

/// An IPv4 block read from the kernel.
fn block4_from(v: &[u8]) -> blocks::Block {
    let half = |at: usize| u32::from_ne_bytes(v[at..at + 4].try_into().expect("4 bytes"));
    blocks::Block {
        lens: u128::from(half(offset_of!(couic_b4_block, lens))),
        sub: half(offset_of!(couic_b4_block, sub)),
    }
}

/// An IPv6 block read from the kernel: its parts from the block, its
/// lengths and hosts from its `couic_b6_lens`.
fn block6_from(v: &[u8], lens: u128) -> blocks::Block {
    let at = offset_of!(couic_b6_block, sub);
    blocks::Block {
        lens,
        sub: u32::from_ne_bytes(v[at..at + 4].try_into().expect("4 bytes")),
    }
}

/// The lengths of a `couic_b6_lens` read from the kernel.
fn lens_from(v: &[u8]) -> u128 {
    let word = |at: usize| u64::from_ne_bytes(v[at..at + 8].try_into().expect("8 bytes"));
    let at = offset_of!(couic_b6_lens, lens);
    u128::from(word(at)) | u128::from(word(at + 8)) << 64
}

fn lens_bytes(lens: u128) -> Vec<u8> {
    as_bytes(&couic_b6_lens {
        lens: [lens as u64, (lens >> 64) as u64],
    })
    .to_vec()
}

/// A block's value as the kernel stores it.
fn block_bytes(ipv4: bool, block: blocks::Block) -> Vec<u8> {
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

/// Buckets spanned by one batch read at most (64 KiB).
const READ_SPAN: u32 = 1024;

/// Reads `ids` (sorted, unique) from an array map of `size`-byte values
/// (at most a bucket), each decoded by `decode`. Where they lie close
/// together, one batch lookup reads the whole span; lone ones are read
/// singly.
fn read_many<T>(
    map: &MapHandle,
    ids: &[u32],
    size: usize,
    decode: impl Fn(&[u8]) -> T,
) -> Vec<io::Result<T>> {
    let mut out = Vec::with_capacity(ids.len());
    let mut k = 0;
    while k < ids.len() {
        let first = ids[k];
        let end = ids[k..].partition_point(|&b| b - first < READ_SPAN) + k;
        let span = ids[end - 1] - first + 1;
        // A batch read costs a fraction of a single lookup per value, the
        // smaller the value the smaller the fraction: a span is read whole
        // when a quarter of its buckets' worth of bytes is wanted.
        let worth = (end - k) * 4 * BUCKET_SIZE / size;
        if worth >= span as usize && end - k > 1 {
            match read_span(map, first, span, size) {
                Ok(all) => out.extend(ids[k..end].iter().map(|&b| {
                    let at = (b - first) as usize * size;
                    Ok(decode(&all[at..at + size]))
                })),
                Err(e) => out.extend(ids[k..end].iter().map(|_| Err(copy_error(&e)))),
            }
            k = end;
        } else {
            out.push(read_one(map, first, size).map(|v| decode(&v[..size])));
            k += 1;
        }
    }
    out
}

/// One value of an array map, of `size` bytes (at most a bucket).
fn read_one(map: &MapHandle, id: u32, size: usize) -> io::Result<[u8; BUCKET_SIZE]> {
    assert!(size <= BUCKET_SIZE);
    let mut value = [0u8; BUCKET_SIZE];
    // SAFETY: the key is a u32 and the buffer holds at least one value, the
    // map's key and value sizes.
    let ret = unsafe {
        libbpf_sys::bpf_map_lookup_elem(
            map.as_fd().as_raw_fd(),
            (&id as *const u32).cast(),
            value.as_mut_ptr().cast(),
        )
    };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    Ok(value)
}

/// One bucket.
fn read_bucket(map: &MapHandle, ipv4: bool, id: u32) -> io::Result<Bucket> {
    read_one(map, id, BUCKET_SIZE).map(|v| Bucket::from_bytes(ipv4, v))
}

/// `count` values of `size` bytes from `first` on, in one batch lookup.
fn read_span(map: &MapHandle, first: u32, count: u32, size: usize) -> io::Result<Vec<u8>> {
    let mut keys = vec![0u32; count as usize];
    let mut values = vec![0u8; count as usize * size];
    // The batch starts after the key given, so the one before `first`.
    let before = first.wrapping_sub(1);
    let mut next = 0u32;
    let mut n = count;
    let opts = batch_opts(0);
    // SAFETY: `keys` and `values` hold `count` keys and values; the kernel
    // writes at most `n` of each, the next key into `next`, and how many it
    // read into `n`.
    let ret = unsafe {
        libbpf_sys::bpf_map_lookup_batch(
            map.as_fd().as_raw_fd(),
            if first == 0 {
                std::ptr::null_mut()
            } else {
                (&before as *const u32).cast_mut().cast()
            },
            (&mut next as *mut u32).cast(),
            keys.as_mut_ptr().cast(),
            values.as_mut_ptr().cast(),
            &mut n,
            &opts,
        )
    };
    // ENOENT only says the array ended; the span never runs past it.
    if ret != 0 && -ret != libc::ENOENT {
        return Err(io::Error::from_raw_os_error(-ret));
    }
    if n != count || keys.first() != Some(&first) {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(values)
}

fn copy_error(e: &io::Error) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Writes (`values` given) or deletes `keys` in `map` by batches; what a
/// batch could not apply is retried one by one, so each item gets its own
/// result.
fn batch_items(
    map: &MapHandle,
    keys: &[Vec<u8>],
    values: Option<&[Vec<u8>]>,
) -> Vec<io::Result<()>> {
    let mut results: Vec<io::Result<()>> = keys.iter().map(|_| Ok(())).collect();
    let mut start = 0;
    while start < keys.len() {
        let outcome = batch_call(map, &keys[start..], values.map(|v| &v[start..]));
        if outcome.error.is_none() {
            break;
        }
        if outcome.applied > 0 {
            start += outcome.applied;
            continue;
        }
        // Nothing applied: the first item fails alone, or the batch as a
        // whole did; either way try it singly.
        let single = batch_call(map, &keys[start..=start], values.map(|v| &v[start..=start]));
        if let Some(e) = single.error {
            results[start] = Err(e);
        }
        start += 1;
    }
    results
}

/// One batch update (`values` given) or delete of `keys` in `map`.
fn batch_call(map: &MapHandle, keys: &[Vec<u8>], values: Option<&[Vec<u8>]>) -> BatchOutcome {
    let count = keys.len();
    let mut n = count as u32;
    let flat_keys: Vec<u8> = keys.concat();
    let fd = map.as_fd().as_raw_fd();
    let ret = match values {
        Some(values) => {
            let flat_values: Vec<u8> = values.concat();
            let opts = batch_opts(libbpf_sys::BPF_ANY as u64);
            // SAFETY: the buffers hold `count` keys and values of the map's
            // sizes; the kernel reads at most `n` of each and writes back how
            // many it processed into `n`.
            unsafe {
                libbpf_sys::bpf_map_update_batch(
                    fd,
                    flat_keys.as_ptr().cast(),
                    flat_values.as_ptr().cast(),
                    &mut n,
                    &opts,
                )
            }
        }
        None => {
            let opts = batch_opts(0);
            // SAFETY: as above, for keys only.
            unsafe {
                libbpf_sys::bpf_map_delete_batch(fd, flat_keys.as_ptr().cast(), &mut n, &opts)
            }
        }
    };
    outcome(ret, n as usize, count)
}

fn batch_opts(elem_flags: u64) -> libbpf_sys::bpf_map_batch_opts {
    libbpf_sys::bpf_map_batch_opts {
        sz: size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        elem_flags,
        flags: 0,
    }
}

fn outcome(ret: i32, processed: usize, count: usize) -> BatchOutcome {
    if ret == 0 {
        return BatchOutcome {
            applied: count,
            error: None,
        };
    }
    let errno = if ret < 0 {
        -ret
    } else {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // A call refused before it began leaves the count as it was given:
    // then nothing was applied.
    BatchOutcome {
        applied: if processed >= count { 0 } else { processed },
        error: Some(std::io::Error::from_raw_os_error(errno)),
    }
}

fn map_err(op: &'static str, map: &'static str, e: libbpf_rs::Error) -> BpfError {
    BpfError::Map {
        op,
        map,
        source: std::io::Error::other(e.to_string()),
    }
}

/// One BPF_PROG_TEST_RUN of the program on `frame`, `repeat` times: the XDP
/// action returned and the kernel's average time per run.
pub fn test_run(
    program: &ProgramHandle,
    frame: &[u8],
    repeat: u32,
) -> std::io::Result<(u32, std::time::Duration)> {
    let mut opts = libbpf_sys::bpf_test_run_opts {
        sz: size_of::<libbpf_sys::bpf_test_run_opts>() as _,
        data_in: frame.as_ptr().cast(),
        data_size_in: frame.len() as u32,
        repeat: repeat.max(1) as i32,
        ..Default::default()
    };
    // SAFETY: `frame` outlives the call and its length is given; no output
    // buffers are passed, so the kernel writes only into `opts`.
    let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(program.as_fd().as_raw_fd(), &mut opts) };
    if ret != 0 {
        return Err(std::io::Error::from_raw_os_error(-ret));
    }
    Ok((
        opts.retval,
        std::time::Duration::from_nanos(u64::from(opts.duration)),
    ))
}
