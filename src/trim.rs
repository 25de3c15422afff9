//! [`Trim`]: freed memory handed back to the kernel once a burst of large
//! writes is over.
//!
//! A bulk load, a peer's batch, a set reload or an expiry wave allocates
//! megabytes (request bodies, parsed items, map batches) and frees them.
//! glibc keeps what is freed inside its arenas and returns only the free
//! top of each, so the daemon's resident memory stays near the burst's
//! peak. Once no large write has come for a while, `malloc_trim` returns
//! every free page. Never during a burst: its next write would fault the
//! pages in again.

use std::time::{Duration, Instant};

/// A write of at least this many changes is large.
pub const LARGE: usize = 1024;

/// How long after the last large write memory is trimmed: longer than a
/// peer's batch period (250 ms), so that steady peering is not a burst
/// that keeps ending.
pub const QUIET: Duration = Duration::from_millis(500);

/// When to trim, from the writes seen.
#[derive(Debug)]
pub struct Trim {
    quiet: Duration,
    large: usize,
    last_large: Option<Instant>,
    armed: bool,
}

/// What to do when a check armed by [`Trim::wrote`] comes due.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// The burst is over: trim now.
    Now,
    /// Large writes came since: check again then.
    Again(Instant),
}

impl Trim {
    pub fn new(quiet: Duration, large: usize) -> Self {
        Trim {
            quiet,
            large,
            last_large: None,
            armed: false,
        }
    }

    /// `changes` were written at `now`: when to check, if a check must be
    /// armed (none is while one is on its way).
    pub fn wrote(&mut self, changes: usize, now: Instant) -> Option<Instant> {
        if changes < self.large {
            return None;
        }
        self.last_large = Some(now);
        if self.armed {
            return None;
        }
        self.armed = true;
        Some(now + self.quiet)
    }

    /// The armed check came due at `now`.
    pub fn check(&mut self, now: Instant) -> Check {
        let due = self.last_large.map_or(now, |last| last + self.quiet);
        if due > now {
            return Check::Again(due);
        }
        self.armed = false;
        Check::Now
    }
}

/// Returns the free pages of every malloc arena to the kernel; true when
/// some were. A no-op where the C library has no `malloc_trim`.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks glibc's own arenas, under their
        // locks; it takes no pointer of ours.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn small_writes_arm_nothing() {
        let mut trim = Trim::new(QUIET, LARGE);
        let t0 = Instant::now();
        for i in 0..10_000 {
            assert_eq!(trim.wrote(LARGE - 1, t0 + MS * i), None);
        }
    }

    #[test]
    fn a_burst_is_trimmed_once_quiet_after_its_last_large_write() {
        let mut trim = Trim::new(QUIET, LARGE);
        let t0 = Instant::now();
        assert_eq!(trim.wrote(LARGE, t0), Some(t0 + QUIET));
        // More of the burst: the check on its way is enough.
        assert_eq!(trim.wrote(16_384, t0 + 300 * MS), None);
        assert_eq!(trim.wrote(1, t0 + 400 * MS), None);
        // Due, but the burst went on: again, QUIET after its last write.
        assert_eq!(trim.check(t0 + QUIET), Check::Again(t0 + 800 * MS));
        assert_eq!(trim.check(t0 + 800 * MS), Check::Now);
        // The next burst arms a check of its own.
        let t1 = t0 + 2_000 * MS;
        assert_eq!(trim.wrote(LARGE, t1), Some(t1 + QUIET));
    }
}
