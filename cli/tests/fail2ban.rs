//! The command lines fail2ban runs, built from `cli/fail2ban/couic.conf` by
//! substituting its tags, must add and delete the right entry and report
//! failures through the exit code.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::{entry, FakeDaemon, Reply, BIN};

/// `actionban` / `actionunban` of the action file, with `<ip>`, `<cidr>`
/// and `<name>` replaced as fail2ban does.
fn action(name: &str, ip: &str, cidr: &str, jail: &str) -> Vec<String> {
    let conf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fail2ban/couic.conf"))
        .unwrap();
    let line = conf
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim_start().strip_prefix('='))
        })
        .unwrap_or_else(|| panic!("{name} not found"));
    line.replace("<ip>", ip)
        .replace("<cidr>", cidr)
        .replace("<name>", jail)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Runs the action's command line with the test binary and configuration in
/// place of `couicctl` and `/etc/couic/couicctl.toml`.
fn fail2ban_runs(d: &FakeDaemon, argv: &[String]) -> i32 {
    assert_eq!(argv[0], "couicctl");
    Command::new(BIN)
        .arg("-c")
        .arg(&d.config)
        .args(&argv[1..])
        .output()
        .unwrap()
        .status
        .code()
        .unwrap()
}

/// A daemon that keeps its drop entries, so duplicates and absences behave.
fn stateful_daemon() -> FakeDaemon {
    let store: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    FakeDaemon::start(move |r| {
        let mut store = store.lock().unwrap();
        match r.method.as_str() {
            "POST" => {
                let body = r.json();
                let cidr = body["cidr"].as_str().unwrap().to_string();
                if store.contains_key(&cidr) {
                    return Reply::envelope(
                        409,
                        "conflict",
                        "submitted entry is not valid",
                        json!({"cidr": {"code": "conflict", "message": format!("{cidr} already exists")}}),
                    );
                }
                store.insert(cidr.clone(), body["tag"].as_str().unwrap().to_string());
                Reply::json(201, entry(&cidr, body["tag"].clone(), 0))
            }
            "DELETE" => {
                let cidr = r.path.strip_prefix("/v1/drop/").unwrap().to_string();
                if store.remove(&cidr).is_some() {
                    Reply::empty(204)
                } else {
                    Reply::envelope(
                        404,
                        "not_found",
                        "submitted entry not found",
                        json!({"cidr": {"code": "not_found", "message": format!("cidr `{cidr}` not found")}}),
                    )
                }
            }
            _ => Reply::empty(405),
        }
    })
}

#[test]
fn action_file_has_the_contract_command_lines() {
    assert_eq!(
        action("actionban", "192.0.2.7", "32", "sshd"),
        [
            "couicctl",
            "drop",
            "add",
            "192.0.2.7/32",
            "-t",
            "fail2ban-sshd"
        ]
    );
    assert_eq!(
        action("actionunban", "192.0.2.7", "32", "sshd"),
        ["couicctl", "drop", "delete", "192.0.2.7/32"]
    );
}

#[test]
fn ban_then_unban_ipv4() {
    let d = stateful_daemon();
    let ban = action("actionban", "192.0.2.7", "32", "sshd");
    let unban = action("actionunban", "192.0.2.7", "32", "sshd");

    assert_eq!(fail2ban_runs(&d, &ban), 0);
    let r = &d.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/drop"));
    assert_eq!(
        r.json(),
        json!({"cidr": "192.0.2.7/32", "tag": "fail2ban-sshd", "expiration": 0, "metadata": null})
    );

    assert_eq!(fail2ban_runs(&d, &ban), 1, "a second ban is a 409");
    assert_eq!(fail2ban_runs(&d, &unban), 0);
    assert_eq!(d.requests()[2].path, "/v1/drop/192.0.2.7/32");
    assert_eq!(
        fail2ban_runs(&d, &unban),
        1,
        "unbanning a gone entry is a 404"
    );
}

#[test]
fn ban_then_unban_ipv6() {
    let d = stateful_daemon();
    let ban = action("actionban", "2001:db8::7", "128", "nginx-http-auth");
    assert_eq!(fail2ban_runs(&d, &ban), 0);
    assert_eq!(d.requests()[0].json()["tag"], "fail2ban-nginx-http-auth");
    assert_eq!(
        fail2ban_runs(&d, &action("actionunban", "2001:db8::7", "128", "x")),
        0
    );
    assert_eq!(d.requests()[1].path, "/v1/drop/2001:db8::7/128");
}

#[test]
fn ban_fails_when_the_daemon_is_down() {
    let d = stateful_daemon();
    std::fs::remove_file(&d.socket).unwrap();
    assert_eq!(
        fail2ban_runs(&d, &action("actionban", "192.0.2.7", "32", "sshd")),
        1
    );
}
