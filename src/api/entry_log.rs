//! The `entry created` and `entry deleted` lines, within a budget.
//!
//! One line per API change is what the reference writes, and what an
//! operator reads at ordinary rates. Under an attack or a fail2ban storm it
//! is a megabyte a second to the file and as much to stdout. So each second
//! the first `budget` changes get their line as ever; past it, changes are
//! counted per client, change and policy, and each count becomes one summary
//! line (count, first and last CIDR) once its second is over.
//!
//! [`EntryLog`] decides, from the seconds it is given; [`EntryLogger`] is
//! the thin shell the handlers share: a lock, the clock, and the lines.

use std::sync::Mutex;
use std::time::Duration;

use couic_common::{Cidr, Group, Policy};

use super::Caller;
use crate::clock::SharedClock;

/// Lines of single changes per second unless configured.
pub const DEFAULT_BUDGET: u32 = 20;
/// How often summaries of past seconds are written when no change comes.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Deleted,
}

/// What a summary counts: one client's changes of one kind on one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub client: String,
    pub group: Group,
    pub change: Change,
    pub policy: Policy,
}

impl Key {
    pub fn new(caller: &Caller, change: Change, policy: Policy) -> Key {
        Key {
            client: caller.name.clone(),
            group: caller.group,
            change,
            policy,
        }
    }
}

/// The changes of one key in one second that got no line of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub key: Key,
    /// The Unix second they happened in.
    pub second: u64,
    pub count: u64,
    pub first: Cidr,
    pub last: Cidr,
}

/// The budget and the counts of the current second.
#[derive(Debug)]
pub struct EntryLog {
    budget: u32,
    second: u64,
    /// Single lines given in `second`.
    lines: u32,
    /// Changes past the budget in `second`: a few clients at most, so a
    /// vector searched in order.
    counted: Vec<Summary>,
}

impl EntryLog {
    /// `budget` single lines a second; 0 summarises every change.
    pub fn new(budget: u32) -> Self {
        EntryLog {
            budget,
            second: 0,
            lines: 0,
            counted: Vec::new(),
        }
    }

    /// A change of `cidr` at `now`: whether it gets a line of its own, and
    /// the summaries of the seconds now over, to write first.
    pub fn record(&mut self, now: u64, key: Key, cidr: Cidr) -> (bool, Vec<Summary>) {
        let due = self.flush(now);
        if self.lines < self.budget {
            self.lines += 1;
            return (true, due);
        }
        match self.counted.iter_mut().find(|s| s.key == key) {
            Some(summary) => {
                summary.count += 1;
                summary.last = cidr;
            }
            None => self.counted.push(Summary {
                key,
                second: now,
                count: 1,
                first: cidr,
                last: cidr,
            }),
        }
        (false, due)
    }

    /// The summaries of the seconds over at `now` (any other second than
    /// the current one: a clock set back ends the second too).
    pub fn flush(&mut self, now: u64) -> Vec<Summary> {
        if now == self.second {
            return Vec::new();
        }
        self.second = now;
        self.lines = 0;
        std::mem::take(&mut self.counted)
    }

    /// Every summary, the current second's included: at shutdown.
    pub fn finish(&mut self) -> Vec<Summary> {
        std::mem::take(&mut self.counted)
    }
}

/// [`EntryLog`] shared by the handlers, reading the daemon's clock.
pub struct EntryLogger {
    log: Mutex<EntryLog>,
    clock: SharedClock,
}

impl EntryLogger {
    pub fn new(budget: u32, clock: SharedClock) -> Self {
        EntryLogger {
            log: Mutex::new(EntryLog::new(budget)),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EntryLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `line` for this change, or counts it towards a summary.
    pub fn log(&self, key: Key, cidr: Cidr, line: impl FnOnce()) {
        let (single, due) = self.lock().record(self.clock.now(), key, cidr);
        write(&due);
        if single {
            line();
        }
    }

    /// Writes the summaries of the seconds over.
    pub fn flush(&self) {
        let due = self.lock().flush(self.clock.now());
        write(&due);
    }

    /// Writes every summary: once the API has stopped.
    pub fn finish(&self) {
        let due = self.lock().finish();
        write(&due);
    }
}

fn write(summaries: &[Summary]) {
    for s in summaries {
        let what = match s.key.change {
            Change::Created => "entries created",
            Change::Deleted => "entries deleted",
        };
        tracing::info!(
            client.name = %s.key.client,
            client.group = %s.key.group,
            policy = %s.key.policy,
            count = s.count,
            first = %s.first,
            last = %s.last,
            "{what} past the log budget in one second: {} (first {}, last {})",
            s.count,
            s.first,
            s.last
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const T0: u64 = 1_735_689_600;

    fn key(client: &str, change: Change, policy: Policy) -> Key {
        Key {
            client: client.into(),
            group: Group::Clientrw,
            change,
            policy,
        }
    }

    fn cidr(i: u32) -> Cidr {
        format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap()
    }

    #[test]
    fn ordinary_rates_get_one_line_each() {
        let clock = ManualClock::new(T0);
        let mut log = EntryLog::new(3);
        for second in 0..5 {
            for i in 0..3 {
                let k = key("f2b", Change::Created, Policy::Drop);
                assert_eq!(log.record(clock.now(), k, cidr(i)), (true, vec![]));
            }
            clock.advance(1);
            assert_eq!(log.flush(clock.now()), vec![], "second {second}");
        }
    }

    #[test]
    fn past_the_budget_one_summary_a_second_per_client_change_and_policy() {
        let clock = ManualClock::new(T0);
        let mut log = EntryLog::new(2);
        let f2b = key("f2b", Change::Created, Policy::Drop);
        let f2b_del = key("f2b", Change::Deleted, Policy::Drop);
        let other = key("other", Change::Created, Policy::Drop);
        let ignore = key("f2b", Change::Created, Policy::Ignore);
        // Two lines, then counted.
        assert!(log.record(clock.now(), f2b.clone(), cidr(0)).0);
        assert!(log.record(clock.now(), other.clone(), cidr(1)).0);
        for i in 2..100 {
            let (single, due) = log.record(clock.now(), f2b.clone(), cidr(i));
            assert!(!single && due.is_empty());
        }
        assert!(!log.record(clock.now(), other.clone(), cidr(100)).0);
        assert!(!log.record(clock.now(), f2b_del.clone(), cidr(101)).0);
        assert!(!log.record(clock.now(), ignore.clone(), cidr(102)).0);
        assert_eq!(log.flush(clock.now()), vec![], "the second is not over");

        // The next second: its first change gets a line, after the
        // summaries of the one before.
        clock.advance(1);
        let (single, due) = log.record(clock.now(), f2b.clone(), cidr(200));
        assert!(single);
        let summary = |key: &Key, count, first, last| Summary {
            key: key.clone(),
            second: T0,
            count,
            first: cidr(first),
            last: cidr(last),
        };
        assert_eq!(
            due,
            vec![
                summary(&f2b, 98, 2, 99),
                summary(&other, 1, 100, 100),
                summary(&f2b_del, 1, 101, 101),
                summary(&ignore, 1, 102, 102),
            ]
        );
    }

    #[test]
    fn a_quiet_second_flushes_the_last_summaries() {
        let clock = ManualClock::new(T0);
        let mut log = EntryLog::new(0);
        let k = key("f2b", Change::Deleted, Policy::Drop);
        for i in 0..5 {
            assert!(!log.record(clock.now(), k.clone(), cidr(i)).0, "budget 0");
        }
        clock.advance(3);
        let due = log.flush(clock.now());
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].count, due[0].second), (5, T0));
        assert_eq!(log.flush(clock.now()), vec![], "written once");
        // A clock set back ends the second as well.
        assert!(!log.record(clock.now(), k.clone(), cidr(9)).0);
        assert_eq!(log.flush(T0).len(), 1);
        // At shutdown the second need not be over.
        assert!(!log.record(T0, k.clone(), cidr(10)).0);
        assert_eq!(log.finish()[0].first, cidr(10));
        assert_eq!(log.finish(), vec![]);
    }
}
