//! Webhook reports (§11) from the in-process daemon to a real HTTP server on
//! loopback: what is reported, in what order, with which headers, and what
//! a receiver that is down, refuses or asks to wait gets.

mod api_support;

use std::collections::HashSet;
use std::time::Duration;

use api_support::*;
use couic::backoff::Backoff;
use couic::config::{ReportEvent, Reporting};
use couic_testkit::http::{Answer, HttpRecorder, Request};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(20);

fn reporting(receiver: &HttpRecorder) -> Reporting {
    Reporting {
        enabled: true,
        webhook: receiver.url("/v1/reports/0b6a5c61-secret"),
        events: vec![ReportEvent::Api, ReportEvent::Expiry],
        max_batch: 5_000,
        queue_capacity: 65_536,
        ca_file: None,
        node: Some("node-a".into()),
    }
}

/// Retries come quickly in tests; the delays themselves are unit-tested.
fn quick() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
}

/// Polls until the daemon counts `n` reports sent: a receiver records a
/// request before it answers, so the daemon's count comes a moment later.
fn wait_sent(d: &Daemon, n: u64) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while d.reports.read(0).sent < n {
        assert!(
            std::time::Instant::now() < deadline,
            "sent {} of {n}",
            d.reports.read(0).sent
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every report received, in the order received.
fn reports(requests: &[Request]) -> Vec<Value> {
    requests
        .iter()
        .filter(|r| r.method == "POST")
        .flat_map(|r| r.json().as_array().expect("a JSON array").clone())
        .collect()
}

fn count(requests: &[Request]) -> usize {
    reports(requests).len()
}

/// `{"add": [...]}` bulk body of `n` hosts from `10.{k}.x.y/32`.
fn bulk_adds(k: u32, n: u32, tag: &str) -> String {
    let adds: Vec<Value> = (0..n)
        .map(|i| json!({"cidr": format!("10.{k}.{}.{}/32", i >> 8, i & 255), "tag": tag, "expiration": 0}))
        .collect();
    json!({ "add": adds }).to_string()
}

#[test]
fn api_changes_and_expiries_are_reported_in_order_with_the_reference_headers() {
    let receiver = HttpRecorder::start();
    let d = Daemon::start_reporting(reporting(&receiver), quick());
    let mut api = d.admin();

    let add = json!({"cidr": "192.0.2.7/32", "tag": "ssh", "expiration": 0,
                     "metadata": {"kind": "fail2ban", "detail": "5 failures", "extra": {"jail": "sshd"}}});
    assert_eq!(api.post("/v1/drop", &add.to_string()).status, 201);
    assert_eq!(
        api.post("/v1/drop/bulk", &bulk_adds(1, 1000, "bulk"))
            .status,
        200
    );
    assert_eq!(api.delete("/v1/drop/192.0.2.7/32").status, 204);
    assert_eq!(
        api.add("ignore", "198.51.100.0/24", None, T0 + 30).status,
        201
    );
    // Not reported by default: set reloads and peer batches.
    d.write_set("drop", "blocklist", "203.0.113.0/24\n");
    assert_eq!(api.reload().status, 201);
    let peer = json!([{"action": "add", "entry": {"cidr": "203.0.113.9/32", "tag": null, "expiration": 0, "metadata": null}}]);
    assert_eq!(api.post("/v1/drop/peer", &peer.to_string()).status, 201);
    d.clock.advance(30);
    d.sweep();

    let requests = receiver.wait_for(PATIENCE, |r| count(r) >= 1004);
    let got = reports(&requests);
    assert_eq!(got.len(), 1004, "nothing more, nothing twice");
    assert_eq!(
        got[0],
        json!({"action": "add", "policy": "drop",
               "entry": {"creation": T0, "cidr": "192.0.2.7/32", "tag": "ssh", "expiration": 0},
               "metadata": {"kind": "fail2ban", "detail": "5 failures", "extra": {"jail": "sshd"}}})
    );
    for (i, r) in got[1..1001].iter().enumerate() {
        let cidr = format!("10.1.{}.{}/32", i >> 8, i & 255);
        assert_eq!(
            (
                r["action"].as_str(),
                r["entry"]["cidr"].as_str(),
                r["entry"]["tag"].as_str()
            ),
            (Some("add"), Some(cidr.as_str()), Some("bulk"))
        );
    }
    assert_eq!(
        got[1001],
        json!({"action": "remove", "policy": "drop",
               "entry": {"creation": T0, "cidr": "192.0.2.7/32", "tag": "ssh", "expiration": 0},
               "metadata": null})
    );
    assert_eq!(got[1002]["action"], "add");
    assert_eq!(
        got[1002]["entry"]["tag"],
        Value::Null,
        "an untagged add says null"
    );
    assert_eq!(
        got[1003],
        json!({"action": "remove", "policy": "ignore",
               "entry": {"creation": T0, "cidr": "198.51.100.0/24", "tag": "", "expiration": T0 + 30},
               "metadata": {"kind": "expired", "detail": "Rule expired", "extra": null}})
    );

    let mut ids = HashSet::new();
    for r in &requests {
        assert_eq!(r.path, "/v1/reports/0b6a5c61-secret", "the URL verbatim");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("accept"), Some("application/json"));
        let agent = format!("couic/{}", couic::VERSION);
        assert_eq!(r.header("user-agent"), Some(agent.as_str()));
        assert_eq!(r.header("x-couic-node"), Some("node-a"));
        assert!(ids.insert(r.header("x-couic-batch").unwrap().to_string()));
    }
    wait_sent(&d, 1004);
    let stats = json(&d.admin().get("/v1/stats"));
    assert_eq!(stats["reports"]["sent"], 1004);
    assert_eq!(stats["reports"]["queued"], 0);
}

#[test]
fn a_receiver_down_for_a_while_gets_every_report_once_and_in_order() {
    let receiver = HttpRecorder::start();
    receiver.set_down(true);
    let d = Daemon::start_reporting(reporting(&receiver), quick());
    let mut api = d.admin();
    // 20,000 changes while nobody listens: 10,000 adds, then 10,000 removes.
    for k in 0..10 {
        assert_eq!(
            api.post("/v1/drop/bulk", &bulk_adds(k, 1000, "")).status,
            200
        );
    }
    for k in 0..10 {
        let removes: Vec<String> = (0..1000u32)
            .map(|i| format!("10.{k}.{}.{}/32", i >> 8, i & 255))
            .collect();
        let body = json!({ "remove": removes }).to_string();
        assert_eq!(api.post("/v1/drop/bulk", &body).status, 200);
    }
    std::thread::sleep(Duration::from_secs(10));
    let stats = json(&d.admin().get("/v1/stats"));
    assert!(
        stats["reports"]["failed_attempts"].as_u64().unwrap() >= 3,
        "{stats}"
    );
    assert_eq!(stats["reports"]["queued"], 20_000);
    receiver.set_down(false);

    let requests = receiver.wait_for(PATIENCE, |r| count(r) >= 20_000);
    let got = reports(&requests);
    assert_eq!(got.len(), 20_000);
    for (n, r) in got.iter().enumerate() {
        let (action, i) = if n < 10_000 {
            ("add", n)
        } else {
            ("remove", n - 10_000)
        };
        let cidr = format!(
            "10.{}.{}.{}/32",
            i / 1000,
            (i % 1000) >> 8,
            (i % 1000) & 255
        );
        assert_eq!(
            (r["action"].as_str(), r["entry"]["cidr"].as_str()),
            (Some(action), Some(cidr.as_str())),
            "report {n}"
        );
    }
    assert!(requests.iter().all(|r| r.body.len() <= 1 << 20));
    wait_sent(&d, 20_000);
    let stats = json(&d.admin().get("/v1/stats"));
    let r = &stats["reports"];
    assert_eq!(
        (r["sent"].as_u64(), r["queued"].as_u64()),
        (Some(20_000), Some(0))
    );
    assert_eq!(
        r["dropped_queue_full"].as_u64().unwrap() + r["dropped_refused"].as_u64().unwrap(),
        0
    );
}

#[test]
fn a_refused_batch_is_tried_once_and_dropped() {
    let receiver = HttpRecorder::start();
    receiver.answer(|_, _| Answer::status(401));
    let mut config = reporting(&receiver);
    config.max_batch = 1;
    let d = Daemon::start_reporting(config, quick());
    let mut api = d.admin();
    for host in 1..=3 {
        assert_eq!(
            api.add("drop", &format!("192.0.2.{host}/32"), None, 0)
                .status,
            201
        );
    }
    let deadline = std::time::Instant::now() + PATIENCE;
    while d.reports.read(0).dropped_refused < 3 {
        assert!(std::time::Instant::now() < deadline, "never dropped");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The next report goes through: any retry of a refused batch would have
    // come before it.
    receiver.answer(|_, _| Answer::status(200));
    assert_eq!(api.add("drop", "192.0.2.9/32", None, 0).status, 201);
    let requests = receiver.wait_for(PATIENCE, |r| r.len() >= 4);
    wait_sent(&d, 1);
    let cidrs: Vec<Value> = reports(&requests)
        .iter()
        .map(|r| r["entry"]["cidr"].clone())
        .collect();
    assert_eq!(
        cidrs,
        [
            json!("192.0.2.1/32"),
            json!("192.0.2.2/32"),
            json!("192.0.2.3/32"),
            json!("192.0.2.9/32")
        ]
    );
    let stats = d.reports.read(0);
    assert_eq!(
        (stats.sent, stats.dropped_refused, stats.failed_attempts),
        (1, 3, 0)
    );
}

#[test]
fn retry_after_is_waited_for() {
    let receiver = HttpRecorder::start();
    receiver.answer(|_, before| match before {
        0 => Answer::Status(429, vec![("Retry-After".into(), "2".into())], String::new()),
        _ => Answer::status(204),
    });
    let d = Daemon::start_reporting(reporting(&receiver), quick());
    assert_eq!(d.admin().add("drop", "192.0.2.1/32", None, 0).status, 201);
    let requests = receiver.wait_for(PATIENCE, |r| r.len() >= 2);
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    assert_eq!(requests[0].body, requests[1].body, "the same batch");
    assert_eq!(
        requests[0].header("x-couic-batch"),
        requests[1].header("x-couic-batch")
    );
    wait_sent(&d, 1);
}

#[test]
fn a_full_queue_drops_the_newest_and_counts_them() {
    let receiver = HttpRecorder::start();
    receiver.set_down(true);
    let mut config = reporting(&receiver);
    config.queue_capacity = 1000;
    config.max_batch = 1000;
    let d = Daemon::start_reporting(config, quick());
    let mut api = d.admin();
    for k in 0..20 {
        assert_eq!(
            api.post("/v1/drop/bulk", &bulk_adds(k, 1000, "")).status,
            200
        );
    }
    // The Reporter counts on its own thread: poll for the last drop.
    let deadline = std::time::Instant::now() + PATIENCE;
    while d.reports.read(0).dropped_queue_full < 19_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            d.reports.read(0)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = d.reports.read(0);
    assert_eq!((stats.queued, stats.dropped_queue_full), (1000, 19_000));
    receiver.set_down(false);
    let requests = receiver.wait_for(PATIENCE, |r| count(r) >= 1000);
    let got = reports(&requests);
    assert_eq!(got.len(), 1000);
    assert_eq!(
        got[999]["entry"]["cidr"], "10.0.3.231/32",
        "the oldest are kept"
    );
    wait_sent(&d, 1000);
    let stats = d.reports.read(0);
    assert_eq!(stats.sent + stats.dropped_queue_full, 20_000);
}

/// An https webhook behind nginx with a certificate of the test's own CA:
/// with `ca_file` the reports arrive; without it the certificate is not
/// trusted (the system's roots do not hold that CA), so the batch is kept
/// and retried, never sent in clear or to an unverified host.
#[test]
fn an_https_webhook_is_trusted_through_ca_file_only() {
    use couic_testkit::nginx::Nginx;
    use couic_testkit::pki::Pki;

    let receiver = HttpRecorder::start();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::make(dir.path());
    let nginx = Nginx::start(dir.path(), &pki, &receiver.url(""));
    let url = format!("https://127.0.0.1:{}/v1/reports/tls", nginx.port);

    let mut config = reporting(&receiver);
    config.webhook = url.clone();
    let untrusted = Daemon::start_reporting(config.clone(), quick());
    assert_eq!(
        untrusted
            .admin()
            .add("drop", "192.0.2.1/32", None, 0)
            .status,
        201
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    while untrusted.reports.read(0).failed_attempts < 2 {
        assert!(std::time::Instant::now() < deadline, "never tried");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(receiver.requests().is_empty(), "nothing got through");
    assert_eq!(untrusted.reports.read(0).queued, 1, "kept for a retry");

    config.ca_file = Some(pki.ca.clone());
    let trusted = Daemon::start_reporting(config, quick());
    assert_eq!(
        trusted.admin().add("drop", "192.0.2.2/32", None, 0).status,
        201
    );
    let requests = receiver.wait_for(PATIENCE, |r| count(r) >= 1);
    assert_eq!(reports(&requests)[0]["entry"]["cidr"], "192.0.2.2/32");
    assert_eq!(requests[0].path, "/v1/reports/tls");
    drop(nginx);
}

/// A whole batch goes as soon as it is queued, without waiting for the
/// tick: a burst flows out as it comes instead of filling the queue.
#[test]
fn a_whole_batch_goes_without_waiting_for_the_tick() {
    let receiver = HttpRecorder::start();
    let mut config = reporting(&receiver);
    config.max_batch = 2_000;
    let hour = Duration::from_secs(3600);
    let d = Daemon::start_reporting_every(config, quick(), hour);
    let mut api = d.admin();
    for k in 0..4 {
        assert_eq!(
            api.post("/v1/drop/bulk", &bulk_adds(k, 1000, "")).status,
            200
        );
    }
    let requests = receiver.wait_for(PATIENCE, |r| count(r) >= 4_000);
    assert_eq!(count(&requests), 4_000);
    assert!(requests
        .iter()
        .all(|r| r.json().as_array().unwrap().len() == 2_000));
}
