//! couicctl against the real daemon over its Unix socket: every command in
//! both output formats, with the daemon state checked through the API after
//! each change; each error path with its exit code and stderr lines
//! (§14); and the fail2ban action file's command lines run through `sh -c`.
//!
//! Each test starts its own `couic` (no interface, `user = group = root`)
//! in a temporary directory and uses the daemon-created default admin
//! client file `rbac/clients/couicctl.toml`.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use couic_testkit::ctl::{self, table_rows, token_in};
use couic_testkit::{now, Daemon, Guard, Out, Spec};
use serde_json::{json, Value};

const COUIC: &str = env!("CARGO_BIN_EXE_couic");

/// couicctl of this build, next to couic.
fn couicctl_bin() -> &'static Path {
    ctl::couicctl_next_to(Path::new(COUIC))
}

/// Runs `couicctl -c <config> <args>`.
fn couicctl(config: &Path, args: &[&str]) -> Out {
    ctl::run(couicctl_bin(), config, args, &[])
}

/// A daemon of its own for each test.
fn start() -> Daemon {
    Daemon::start(Spec::new(COUIC).couicctl(couicctl_bin())).unwrap()
}

const RELOAD_NOTE: &str = "Note: Run 'couicctl sets reload' to apply changes";
const ENTRY_HEADER: [&str; 4] = ["Policy", "CIDR", "Tag", "Expiration"];

/// Seconds left in an `Expiration` cell such as `30s` or `1m0s`.
fn seconds_left(cell: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    for c in cell.chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' => {
                let n: u64 = number.parse().unwrap_or_else(|_| panic!("bad cell {cell}"));
                total += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                number.clear();
            }
            _ => panic!("unexpected remaining time {cell:?}"),
        }
    }
    total
}

/// Rows of a table without its header, sorted.
fn sorted_rows(text: &str, header: &[&str]) -> Vec<Vec<String>> {
    let mut rows = table_rows(text);
    assert!(!rows.is_empty(), "no table in {text:?}");
    assert_eq!(rows.remove(0), header, "header of {text}");
    rows.sort();
    rows
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The entry with `cidr` in a JSON array of entries.
fn find<'a>(list: &'a Value, cidr: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .find(|e| e["cidr"] == cidr)
        .unwrap_or_else(|| panic!("{cidr} not in {list}"))
}

/// The reference's error lines (§14.6) for an API error with the envelope.
fn api_error(status: u16, code: &str, message: &str, details: &[(&str, &str, &str)]) -> String {
    let mut s = format!(
        "Error executing command: Couic error: API error:\n  Status: {status}\n  Code: {code}\n  Message: {message}\n"
    );
    if !details.is_empty() {
        s.push_str("  Details:\n");
        for (field, code, message) in details {
            s.push_str(&format!("    {field}: Code: {code}, Message: {message}\n"));
        }
    }
    s
}

const UNAUTHORIZED: &str = "Error executing command: Couic error: API error:\n  Status: 401\n  Code: unauthorized\n  \
Message: Unauthorized\n  Hint: the daemon refused the token: it is unknown, or its group may not use this command \
(check client_file or token in the couicctl configuration)\n";

// ------------------------------------------------------------------ entries

#[test]
fn drop_and_ignore_add_list_inspect_delete_in_both_formats() {
    let d = start();

    // drop add with a tag and an expiration: the entry table.
    let out = d.ctl(&["drop", "add", "192.0.2.77/24", "-t", "ssh", "-e", "30s"]);
    let rows = sorted_rows(out.ok(), &ENTRY_HEADER);
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert_eq!(rows[0][..3], row(&["drop", "192.0.2.0/24", "ssh"]));
    let left = seconds_left(&rows[0][3]);
    assert!((25..=30).contains(&left), "remaining {left}s");
    let (status, e) = d.call("GET", "/v1/drop/192.0.2.0/24", None);
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["tag"], "ssh");
    let exp = e["expiration"].as_u64().unwrap();
    assert!(
        (now() + 25..=now() + 31).contains(&exp),
        "absolute expiration {exp} is now + 30 s"
    );

    // drop add with the default tag, -e 0, as JSON (host bits cleared).
    let before = now();
    let e = d
        .ctl(&["drop", "add", "2001:DB8::1/32", "-e", "0", "--json"])
        .json();
    assert_eq!(e["cidr"], "2001:db8::/32");
    assert_eq!(e["tag"], "couicctl", "default tag of drop add");
    assert_eq!(e["expiration"], 0);
    let creation = e["creation"].as_u64().unwrap();
    assert!((before..=now()).contains(&creation), "creation {creation}");

    // ignore add: no default tag (null → `-` in the table).
    let out = d.ctl(&["ignore", "add", "198.51.100.9/24"]);
    assert_eq!(
        sorted_rows(out.ok(), &ENTRY_HEADER),
        [row(&["ignore", "198.51.100.0/24", "-", "never"])]
    );
    let e = d
        .ctl(&[
            "ignore",
            "add",
            "203.0.113.5/32",
            "-t",
            "office",
            "-e",
            "1h",
            "--json",
        ])
        .json();
    assert_eq!(
        (&e["cidr"], &e["tag"]),
        (&json!("203.0.113.5/32"), &json!("office"))
    );
    let exp = e["expiration"].as_u64().unwrap();
    assert!((now() + 3590..=now() + 3601).contains(&exp), "{exp}");

    assert_eq!(d.cidrs("drop"), ["192.0.2.0/24", "2001:db8::/32"]);
    assert_eq!(d.cidrs("ignore"), ["198.51.100.0/24", "203.0.113.5/32"]);

    // list: table, quiet, JSON.
    let rows = sorted_rows(d.ctl(&["drop", "list"]).ok(), &ENTRY_HEADER);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][..3], row(&["drop", "192.0.2.0/24", "ssh"]));
    assert_eq!(
        rows[1],
        row(&["drop", "2001:db8::/32", "couicctl", "never"])
    );
    // An untagged entry as listed has tag "" (empty cell, not `-`).
    let rows = sorted_rows(d.ctl(&["ignore", "list"]).ok(), &ENTRY_HEADER);
    assert_eq!(rows[0], row(&["ignore", "198.51.100.0/24", "", "never"]));
    assert_eq!(rows[1][..3], row(&["ignore", "203.0.113.5/32", "office"]));
    assert!(rows[1][3].starts_with("59m") || rows[1][3].starts_with("1h0m"));

    assert_eq!(
        sorted_lines(d.ctl(&["drop", "list", "-q"]).ok()),
        d.cidrs("drop")
    );
    assert_eq!(
        sorted_lines(d.ctl(&["ignore", "list", "--quiet"]).ok()),
        d.cidrs("ignore")
    );
    let list = d.ctl(&["drop", "list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(find(&list, "192.0.2.0/24")["tag"], "ssh");
    assert_eq!(find(&list, "2001:db8::/32")["expiration"], 0);
    let (_, api_list) = d.call("GET", "/v1/ignore", None);
    let list = d.ctl(&["ignore", "list", "--json"]).json();
    assert_eq!(
        find(&list, "198.51.100.0/24"),
        find(&api_list, "198.51.100.0/24")
    );
    assert_eq!(find(&list, "198.51.100.0/24")["tag"], "");

    // list -t: comma-separated patterns, client-side.
    for (patterns, want) in [
        ("ssh", vec!["192.0.2.0/24"]),
        ("couic*", vec!["2001:db8::/32"]),
        ("*ct*", vec!["2001:db8::/32"]),
        ("*h", vec!["192.0.2.0/24"]),
        (" ssh , couicctl ", vec!["192.0.2.0/24", "2001:db8::/32"]),
        ("*", vec!["192.0.2.0/24", "2001:db8::/32"]),
        ("SSH", vec![]),
    ] {
        let out = d.ctl(&["drop", "list", "-q", "-t", patterns]);
        assert_eq!(sorted_lines(out.ok()), want, "-t {patterns:?}");
    }
    let out = d.ctl(&["drop", "list", "--tags", "nomatch"]);
    assert_eq!(
        sorted_rows(out.ok(), &ENTRY_HEADER),
        Vec::<Vec<String>>::new()
    );
    let list = d.ctl(&["ignore", "list", "-t", "off*", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["cidr"], "203.0.113.5/32");
    // `*` matches the untagged entry ("").
    assert_eq!(
        sorted_lines(d.ctl(&["ignore", "list", "-q", "-t", "*"]).ok()),
        ["198.51.100.0/24", "203.0.113.5/32"]
    );
    assert_eq!(
        d.ctl(&["drop", "list", "-q", "--json"])
            .err(2)
            .lines()
            .next(),
        Some("error: the argument '--quiet' cannot be used with '--json'")
    );

    // inspect: host bits cleared before the lookup; table and JSON.
    let rows = sorted_rows(
        d.ctl(&["drop", "inspect", "2001:db8::ff/32"]).ok(),
        &ENTRY_HEADER,
    );
    assert_eq!(rows, [row(&["drop", "2001:db8::/32", "couicctl", "never"])]);
    let e = d
        .ctl(&["drop", "inspect", "192.0.2.200/24", "--json"])
        .json();
    let (_, api_e) = d.call("GET", "/v1/drop/192.0.2.0/24", None);
    assert_eq!(e, api_e);
    let e = d
        .ctl(&["ignore", "inspect", "198.51.100.0/24", "--json"])
        .json();
    assert_eq!(
        (&e["cidr"], &e["tag"], &e["expiration"]),
        (&json!("198.51.100.0/24"), &json!(""), &json!(0))
    );
    // Exact lookup: a /25 is not the stored /24.
    d.ctl(&["drop", "inspect", "192.0.2.0/25"]).err(1);

    // delete: nothing printed, the entry is gone from the daemon.
    assert_eq!(d.ctl(&["drop", "delete", "192.0.2.1/24"]).ok(), "");
    let (status, _) = d.call("GET", "/v1/drop/192.0.2.0/24", None);
    assert_eq!(status, 404);
    assert_eq!(d.ctl(&["ignore", "delete", "198.51.100.0/24"]).ok(), "");
    assert_eq!(d.cidrs("drop"), ["2001:db8::/32"]);
    assert_eq!(d.cidrs("ignore"), ["203.0.113.5/32"]);
    // The same CIDR may be in both policies; deleting one keeps the other.
    d.ctl(&["ignore", "add", "2001:db8::/32"]).ok();
    d.ctl(&["drop", "delete", "2001:db8::/32"]).ok();
    assert_eq!(d.cidrs("drop"), Vec::<String>::new());
    assert_eq!(d.cidrs("ignore"), ["2001:db8::/32", "203.0.113.5/32"]);
}

#[test]
fn check_gives_ignore_over_drop_then_drop_then_no_match() {
    let d = start();
    d.ctl(&["drop", "add", "10.0.0.0/8", "-t", "big"]).ok();
    d.ctl(&["ignore", "add", "10.1.2.3/32", "-t", "vip"]).ok();

    // Ignore wins over a drop entry, whatever the prefix lengths.
    assert_eq!(
        d.ctl(&["check", "10.1.2.3"]).ok(),
        "IP: 10.1.2.3\nVerdict: pass\n\
         Reason: ignore entry 10.1.2.3/32 matches (ignore entries win over drop entries)\n\
         Entry: 10.1.2.3/32\nPolicy: ignore\nTag: vip\nOrigin: api\nExpiration: never\n"
    );
    let r = d.ctl(&["check", "10.1.2.3", "--json"]).json();
    assert_eq!(
        (&r["verdict"], &r["reason"], &r["policy"], &r["origin"]),
        (
            &json!("pass"),
            &json!("ignore"),
            &json!("ignore"),
            &json!("api")
        )
    );
    assert_eq!(r["entry"]["cidr"], "10.1.2.3/32");

    // Drop by the longest matching drop prefix.
    assert_eq!(
        d.ctl(&["check", "10.9.9.9"]).ok(),
        "IP: 10.9.9.9\nVerdict: drop\n\
         Reason: drop entry 10.0.0.0/8 matches and no ignore entry does\n\
         Entry: 10.0.0.0/8\nPolicy: drop\nTag: big\nOrigin: api\nExpiration: never\n"
    );
    d.ctl(&["drop", "add", "10.9.0.0/16", "-t", "narrow", "-e", "1h"])
        .ok();
    let r = d.ctl(&["check", "10.9.9.9", "--json"]).json();
    assert_eq!(r["ip"], "10.9.9.9");
    assert_eq!(r["verdict"], "drop");
    assert_eq!(r["reason"], "drop");
    assert_eq!(r["entry"]["cidr"], "10.9.0.0/16");
    assert_eq!(r["entry"]["tag"], "narrow");
    let (_, api) = d.call("GET", "/v1/check/10.9.9.9", None);
    assert_eq!(r, api, "couicctl prints the API's answer");

    // No entry at all.
    assert_eq!(
        d.ctl(&["check", "192.0.2.1"]).ok(),
        "IP: 192.0.2.1\nVerdict: pass\nReason: no ignore or drop entry matches\n"
    );
    assert_eq!(
        d.ctl(&["check", "2001:db8::1", "--json"]).json(),
        json!({"ip": "2001:db8::1", "verdict": "pass", "reason": "none",
               "entry": null, "policy": null, "origin": null})
    );

    // Once the ignore entry is deleted, the drop entry decides.
    d.ctl(&["ignore", "delete", "10.1.2.3/32"]).ok();
    let r = d.ctl(&["check", "10.1.2.3", "--json"]).json();
    assert_eq!(
        (&r["verdict"], &r["entry"]["cidr"]),
        (&json!("drop"), &json!("10.0.0.0/8"))
    );

    // An address, not a network.
    assert!(d
        .ctl(&["check", "10.0.0.0/8"])
        .err(2)
        .starts_with("error: invalid value"));
}

// ------------------------------------------------------------------ clients

#[test]
fn clients_add_list_inspect_delete_in_both_formats() {
    let d = start();
    let header = ["Name", "Group", "Token"];

    // add: group is case-insensitive; the table shows the display form.
    let rows = sorted_rows(
        d.ctl(&["clients", "add", "-n", "ops", "-g", "ClientRW"])
            .ok(),
        &header,
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][..2], row(&["ops", "client_rw"]));
    let ops_token = rows[0][2].clone();
    uuid::Uuid::parse_str(&ops_token).expect("a UUID token");
    let (status, c) = d.call("GET", "/v1/client/ops", None);
    assert_eq!(status, 200);
    assert_eq!(
        (&c["token"], &c["group"]),
        (&json!(ops_token), &json!("clientrw"))
    );

    let c = d
        .ctl(&[
            "clients",
            "add",
            "--name",
            "mon",
            "--group",
            "monitoring",
            "--json",
        ])
        .json();
    assert_eq!(
        (&c["name"], &c["group"]),
        (&json!("mon"), &json!("monitoring"))
    );
    let mon_file = d.work().join("rbac/clients/mon.toml");
    assert_eq!(
        token_in(&mon_file).expect("a token in the client file"),
        c["token"].as_str().unwrap(),
        "the daemon wrote the client file"
    );
    d.ctl(&["clients", "add", "-n", "ro", "-g", "clientro"])
        .ok();

    // list: table, quiet, JSON.
    let rows = sorted_rows(d.ctl(&["clients", "list"]).ok(), &header);
    assert_eq!(
        rows,
        [
            row(&["couicctl", "admin", d.token()]),
            row(&["mon", "monitoring", c["token"].as_str().unwrap()]),
            row(&["ops", "client_rw", &ops_token]),
            row(&["ro", "client_ro", rows[3][2].as_str()]),
        ]
    );
    assert_eq!(
        sorted_lines(d.ctl(&["clients", "list", "-q"]).ok()),
        ["couicctl", "mon", "ops", "ro"]
    );
    let list = d.ctl(&["clients", "list", "--json"]).json();
    let mut names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["couicctl", "mon", "ops", "ro"]);
    let ro = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ro")
        .unwrap();
    assert_eq!(ro["group"], "clientro", "JSON keeps the wire form");

    // inspect: table and JSON.
    assert_eq!(
        sorted_rows(d.ctl(&["clients", "inspect", "ops"]).ok(), &header),
        [row(&["ops", "client_rw", &ops_token])]
    );
    let (_, api_c) = d.call("GET", "/v1/client/mon", None);
    assert_eq!(
        d.ctl(&["clients", "inspect", "mon", "--json"]).json(),
        api_c
    );

    // The new client's token works with its group's rights only.
    // A copy: deleting the client removes the daemon's file.
    let mon_copy = d.dir().join("mon.toml");
    fs::copy(&mon_file, &mon_copy).unwrap();
    let mon = d.local_config("mon-ctl.toml", &mon_copy);
    assert!(couicctl(&mon, &["stats", "global"])
        .ok()
        .starts_with("Drop CIDR Count: 0\n"));
    assert_eq!(couicctl(&mon, &["drop", "list"]).err(1), UNAUTHORIZED);

    // delete: nothing printed; the client and its token are gone.
    assert_eq!(d.ctl(&["clients", "delete", "mon"]).ok(), "");
    let (status, _) = d.call("GET", "/v1/client/mon", None);
    assert_eq!(status, 404);
    assert!(!mon_file.exists(), "client file removed");
    assert_eq!(couicctl(&mon, &["stats", "global"]).err(1), UNAUTHORIZED);
    assert_eq!(
        d.ctl(&["clients", "inspect", "mon"]).err(1),
        api_error(404, "not_found", "Client not found: mon", &[])
    );
    assert_eq!(
        d.ctl(&["clients", "delete", "mon"]).err(1),
        api_error(404, "not_found", "Client not found: mon", &[])
    );
    assert_eq!(
        d.ctl(&["clients", "delete", "couicctl"]).err(1),
        api_error(422, "invalid", "Cannot delete default client", &[])
    );
    assert_eq!(
        d.ctl(&["clients", "add", "-n", "ops", "-g", "admin"])
            .err(1),
        api_error(422, "invalid", "Client name already exists: ops", &[])
    );
    // Usage errors never reach the daemon.
    for args in [
        &["clients", "add", "-n", "x", "-g", "client_ro"][..],
        &["clients", "add", "-n", "a b", "-g", "admin"],
        &["clients", "add", "-n", "x"],
        &["clients", "inspect", "a.b"],
        &["clients", "list", "-q", "--json"],
    ] {
        d.ctl(args).err(2);
    }
    let (_, list) = d.call("GET", "/v1/client", None);
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
}

// ------------------------------------------------------------------- stats

#[test]
fn stats_global_and_per_tag_in_both_formats() {
    let d = start();
    let text = d.ctl(&["stats", "global"]).ok().to_string();
    assert!(
        text.starts_with("Drop CIDR Count: 0\nIgnore CIDR Count: 0\nXDP Stats:\n"),
        "{text}"
    );
    let actions: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("  Action: "))
        .collect();
    assert_eq!(
        actions,
        [
            "XDP_ABORTED",
            "XDP_DROP",
            "XDP_PASS",
            "XDP_REDIRECT",
            "XDP_TX"
        ]
    );
    assert!(text.ends_with("    RX Bytes: 0\n\n"), "{text:?}");
    assert_eq!(
        d.ctl(&["stats", "drop"]).ok(),
        "No tag statistics available.\n"
    );
    assert_eq!(
        d.ctl(&["stats", "ignore", "--json"]).json(),
        json!({"tags": {}})
    );

    d.ctl(&["drop", "add", "192.0.2.0/24", "-t", "b-tag"]).ok();
    d.ctl(&["drop", "add", "198.51.100.0/24", "-t", "a-tag"])
        .ok();
    d.ctl(&["drop", "add", "2001:db8::/32", "-t", "a-tag"]).ok();
    d.ctl(&["ignore", "add", "203.0.113.0/24"]).ok();

    let text = d.ctl(&["stats", "global"]).ok().to_string();
    assert!(
        text.starts_with("Drop CIDR Count: 3\nIgnore CIDR Count: 1\nXDP Stats:\n  Action: XDP_ABORTED\n    RX Packets: 0\n    RX Bytes: 0\n"),
        "{text}"
    );
    let stats = d.ctl(&["stats", "global", "--json"]).json();
    let (_, api) = d.call("GET", "/v1/stats", None);
    assert_eq!(stats, api);
    assert_eq!(
        (&stats["drop_cidr_count"], &stats["ignore_cidr_count"]),
        (&json!(3), &json!(1))
    );
    assert_eq!(stats["xdp"].as_object().unwrap().len(), 5, "{stats}");
    assert!(stats["xdp"]["XDP_PASS"]["rx_packets"].is_u64(), "{stats}");

    // Per tag: a table sorted by tag, and the API object as JSON.
    assert_eq!(
        table_rows(d.ctl(&["stats", "drop"]).ok()),
        [
            row(&["Tag", "Policy", "RX Packets", "RX Bytes"]),
            row(&["a-tag", "drop", "0", "0"]),
            row(&["b-tag", "drop", "0", "0"]),
        ]
    );
    assert_eq!(
        table_rows(d.ctl(&["stats", "ignore"]).ok())[1],
        row(&["untagged", "ignore", "0", "0"])
    );
    let tags = d.ctl(&["stats", "drop", "--json"]).json();
    let (_, api) = d.call("GET", "/v1/stats/tags/drop", None);
    assert_eq!(tags, api);
    assert_eq!(
        tags["tags"]["a-tag"],
        json!({"rx_packets": 0, "rx_bytes": 0})
    );
    assert_eq!(
        d.ctl(&["stats", "ignore", "--json"]).json(),
        json!({"tags": {"untagged": {"rx_packets": 0, "rx_bytes": 0}}})
    );

    d.ctl(&["stats", "global", "--live", "--json"]).err(2);
}

/// `stats global --live` runs until interrupted: read its first screen,
/// then kill it.
#[test]
fn stats_global_live_prints_screens_until_killed() {
    let d = start();
    d.ctl(&["drop", "add", "192.0.2.0/24"]).ok();
    let child = Command::new(couicctl_bin())
        .arg("-c")
        .arg(d.ctl_config())
        .args(["stats", "global", "--live"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Guard::new("couicctl --live", child);
    let mut stdout = child.child().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_string();
                    if text.contains("Action: XDP_TX\n    RX Packets: ")
                        && text.contains(" bps\n")
                        && text.matches("RX Bytes: ").count() >= 5
                    {
                        let _ = tx.send(text);
                        break;
                    }
                }
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(10));
    let still_running = child.exited().unwrap().is_none();
    child.kill();
    let first = first.expect("a first --live screen within 10 s");
    assert!(still_running, "--live keeps running");
    assert!(
        first.starts_with("\x1b[2J\x1b[1;1HEvery 0.0s: stats\n\nDrop CIDR Count: 1\nIgnore CIDR Count: 0\nXDP Stats:\n"),
        "{first:?}"
    );
    assert!(
        first.contains("  Action: XDP_DROP\n    RX Packets: 0.0 pps\n    RX Bytes: 0.0 bps\n"),
        "{first:?}"
    );
}

// -------------------------------------------------------------------- sets

#[test]
fn sets_create_list_inspect_update_delete_reload() {
    let d = start();
    assert_eq!(
        d.ctl(&["sets", "list", "drop"]).ok(),
        "No sets found for policy 'drop'\n"
    );
    assert_eq!(
        d.ctl(&["sets", "list", "ignore", "--json"]).json(),
        json!([])
    );

    // create with positional entries (written as given, not normalised).
    assert_eq!(
        d.ctl(&[
            "sets",
            "create",
            "drop",
            "lan",
            "10.1.0.5/16",
            "2001:db8::/32"
        ])
        .ok(),
        format!("Set 'lan' created with 2 entries\n{RELOAD_NOTE}\n")
    );
    let lan = d.work().join("sets/drop/lan.couic");
    assert_eq!(
        fs::read_to_string(&lan).unwrap(),
        "10.1.0.5/16\n2001:db8::/32"
    );
    assert_eq!(
        fs::metadata(&lan).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // create --from-file: comments and blank lines skipped.
    let list_file = d.dir().join("office.txt");
    fs::write(
        &list_file,
        "# office\n\n  192.0.2.9/32  \n198.51.100.0/24\n",
    )
    .unwrap();
    let path = list_file.to_str().unwrap();
    assert_eq!(
        d.ctl(&["sets", "create", "ignore", "office", "--from-file", path])
            .ok(),
        format!(
            "Reading CIDRs from file: {path}\nLoaded 2 CIDRs from file\n\
             Set 'office' created with 2 entries\n{RELOAD_NOTE}\n"
        )
    );
    assert_eq!(
        fs::read_to_string(d.work().join("sets/ignore/office.couic")).unwrap(),
        "192.0.2.9/32\n198.51.100.0/24"
    );
    // Every bad line is reported; nothing is created.
    fs::write(&list_file, "1.1.1.1/32\nfoo\n\n2.2.2.2\n").unwrap();
    let out = d.ctl(&["sets", "create", "drop", "bad", "--from-file", path]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, format!("Reading CIDRs from file: {path}\n"));
    assert_eq!(
        out.stderr,
        "Error executing command: Failed to parse 2 CIDR(s):\n  line 2: foo (invalid IP address syntax)\n  \
         line 4: 2.2.2.2 (invalid IP address syntax)\n"
    );
    fs::write(&list_file, "# nothing\n\n").unwrap();
    let out = d.ctl(&["sets", "create", "drop", "bad", "--from-file", path]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (1, "Error executing command: No valid CIDRs found in file\n")
    );
    let (status, _) = d.call("GET", "/v1/sets/drop/bad", None);
    assert_eq!(status, 404, "no set created from a bad file");

    // list and inspect, both formats.
    assert_eq!(
        d.ctl(&["sets", "list", "drop"]).ok(),
        "lan: 2 entries (25 bytes)\n"
    );
    let size = fs::metadata(d.work().join("sets/ignore/office.couic"))
        .unwrap()
        .len();
    assert_eq!(
        d.ctl(&["sets", "list", "ignore", "--json"]).json(),
        json!([{"name": "office", "entry_count": 2, "file_size": size}])
    );
    assert_eq!(
        d.ctl(&["sets", "inspect", "drop", "lan"]).ok(),
        "Set: lan\nEntry count: 2\nEntries:\n\t10.1.0.5/16\n\t2001:db8::/32\n"
    );
    assert_eq!(
        d.ctl(&["sets", "inspect", "ignore", "office", "--json"])
            .json(),
        json!({"name": "office", "entries": ["192.0.2.9/32", "198.51.100.0/24"]})
    );

    // Nothing applies before a reload.
    assert_eq!(d.cidrs("drop"), Vec::<String>::new());
    assert_eq!(
        d.ctl(&["sets", "reload"]).ok(),
        "Sets reloaded successfully\n"
    );
    assert_eq!(d.cidrs("drop"), ["10.1.0.0/16", "2001:db8::/32"]);
    assert_eq!(d.cidrs("ignore"), ["192.0.2.9/32", "198.51.100.0/24"]);
    let rows = sorted_rows(
        d.ctl(&["drop", "list", "-t", "*.couic"]).ok(),
        &ENTRY_HEADER,
    );
    assert_eq!(
        rows,
        [
            row(&["drop", "10.1.0.0/16", "lan.couic", "never"]),
            row(&["drop", "2001:db8::/32", "lan.couic", "never"]),
        ]
    );
    let r = d.ctl(&["check", "192.0.2.9", "--json"]).json();
    assert_eq!(
        (&r["origin"], &r["entry"]["tag"]),
        (&json!("set"), &json!("office.couic"))
    );
    assert!(d
        .ctl(&["check", "10.1.200.1"])
        .ok()
        .contains("Policy: drop\nTag: lan.couic\nOrigin: set\n"));

    // Set entries cannot be deleted or added over through the policy commands.
    assert_eq!(
        d.ctl(&["drop", "delete", "10.1.0.0/16"]).err(1),
        "Error executing command: Couic error: API error:\n  Status: 422\n  \
         Message: Entry defined in a set cannot be removed\n"
    );
    assert_eq!(
        d.ctl(&["drop", "add", "10.1.0.0/16"]).err(1),
        api_error(
            409,
            "conflict",
            "submitted entry is not valid",
            &[("cidr", "conflict", "10.1.0.0/16 already exists")]
        )
    );

    // update replaces the entries; the daemon changes on reload only.
    assert_eq!(
        d.ctl(&["sets", "update", "drop", "lan", "10.2.0.0/16"])
            .ok(),
        format!("Set 'lan' updated with 1 entries\n{RELOAD_NOTE}\n")
    );
    assert_eq!(fs::read_to_string(&lan).unwrap(), "10.2.0.0/16");
    assert_eq!(d.cidrs("drop"), ["10.1.0.0/16", "2001:db8::/32"]);
    d.ctl(&["sets", "reload"]).ok();
    assert_eq!(d.cidrs("drop"), ["10.2.0.0/16"]);
    assert_eq!(
        d.ctl(&["sets", "update", "ignore", "office"]).ok(),
        format!("Set 'office' updated with 0 entries\n{RELOAD_NOTE}\n")
    );
    assert_eq!(
        d.ctl(&["sets", "list", "ignore"]).ok(),
        "office: 0 entries (0 bytes)\n"
    );

    // delete removes the file; reload removes its entries.
    assert_eq!(
        d.ctl(&["sets", "delete", "drop", "lan"]).ok(),
        format!("Set 'lan' deleted\n{RELOAD_NOTE}\n")
    );
    assert!(!lan.exists());
    d.ctl(&["sets", "reload"]).ok();
    assert_eq!(d.cidrs("drop"), Vec::<String>::new());
    assert_eq!(d.cidrs("ignore"), Vec::<String>::new());

    // Errors.
    let missing = api_error(
        404,
        "not_found",
        "Set 'lan' not found for policy 'drop'",
        &[],
    );
    assert_eq!(d.ctl(&["sets", "inspect", "drop", "lan"]).err(1), missing);
    assert_eq!(d.ctl(&["sets", "delete", "drop", "lan"]).err(1), missing);
    assert_eq!(
        d.ctl(&["sets", "update", "drop", "lan", "10.0.0.0/8"])
            .err(1),
        missing
    );
    assert_eq!(
        d.ctl(&["sets", "create", "ignore", "office", "10.0.0.0/8"])
            .err(1),
        api_error(
            409,
            "conflict",
            "Set 'office' already exists for policy 'ignore'",
            &[]
        )
    );
    for args in [
        &["sets", "create", "drop", "empty"][..],
        &["sets", "create", "drop", "x", "10.0.0.1"],
        &["sets", "create", "drop", "a.b", "10.0.0.0/8"],
        &["sets", "list", "DROP"],
        &["sets", "inspect", "both", "lan"],
    ] {
        d.ctl(args).err(2);
    }
    assert_eq!(
        d.ctl(&["sets", "list", "drop"]).ok(),
        "No sets found for policy 'drop'\n"
    );
}

// ------------------------------------------------------------------ errors

#[test]
fn api_errors_exit_1_with_the_error_lines_and_change_nothing() {
    let d = start();
    d.ctl(&["drop", "add", "192.0.2.0/24", "-t", "first"]).ok();

    // Duplicate add (host bits cleared first).
    assert_eq!(
        d.ctl(&["drop", "add", "192.0.2.99/24", "-t", "second"])
            .err(1),
        api_error(
            409,
            "conflict",
            "submitted entry is not valid",
            &[("cidr", "conflict", "192.0.2.0/24 already exists")]
        )
    );
    let (_, e) = d.call("GET", "/v1/drop/192.0.2.0/24", None);
    assert_eq!(e["tag"], "first", "the first entry is kept");

    // Delete or inspect of a missing entry.
    let missing = api_error(
        404,
        "not_found",
        "submitted entry not found",
        &[("cidr", "not_found", "cidr `10.0.0.0/8` not found")],
    );
    assert_eq!(d.ctl(&["drop", "delete", "10.0.0.0/8"]).err(1), missing);
    assert_eq!(d.ctl(&["drop", "inspect", "10.0.0.0/8"]).err(1), missing);
    assert_eq!(
        d.ctl(&["ignore", "delete", "192.0.2.0/24"]).err(1),
        api_error(
            404,
            "not_found",
            "submitted entry not found",
            &[("cidr", "not_found", "cidr `192.0.2.0/24` not found")]
        ),
        "the drop entry is not an ignore entry"
    );

    // Expirations: `0s` is now (refused by the daemon), a bare number has
    // no unit (refused by couicctl).
    assert_eq!(
        d.ctl(&["drop", "add", "10.0.0.0/8", "-e", "0s"]).err(1),
        api_error(
            422,
            "invalid",
            "Validation failed",
            &[(
                "expiration",
                "invalid",
                "expiration timestamp must be in the future or zero"
            )]
        )
    );
    let err = d
        .ctl(&["drop", "add", "10.0.0.0/8", "-e", "5"])
        .err(1)
        .to_string();
    assert!(
        err.starts_with("Error executing command: Invalid expiration format: '5'"),
        "{err}"
    );

    // Usage errors (exit 2): the daemon is not asked.
    for args in [
        &["drop", "add", "10.0.0.1"][..],
        &["drop", "add", "10.0.0.0/33"],
        &["drop", "add", "2001:db8::/129"],
        &["drop", "add", "10.0.0.0/8", "-t", "a.b"],
        &["drop", "add", "10.0.0.0/8", "-t", "untagged"],
        &["drop", "add", "10.0.0.0/8", "-t", "x.couic"],
        &["ignore", "add", "not-an-ip/8"],
        &["drop", "delete", "10.0.0.0"],
        &["ignore", "inspect", "10.0.0.0/40"],
        &["drop", "list", "--bogus"],
        &["policy", "list"],
    ] {
        let out = d.ctl(args);
        assert!(
            out.err(2).starts_with("error: "),
            "{args:?}: {}",
            out.stderr
        );
    }
    let err = d.ctl(&["drop", "add", "10.0.0.1"]).err(2).to_string();
    assert!(
        err.starts_with("error: invalid value '10.0.0.1' for '<CIDR>': invalid IP address syntax"),
        "{err}"
    );
    assert_eq!(d.cidrs("drop"), ["192.0.2.0/24"]);
    assert_eq!(d.cidrs("ignore"), Vec::<String>::new());
}

#[test]
fn refused_tokens_exit_1_with_the_refused_token_message() {
    let d = start();

    // A client file whose token the daemon does not know.
    let stranger = d.dir().join("stranger.toml");
    fs::write(
        &stranger,
        format!("token = \"{}\"\ngroup = \"admin\"\n", uuid::Uuid::new_v4()),
    )
    .unwrap();
    let cfg = d.local_config("stranger-ctl.toml", &stranger);
    for args in [
        &["drop", "add", "192.0.2.0/24"][..],
        &["drop", "list"],
        &["clients", "list"],
        &["stats", "global"],
        &["sets", "reload"],
        &["check", "192.0.2.1"],
    ] {
        assert_eq!(couicctl(&cfg, args).err(1), UNAUTHORIZED, "{args:?}");
    }
    assert_eq!(d.cidrs("drop"), Vec::<String>::new());

    // A known token whose group lacks the scope.
    d.create_client("reader", "clientro");
    let reader = d.local_config(
        "reader-ctl.toml",
        &d.work().join("rbac/clients/reader.toml"),
    );
    assert_eq!(couicctl(&reader, &["drop", "list", "-q"]).ok(), "");
    assert_eq!(
        couicctl(&reader, &["drop", "add", "192.0.2.0/24"]).err(1),
        UNAUTHORIZED
    );
    assert_eq!(couicctl(&reader, &["clients", "list"]).err(1), UNAUTHORIZED);
    assert_eq!(d.cidrs("drop"), Vec::<String>::new());
}

#[test]
fn transport_and_configuration_errors_have_their_own_messages() {
    let d = start();
    let dir = d.dir();
    let write = |name: &str, text: String| -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p
    };
    let client = d.client_file().display().to_string();

    // Missing socket.
    let nosock = dir.join("nosuch.sock");
    let cfg = write(
        "nosock.toml",
        format!(
            "mode = \"local\"\nsocket = \"{}\"\nclient_file = \"{client}\"\n",
            nosock.display()
        ),
    );
    assert_eq!(
        couicctl(&cfg, &["drop", "list"]).err(1),
        format!("Error: Unix socket does not exist: {}\n", nosock.display())
    );
    // A socket file nobody listens on (daemon killed).
    let stale = dir.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let cfg = write(
        "stale.toml",
        format!(
            "mode = \"local\"\nsocket = \"{}\"\nclient_file = \"{client}\"\n",
            stale.display()
        ),
    );
    let err = couicctl(&cfg, &["drop", "list"]).err(1).to_string();
    assert_eq!(
        err,
        format!(
            "Error executing command: cannot reach couic on {} (is the couic daemon running?): \
             Connection refused (os error 111)\n",
            stale.display()
        ),
        "the cause is printed once"
    );

    // Bad configuration files.
    let cfg = write("syntax.toml", "mode = local\n".into());
    let err = couicctl(&cfg, &["drop", "list"]).err(1).to_string();
    assert!(
        err.starts_with(&format!(
            "Error: invalid configuration file {}: line 1: ",
            cfg.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let cfg = write(
        "nosocket.toml",
        format!("mode = \"local\"\nclient_file = \"{client}\"\n"),
    );
    assert_eq!(
        couicctl(&cfg, &["drop", "list"]).err(1),
        format!(
            "Error: invalid configuration file {}: socket is required for local mode\n",
            cfg.display()
        )
    );
    let absent = dir.join("absent.toml");
    let err = couicctl(&absent, &["drop", "list"]).err(1).to_string();
    assert!(
        err.starts_with(&format!(
            "Error: cannot read configuration file {}: ",
            absent.display()
        )),
        "{err}"
    );
    let cfg = write(
        "noclient.toml",
        format!(
            "mode = \"local\"\nsocket = \"{}\"\nclient_file = \"{}\"\n",
            d.socket().display(),
            absent.display()
        ),
    );
    let err = couicctl(&cfg, &["drop", "list"]).err(1).to_string();
    assert!(
        err.starts_with(&format!(
            "Error: invalid client file {}: ",
            absent.display()
        )),
        "{err}"
    );
    let bad_client = write(
        "badclient.toml",
        "token = \"nope\"\ngroup = \"admin\"\n".into(),
    );
    let cfg = d.local_config("badclient-ctl.toml", &bad_client);
    let err = couicctl(&cfg, &["drop", "list"]).err(1).to_string();
    assert!(
        err.starts_with(&format!(
            "Error: invalid client file {}: token is not a valid UUID",
            bad_client.display()
        )),
        "{err}"
    );

    // The daemon is untouched by all of this, and still answers.
    assert_eq!(d.ctl(&["drop", "list", "-q"]).ok(), "");
}

// ----------------------------------------------------------------- fail2ban

/// `cli/fail2ban/couic.conf` read the way fail2ban reads an action file:
/// sections of `key = value` (continuation lines start with blanks).
struct ActionFile {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl ActionFile {
    fn load() -> ActionFile {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/cli/fail2ban/couic.conf");
        let text = fs::read_to_string(path).expect("cli/fail2ban/couic.conf is shipped");
        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                sections.push((name.to_string(), Vec::new()));
                continue;
            }
            let (_, keys) = sections.last_mut().expect("a key outside any section");
            if line.starts_with([' ', '\t']) {
                let (_, value) = keys.last_mut().expect("a continuation line after a key");
                value.push('\n');
                value.push_str(trimmed);
            } else {
                let (k, v) = trimmed.split_once('=').expect("key = value");
                keys.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        ActionFile { sections }
    }

    fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .iter()
            .filter(|(s, _)| s == section)
            .flat_map(|(_, keys)| keys)
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The command line of `action` for a ban of `ip` in jail `jail`:
    /// `<ip>`, `<name>` and the `[Init]` tags (`<cidr>`, from the
    /// family-specific section first) substituted.
    fn command(&self, action: &str, ip: &str, jail: &str) -> String {
        let family = if ip.contains(':') { "inet6" } else { "inet" };
        let cidr = self
            .get(&format!("Init?family={family}"), "cidr")
            .or_else(|| self.get("Init", "cidr"))
            .expect("cidr in [Init]");
        let template = self
            .get("Definition", action)
            .unwrap_or_else(|| panic!("{action} in [Definition]"));
        let command = template
            .replace("<ip>", ip)
            .replace("<cidr>", cidr)
            .replace("<name>", jail);
        assert!(!command.contains('<'), "unsubstituted tag in {command:?}");
        command
    }
}

/// Runs a fail2ban command line with `sh -c`, `couicctl` on the PATH being
/// a wrapper that passes the test's configuration (fail2ban would use
/// `/etc/couic/couicctl.toml`).
fn fail2ban_runs(bin_dir: &Path, command: &str) -> Out {
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    Out {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn fail2ban_ban_and_unban_command_lines_against_the_daemon() {
    let d = start();
    let action = ActionFile::load();
    assert_eq!(
        action.command("actionban", "192.0.2.7", "sshd"),
        "couicctl drop add 192.0.2.7/32 -t fail2ban-sshd"
    );
    assert_eq!(
        action.command("actionunban", "2001:db8::7", "sshd"),
        "couicctl drop delete 2001:db8::7/128"
    );

    let bin_dir = d.dir().join("bin");
    fs::create_dir(&bin_dir).unwrap();
    let wrapper = bin_dir.join("couicctl");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec '{}' -c '{}' \"$@\"\n",
            couicctl_bin().display(),
            d.ctl_config().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();

    for (ip, cidr, jail) in [
        ("192.0.2.7", "192.0.2.7/32", "sshd"),
        ("2001:db8::7", "2001:db8::7/128", "nginx-http-auth"),
    ] {
        let ban = action.command("actionban", ip, jail);
        let unban = action.command("actionunban", ip, jail);
        let entry_path = format!("/v1/drop/{cidr}");

        let out = fail2ban_runs(&bin_dir, &ban);
        assert_eq!(out.code, 0, "{ban}: {out:?}");
        let (status, e) = d.call("GET", &entry_path, None);
        assert_eq!(status, 200, "{ban} added {cidr}: {e}");
        assert_eq!(e["tag"], format!("fail2ban-{jail}"));
        assert_eq!(e["expiration"], 0);
        let r = d.ctl(&["check", ip, "--json"]).json();
        assert_eq!(r["verdict"], "drop");

        let out = fail2ban_runs(&bin_dir, &ban);
        assert_ne!(out.code, 0, "a second ban fails: {out:?}");
        assert!(out.stderr.contains("Status: 409"), "{}", out.stderr);
        assert_eq!(d.call("GET", &entry_path, None).0, 200, "still banned");

        let out = fail2ban_runs(&bin_dir, &unban);
        assert_eq!(out.code, 0, "{unban}: {out:?}");
        assert_eq!(
            d.call("GET", &entry_path, None).0,
            404,
            "{unban} removed {cidr}"
        );

        let out = fail2ban_runs(&bin_dir, &unban);
        assert_ne!(out.code, 0, "a second unban fails: {out:?}");
        assert!(out.stderr.contains("Status: 404"), "{}", out.stderr);
    }

    // A jail name that is not a valid tag makes the ban fail, loudly.
    let out = fail2ban_runs(
        &bin_dir,
        &action.command("actionban", "192.0.2.8", "nginx.auth"),
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert_eq!(d.cidrs("drop"), Vec::<String>::new());

    // A killed daemon (its socket file left behind) is a failed ban, not a
    // silent success.
    let mut d = d;
    d.kill();
    let out = fail2ban_runs(&bin_dir, &action.command("actionban", "192.0.2.9", "sshd"));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("cannot reach couic on"),
        "{}",
        out.stderr
    );
}
