//! clients, stats and sets against a fake daemon; `sets create --from-asn`
//! against a loopback server answering like RIPEstat.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};
use support::{run_with, FakeDaemon, FakeTcp, Reply, BIN};

const T1: &str = "0b7f5d8e-4c2a-4e8f-9a51-2f7c3d9e1a64";
const T2: &str = "11111111-2222-4333-8444-555555555555";

#[test]
fn clients_add_inspect_list_delete() {
    let d = FakeDaemon::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/v1/client") => Reply::json(
            201,
            json!({"name": "grafana", "token": T1, "group": "monitoring"}),
        ),
        ("GET", "/v1/client") => Reply::json(
            200,
            json!([{"name": "couicctl", "token": T1, "group": "admin"},
                   {"name": "ro", "token": T2, "group": "clientro"}]),
        ),
        ("GET", _) => Reply::json(200, json!({"name": "ro", "token": T2, "group": "clientrw"})),
        ("DELETE", _) => Reply::empty(204),
        _ => Reply::empty(405),
    });
    let out = d.run(&["clients", "add", "-n", "grafana", "-g", "MONITORING"]);
    assert!(
        out.ok()
            .contains(&format!("│ grafana ┆ monitoring ┆ {T1} │")),
        "{}",
        out.stdout
    );
    assert_eq!(
        d.requests()[0].json(),
        json!({"name": "grafana", "group": "monitoring"})
    );

    let out = d.run(&["clients", "inspect", "ro"]);
    assert!(out.ok().contains("│ ro   ┆ client_rw ┆"), "{}", out.stdout);
    assert_eq!(d.requests()[1].path, "/v1/client/ro");

    assert_eq!(d.run(&["clients", "list", "-q"]).ok(), "couicctl\nro\n");
    let table = d.run(&["clients", "list"]);
    assert!(
        table.ok().contains("│ Name     ┆ Group     ┆ Token"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("│ ro       ┆ client_ro ┆"));
    let json: Value = serde_json::from_str(d.run(&["clients", "list", "--json"]).ok()).unwrap();
    assert_eq!(json[1]["group"], "clientro");
    let one: Value = serde_json::from_str(
        d.run(&["clients", "add", "-n", "g", "-g", "peering", "--json"])
            .ok(),
    )
    .unwrap();
    assert_eq!(one["name"], "grafana");

    assert_eq!(d.run(&["clients", "delete", "ro"]).ok(), "");
    let last = d.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("DELETE", "/v1/client/ro")
    );

    for bad in [
        &["clients", "add", "-n", "x"][..],
        &["clients", "add", "-n", "a.b", "-g", "admin"],
    ] {
        assert_eq!(d.run(bad).code, 2);
    }
}

fn stats_body(pass_packets: u64) -> Value {
    json!({"drop_cidr_count": 3, "ignore_cidr_count": 1, "xdp": {
        "XDP_ABORTED": {"rx_packets": 0, "rx_bytes": 0},
        "XDP_DROP": {"rx_packets": 7, "rx_bytes": 700},
        "XDP_PASS": {"rx_packets": pass_packets, "rx_bytes": pass_packets * 100},
        "XDP_TX": {"rx_packets": 0, "rx_bytes": 0},
        "XDP_REDIRECT": {"rx_packets": 0, "rx_bytes": 0}}})
}

#[test]
fn stats_global_and_per_tag() {
    let d = FakeDaemon::start(|r| match r.path.as_str() {
        "/v1/stats" => Reply::json(200, stats_body(42)),
        "/v1/stats/tags/drop" => Reply::json(
            200,
            json!({"tags": {"untagged": {"rx_packets": 1, "rx_bytes": 60},
                            "fail2ban-sshd": {"rx_packets": 5, "rx_bytes": 300}}}),
        ),
        _ => Reply::json(200, json!({"tags": {}})),
    });
    let text = d.run(&["stats", "global"]);
    assert_eq!(
        text.ok(),
        "Drop CIDR Count: 3\nIgnore CIDR Count: 1\nXDP Stats:\n\
         \x20 Action: XDP_ABORTED\n    RX Packets: 0\n    RX Bytes: 0\n\
         \x20 Action: XDP_DROP\n    RX Packets: 7\n    RX Bytes: 700\n\
         \x20 Action: XDP_PASS\n    RX Packets: 42\n    RX Bytes: 4200\n\
         \x20 Action: XDP_REDIRECT\n    RX Packets: 0\n    RX Bytes: 0\n\
         \x20 Action: XDP_TX\n    RX Packets: 0\n    RX Bytes: 0\n\n"
    );
    let json: Value = serde_json::from_str(d.run(&["stats", "global", "--json"]).ok()).unwrap();
    assert_eq!(json, stats_body(42));

    let tags = d.run(&["stats", "drop"]);
    let lines: Vec<&str> = tags.ok().lines().collect();
    assert_eq!(
        lines[1],
        "│ Tag           ┆ Policy ┆ RX Packets ┆ RX Bytes │"
    );
    assert_eq!(
        lines[3],
        "│ fail2ban-sshd ┆ drop   ┆ 5          ┆ 300      │"
    );
    assert_eq!(
        lines[5],
        "│ untagged      ┆ drop   ┆ 1          ┆ 60       │"
    );
    assert_eq!(
        d.run(&["stats", "ignore"]).ok(),
        "No tag statistics available.\n"
    );
    let json: Value = serde_json::from_str(d.run(&["stats", "ignore", "--json"]).ok()).unwrap();
    assert_eq!(json, json!({"tags": {}}));
    assert_eq!(d.requests().last().unwrap().path, "/v1/stats/tags/ignore");
}

#[test]
fn stats_live_refreshes_and_stops_on_api_error() {
    let calls = AtomicUsize::new(0);
    let d = FakeDaemon::start(move |_| match calls.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::json(200, stats_body(100)),
        1 => Reply::json(200, stats_body(1_100)),
        _ => Reply::envelope(500, "internal", "map read failed", json!({})),
    });
    let mut child = Command::new(BIN)
        .args([
            "-c",
            d.config.to_str().unwrap(),
            "stats",
            "global",
            "--live",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let frames: Vec<&str> = stdout
        .split("\x1b[2J\x1b[1;1H")
        .filter(|f| !f.is_empty())
        .collect();
    assert_eq!(frames.len(), 2, "{stdout:?}");
    assert!(
        frames[0].starts_with("Every 0.0s: stats\n"),
        "{}",
        frames[0]
    );
    assert!(frames[0].contains("  Action: XDP_PASS\n    RX Packets: 0.0 pps\n"));
    // 1000 packets in about one second: a rate, highlighted since it changed.
    assert!(
        frames[1].contains("RX Packets: \x1b[47;30m"),
        "{}",
        frames[1]
    );
    assert!(
        frames[1].contains("pps\x1b[0m\n    RX Bytes: \x1b[47;30m"),
        "{}",
        frames[1]
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("Status: 500"), "{stderr}");
}

#[test]
fn sets_list_inspect_update_delete_reload() {
    let d = FakeDaemon::start(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/v1/sets/drop") => Reply::json(
            200,
            json!([{"name": "lan", "entry_count": 2, "file_size": 24}, {"name": "bad", "entry_count": 0, "file_size": 0}]),
        ),
        ("GET", "/v1/sets/ignore") => Reply::json(200, json!([])),
        ("GET", _) => Reply::json(
            200,
            json!({"name": "lan", "entries": ["10.0.0.0/8", "192.168.1.5/24"]}),
        ),
        ("PUT", _) => Reply::json(200, json!({"name": "lan", "entries": r.json()["entries"]})),
        ("DELETE", _) => Reply::json(200, json!({"deleted": true, "reload_required": true})),
        ("POST", "/v1/sets/reload") => Reply::json(201, json!({"reload_status": "OK"})),
        _ => Reply::empty(405),
    });
    assert_eq!(
        d.run(&["sets", "list", "drop"]).ok(),
        "lan: 2 entries (24 bytes)\nbad: 0 entries (0 bytes)\n"
    );
    assert_eq!(
        d.run(&["sets", "list", "ignore"]).ok(),
        "No sets found for policy 'ignore'\n"
    );
    assert_eq!(
        d.run(&["sets", "inspect", "drop", "lan"]).ok(),
        "Set: lan\nEntry count: 2\nEntries:\n\t10.0.0.0/8\n\t192.168.1.5/24\n"
    );
    assert_eq!(
        d.run(&[
            "sets",
            "update",
            "drop",
            "lan",
            "192.168.1.5/24",
            "10.0.0.0/8"
        ])
        .ok(),
        "Set 'lan' updated with 2 entries\nNote: Run 'couicctl sets reload' to apply changes\n"
    );
    assert_eq!(d.requests()[3].path, "/v1/sets/drop/lan");
    assert_eq!(
        d.requests()[3].json(),
        json!({"name": "lan", "entries": ["192.168.1.5/24", "10.0.0.0/8"]})
    );
    assert_eq!(
        d.run(&["sets", "update", "ignore", "lan"]).ok(),
        "Set 'lan' updated with 0 entries\nNote: Run 'couicctl sets reload' to apply changes\n"
    );
    assert_eq!(
        d.run(&["sets", "delete", "drop", "lan"]).ok(),
        "Set 'lan' deleted\nNote: Run 'couicctl sets reload' to apply changes\n"
    );
    assert_eq!(
        d.run(&["sets", "reload"]).ok(),
        "Sets reloaded successfully\n"
    );
    let reload = d.requests().pop().unwrap();
    assert_eq!(
        (reload.method.as_str(), reload.path.as_str()),
        ("POST", "/v1/sets/reload")
    );
    assert!(reload.body.is_empty());

    let json: Value =
        serde_json::from_str(d.run(&["sets", "inspect", "drop", "lan", "--json"]).ok()).unwrap();
    assert_eq!(json["entries"][1], "192.168.1.5/24");
    for bad in [
        &["sets", "list", "DROP"][..],
        &["sets", "inspect", "drop", "lan.couic"],
        &["sets", "update", "drop", "x", "1.1.1.1"],
    ] {
        assert_eq!(d.run(bad).code, 2, "{bad:?}");
    }
}

fn echo_set(r: &support::Recorded) -> Reply {
    let body = r.json();
    Reply::json(
        201,
        json!({"name": body["name"], "entries": body["entries"]}),
    )
}

#[test]
fn sets_create_from_arguments_and_file() {
    let d = FakeDaemon::start(echo_set);
    let out = d.run(&[
        "sets",
        "create",
        "drop",
        "lan",
        "192.168.1.5/24",
        "2001:DB8::/32",
    ]);
    assert_eq!(
        out.ok(),
        "Set 'lan' created with 2 entries\nNote: Run 'couicctl sets reload' to apply changes\n"
    );
    let r = d.request();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/sets/drop")
    );
    assert_eq!(
        r.json(),
        json!({"name": "lan", "entries": ["192.168.1.5/24", "2001:db8::/32"]})
    );

    let file = d.dir.path().join("cidrs.txt");
    std::fs::write(
        &file,
        "# office\n\n  10.1.2.3/16 \n10.1.2.3/16\n2001:db8::/48\n",
    )
    .unwrap();
    let out = d.run(&[
        "sets",
        "create",
        "ignore",
        "office",
        "--from-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        out.ok(),
        format!(
            "Reading CIDRs from file: {}\nLoaded 3 CIDRs from file\nSet 'office' created with 3 entries\n\
             Note: Run 'couicctl sets reload' to apply changes\n",
            file.display()
        )
    );
    let r = d.requests().pop().unwrap();
    assert_eq!(r.path, "/v1/sets/ignore");
    assert_eq!(
        r.json()["entries"],
        json!(["10.1.2.3/16", "10.1.2.3/16", "2001:db8::/48"])
    );
}

#[test]
fn sets_create_from_file_reports_every_bad_line() {
    let d = FakeDaemon::start(echo_set);
    let file = d.dir.path().join("bad.txt");
    std::fs::write(&file, "1.1.1.1/32\nexample.com\n2.2.2.2\n").unwrap();
    let out = d.run(&[
        "sets",
        "create",
        "drop",
        "x",
        "--from-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "Error executing command: Failed to parse 2 CIDR(s):\n  line 2: example.com (invalid IP address syntax)\n  \
         line 3: 2.2.2.2 (invalid IP address syntax)\n"
    );
    std::fs::write(&file, "# only comments\n").unwrap();
    let out = d.run(&[
        "sets",
        "create",
        "drop",
        "x",
        "--from-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (1, "Error executing command: No valid CIDRs found in file\n")
    );
    let out = d.run(&[
        "sets",
        "create",
        "drop",
        "x",
        "--from-file",
        "/nonexistent/list",
    ]);
    assert!(
        out.stderr
            .starts_with("Error executing command: cannot read /nonexistent/list: "),
        "{}",
        out.stderr
    );
    assert!(d.requests().is_empty());

    let out = d.run(&["sets", "create", "drop", "x"]);
    assert_eq!(out.code, 2, "one source is required");
}

fn ripestat() -> FakeTcp {
    FakeTcp::start(|r| {
        if r.path == "/data/announced-prefixes/data.json?resource=AS64496" {
            Reply::json(
                200,
                json!({"status": "ok", "data": {"resource": "64496", "prefixes": [
                    {"prefix": "192.0.2.0/24", "timelines": [{"starttime": "2024-01-01T00:00:00", "endtime": "2024-01-02T00:00:00"}]},
                    {"prefix": "2001:db8::/32", "timelines": []},
                    {"prefix": "garbage", "timelines": []}]}}),
            )
        } else {
            Reply::json(
                200,
                json!({"status": "ok", "data": {"resource": "1", "prefixes": []}}),
            )
        }
    })
}

#[test]
fn sets_create_from_asn_via_ripestat() {
    let ripe = ripestat();
    let url = format!("http://127.0.0.1:{}", ripe.port);
    let d = FakeDaemon::start(echo_set);
    let out = run_with(
        &d.config,
        &["sets", "create", "drop", "as64496", "--from-asn", "AS64496"],
        &[("COUICCTL_RIPESTAT_URL", &url)],
    );
    assert_eq!(
        out.ok(),
        "Fetching prefixes for ASN: AS64496\nRetrieved 2 prefixes from RIPE NCC RIPEstat\n\
         Set 'as64496' created with 2 entries\nNote: Run 'couicctl sets reload' to apply changes\n"
    );
    let asked = &ripe.requests()[0];
    assert_eq!(asked.method, "GET");
    assert_eq!(
        asked.header("user-agent"),
        Some("couicctl/1.0.2 (+https://couic.net)")
    );
    assert_eq!(
        d.request().json()["entries"],
        json!(["192.0.2.0/24", "2001:db8::/32"])
    );

    // The base URL may also come from the configuration; an AS announcing
    // nothing gives an empty set.
    let cfg = std::fs::read_to_string(&d.config).unwrap() + &format!("ripestat_url = \"{url}/\"\n");
    let cfg_path = d.dir.path().join("with-ripe.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let out = run_with(
        &cfg_path,
        &["sets", "create", "drop", "empty", "--from-asn", "1"],
        &[],
    );
    assert!(out.ok().contains("Retrieved 0 prefixes"), "{}", out.stdout);
    assert_eq!(
        ripe.requests()[1].path,
        "/data/announced-prefixes/data.json?resource=AS1"
    );
    assert_eq!(d.requests()[1].json()["entries"], json!([]));

    let out = run_with(
        &cfg_path,
        &["sets", "create", "drop", "x", "--from-asn", "As1"],
        &[],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("Invalid ASN format: 'As1'"),
        "{}",
        out.stderr
    );
    assert_eq!(ripe.requests().len(), 2);
}

#[test]
fn ripestat_failures_are_errors() {
    let ripe = FakeTcp::start(|_| Reply::text(503, "busy"));
    let url = format!("http://127.0.0.1:{}", ripe.port);
    let d = FakeDaemon::start(echo_set);
    let out = run_with(
        &d.config,
        &["sets", "create", "drop", "x", "--from-asn", "3333"],
        &[("COUICCTL_RIPESTAT_URL", &url)],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("RIPEstat answered HTTP 503"),
        "{}",
        out.stderr
    );
    assert!(d.requests().is_empty());
}
