//! The operating examples name only metrics couic exports: the Grafana
//! dashboard and the Prometheus rules, read against the metrics text the
//! daemon serves with every family present.

use std::collections::BTreeSet;
use std::path::Path;

use couic::api::stats::openmetrics;
use couic::bpf::Counter;
use couic::firewall::Snapshot;
use couic_common::{PeerState, PeerStatus, ReportStats};

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Every `couic_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("couic_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The families of `/v1/metrics?format=prometheus`, tags, reports, peers
/// and the fleet included.
fn exported() -> BTreeSet<String> {
    let snapshot = Snapshot {
        drop_tags: vec![("ssh".into(), Counter::default())],
        ignore_tags: vec![("lan.couic".into(), Counter::default())],
        ..Default::default()
    };
    let reports = ReportStats {
        seconds_since_success: Some(1),
        ..Default::default()
    };
    let peer = PeerStatus {
        name: "fw-2".into(),
        url: "https://fw-2.example:443".into(),
        state: PeerState::Ok,
        queued: 0,
        jobs_sent: 0,
        jobs_dropped: 0,
        shards_resynced: 0,
        last_success: Some(1),
        last_error: None,
        last_error_at: None,
    };
    let fleet = couic::fleet::status::FleetCounters::new("fw-1", "couic", &[]).read();
    let text = openmetrics(&snapshot, Some(&reports), &[peer], Some(&fleet), 2).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_grafana_dashboard_queries_exported_metrics() {
    let text = read("examples/grafana/couic.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let used = metric_names(&exprs);
    assert!(used.len() >= 8, "{used:?}");
    let missing: Vec<_> = used.difference(&exported()).cloned().collect();
    assert!(missing.is_empty(), "not exported by couic: {missing:?}");
}

#[test]
fn the_prometheus_rules_use_exported_metrics() {
    let text = read("examples/prometheus/couic.rules.yml");
    // Only the expressions: comments and annotations may name other things.
    let exprs: String = text
        .lines()
        .skip_while(|l| !l.starts_with("groups:"))
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter(|l| !l.contains("summary:") && !l.contains("description:"))
        .collect::<Vec<_>>()
        .join("\n");
    let used = metric_names(&exprs);
    assert!(used.contains("couic_drop_cidr_total"), "{used:?}");
    let missing: Vec<_> = used.difference(&exported()).cloned().collect();
    assert!(missing.is_empty(), "not exported by couic: {missing:?}");
}

/// The socket's mode is said in several places; all of them say the mode
/// the daemon sets.
#[test]
fn every_document_gives_the_socket_mode_the_daemon_sets() {
    use couic::api::socket::SOCKET_MODE;
    let mode = format!("{SOCKET_MODE:04o}");
    for path in [
        "README.md",
        "examples/couic.toml",
        "examples/nginx/couic.conf",
        "openapi/openapi.json",
        "debian/man/couic.8",
        "debian/man/couic.toml.5",
    ] {
        let text = read(path);
        let socket_lines: Vec<_> = text
            .lines()
            .filter(|l| l.contains("socket") && l.contains("mode 0"))
            .collect();
        assert!(!socket_lines.is_empty(), "{path} gives no socket mode");
        for line in socket_lines {
            assert!(line.contains(&format!("mode {mode}")), "{path}: {line}");
        }
    }
}
