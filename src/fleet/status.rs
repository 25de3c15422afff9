//! How the fleet sync is doing: counters the sync task writes and the API
//! and the metrics read, without a lock but for the last error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use couic_common::FleetStatus;

#[derive(Debug, Default)]
pub struct FleetCounters {
    pub node: String,
    pub bucket: String,
    pub servers: Vec<String>,
    pub connected: AtomicBool,
    /// A connection was made once: the next ones are reconnections.
    pub ever_connected: AtomicBool,
    pub caught_up: AtomicBool,
    pub last_revision: AtomicU64,
    pub lag: AtomicU64,
    pub queued: AtomicU64,
    pub dropped: AtomicU64,
    pub published: AtomicU64,
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
    pub purged: AtomicU64,
    pub swept: AtomicU64,
    pub fetched: AtomicU64,
    pub reconnects: AtomicU64,
    last_error: Mutex<Option<(String, u64)>>,
}

impl FleetCounters {
    pub fn new(node: &str, bucket: &str, servers: &[String]) -> Self {
        FleetCounters {
            node: node.into(),
            bucket: bucket.into(),
            servers: servers.to_vec(),
            ..Default::default()
        }
    }

    /// A connection was made (the first, or a reconnection).
    pub fn connected_now(&self) {
        self.connected.store(true, Ordering::Relaxed);
        if self.ever_connected.swap(true, Ordering::Relaxed) {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn failed(&self, reason: &str, now: u64) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some((reason.into(), now));
    }

    pub fn read(&self) -> FleetStatus {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let error = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        FleetStatus {
            enabled: true,
            node: self.node.clone(),
            bucket: self.bucket.clone(),
            servers: self.servers.clone(),
            connected: self.connected.load(Ordering::Relaxed),
            caught_up: self.caught_up.load(Ordering::Relaxed),
            last_revision: get(&self.last_revision),
            lag: get(&self.lag),
            queued: get(&self.queued),
            dropped: get(&self.dropped),
            published: get(&self.published),
            applied: get(&self.applied),
            rejected: get(&self.rejected),
            purged: get(&self.purged),
            swept: get(&self.swept),
            fetched: get(&self.fetched),
            reconnects: get(&self.reconnects),
            last_error_at: error.as_ref().map(|e| e.1),
            last_error: error.map(|e| e.0),
        }
    }

    /// The status of a node without `[fleet]`: off, all else empty.
    pub fn disabled() -> FleetStatus {
        FleetStatus::default()
    }
}
