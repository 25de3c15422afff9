//! `POST /v1/sets/reload` over the real socket with real files (§7.2-§7.5,
//! §18.12-14): what is loaded, what is refused (and then nothing changes),
//! and how set entries meet API entries.

mod api_support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use api_support::*;
use couic::actors::messages::Origin;
use couic::bpf::Capacities;
use couic::firewall::ChangeKind;
use serde_json::json;

fn entry(cidr: &str, tag: &str) -> (String, String, u64) {
    (cidr.to_string(), tag.to_string(), 0)
}

fn reload_ok(api: &mut Api) {
    let resp = api.reload();
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(json(&resp), json!({"reload_status": "OK"}));
}

/// A 422 reload whose message starts with `prefix` and names `needle`.
fn reload_refused(api: &mut Api, prefix: &str, needle: &str) -> String {
    let resp = api.reload();
    assert_eq!(resp.status, 422, "{}", resp.text());
    let body = json(&resp);
    assert_eq!(body["code"], "invalid");
    assert_eq!(body["errors"], json!({}));
    let message = body["message"].as_str().unwrap().to_string();
    assert!(message.starts_with(prefix), "{message}");
    assert!(message.contains(needle), "{message} should name {needle}");
    message
}

#[test]
fn loads_both_policies_with_file_tags() {
    let d = Daemon::start();
    let mut api = d.admin();
    d.write_set(
        "drop",
        "bad-hosts",
        "# from the SOC\n192.0.2.7/24\n\n2001:DB8::1/32\n192.0.2.0/24\n",
    );
    d.write_set("ignore", "office", "10.1.0.0/16");
    d.write_set("drop", "empty", "");
    d.write_set("drop", "comments", "# nothing yet\n   # really\n\n");
    d.write_file("drop", "notes.txt", "not a set", 0o644);
    d.write_file("drop", ".couic", "not a set", 0o644);
    reload_ok(&mut api);

    assert_eq!(
        api.entries("drop"),
        [
            entry("192.0.2.0/24", "bad-hosts.couic"),
            entry("2001:db8::/32", "bad-hosts.couic")
        ]
    );
    assert_eq!(
        api.entries("ignore"),
        [entry("10.1.0.0/16", "office.couic")]
    );
    let resp = api.get("/v1/drop/192.0.2.0/24");
    assert_eq!(
        json(&resp),
        json!({"creation": T0, "cidr": "192.0.2.0/24", "tag": "bad-hosts.couic", "expiration": 0})
    );

    // Immutable through the API.
    let resp = api.delete("/v1/drop/192.0.2.0/24");
    assert_eq!(resp.status, 422);
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(resp.text(), "Entry defined in a set cannot be removed");
    assert_eq!(api.add("drop", "192.0.2.9/24", None, 0).status, 409);
    // The other policy is independent.
    assert_eq!(api.add("ignore", "192.0.2.0/24", None, 0).status, 201);

    // Reloading the same files changes nothing, creation included.
    d.clock.advance(60);
    d.take_events();
    reload_ok(&mut api);
    assert!(
        d.take_events().is_empty(),
        "an unchanged reload publishes nothing"
    );
    assert_eq!(
        json(&api.get("/v1/drop/192.0.2.0/24"))["creation"],
        json!(T0)
    );
}

#[test]
fn renamed_removed_duplicate_and_overlapping_files() {
    let d = Daemon::start();
    let mut api = d.admin();
    d.write_set(
        "drop",
        "b",
        "1.1.1.1/32\n2.2.2.2/32\n2.2.2.2/32\n2.2.2.7/32",
    );
    d.write_set("drop", "a", "1.1.1.1/32\n3.3.3.3/32\n3.3.3.3/32");
    reload_ok(&mut api);
    // In several files: the first file in name order names it.
    assert_eq!(
        api.entries("drop"),
        [
            entry("1.1.1.1/32", "a.couic"),
            entry("2.2.2.2/32", "b.couic"),
            entry("2.2.2.7/32", "b.couic"),
            entry("3.3.3.3/32", "a.couic")
        ]
    );

    // Renaming `a` to `c`: 1.1.1.1 now belongs to `b`, 3.3.3.3 to `c`.
    fs::rename(
        d.set_dir("drop").join("a.couic"),
        d.set_dir("drop").join("c.couic"),
    )
    .unwrap();
    d.clock.advance(10);
    reload_ok(&mut api);
    assert_eq!(
        api.entries("drop"),
        [
            entry("1.1.1.1/32", "b.couic"),
            entry("2.2.2.2/32", "b.couic"),
            entry("2.2.2.7/32", "b.couic"),
            entry("3.3.3.3/32", "c.couic")
        ]
    );
    // Re-tagged entries are new; the others keep their creation.
    assert_eq!(
        json(&api.get("/v1/drop/3.3.3.3/32"))["creation"],
        json!(T0 + 10)
    );
    assert_eq!(json(&api.get("/v1/drop/2.2.2.2/32"))["creation"], json!(T0));

    // Removing a file removes its entries; those also in another file
    // move to it.
    fs::remove_file(d.set_dir("drop").join("b.couic")).unwrap();
    reload_ok(&mut api);
    assert_eq!(
        api.entries("drop"),
        [
            entry("1.1.1.1/32", "c.couic"),
            entry("3.3.3.3/32", "c.couic")
        ]
    );
    assert_eq!(api.get("/v1/drop/2.2.2.2/32").status, 404);

    // Emptying the last file empties the policy.
    d.write_set("drop", "c", "# emptied\n");
    reload_ok(&mut api);
    assert!(api.entries("drop").is_empty());
}

#[test]
fn a_bad_file_changes_nothing_and_is_named() {
    let d = Daemon::start();
    let mut api = d.admin();
    d.write_set("ignore", "office", "10.1.0.0/16");
    d.write_set("drop", "hosts", "192.0.2.1/32");
    reload_ok(&mut api);
    let before = (api.entries("ignore"), api.entries("drop"));
    let loaded = d.take_events();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].origin, Origin::Set);

    // New ignore content, valid; a drop file that is not: neither applies,
    // although ignore is processed first.
    d.write_set("ignore", "office", "10.1.0.0/16\n10.2.0.0/16");
    d.write_set("drop", "hosts", "192.0.2.1/32\n192.0.2.2/32");

    let dir = d.set_dir("drop");
    let bad = d.write_set("drop", "typo", "192.0.2.3/32\n# ok\n192.0.2.4\n");
    let message = reload_refused(
        &mut api,
        &format!(
            "error parsing set: {}. Offending line: 192.0.2.4",
            bad.display()
        ),
        "line 3",
    );
    assert!(message.contains("invalid IP address syntax"), "{message}");
    assert_eq!((api.entries("ignore"), api.entries("drop")), before);

    d.write_set(
        "drop",
        "typo",
        "192.0.2.3/32 # inline comments are not allowed",
    );
    reload_refused(&mut api, "error parsing set: ", "line 1");

    fs::set_permissions(&bad, fs::Permissions::from_mode(0o644)).unwrap();
    reload_refused(
        &mut api,
        &format!("Set file {} has wrong permissions: ", bad.display()),
        "0644",
    );
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o400)).unwrap();
    reload_refused(&mut api, "Set file ", "0400");
    fs::remove_file(&bad).unwrap();

    let foreign = d.write_set("drop", "foreign", "192.0.2.5/32");
    std::os::unix::fs::chown(&foreign, Some(4242), None).unwrap();
    reload_refused(
        &mut api,
        &format!("Set file {} has wrong permissions: ", foreign.display()),
        "4242",
    );
    std::os::unix::fs::chown(&foreign, None, Some(4242)).unwrap();
    std::os::unix::fs::chown(&foreign, Some(0), None).unwrap();
    reload_refused(&mut api, "Set file ", "4242");
    fs::remove_file(&foreign).unwrap();

    let big = d.write_set("drop", "big", &"#".repeat(5 * 1024 * 1024 + 1));
    reload_refused(
        &mut api,
        &format!(
            "File {} exceeds the maximum allowed size of 5 MB",
            big.display()
        ),
        "big",
    );
    fs::remove_file(&big).unwrap();

    let dotted = d.write_file("drop", "v1.2.couic", "192.0.2.6/32", 0o600);
    reload_refused(
        &mut api,
        "Invalid set name: ",
        &dotted.display().to_string(),
    );
    fs::remove_file(&dotted).unwrap();
    let long = d.write_set("drop", &"n".repeat(49), "");
    reload_refused(&mut api, "Invalid set name: ", "48");
    fs::remove_file(&long).unwrap();

    let latin1 = dir.join("latin1.couic");
    fs::write(&latin1, b"192.0.2.7/32\n# caf\xe9\n").unwrap();
    fs::set_permissions(&latin1, fs::Permissions::from_mode(0o600)).unwrap();
    reload_refused(&mut api, "Set file ", "line 2");
    fs::remove_file(&latin1).unwrap();

    assert_eq!((api.entries("ignore"), api.entries("drop")), before);
    assert!(
        d.take_events().is_empty(),
        "a refused reload publishes nothing"
    );

    // Fixed: everything applies at once.
    reload_ok(&mut api);
    assert_eq!(api.entries("ignore").len(), 2);
    assert_eq!(api.entries("drop").len(), 2);
}

#[test]
fn api_entries_hidden_by_a_set_come_back() {
    let d = Daemon::start();
    let mut api = d.admin();
    assert_eq!(
        api.add("drop", "10.0.0.0/24", Some("fail2ban-sshd"), 0)
            .status,
        201
    );
    assert_eq!(
        api.add("drop", "10.0.1.0/24", Some("short"), T0 + 100)
            .status,
        201
    );
    assert_eq!(
        api.add("drop", "10.0.2.0/24", Some("shorter"), T0 + 30)
            .status,
        201
    );
    assert_eq!(
        api.add("ignore", "10.0.0.0/24", Some("office"), 0).status,
        201
    );

    d.write_set("drop", "net", "10.0.0.0/24\n10.0.1.0/24\n10.0.2.0/24");
    reload_ok(&mut api);
    assert_eq!(
        api.entries("drop"),
        [
            entry("10.0.0.0/24", "net.couic"),
            entry("10.0.1.0/24", "net.couic"),
            entry("10.0.2.0/24", "net.couic")
        ]
    );
    assert_eq!(
        api.entries("ignore"),
        [entry("10.0.0.0/24", "office")],
        "other policy untouched"
    );
    // While hidden, the deadline of an API entry does not remove the set entry.
    d.clock.advance(40);
    d.sweep();
    assert_eq!(api.entries("drop").len(), 3);

    // The lines go: the hidden entries return as they were, except the
    // one whose deadline passed meanwhile.
    d.write_set("drop", "net", "");
    reload_ok(&mut api);
    let resp = api.get("/v1/drop/10.0.0.0/24");
    assert_eq!(
        json(&resp),
        json!({"creation": T0, "cidr": "10.0.0.0/24", "tag": "fail2ban-sshd", "expiration": 0})
    );
    assert_eq!(
        json(&api.get("/v1/drop/10.0.1.0/24"))["expiration"],
        json!(T0 + 100)
    );
    assert_eq!(api.get("/v1/drop/10.0.2.0/24").status, 404);
    // Restored entries are API entries again: deletable, and expiring.
    assert!(api.delete("/v1/drop/10.0.0.0/24").status < 300);
    d.clock.advance(100);
    d.sweep();
    assert!(api.entries("drop").is_empty(), "the restored entry expired");
}

#[test]
fn reload_publishes_its_changes() {
    let d = Daemon::start();
    let mut api = d.admin();
    assert_eq!(api.add("drop", "10.0.0.0/24", Some("api"), 0).status, 201);
    d.take_events();
    d.write_set("drop", "a", "10.0.0.0/24\n1.1.1.1/32");
    d.write_set("ignore", "i", "2.2.2.2/32");
    reload_ok(&mut api);
    let events = d.take_events();
    assert_eq!(events.len(), 1, "one event per reload");
    assert_eq!(events[0].origin, Origin::Set);
    let seen: Vec<(ChangeKind, String, String)> = events[0]
        .changes
        .iter()
        .map(|c| (c.kind, c.entry.cidr.to_string(), c.entry.tag.clone()))
        .collect();
    // Ignore first; the API entry is published as hidden, not removed.
    assert_eq!(
        seen[0],
        (ChangeKind::Added, "2.2.2.2/32".into(), "i.couic".into())
    );
    assert!(seen.contains(&(ChangeKind::Hidden, "10.0.0.0/24".into(), "api".into())));
    assert!(seen.contains(&(ChangeKind::Added, "10.0.0.0/24".into(), "a.couic".into())));
    assert!(seen.contains(&(ChangeKind::Added, "1.1.1.1/32".into(), "a.couic".into())));
    assert_eq!(seen.len(), 4);
    let hidden = events[0]
        .changes
        .iter()
        .find(|c| c.kind == ChangeKind::Hidden)
        .unwrap();
    assert_eq!(
        hidden.entry.origin,
        Origin::api(couic::rbac::DEFAULT_CLIENT)
    );

    // The line goes: the set entry is removed, the API entry restored as
    // it was (same creation, tag and origin).
    d.write_set("drop", "a", "1.1.1.1/32");
    reload_ok(&mut api);
    let events = d.take_events();
    assert_eq!(events.len(), 1);
    let seen: Vec<(ChangeKind, String, String)> = events[0]
        .changes
        .iter()
        .map(|c| (c.kind, c.entry.cidr.to_string(), c.entry.tag.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (ChangeKind::Removed, "10.0.0.0/24".into(), "a.couic".into()),
            (ChangeKind::Restored, "10.0.0.0/24".into(), "api".into()),
        ]
    );
    assert_eq!(events[0].changes[1].entry, hidden.entry);
}

#[test]
fn a_reload_that_does_not_fit_is_refused_whole() {
    let d = Daemon::start_with(Capacities {
        drop: 4,
        ignore: 4,
        tags: 16,
    });
    let mut api = d.admin();
    assert_eq!(api.add("drop", "9.9.9.9/32", None, 0).status, 201);
    d.write_set("ignore", "i", "8.8.8.8/32");
    d.write_set(
        "drop",
        "a",
        "1.0.0.1/32\n1.0.0.2/32\n1.0.0.3/32\n1.0.0.4/32",
    );
    let resp = api.reload();
    assert_eq!(resp.status, 409, "{}", resp.text());
    assert_eq!(
        json(&resp),
        json!({"code": "conflict", "message": "couic underlying ebpf map is full: max 4 entries", "errors": {}})
    );
    assert!(
        api.entries("ignore").is_empty(),
        "ignore fits but is not applied alone"
    );
    assert_eq!(api.entries("drop").len(), 1);
    // Families are counted apart: IPv6 lines do not take IPv4 room.
    d.write_set(
        "drop",
        "a",
        "1.0.0.1/32\n1.0.0.2/32\n1.0.0.3/32\n2001:db8::1/128\n9.9.9.9/32",
    );
    reload_ok(&mut api);
    assert_eq!(api.entries("drop").len(), 5);
}

/// A 262,144-line set: loaded whole, then one line changed.
#[test]
fn a_big_set_reloads_by_difference() {
    let d = Daemon::start_with(Capacities {
        drop: 1 << 18,
        ignore: 16,
        tags: 16,
    });
    let mut api = d.admin();
    let lines: Vec<String> = (0..1u32 << 18)
        .map(|i| format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 0xff, i & 0xff))
        .collect();
    d.write_set("drop", "big", &lines.join("\n"));
    let start = Instant::now();
    reload_ok(&mut api);
    let full = start.elapsed();
    assert_eq!(d.take_events()[0].changes.len(), 1 << 18);

    let mut edited = lines.clone();
    edited[4242] = "192.0.2.1/32".into();
    d.write_set("drop", "big", &edited.join("\n"));
    let start = Instant::now();
    reload_ok(&mut api);
    let one = start.elapsed();
    let events = d.take_events();
    let kinds: Vec<ChangeKind> = events[0].changes.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [ChangeKind::Removed, ChangeKind::Added],
        "the line out, the line in"
    );

    edited.push("192.0.2.2/32".into());
    edited.remove(4242);
    d.write_set("drop", "big", &edited.join("\n"));
    reload_ok(&mut api);
    let removed_and_added: Vec<ChangeKind> =
        d.take_events()[0].changes.iter().map(|c| c.kind).collect();
    assert_eq!(removed_and_added, [ChangeKind::Removed, ChangeKind::Added]);
    edited.pop();
    d.write_set("drop", "big", &edited.join("\n"));
    reload_ok(&mut api);
    assert_eq!(
        d.take_events()[0].changes.len(),
        1,
        "one line gone: one map change"
    );

    eprintln!("262,144-line set: full load {full:?}, one-line reload {one:?}");
    if !cfg!(debug_assertions) {
        assert!(one.as_millis() <= 200, "one-line reload took {one:?}");
    }
}
