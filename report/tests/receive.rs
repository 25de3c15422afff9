//! POST /v1/reports/{secret} against the real binary: the reference's wire
//! format, the secret, bad bodies, size limits, duplicate batches, routes
//! and /metrics.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::json;
use support::*;

/// A long period: nothing is notified while these tests run.
const QUIET: &str = "batch_interval_secs = 3600";

/// The examples of §3.5 and §11.2, as a reference daemon sends them: an
/// add without a tag (`null`), an add with tag and metadata, the remove of
/// an untagged entry (`""`).
fn reference_payload() -> serde_json::Value {
    json!([
        {"action": "add", "policy": "drop",
         "entry": {"creation": 1718000000u64, "cidr": "192.0.2.1/32", "tag": null, "expiration": 0},
         "metadata": null},
        {"action": "add", "policy": "drop",
         "entry": {"creation": 1718000001u64, "cidr": "198.51.100.0/24", "tag": "fail2ban-sshd",
                   "expiration": 1718003601u64},
         "metadata": {"kind": "fail2ban", "detail": "sshd: 5 failures", "extra": null}},
        {"action": "add", "policy": "ignore",
         "entry": {"creation": 1718000002u64, "cidr": "2001:db8::/32", "tag": "lan", "expiration": 0},
         "metadata": {"kind": "ops", "detail": "office", "extra": {"ticket": 42}}},
        {"action": "remove", "policy": "drop",
         "entry": {"creation": 1718000000u64, "cidr": "192.0.2.1/32", "tag": "", "expiration": 0},
         "metadata": null}
    ])
}

#[test]
fn a_reference_daemon_batch_is_received() {
    let r = Receiver::start(QUIET);
    let (status, body) = post(&r.reports_url(), &json_bytes(&reference_payload()), &[]);
    assert_eq!((status, body.as_str()), (200, "reports received"));
    let (status, body) = post(&r.reports_url(), b"[]", &[]);
    assert_eq!((status, body.as_str()), (200, "reports received"));
    r.wait_metric("couic_report_reports_received_total", 4.0);
    let m = r.metrics();
    for (sample, value) in [
        (
            "couic_report_reports_total{action=\"add\",policy=\"drop\"}",
            2.0,
        ),
        (
            "couic_report_reports_total{action=\"add\",policy=\"ignore\"}",
            1.0,
        ),
        (
            "couic_report_reports_total{action=\"remove\",policy=\"drop\"}",
            1.0,
        ),
        (
            "couic_report_tag_reports_total{action=\"add\",tag=\"fail2ban-sshd\"}",
            1.0,
        ),
        (
            "couic_report_tag_reports_total{action=\"add\",tag=\"lan\"}",
            1.0,
        ),
        (
            "couic_report_tag_reports_total{action=\"add\",tag=\"(untagged)\"}",
            1.0,
        ),
        (
            "couic_report_tag_reports_total{action=\"remove\",tag=\"(untagged)\"}",
            1.0,
        ),
        ("couic_report_requests_total{status=\"200\"}", 2.0),
    ] {
        assert_eq!(metric(&m, sample), value, "{sample} in\n{m}");
    }
    // Logs are at debug level in these tests; the secret is in none of them.
    let logs = r.logs();
    assert!(logs.contains("batch received"), "{logs}");
    assert!(!logs.contains(SECRET), "the secret was logged:\n{logs}");
}

#[test]
fn a_wrong_secret_is_401_and_counts_nothing() {
    let r = Receiver::start(QUIET);
    let body = json_bytes(&adds(3, Some("ssh")));
    for secret in [
        SECRET.to_uppercase(),
        format!("{{{SECRET}}}"),
        SECRET.replace('-', ""),
        "00000000-0000-0000-0000-000000000000".to_string(),
        SECRET[..35].to_string(),
    ] {
        let (status, text) = post(&r.url(&format!("/v1/reports/{secret}")), &body, &[]);
        assert_eq!((status, text.as_str()), (401, ""), "{secret}");
    }
    // Refused before the body is read: a bad body still gets 401.
    let (status, _) = post(&r.url("/v1/reports/nope"), b"not json", &[]);
    assert_eq!(status, 401);
    r.wait_metric("couic_report_requests_total{status=\"401\"}", 6.0);
    assert_eq!(r.metric("couic_report_reports_received_total"), 0.0);
    assert!(!r.logs().contains(SECRET), "the secret was logged");
}

#[test]
fn malformed_bodies_are_400_with_a_message_and_count_nothing() {
    let r = Receiver::start(QUIET);
    let cases: &[&[u8]] = &[
        b"",
        b"not json",
        b"{}",
        b"null",
        b"[1]",
        br#"[{"action":"add"}]"#,
        br#"[{"action":"launch","policy":"drop","entry":{"creation":0,"cidr":"1.1.1.1/32","tag":null,"expiration":0},"metadata":null}]"#,
        br#"[{"action":"add","policy":"DROP","entry":{"creation":0,"cidr":"1.1.1.1/32","tag":null,"expiration":0},"metadata":null}]"#,
        br#"[{"action":"add","policy":"drop","entry":{"creation":-1,"cidr":"1.1.1.1/32","tag":null,"expiration":0},"metadata":null}]"#,
        // A valid report followed by a broken one: the whole batch is refused.
        br#"[{"action":"add","policy":"drop","entry":{"creation":0,"cidr":"1.1.1.1/32","tag":null,"expiration":0},"metadata":null},{"action":"add"}]"#,
    ];
    for body in cases {
        let (status, text) = post(&r.reports_url(), body, &[]);
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(body));
        assert!(
            text.starts_with("invalid reports: expected a JSON array of reports: "),
            "{text}"
        );
    }
    let (status, text) = post(&r.reports_url(), b"[]", &[("X-Couic-Batch", "has space")]);
    assert_eq!(status, 400);
    assert!(text.starts_with("X-Couic-Batch:"), "{text}");
    r.wait_metric(
        "couic_report_requests_total{status=\"400\"}",
        cases.len() as f64 + 1.0,
    );
    assert_eq!(r.metric("couic_report_reports_received_total"), 0.0);
}

#[test]
fn bodies_up_to_16_mib_pass_larger_ones_are_413() {
    let r = Receiver::start(QUIET);
    // Over the reference receiver's 2 MiB, under our limit.
    let big = json_bytes(&adds(20_000, Some("big")));
    assert!(big.len() > 2 * 1024 * 1024 + 1, "{}", big.len());
    let (status, _) = post(&r.reports_url(), &big, &[]);
    assert_eq!(status, 200);
    r.wait_metric("couic_report_reports_received_total", 20_000.0);

    // Refused on its Content-Length, before a byte of it is read.
    let mut stream = TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    let head = format!(
        "POST /v1/reports/{SECRET} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        16 * 1024 * 1024 + 1
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = [0; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
    r.wait_metric("couic_report_requests_total{status=\"413\"}", 1.0);
    assert_eq!(r.metric("couic_report_reports_received_total"), 20_000.0);
}

#[test]
fn a_batch_id_seen_before_is_acknowledged_not_counted() {
    let r = Receiver::start(QUIET);
    let body = json_bytes(&adds(5, Some("ssh")));
    let batch = [("X-Couic-Batch", "0193b6c4-7d1e-7c2a-9f00-000000000001")];
    assert_eq!(post(&r.reports_url(), &body, &batch).0, 200);
    let (status, text) = post(&r.reports_url(), &body, &batch);
    assert_eq!((status, text.as_str()), (200, "reports received"));
    r.wait_metric("couic_report_duplicate_batches_total", 1.0);
    assert_eq!(r.metric("couic_report_reports_received_total"), 5.0);

    // Without an id, as reference daemons send, nothing is deduplicated.
    assert_eq!(post(&r.reports_url(), &body, &[]).0, 200);
    assert_eq!(post(&r.reports_url(), &body, &[]).0, 200);
    r.wait_metric("couic_report_reports_received_total", 15.0);
    assert_eq!(r.metric("couic_report_duplicate_batches_total"), 1.0);
}

#[test]
fn only_the_report_route_and_metrics_exist() {
    let r = Receiver::start(QUIET);
    assert_eq!(get(&r.reports_url()).0, 405);
    assert_eq!(post(&r.url("/v1/reports"), b"[]", &[]).0, 404);
    assert_eq!(post(&r.url("/v1/reports/"), b"[]", &[]).0, 404);
    assert_eq!(
        post(&r.url(&format!("/v1/report/{SECRET}")), b"[]", &[]).0,
        404
    );
    assert_eq!(
        post(&r.url(&format!("/v1/reports/{SECRET}/x")), b"[]", &[]).0,
        404
    );
    assert_eq!(post(&r.url("/metrics"), b"", &[]).0, 405);
    let (status, text) = get(&r.url("/metrics"));
    assert_eq!(status, 200);
    assert!(
        text.contains("# TYPE couic_report_reports_received counter"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}
