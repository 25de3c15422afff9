//! Counting what is too frequent to log one by one (dropped reports, dropped
//! peer jobs): a warning at most once per period, with the count since the
//! last one.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LogThrottle {
    period: Duration,
    last: Option<Instant>,
    unlogged: u64,
}

impl LogThrottle {
    pub fn new(period: Duration) -> Self {
        LogThrottle {
            period,
            last: None,
            unlogged: 0,
        }
    }

    /// Counts `n` more; returns the count to log when a warning is due
    /// (the first, then at most once per period), and starts counting anew.
    pub fn add(&mut self, n: u64) -> Option<u64> {
        self.add_at(n, Instant::now())
    }

    /// [`add`](Self::add) at `now`, for tests that move time themselves.
    pub fn add_at(&mut self, n: u64, now: Instant) -> Option<u64> {
        self.unlogged += n;
        let due = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= self.period);
        if !due || self.unlogged == 0 {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_then_counts_until_the_period_passes() {
        let mut t = LogThrottle::new(Duration::from_millis(50));
        assert_eq!(t.add(3), Some(3));
        assert_eq!(t.add(2), None);
        assert_eq!(t.add(4), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.add(1), Some(7), "everything since the last warning");
        assert_eq!(t.add(0), None);
    }

    #[test]
    fn a_moved_clock_makes_the_next_warning_due() {
        let t0 = Instant::now();
        let mut t = LogThrottle::new(Duration::from_secs(1));
        assert_eq!(t.add_at(1, t0), Some(1));
        for ms in 1..1000 {
            assert_eq!(t.add_at(1, t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(t.add_at(1, t0 + Duration::from_secs(1)), Some(1000));
    }
}
