//! The firewall's durable side: room reserved in the journal before a
//! change is applied, the applied change appended after, and the entries
//! read back at startup put in before the program sees a packet.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use couic_common::Policy;

use super::{ChangeKind, Firewall, Puts, Stamp, WriteError};
use crate::batch::Op;
use crate::firewall::{Change, NewEntry};
use crate::journal::record::{self, durable, Put};
use crate::journal::{Journal, JournalError, Pending};
use crate::origin::Origin;

/// What an applied change waits for before it is answered: nothing, or
/// the journal's sync of its records.
pub enum Durable {
    Now,
    After(Pending),
    Failed(WriteError),
}

/// The results of a change applied to the maps, to be answered once its
/// records are on disk: `.await` it. The caller waits, not the MapWriter,
/// which goes on with the next change meanwhile.
pub struct Committed<T> {
    results: Vec<Result<T, WriteError>>,
    durable: Durable,
}

impl<T> Committed<T> {
    pub fn new(results: Vec<Result<T, WriteError>>, durable: Durable) -> Self {
        Committed { results, durable }
    }

    /// Results with nothing to wait for (refused, or nothing journaled).
    pub fn now(results: Vec<Result<T, WriteError>>) -> Self {
        Committed::new(results, Durable::Now)
    }
}

impl<T: Send + 'static> std::future::IntoFuture for Committed<T> {
    type Output = Vec<Result<T, WriteError>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    /// The results, or, when the sync failed, that failure for every item
    /// that was applied.
    fn into_future(self) -> Self::IntoFuture {
        let Committed { results, durable } = self;
        match durable {
            Durable::Now => Box::pin(std::future::ready(results)),
            Durable::Failed(e) => Box::pin(std::future::ready(failed(results, e))),
            Durable::After(pending) => {
                Box::pin(async move { settled(results, pending.wait().await) })
            }
        }
    }
}

impl<T: Send + 'static> Committed<T> {
    /// Hands the results to `reply` once they are durable: from the
    /// journal's thread right after its sync when they wait for one (the
    /// caller is woken once, by that thread), else at once.
    pub fn answer(self, reply: impl FnOnce(Vec<Result<T, WriteError>>) + Send + 'static) {
        let Committed { results, durable } = self;
        match durable {
            Durable::Now => reply(results),
            Durable::Failed(e) => reply(failed(results, e)),
            Durable::After(pending) => {
                pending.on_durable(move |synced| reply(settled(results, synced)))
            }
        }
    }
}

/// When the sync failed: that failure for every item that was applied.
fn failed<T>(results: Vec<Result<T, WriteError>>, e: WriteError) -> Vec<Result<T, WriteError>> {
    results.into_iter().map(|r| r.and(Err(e.clone()))).collect()
}

/// The results once their sync is over, `synced` telling how it went.
fn settled<T>(
    results: Vec<Result<T, WriteError>>,
    synced: Result<(), Arc<JournalError>>,
) -> Vec<Result<T, WriteError>> {
    match synced {
        Ok(()) => results,
        Err(e) => failed(results, WriteError::Storage(e)),
    }
}

impl Firewall {
    /// From now on, API and peer changes are journaled.
    pub fn set_journal(&mut self, journal: Journal) {
        self.journal = Some(journal);
    }

    /// Room for the records of adding `entries` as `origin`: refused (and
    /// so nothing applied) when the state store cannot take them.
    pub fn reserve_adds(
        &mut self,
        entries: &[NewEntry],
        origin: &Origin,
    ) -> Result<(), WriteError> {
        self.reserve(origin, || {
            entries.iter().map(|e| record::put_bound(e, origin)).sum()
        })
    }

    /// Room for the records of removing `count` entries.
    pub fn reserve_removals(&mut self, count: usize, origin: &Origin) -> Result<(), WriteError> {
        self.reserve(origin, || count * record::DELETE_MAX)
    }

    /// Room for the records of a batch: each add may replace an entry.
    pub fn reserve_ops(&mut self, ops: &[Op], origin: &Origin) -> Result<(), WriteError> {
        self.reserve(origin, || {
            ops.iter()
                .map(|op| match op {
                    Op::Add(e) => record::put_bound(e, origin) + record::DELETE_MAX,
                    Op::Remove(_) => record::DELETE_MAX,
                })
                .sum()
        })
    }

    /// Room for `bytes` of records by `origin`.
    pub(crate) fn reserve_bytes(
        &mut self,
        origin: &Origin,
        bytes: usize,
    ) -> Result<(), WriteError> {
        self.reserve(origin, || bytes)
    }

    fn reserve(
        &mut self,
        origin: &Origin,
        bytes: impl FnOnce() -> usize,
    ) -> Result<(), WriteError> {
        match &mut self.journal {
            Some(journal) if durable(origin) => journal
                .reserve(bytes())
                .map_err(|e| WriteError::Storage(Arc::new(e))),
            _ => Ok(()),
        }
    }

    /// Appends the durable part of applied `changes`.
    pub fn log(&mut self, changes: &[Change]) -> Durable {
        let Some(journal) = &mut self.journal else {
            return Durable::Now;
        };
        match journal.log(changes) {
            Ok(None) => Durable::Now,
            Ok(Some(ticket)) => Durable::After(journal.pending(ticket)),
            Err(e) => Durable::Failed(WriteError::Storage(Arc::new(e))),
        }
    }

    /// Puts back the entries read from the state store (before the
    /// journal is set: they are in it already). Fails when they do not
    /// fit the configured capacities, or the kernel refuses one.
    pub fn restore(&mut self, puts: Vec<Put>) -> Result<usize, WriteError> {
        let total = puts.len();
        for policy in Policy::ALL {
            let (mine, stamp): (Vec<NewEntry>, Vec<(u64, Origin)>) = puts
                .iter()
                .filter(|p| p.policy == policy)
                .map(|p| (p.entry.clone(), (p.creation, p.origin.clone())))
                .unzip();
            let capacity = self.store.capacity(policy);
            for ipv4 in [true, false] {
                let held = self.store.family_len(policy, ipv4);
                let more = mine.iter().filter(|e| e.cidr.is_ipv4() == ipv4).count();
                if held + more > capacity {
                    return Err(WriteError::Full { max: capacity });
                }
            }
            let puts = Puts {
                items: mine,
                stamp: Stamp::Each(stamp),
                replaced_as: ChangeKind::Removed,
                put_as: ChangeKind::Added,
            };
            let (written, _) = self.write_puts(policy, puts, false);
            if let Some(Err(e)) = written.into_iter().find(Result::is_err) {
                return Err(e);
            }
        }
        Ok(total)
    }
}
