//! Batch ids seen in the last hour. A daemon that retries a batch whose
//! answer it did not get sends the same `X-Couic-Batch` id again; the retry
//! is acknowledged but not counted twice.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// How long an id is remembered.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(3600);
/// Most ids remembered at once; past it the oldest are forgotten early.
/// A daemon sending a batch every 100 ms makes 36,000 in an hour.
pub const DEDUP_CAPACITY: usize = 100_000;

#[derive(Debug)]
pub struct DedupWindow {
    window: Duration,
    capacity: usize,
    seen: HashSet<String>,
    /// Ids in the order they were first seen, which is also deadline order.
    order: VecDeque<(Instant, String)>,
    /// Ids forgotten before their hour because of `capacity`.
    evicted: u64,
}

impl DedupWindow {
    pub fn new(window: Duration, capacity: usize) -> Self {
        DedupWindow {
            window,
            capacity: capacity.max(1),
            seen: HashSet::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    /// True the first time `id` is seen within the window, and remembers it.
    pub fn first_sighting(&mut self, id: &str, now: Instant) -> bool {
        self.forget_expired(now);
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() >= self.capacity {
            self.forget_oldest();
            self.evicted += 1;
        }
        self.seen.insert(id.to_string());
        self.order.push_back((now, id.to_string()));
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn forget_expired(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(seen, _)| now.saturating_duration_since(*seen) >= self.window)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, id)) = self.order.pop_front() {
            self.seen.remove(&id);
        }
    }
}

impl Default for DedupWindow {
    fn default() -> Self {
        DedupWindow::new(DEDUP_WINDOW, DEDUP_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_counts_once_within_the_hour() {
        let t0 = Instant::now();
        let mut w = DedupWindow::default();
        assert!(w.first_sighting("a", t0));
        assert!(!w.first_sighting("a", t0 + Duration::from_secs(1)));
        assert!(w.first_sighting("b", t0 + Duration::from_secs(1)));
        assert!(!w.first_sighting("a", t0 + DEDUP_WINDOW - Duration::from_millis(1)));
        // The hour is counted from the first sighting, not the last.
        assert!(w.first_sighting("a", t0 + DEDUP_WINDOW));
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn expired_ids_are_forgotten() {
        let t0 = Instant::now();
        let mut w = DedupWindow::default();
        for i in 0..10 {
            w.first_sighting(&i.to_string(), t0);
        }
        w.first_sighting("late", t0 + DEDUP_WINDOW);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn capacity_forgets_the_oldest_first() {
        let t0 = Instant::now();
        let mut w = DedupWindow::new(DEDUP_WINDOW, 2);
        assert!(w.first_sighting("a", t0));
        assert!(w.first_sighting("b", t0));
        assert!(w.first_sighting("c", t0));
        assert_eq!(w.evicted(), 1);
        assert!(!w.first_sighting("b", t0));
        assert!(!w.first_sighting("c", t0));
        assert!(w.first_sighting("a", t0));
    }
}
