//! [`Cadence`]: when a writer hands what it wrote on to another thread or
//! node, in batches.

use std::time::{Duration, Instant};

/// When a batch goes: at once while little is written (`quiet` items at
/// most in the last `every`), else at most once per `every`. A busy writer
/// then costs its readers a few wake-ups a second, and a lone ban waits
/// for nothing. The fleet's notices and the MapWriter's events to the
/// senders' thread go at this pace.
#[derive(Debug)]
pub struct Cadence {
    every: Duration,
    quiet: usize,
    /// The words written since the window's start.
    window: Option<(Instant, usize)>,
    last: Option<Instant>,
}

impl Cadence {
    pub fn new(every: Duration, quiet: usize) -> Self {
        Cadence {
            every,
            quiet,
            window: None,
            last: None,
        }
    }

    /// `words` more were written at `now`: when their batch is to go.
    pub fn due(&mut self, words: usize, now: Instant) -> Instant {
        let (start, count) = match self.window {
            Some((start, count)) if now.saturating_duration_since(start) < self.every => {
                (start, count + words)
            }
            _ => (now, words),
        };
        self.window = Some((start, count));
        match self.last {
            Some(last) if count > self.quiet => (last + self.every).max(now),
            _ => now,
        }
    }

    /// A batch went at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_node_notifies_at_once_and_a_busy_one_at_its_pace() {
        let every = Duration::from_millis(50);
        let ms = |n| Duration::from_millis(n);
        let t = Instant::now();
        let mut c = Cadence::new(every, 8);
        // A lone word, then a few more: each goes at once.
        for i in 0..8 {
            let now = t + ms(i);
            assert_eq!(c.due(1, now), now);
            c.sent(now);
        }
        // Past 8 words in 50 ms: 50 ms after the last notice.
        assert_eq!(c.due(1, t + ms(8)), t + ms(7) + every);
        c.sent(t + ms(57));
        assert_eq!(c.due(100, t + ms(60)), t + ms(107), "a busy window");
        // A quiet spell: at once again.
        assert_eq!(c.due(1, t + ms(200)), t + ms(200));
        // A notice long ago: due now, not in the past.
        let mut c = Cadence::new(every, 0);
        c.sent(t);
        assert_eq!(c.due(5, t + ms(500)), t + ms(500));
    }
}
