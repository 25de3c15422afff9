//! The XDP object and the typed operations on its maps.
//!
//! [`load`] opens, sizes and loads the object and keeps owned handles only
//! (`load.rs`). [`KernelMaps`] is the only writable view of the maps and is
//! owned by the MapWriter actor: a `RuleTable` per policy and family
//! (`rule_table.rs`, its transactions; `table_edit.rs`, the buckets and
//! blocks they read and write), and the counters and active flags
//! (`counters.rs`), over the byte layouts (`codec.rs`) and the raw
//! syscalls (`sys.rs`). `blocks.rs`, `buckets.rs` and `mapped.rs` are the
//! user-space side of the blocks, the buckets and their mapped reads.

use std::io;

use couic_common::{Cidr, Policy};
use libbpf_rs::{MapHandle, ProgramHandle};

mod blocks;
mod buckets;
mod codec;
mod counters;
mod load;
mod mapped;
mod rule_table;
mod sys;
mod table_edit;

mod skel {
    #![allow(clippy::all, non_camel_case_types, dead_code, unused_imports)]
    include!(concat!(env!("OUT_DIR"), "/couic.skel.rs"));
}

pub use buckets::{BucketIndex, MAX_TAGS};
pub use codec::{key_bytes, rule_bytes};
use counters::Active;
pub use counters::Counter;
pub use load::load;
use rule_table::RuleTable;
pub use skel::types;
pub use sys::test_run;
use types::{couic_map_index, couic_stat};

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

/// Index in `couic_map_index` of the rule set of `cidr` for `policy`.
pub fn rule_map_index(policy: Policy, cidr: Cidr) -> usize {
    let base = match policy {
        Policy::Ignore => couic_map_index::COUIC_MAP_IGN4_HOST.0,
        Policy::Drop => couic_map_index::COUIC_MAP_DROP4_HOST.0,
    } as usize;
    base + if cidr.is_ipv4() { 0 } else { 2 } + if cidr.is_host() { 0 } else { 1 }
}

/// Owned handles on every map of the program. Only the MapWriter holds
/// one.
pub struct KernelMaps {
    /// The rule tables, in `couic_table` order: rule set `index` (see
    /// [`rule_map_index`]) is in table `index / 2`.
    tables: [RuleTable; TABLES],
    active: Active,
    stats: MapHandle,
    tag_drop: MapHandle,
    tag_ign: MapHandle,
    cpus: usize,
}

impl KernelMaps {
    /// Inserts (or re-tags) `items`, all of rule set `index` (see
    /// [`rule_map_index`]), as (CIDR, tag slot). One result per item.
    pub fn insert(&mut self, index: usize, items: &[(Cidr, u32)]) -> Vec<io::Result<()>> {
        self.tables[index / 2].insert(items, &mut self.active)
    }

    /// Deletes `cidrs`, all of rule set `index`. One result per item.
    pub fn remove(&mut self, index: usize, cidrs: &[Cidr]) -> Vec<io::Result<()>> {
        self.tables[index / 2].remove(cidrs, &mut self.active)
    }

    /// How rules of rule set `index` spread over the buckets of its table.
    pub fn bucket_index(&self, index: usize) -> BucketIndex {
        self.tables[index / 2].index
    }

    /// Whether `cidr` of rule set `index` is listed in a slot of its bucket
    /// (`Some(false)`) or spilled into the overflow hash (`Some(true)`),
    /// read from the kernel.
    pub fn rule_place(&self, index: usize, cidr: Cidr) -> io::Result<Option<bool>> {
        self.tables[index / 2].rule_place(cidr)
    }

    /// The host bits of the block of `host` in rule set `index`, read from
    /// the kernel (bit E: the E-th eighth of the block holds hosts), and
    /// which of them is the host's own eighth.
    pub fn host_bits(&self, index: usize, host: Cidr) -> io::Result<(u8, u8)> {
        self.tables[index / 2].host_bits(host)
    }

    pub fn rule_map_name(index: usize) -> &'static str {
        RULE_MAP_NAMES[index]
    }
}

/// Whether table `t` holds IPv4 rules: they alternate i4, i6, d4, d6.
fn holds_ipv4(t: usize) -> bool {
    t.is_multiple_of(2)
}

fn map_err(op: &'static str, map: &'static str, e: libbpf_rs::Error) -> BpfError {
    BpfError::Map {
        op,
        map,
        source: io::Error::other(e),
    }
}
