//! Counters read from the kernel (the XDP actions, each tag's packets and
//! bytes) and the couic_active flags the data path reads first.

use std::io;

use couic_common::Policy;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::codec::{as_bytes, counter_from};
use super::sys::write_one;
use super::types::{couic_active, couic_counter};
use super::{map_err, BpfError, KernelMaps, STAT_SLOTS};

/// Packets and bytes summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// couic_active as last asked for: the flags of the rule sets and each
/// table's short lengths. Every change writes it whole. Only the rule
/// tables change it: a flag goes up before its set's first rule is
/// written and down after its last one left (see `RuleTable`).
pub struct Active {
    map: MapHandle,
    value: couic_active,
}

impl Active {
    pub fn new(map: MapHandle) -> Self {
        Active {
            map,
            value: couic_active::default(),
        }
    }

    /// Raises the flag of rule set `set` (by `couic_map_index`). If the
    /// kernel refuses, the flag is down as before.
    pub fn raise(&mut self, set: usize) -> io::Result<()> {
        if self.value.map[set] != 0 {
            return Ok(());
        }
        self.value.map[set] = 1;
        let written = self.write();
        if written.is_err() {
            self.value.map[set] = 0;
        }
        written
    }

    /// Lowers the flag of rule set `set`. If the kernel refuses, the flag
    /// stays up there until the next write: it only costs a probe.
    pub fn lower(&mut self, set: usize) -> io::Result<()> {
        if self.value.map[set] == 0 {
            return Ok(());
        }
        self.value.map[set] = 0;
        self.write()
    }

    /// Table `table`'s short lengths are now `lens`.
    pub fn set_short(&mut self, table: usize, lens: u32) -> io::Result<()> {
        self.value.short_lens[table] = lens;
        self.write()
    }

    fn write(&self) -> io::Result<()> {
        write_one(&self.map, 0, as_bytes(&self.value))
    }
}

impl KernelMaps {
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
