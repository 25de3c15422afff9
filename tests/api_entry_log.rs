//! The `entry created` / `entry deleted` lines over the real socket: one a
//! change within the budget, then one summary per client, change and policy
//! once the second is over, written even when no change follows. Its own
//! binary, for the global subscriber that sees the server's threads.

mod api_support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use api_support::*;
use couic::api::entry_log::DEFAULT_BUDGET;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every line logged in this process so far.
fn lines() -> Vec<String> {
    static OUT: OnceLock<Captured> = OnceLock::new();
    let out = OUT.get_or_init(|| {
        let out = Captured::default();
        let sink = out.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .init();
        out
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_string).collect()
}

fn count(lines: &[String], what: &str) -> usize {
    lines.iter().filter(|l| l.contains(what)).count()
}

#[test]
fn past_the_budget_entries_are_summarised_once_a_second() {
    lines();
    let d = Daemon::start();
    let mut api = d.admin();
    let n = DEFAULT_BUDGET as usize + 80;
    for i in 0..n {
        let resp = api.add("drop", &format!("10.0.{}.{}/32", i / 256, i % 256), None, 0);
        assert_eq!(resp.status, 201);
    }
    let logged = lines();
    assert_eq!(count(&logged, "entry created"), DEFAULT_BUDGET as usize);
    assert_eq!(count(&logged, "past the log budget"), 0, "the second is on");

    // The second ends: the summary comes without another change.
    d.clock.advance(1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let summary = loop {
        let logged = lines();
        if let Some(line) = logged.iter().find(|l| l.contains("past the log budget")) {
            break line.clone();
        }
        assert!(Instant::now() < deadline, "no summary: {logged:#?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        summary.contains(
            "entries created past the log budget in one second: 80 \
             (first 10.0.0.20/32, last 10.0.0.99/32)"
        ),
        "{summary}"
    );
    assert!(summary.contains("client.name=couicctl") && summary.contains("policy=drop"));

    // A new second has its budget again; deletes are lines of their own.
    for i in 0..3 {
        assert_eq!(api.delete(&format!("/v1/drop/10.0.0.{i}/32")).status, 204);
    }
    let logged = lines();
    assert_eq!(count(&logged, "entry deleted"), 3);
    assert_eq!(count(&logged, "past the log budget"), 1);
}
