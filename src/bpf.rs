//! Loading the XDP object and the typed operations on its maps.
//!
//! The skeleton is opened, sized from the config and loaded; then every map
//! and the program are taken as owned handles and the skeleton is let go.
//! [`KernelMaps`] is the only writable view of the maps and is owned by the
//! MapWriter actor.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};

use couic_common::{Cidr, Policy};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, ProgramHandle};

mod hosts;

mod skel {
    #![allow(clippy::all, non_camel_case_types, dead_code, unused_imports)]
    include!(concat!(env!("OUT_DIR"), "/couic.skel.rs"));
}

pub use hosts::{HostTable, Place};
pub use skel::types;
use types::{couic_counter, couic_map_index, couic_rule, couic_stat, couic_v4_key, couic_v6_key};

// The byte views below rely on these layouts having no padding.
const _: () = assert!(size_of::<couic_v4_key>() == 8);
const _: () = assert!(size_of::<couic_v6_key>() == 20);
const _: () = assert!(size_of::<couic_rule>() == 4);
const _: () = assert!(size_of::<couic_counter>() == 16);
const _: () =
    assert!(size_of::<types::couic_active>() == types::couic_map_index::COUIC_MAP_COUNT.0 as usize);

pub const DEFAULT_DROP_MAX: u32 = types::couic_limits::COUIC_DROP_MAX.0;
pub const DEFAULT_IGNORE_MAX: u32 = types::couic_limits::COUIC_IGNORE_MAX.0;
pub const DEFAULT_TAG_MAX: u32 = types::couic_limits::COUIC_TAG_MAX.0;

/// Number of rule maps (two per policy and family).
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

/// Names of the rule maps, in `couic_map_index` order.
const RULE_MAP_NAMES: [&str; RULE_MAPS] = [
    "couic_i4_host",
    "couic_i4_net",
    "couic_i6_host",
    "couic_i6_net",
    "couic_d4_host",
    "couic_d4_net",
    "couic_d6_host",
    "couic_d6_net",
];

/// Host bucket arrays, one per host rule map (index / 2 of the latter).
const HOST_TABLES: usize = RULE_MAPS / 2;

/// Opens, sizes and loads the object, then keeps owned handles only.
pub fn load(caps: Capacities) -> Result<Loaded, BpfError> {
    let mut storage = MaybeUninit::uninit();
    let mut open = skel::CouicSkelBuilder::default()
        .open(&mut storage)
        .map_err(BpfError::Load)?;
    // A seed of our own per load, so nobody can pick hosts that collide.
    let seed = RandomState::new().hash_one(std::process::id());
    let hosts = [
        HostTable::new(true, HostTable::buckets_for(true, caps.ignore), seed),
        HostTable::new(false, HostTable::buckets_for(false, caps.ignore), seed),
        HostTable::new(true, HostTable::buckets_for(true, caps.drop), seed),
        HostTable::new(false, HostTable::buckets_for(false, caps.drop), seed),
    ];
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .expect("the object has read-only globals");
    rodata.couic_seed = seed;
    rodata.couic_i4_bits = hosts[0].bits();
    rodata.couic_i6_bits = hosts[1].bits();
    rodata.couic_d4_bits = hosts[2].bits();
    rodata.couic_d6_bits = hosts[3].bits();
    let m = &mut open.maps;
    for (map, table) in [
        &mut m.couic_i4_bkt,
        &mut m.couic_i6_bkt,
        &mut m.couic_d4_bkt,
        &mut m.couic_d6_bkt,
    ]
    .into_iter()
    .zip(&hosts)
    {
        map.set_max_entries(1 << table.bits())
            .map_err(BpfError::Load)?;
    }
    for (map, cap) in [
        (&mut m.couic_i4_host, caps.ignore),
        (&mut m.couic_i4_net, caps.ignore),
        (&mut m.couic_i6_host, caps.ignore),
        (&mut m.couic_i6_net, caps.ignore),
        (&mut m.couic_d4_host, caps.drop),
        (&mut m.couic_d4_net, caps.drop),
        (&mut m.couic_d6_host, caps.drop),
        (&mut m.couic_d6_net, caps.drop),
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
    let rules = [
        handle!(m.couic_i4_host),
        handle!(m.couic_i4_net),
        handle!(m.couic_i6_host),
        handle!(m.couic_i6_net),
        handle!(m.couic_d4_host),
        handle!(m.couic_d4_net),
        handle!(m.couic_d6_host),
        handle!(m.couic_d6_net),
    ];
    let buckets = [
        handle!(m.couic_i4_bkt),
        handle!(m.couic_i6_bkt),
        handle!(m.couic_d4_bkt),
        handle!(m.couic_d6_bkt),
    ];
    let maps = KernelMaps {
        rules,
        buckets,
        hosts,
        active: handle!(m.couic_active),
        stats: handle!(m.couic_stats),
        tag_drop: handle!(m.couic_tag_drop),
        tag_ign: handle!(m.couic_tag_ign),
        cpus: libbpf_rs::num_possible_cpus().map_err(BpfError::Load)?,
    };
    let program = ProgramHandle::try_from(&skel.progs.couic).map_err(BpfError::Load)?;
    Ok(Loaded { program, maps })
}

/// Index in `couic_map_index` of the map holding `cidr` for `policy`.
pub fn rule_map_index(policy: Policy, cidr: Cidr) -> usize {
    let base = match policy {
        Policy::Ignore => couic_map_index::COUIC_MAP_IGN4_HOST.0,
        Policy::Drop => couic_map_index::COUIC_MAP_DROP4_HOST.0,
    } as usize;
    base + if cidr.is_ipv4() { 0 } else { 2 } + if cidr.is_host() { 0 } else { 1 }
}

/// The map key of `cidr` (network byte order, as the program builds it).
pub fn key_bytes(cidr: Cidr) -> Vec<u8> {
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

/// The address of `cidr` as the program compares it (network order).
fn addr_bytes(cidr: Cidr) -> Vec<u8> {
    match cidr.addr() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
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

/// Owned handles on every map of the program, and the user-space copy of
/// the host buckets. Only the MapWriter holds one.
pub struct KernelMaps {
    /// By `couic_map_index`: the overflow hash of a host index, the trie of
    /// a net index.
    rules: [MapHandle; RULE_MAPS],
    buckets: [MapHandle; HOST_TABLES],
    hosts: [HostTable; HOST_TABLES],
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
    /// Inserts (or re-tags) `items`, all of rule map `index` (see
    /// [`rule_map_index`]), as (CIDR, tag slot). One result per item.
    pub fn insert(&mut self, index: usize, items: &[(Cidr, u32)]) -> Vec<io::Result<()>> {
        if is_net(index) {
            let keys: Vec<Vec<u8>> = items.iter().map(|(c, _)| key_bytes(*c)).collect();
            let values: Vec<Vec<u8>> = items.iter().map(|(_, t)| rule_bytes(*t).to_vec()).collect();
            return batch_items(&self.rules[index], &keys, Some(&values));
        }
        let t = index / 2;
        let addrs: Vec<Vec<u8>> = items.iter().map(|(c, _)| addr_bytes(*c)).collect();
        let placed: Vec<(Place, Option<u32>)> = items
            .iter()
            .zip(&addrs)
            .map(|((_, tag), a)| self.hosts[t].insert(a, *tag))
            .collect();
        let mut errors: Vec<Option<io::Error>> = items.iter().map(|_| None).collect();
        // Spilled hosts go into the overflow hash before their bucket, which
        // flags them, is written.
        let spilled: Vec<usize> = (0..items.len()).filter(|&i| placed[i].0.spilled).collect();
        let keys: Vec<Vec<u8>> = spilled.iter().map(|&i| key_bytes(items[i].0)).collect();
        let values: Vec<Vec<u8>> = spilled
            .iter()
            .map(|&i| rule_bytes(items[i].1).to_vec())
            .collect();
        for (&i, r) in spilled
            .iter()
            .zip(batch_items(&self.rules[index], &keys, Some(&values)))
        {
            if let Err(e) = r {
                self.hosts[t].undo_insert(&addrs[i], placed[i].1);
                errors[i] = Some(e);
            }
        }
        let by_bucket = group_ok(placed.iter().map(|p| p.0.bucket), &errors);
        for (bucket, error) in self.write_buckets(t, by_bucket.keys().copied().collect()) {
            // The kernel keeps the bucket as it was: so does the copy, and
            // a spilled host it would have flagged leaves the hash again.
            for &i in &by_bucket[&bucket] {
                self.hosts[t].undo_insert(&addrs[i], placed[i].1);
                if placed[i].0.spilled && placed[i].1.is_none() {
                    let _ = batch_items(&self.rules[index], &[key_bytes(items[i].0)], None);
                }
                errors[i] = Some(copy_error(&error));
            }
        }
        errors.into_iter().map(|e| e.map_or(Ok(()), Err)).collect()
    }

    /// Deletes `cidrs`, all of rule map `index`. One result per item.
    pub fn remove(&mut self, index: usize, cidrs: &[Cidr]) -> Vec<io::Result<()>> {
        let keys: Vec<Vec<u8>> = cidrs.iter().map(|c| key_bytes(*c)).collect();
        if is_net(index) {
            return batch_items(&self.rules[index], &keys, None);
        }
        let t = index / 2;
        let addrs: Vec<Vec<u8>> = cidrs.iter().map(|c| addr_bytes(*c)).collect();
        let places: Vec<Option<Place>> = addrs.iter().map(|a| self.hosts[t].locate(a)).collect();
        let mut errors: Vec<Option<io::Error>> = places
            .iter()
            .map(|p| {
                p.is_none()
                    .then(|| io::Error::from_raw_os_error(libc::ENOENT))
            })
            .collect();
        let spilled: Vec<usize> = (0..cidrs.len())
            .filter(|&i| places[i].is_some_and(|p| p.spilled))
            .collect();
        let spilled_keys: Vec<Vec<u8>> = spilled.iter().map(|&i| keys[i].clone()).collect();
        for (&i, r) in spilled
            .iter()
            .zip(batch_items(&self.rules[index], &spilled_keys, None))
        {
            if let Err(e) = r {
                errors[i] = Some(e);
            }
        }
        let mut tags = vec![0; cidrs.len()];
        for i in 0..cidrs.len() {
            if errors[i].is_none() {
                tags[i] = self.hosts[t].remove(&addrs[i]).map_or(0, |(_, tag)| tag);
            }
        }
        let by_bucket = group_ok(places.iter().map(|p| p.map_or(0, |p| p.bucket)), &errors);
        for (bucket, error) in self.write_buckets(t, by_bucket.keys().copied().collect()) {
            // Slotted hosts are still in the kernel's bucket; spilled ones
            // already left the hash, so their removal stands.
            for &i in &by_bucket[&bucket] {
                if !places[i].is_some_and(|p| p.spilled) {
                    self.hosts[t].insert(&addrs[i], tags[i]);
                    errors[i] = Some(copy_error(&error));
                }
            }
        }
        errors.into_iter().map(|e| e.map_or(Ok(()), Err)).collect()
    }

    /// The user-space copy of the buckets of host rule map `index`.
    pub fn host_table(&self, index: usize) -> &HostTable {
        &self.hosts[index / 2]
    }

    /// Writes `buckets` of host table `t` from the copy; returns those the
    /// kernel refused, with the error.
    fn write_buckets(&self, t: usize, buckets: Vec<u32>) -> Vec<(u32, io::Error)> {
        let keys: Vec<Vec<u8>> = buckets.iter().map(|b| b.to_ne_bytes().to_vec()).collect();
        let values: Vec<Vec<u8>> = buckets
            .iter()
            .map(|b| self.hosts[t].bucket_bytes(*b))
            .collect();
        buckets
            .into_iter()
            .zip(batch_items(&self.buckets[t], &keys, Some(&values)))
            .filter_map(|(b, r)| r.err().map(|e| (b, e)))
            .collect()
    }

    /// Publishes which rule maps hold entries (see `couic_active`).
    pub fn set_active(&self, flags: [u8; RULE_MAPS]) -> Result<(), BpfError> {
        self.active
            .update(&0u32.to_ne_bytes(), &flags, MapFlags::ANY)
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

fn is_net(index: usize) -> bool {
    index % 2 == 1
}

/// Items without an error, grouped by bucket.
fn group_ok(
    buckets: impl Iterator<Item = u32>,
    errors: &[Option<io::Error>],
) -> BTreeMap<u32, Vec<usize>> {
    let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, bucket) in buckets.enumerate() {
        if errors[i].is_none() {
            groups.entry(bucket).or_default().push(i);
        }
    }
    groups
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
    BatchOutcome {
        applied: processed.min(count),
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
