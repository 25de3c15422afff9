//! Retry delays for one destination (a webhook, a peer): exponential from a
//! first delay, capped, with jitter so that nodes cut off together do not
//! retry together. A `Retry-After` from the destination wins when longer.

use std::time::Duration;

/// The first delay after a failure.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// No delay grows past this.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// The longest `Retry-After` honoured: a destination that asks for more
/// (or lies) is tried again after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    /// The delay the next failure waits, before jitter.
    next: Duration,
    /// xorshift state for the jitter: no need for a cryptographic source.
    seed: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(FIRST_DELAY, MAX_DELAY)
    }
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        Backoff {
            first,
            max,
            next: first,
            seed,
        }
    }

    /// A success: the next failure starts from the first delay again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// A failure: how long to wait before the next attempt. The delay is
    /// 75 % to 100 % of the current step (never more than the cap), the
    /// step doubles, and `retry_after` is honoured when it is longer.
    pub fn failed(&mut self, retry_after: Option<Duration>) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let quarter = step / 4;
        let jitter = if quarter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.random() % quarter.as_nanos().max(1) as u64)
        };
        let delay = step - quarter + jitter;
        match retry_after {
            Some(wanted) if wanted > delay => wanted.min(MAX_RETRY_AFTER),
            _ => delay,
        }
    }

    fn random(&mut self) -> u64 {
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::default();
        let mut steps = Vec::new();
        for _ in 0..9 {
            steps.push(b.failed(None));
        }
        let bounds = [1u64, 2, 4, 8, 16, 32, 60, 60, 60];
        for (d, hi) in steps.iter().zip(bounds) {
            let hi = Duration::from_secs(hi);
            assert!(
                *d <= hi && *d >= hi * 3 / 4,
                "{d:?} not in [3/4, 1] of {hi:?}"
            );
        }
        b.reset();
        assert!(b.failed(None) <= Duration::from_secs(1));
    }

    #[test]
    fn a_longer_retry_after_wins() {
        let mut b = Backoff::default();
        assert_eq!(
            b.failed(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            b.failed(Some(Duration::from_secs(1 << 30))),
            MAX_RETRY_AFTER
        );
        // A shorter one does not make the backoff shorter.
        assert!(b.failed(Some(Duration::from_millis(10))) >= Duration::from_secs(3));
    }
}
