//! The kernel as the firewall sees it: rule tables to write and counters to
//! read. [`KernelMaps`] is the real one; [`MemoryMaps`] keeps the same rules
//! in memory, so the firewall and the actors are tested without a kernel
//! (and made to fail where a kernel would).

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use couic_common::{Cidr, Policy};

use crate::bpf::{BpfError, Counter, KernelMaps, RULE_MAPS, STAT_SLOTS};

/// What the firewall writes and reads. Tables are `couic_map_index`
/// values ([`crate::bpf::rule_map_index`]); a table's flag in
/// `couic_active` is the implementation's business.
pub trait RuleMaps: Send {
    /// Inserts or re-tags `(cidr, tag slot)` items of one table; one result
    /// per item.
    fn insert(&mut self, table: usize, items: &[(Cidr, u32)]) -> Vec<io::Result<()>>;
    /// Deletes rules of one table; one result per item.
    fn remove(&mut self, table: usize, cidrs: &[Cidr]) -> Vec<io::Result<()>>;
    /// Packets and bytes per `couic_stat` slot.
    fn read_stats(&self) -> Result<[Counter; STAT_SLOTS], BpfError>;
    fn read_tag(&self, policy: Policy, slot: u32) -> Result<Counter, BpfError>;
    /// Zeroes a tag slot before a new tag takes it.
    fn reset_tag(&self, policy: Policy, slot: u32) -> Result<(), BpfError>;
}

impl RuleMaps for KernelMaps {
    fn insert(&mut self, table: usize, items: &[(Cidr, u32)]) -> Vec<io::Result<()>> {
        KernelMaps::insert(self, table, items)
    }

    fn remove(&mut self, table: usize, cidrs: &[Cidr]) -> Vec<io::Result<()>> {
        KernelMaps::remove(self, table, cidrs)
    }

    fn read_stats(&self) -> Result<[Counter; STAT_SLOTS], BpfError> {
        KernelMaps::read_stats(self)
    }

    fn read_tag(&self, policy: Policy, slot: u32) -> Result<Counter, BpfError> {
        KernelMaps::read_tag(self, policy, slot)
    }

    fn reset_tag(&self, policy: Policy, slot: u32) -> Result<(), BpfError> {
        KernelMaps::reset_tag(self, policy, slot)
    }
}

#[derive(Debug, Default)]
struct Tables {
    /// Per table: CIDR -> tag slot, as the kernel would hold it.
    rules: [HashMap<Cidr, u32>; RULE_MAPS],
    /// Inserts of these CIDRs fail, as a full or out-of-memory kernel map.
    refuse: HashSet<Cidr>,
}

/// Rule tables in memory. Cloning gives another handle on the same tables:
/// a test keeps one to look inside, or to make inserts fail, after giving
/// the other to a firewall.
#[derive(Debug, Clone, Default)]
pub struct MemoryMaps {
    tables: Arc<Mutex<Tables>>,
}

impl MemoryMaps {
    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on, inserting `cidr` fails with ENOMEM.
    pub fn refuse(&self, cidr: Cidr) {
        self.lock().refuse.insert(cidr);
    }

    /// The rules of `table`, sorted, as (CIDR, tag slot).
    pub fn rules(&self, table: usize) -> Vec<(Cidr, u32)> {
        let mut rules: Vec<(Cidr, u32)> = self.lock().rules[table]
            .iter()
            .map(|(c, s)| (*c, *s))
            .collect();
        rules.sort_by_key(|(c, _)| (c.addr(), c.prefix_len()));
        rules
    }

    /// Every rule of every table.
    pub fn len(&self) -> usize {
        self.lock().rules.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RuleMaps for MemoryMaps {
    fn insert(&mut self, table: usize, items: &[(Cidr, u32)]) -> Vec<io::Result<()>> {
        let mut tables = self.lock();
        items
            .iter()
            .map(|&(cidr, slot)| {
                if tables.refuse.contains(&cidr) {
                    return Err(io::Error::from_raw_os_error(libc::ENOMEM));
                }
                tables.rules[table].insert(cidr, slot);
                Ok(())
            })
            .collect()
    }

    fn remove(&mut self, table: usize, cidrs: &[Cidr]) -> Vec<io::Result<()>> {
        let mut tables = self.lock();
        cidrs
            .iter()
            .map(|cidr| match tables.rules[table].remove(cidr) {
                Some(_) => Ok(()),
                None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
            })
            .collect()
    }

    fn read_stats(&self) -> Result<[Counter; STAT_SLOTS], BpfError> {
        Ok([Counter::default(); STAT_SLOTS])
    }

    fn read_tag(&self, _: Policy, _: u32) -> Result<Counter, BpfError> {
        Ok(Counter::default())
    }

    fn reset_tag(&self, _: Policy, _: u32) -> Result<(), BpfError> {
        Ok(())
    }
}
