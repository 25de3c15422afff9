//! The XDP object and the typed operations on its maps.
//!
//! [`load`] opens, sizes and loads the object and keeps owned handles only
//! (`load.rs`). [`KernelMaps`] is the only writable view of the maps and is
//! owned by the MapWriter actor; its operations live by concern: the rule
//! tables' transactions (`rule_table.rs`), counters and the active flags
//! (`counters.rs`), over the byte layouts (`codec.rs`) and the raw
//! syscalls (`sys.rs`). `blocks.rs`, `buckets.rs` and `mapped.rs` are the
//! user-space side of the blocks, the buckets and their mapped reads.

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

mod skel {
    #![allow(clippy::all, non_camel_case_types, dead_code, unused_imports)]
    include!(concat!(env!("OUT_DIR"), "/couic.skel.rs"));
}

use blocks::Blocks;
pub use buckets::{BucketIndex, MAX_TAGS};
pub use codec::{key_bytes, rule_bytes};
pub use counters::Counter;
pub use load::load;
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

impl KernelMaps {
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
        source: std::io::Error::other(e.to_string()),
    }
}
