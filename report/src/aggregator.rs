//! The period schedule around a [`Period`]: batches go into the current
//! period unless their id was seen within the hour, and a period closes
//! every `batch_interval_secs` on a fixed grid counted from the start.
//!
//! Time is passed in: callers give `now`, tests move it. The caller closes
//! a due period ([`Aggregator::close_due`]) before it ingests what arrived
//! at the same `now`, so a batch at the boundary opens the next period.

use std::time::{Duration, Instant};

use crate::dedup::DedupWindow;
use crate::period::{Batch, Period, Summary, Tally};

#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    Counted(Tally),
    /// Its id was already seen: acknowledged, not counted.
    Duplicate,
}

#[derive(Debug)]
pub struct Aggregator {
    length: Duration,
    period_end: Instant,
    period: Period,
    dedup: DedupWindow,
}

impl Aggregator {
    /// `length` must not be zero; the config makes sure of it.
    pub fn new(length: Duration, now: Instant) -> Self {
        Self::with_dedup(length, now, DedupWindow::default())
    }

    pub fn with_dedup(length: Duration, now: Instant, dedup: DedupWindow) -> Self {
        assert!(!length.is_zero(), "the config refuses a zero period");
        Aggregator {
            length,
            period_end: now + length,
            period: Period::default(),
            dedup,
        }
    }

    pub fn ingest(&mut self, batch: Batch, now: Instant) -> Ingested {
        if let Some(id) = &batch.id {
            if !self.dedup.first_sighting(id, now) {
                return Ingested::Duplicate;
            }
        }
        Ingested::Counted(self.period.record(batch))
    }

    /// When the current period ends.
    pub fn period_end(&self) -> Instant {
        self.period_end
    }

    /// The summary of the current period if it has ended by `now`, which
    /// also starts the next one. Periods missed entirely (a stopped
    /// process, a suspended host) are skipped: the next end stays on the
    /// grid, after `now`.
    pub fn close_due(&mut self, now: Instant) -> Option<Summary> {
        if now < self.period_end {
            return None;
        }
        let late = now.duration_since(self.period_end).as_nanos();
        let skipped = late / self.length.as_nanos();
        let ahead = u32::try_from(skipped + 1).unwrap_or(u32::MAX);
        self.period_end += self.length.saturating_mul(ahead);
        let next = self.period.next();
        Some(std::mem::replace(&mut self.period, next).close(self.length))
    }

    pub fn dedup(&self) -> &DedupWindow {
        &self.dedup
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::tests::{batch, report};
    use couic_common::ReportAction;

    const LEN: Duration = Duration::from_secs(900);

    fn adds(node: &str, n: usize) -> Batch {
        let reports = (0..n)
            .map(|i| {
                report(
                    ReportAction::Add,
                    &format!("10.0.{}.{}/32", i / 256, i % 256),
                    Some("t"),
                )
            })
            .collect();
        batch(node, reports)
    }

    fn with_id(mut b: Batch, id: &str) -> Batch {
        b.id = Some(id.to_string());
        b
    }

    #[test]
    fn a_period_closes_at_its_end_not_before() {
        let t0 = Instant::now();
        let mut a = Aggregator::new(LEN, t0);
        assert!(a.close_due(t0).is_none());
        a.ingest(adds("n", 3), t0);
        let just_before = t0 + LEN - Duration::from_millis(1);
        assert!(a.close_due(just_before).is_none());
        a.ingest(adds("n", 2), just_before);
        let s = a.close_due(t0 + LEN).expect("due at its end");
        assert_eq!(s.total, 5);
        assert_eq!(s.length, LEN);
        assert_eq!(a.period_end(), t0 + 2 * LEN);
    }

    #[test]
    fn a_batch_at_the_boundary_opens_the_next_period() {
        let t0 = Instant::now();
        let mut a = Aggregator::new(LEN, t0);
        a.ingest(adds("n", 1), t0);
        let boundary = t0 + LEN;
        assert_eq!(a.close_due(boundary).unwrap().total, 1);
        a.ingest(adds("n", 4), boundary);
        assert!(a
            .close_due(boundary + LEN - Duration::from_nanos(1))
            .is_none());
        assert_eq!(a.close_due(boundary + LEN).unwrap().total, 4);
    }

    #[test]
    fn every_tick_resets_even_empty_ones() {
        let t0 = Instant::now();
        let mut a = Aggregator::new(LEN, t0);
        let s = a.close_due(t0 + LEN).unwrap();
        assert_eq!(s.total, 0);
        a.ingest(adds("n", 2), t0 + LEN);
        assert_eq!(a.close_due(t0 + 2 * LEN).unwrap().total, 2);
        assert_eq!(a.close_due(t0 + 3 * LEN).unwrap().total, 0);
    }

    #[test]
    fn missed_periods_are_skipped_on_the_grid() {
        let t0 = Instant::now();
        let mut a = Aggregator::new(LEN, t0);
        a.ingest(adds("n", 7), t0);
        let late = t0 + LEN * 3 + Duration::from_secs(10);
        assert_eq!(a.close_due(late).unwrap().total, 7);
        assert_eq!(a.period_end(), t0 + LEN * 4);
        assert!(a.close_due(late).is_none());
    }

    #[test]
    fn a_batch_id_counts_once_across_periods() {
        let t0 = Instant::now();
        let mut a = Aggregator::new(LEN, t0);
        assert!(matches!(
            a.ingest(with_id(adds("n", 3), "b1"), t0),
            Ingested::Counted(_)
        ));
        assert_eq!(
            a.ingest(with_id(adds("n", 3), "b1"), t0),
            Ingested::Duplicate
        );
        assert_eq!(a.close_due(t0 + LEN).unwrap().total, 3);
        // A retry in the next period is still the same batch.
        assert_eq!(
            a.ingest(with_id(adds("n", 3), "b1"), t0 + LEN),
            Ingested::Duplicate
        );
        // Batches without an id (reference daemons) are never deduplicated.
        a.ingest(adds("n", 3), t0 + LEN);
        a.ingest(adds("n", 3), t0 + LEN);
        assert_eq!(a.close_due(t0 + 2 * LEN).unwrap().total, 6);
    }

    #[test]
    fn a_one_second_period() {
        let t0 = Instant::now();
        let one = Duration::from_secs(1);
        let mut a = Aggregator::new(one, t0);
        a.ingest(adds("n", 1), t0 + Duration::from_millis(999));
        assert_eq!(a.close_due(t0 + one).unwrap().total, 1);
    }
}
