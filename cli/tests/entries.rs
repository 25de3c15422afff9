//! drop / ignore / check against a fake daemon on a Unix socket: request
//! lines, headers and bodies, tables, JSON, filters.

mod support;

use couic_testkit::now;
use serde_json::{json, Value};
use support::{entry, FakeDaemon, Reply, TOKEN};

/// Echoes a POSTed entry back as the daemon would (tag `null` when untagged).
fn echo_add(r: &support::Recorded) -> Reply {
    let body = r.json();
    let tag = match &body["tag"] {
        Value::String(s) if !s.is_empty() => json!(s),
        _ => Value::Null,
    };
    Reply::json(
        201,
        entry(
            body["cidr"].as_str().unwrap(),
            tag,
            body["expiration"].as_u64().unwrap(),
        ),
    )
}

#[test]
fn drop_add_sends_the_contract_request() {
    let d = FakeDaemon::start(echo_add);
    let out = d.run(&["drop", "add", "192.0.2.77/24"]);
    out.ok();
    let r = d.request();
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/drop"));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(r.header("user-agent"), Some("CouicClient/1.0.0"));
    assert_eq!(r.header("accept"), Some("application/json"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("host"), Some("localhost"));
    let body = r.json();
    assert_eq!(body["cidr"], "192.0.2.0/24", "normalised before sending");
    assert_eq!(body["tag"], "couicctl", "drop add default tag");
    assert_eq!(body["expiration"], 0);

    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[1],
        "│ Policy ┆ CIDR         ┆ Tag      ┆ Expiration │"
    );
    assert_eq!(
        lines[3],
        "│ drop   ┆ 192.0.2.0/24 ┆ couicctl ┆ never      │"
    );
}

#[test]
fn ignore_add_has_no_default_tag_and_turns_durations_into_timestamps() {
    let d = FakeDaemon::start(echo_add);
    let before = now();
    let out = d.run(&["ignore", "add", "2001:DB8::1/32", "-e", "10m", "--json"]);
    let after = now();
    let r = d.request();
    assert_eq!(r.path, "/v1/ignore");
    let body = r.json();
    assert_eq!(body["cidr"], "2001:db8::/32");
    assert_eq!(body["tag"], Value::Null);
    let exp = body["expiration"].as_u64().unwrap();
    assert!((before + 600..=after + 600).contains(&exp), "{exp}");

    let printed: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(printed, entry("2001:db8::/32", Value::Null, exp));
    assert!(out.stdout.starts_with("{\n  \"creation\""), "pretty JSON");
}

#[test]
fn add_with_tag_and_expiration_shows_remaining_time() {
    let d = FakeDaemon::start(echo_add);
    let out = d.run(&[
        "drop",
        "add",
        "198.51.100.1/32",
        "--tag",
        "ssh",
        "--expiration",
        "2h",
    ]);
    assert_eq!(d.request().json()["tag"], "ssh");
    let row = out.ok().lines().nth(3).unwrap().to_string();
    assert!(
        row.contains("┆ ssh ┆ 1h59m5") || row.contains("┆ ssh ┆ 2h0m0s"),
        "{row}"
    );
}

#[test]
fn bad_expiration_is_a_command_error_without_request() {
    let d = FakeDaemon::start(echo_add);
    let out = d.run(&["drop", "add", "192.0.2.1/32", "-e", "5"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("Error executing command: Invalid expiration format: '5'"),
        "{}",
        out.stderr
    );
    assert!(d.requests().is_empty());
}

#[test]
fn usage_errors_exit_2_without_request() {
    let d = FakeDaemon::start(echo_add);
    for args in [
        &["drop", "add", "192.0.2.1"][..],
        &["drop", "add", "192.0.2.1/33"],
        &["drop", "add", "192.0.2.1/32", "-t", "x.couic"],
        &["drop", "add", "192.0.2.1/32", "-t", "untagged"],
        &["ignore", "delete", "nope"],
        &["drop", "list", "-q", "--json"],
        &["check", "192.0.2.0/24"],
    ] {
        let out = d.run(args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.starts_with("error:"), "{}", out.stderr);
    }
    assert!(d.requests().is_empty());
}

#[test]
fn delete_and_inspect_use_the_normalised_path() {
    let d = FakeDaemon::start(|r| match r.method.as_str() {
        "DELETE" => Reply::empty(204),
        _ => Reply::json(200, entry("2001:db8::/32", json!(""), 0)),
    });
    let out = d.run(&["ignore", "delete", "2001:db8::5/32"]);
    assert_eq!(out.ok(), "");
    let out = d.run(&["drop", "inspect", "2001:DB8::1/32"]);
    let reqs = d.requests();
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        ("DELETE", "/v1/ignore/2001:db8::/32")
    );
    assert_eq!(
        (reqs[1].method.as_str(), reqs[1].path.as_str()),
        ("GET", "/v1/drop/2001:db8::/32")
    );
    // An empty tag shows as an empty cell, not `-`.
    assert!(
        out.ok()
            .contains("│ drop   ┆ 2001:db8::/32 ┆     ┆ never      │"),
        "{}",
        out.stdout
    );
}

fn listing() -> Value {
    json!([
        entry("192.0.2.1/32", json!("fail2ban-sshd"), 0),
        entry("192.0.2.2/32", json!("fail2ban-nginx"), 0),
        entry("10.0.0.0/8", json!("lan.couic"), 0),
        entry("198.51.100.0/24", json!(""), now() - 5),
        entry(
            "2001:db8::/32",
            json!("couicctl"),
            now() + 3 * 86_400 + 3_600 + 120 + 30
        ),
    ])
}

#[test]
fn list_table_quiet_json_and_tag_filters() {
    let d = FakeDaemon::start(|_| Reply::json(200, listing()));
    let table = d.run(&["drop", "list"]);
    let text = table.ok();
    assert!(
        text.contains("│ drop   ┆ 198.51.100.0/24 ┆                ┆ expired    │"),
        "{text}"
    );
    assert!(
        text.contains("┆ 2001:db8::/32   ┆ couicctl       ┆ 3d 1h2m"),
        "{text}"
    );

    let quiet = d.run(&["drop", "list", "-q"]);
    assert_eq!(
        quiet.ok(),
        "192.0.2.1/32\n192.0.2.2/32\n10.0.0.0/8\n198.51.100.0/24\n2001:db8::/32\n"
    );

    let filtered = d.run(&["drop", "list", "-q", "-t", "fail2ban-*, *.couic"]);
    assert_eq!(filtered.ok(), "192.0.2.1/32\n192.0.2.2/32\n10.0.0.0/8\n");
    let exact = d.run(&["drop", "list", "-q", "--tags", "couicctl"]);
    assert_eq!(exact.ok(), "2001:db8::/32\n");
    let contains = d.run(&["drop", "list", "-q", "-t", "*nginx*"]);
    assert_eq!(contains.ok(), "192.0.2.2/32\n");

    let json = d.run(&["drop", "list", "--json", "-t", "*sshd"]);
    let v: Value = serde_json::from_str(json.ok()).unwrap();
    assert_eq!(v, json!([entry("192.0.2.1/32", json!("fail2ban-sshd"), 0)]));
    let all = d.run(&["ignore", "list", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(all.ok()).unwrap(), listing());

    // One bodiless GET per run, filters applied by couicctl.
    let requests = d.requests();
    let sent: Vec<(&str, &str, usize)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str(), r.body.len()))
        .collect();
    let mut wanted = vec![("GET", "/v1/drop", 0); 6];
    wanted.push(("GET", "/v1/ignore", 0));
    assert_eq!(sent, wanted);
}

#[test]
fn check_prints_verdict_and_why() {
    let d = FakeDaemon::start(|r| {
        if r.path == "/v1/check/192.0.2.7" {
            Reply::json(
                200,
                json!({"ip": "192.0.2.7", "verdict": "drop", "reason": "drop",
                       "entry": entry("192.0.2.0/24", json!("fail2ban-sshd"), 0),
                       "policy": "drop", "origin": "api"}),
            )
        } else {
            Reply::json(
                200,
                json!({"ip": "2001:db8::1", "verdict": "pass", "reason": "none",
                       "entry": null, "policy": null, "origin": null}),
            )
        }
    });
    let hit = d.run(&["check", "192.0.2.7"]);
    assert_eq!(
        hit.ok(),
        "IP: 192.0.2.7\nVerdict: drop\nReason: drop entry 192.0.2.0/24 matches and no ignore entry does\n\
         Entry: 192.0.2.0/24\nPolicy: drop\nTag: fail2ban-sshd\nOrigin: api\nExpiration: never\n"
    );
    let miss = d.run(&["check", "2001:db8::1", "--json"]);
    let v: Value = serde_json::from_str(miss.ok()).unwrap();
    assert_eq!(v["verdict"], "pass");
    assert_eq!(v["entry"], Value::Null);
    let reqs = d.requests();
    assert_eq!(reqs[1].path, "/v1/check/2001:db8::1");
    assert_eq!(reqs[1].method, "GET");
}
