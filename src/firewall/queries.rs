//! What the firewall answers without changing anything: the verdict for
//! an address, and the counters with the store's sizes.

use std::net::IpAddr;

use couic_common::Policy;

use super::Firewall;
use crate::bpf::{BpfError, Counter, STAT_SLOTS};
use crate::store::StoredEntry;

/// Counters read from the kernel, with the store's sizes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub drop_count: usize,
    pub ignore_count: usize,
    /// By `couic_stat` index: the five XDP actions, then malformed frames.
    pub xdp: [Counter; STAT_SLOTS],
    pub drop_tags: Vec<(String, Counter)>,
    pub ignore_tags: Vec<(String, Counter)>,
}

/// What the data path would answer for one source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The deciding policy: `Ignore` (pass), `Drop`, or `None` (pass).
    pub policy: Option<Policy>,
    pub entry: Option<StoredEntry>,
}

impl Firewall {
    /// The verdict the data path gives `ip`: any ignore match wins.
    pub fn check(&self, ip: IpAddr) -> Verdict {
        for policy in [Policy::Ignore, Policy::Drop] {
            if let Some(entry) = self.store.longest_match(policy, ip) {
                return Verdict {
                    policy: Some(policy),
                    entry: Some(entry),
                };
            }
        }
        Verdict {
            policy: None,
            entry: None,
        }
    }

    pub fn snapshot(&self) -> Result<Snapshot, BpfError> {
        let tags = |policy| -> Result<Vec<(String, Counter)>, BpfError> {
            self.store
                .tags(policy)
                .counted()
                .map(|(name, slot)| Ok((name.to_string(), self.maps.read_tag(policy, slot)?)))
                .collect()
        };
        Ok(Snapshot {
            drop_count: self.store.len(Policy::Drop),
            ignore_count: self.store.len(Policy::Ignore),
            xdp: self.maps.read_stats()?,
            drop_tags: tags(Policy::Drop)?,
            ignore_tags: tags(Policy::Ignore)?,
        })
    }
}
