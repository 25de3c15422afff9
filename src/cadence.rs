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
    window: Option<Window>,
    last: Option<Instant>,
}

/// Words counted in windows of `every`: the current one and the one just
/// before it, so that a new window does not start out quiet under load.
#[derive(Debug)]
struct Window {
    start: Instant,
    count: usize,
    before: usize,
}

impl Window {
    fn starting(start: Instant) -> Window {
        Window {
            start,
            count: 0,
            before: 0,
        }
    }
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
        let every = self.every;
        let w = self.window.get_or_insert_with(|| Window::starting(now));
        let elapsed = now.saturating_duration_since(w.start);
        if elapsed >= every * 2 {
            // A whole window went by empty.
            *w = Window::starting(now);
        } else if elapsed >= every {
            w.before = std::mem::take(&mut w.count);
            w.start += every;
        }
        w.count += words;
        // The words of the last `every`: this window's, and the share of
        // the one before that is still within it (`now` is less than
        // `every` into this window, so that share is between 0 and 1).
        let into = now.saturating_duration_since(w.start).as_secs_f64() / every.as_secs_f64();
        let recent = w.count as f64 + w.before as f64 * (1.0 - into);
        match self.last {
            Some(last) if recent > self.quiet as f64 => (last + every).max(now),
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

    /// What a caller does (as the MapWriter and the fleet do): sends when
    /// due now, else once at the time due. The times of the sends.
    fn sends(c: &mut Cadence, writes: impl Iterator<Item = Instant>) -> Vec<Instant> {
        let mut sent = Vec::new();
        let mut armed: Option<Instant> = None;
        for now in writes {
            if let Some(at) = armed.filter(|at| *at <= now) {
                c.sent(at);
                sent.push(at);
                armed = None;
            }
            let due = c.due(1, now);
            if due <= now {
                c.sent(now);
                sent.push(now);
            } else if armed.is_none() {
                armed = Some(due);
            }
        }
        sent
    }

    #[test]
    fn a_steady_writer_is_paced_in_every_window_not_only_its_first() {
        let every = Duration::from_millis(50);
        let t = Instant::now();
        let mut c = Cadence::new(every, 8);
        // A word a millisecond for a second: 20 windows.
        let writes = (0..1000).map(|i| t + Duration::from_millis(i));
        let sent = sends(&mut c, writes);
        // The first 8 at once, then one send per 50 ms.
        assert!(sent.len() <= 8 + 20, "{} sends", sent.len());
        for pair in sent[8..].windows(2) {
            assert!(pair[1] - pair[0] >= every, "{:?} apart", pair[1] - pair[0]);
        }
    }

    #[test]
    fn a_writer_gone_quiet_for_a_window_sends_at_once_again() {
        let every = Duration::from_millis(50);
        let ms = |n| Duration::from_millis(n);
        let t = Instant::now();
        let mut c = Cadence::new(every, 8);
        let busy = (0..100).map(|i| t + ms(i));
        sends(&mut c, busy);
        // Nothing for more than a window, then a lone word: at once.
        assert_eq!(c.due(1, t + ms(210)), t + ms(210));
    }
}
