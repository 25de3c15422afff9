//! Durable entries (`working_dir/state/`), through the real daemon: every
//! acknowledged add and delete survives kill -9; a torn, truncated,
//! damaged or badly moded state file, and a full disk, each get the
//! behaviour the README promises.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use couic_testkit::api::Api;
use couic_testkit::{Daemon, Spec};
use serde_json::{json, Value};

const COUIC: &str = env!("CARGO_BIN_EXE_couic");
const CLIENTS: usize = 8;
/// Addresses each client adds and deletes, again and again.
const POOL: u8 = 40;

fn start() -> Daemon {
    let spec = Spec::new(COUIC)
        .env("RUST_LOG", "info")
        .limits(65_536, 1024);
    Daemon::start(spec).unwrap()
}

fn api(d: &Daemon) -> Api {
    Api::new(&d.socket(), Some(d.token()), Duration::from_secs(5))
}

fn present(d: &Daemon, cidr: &str) -> bool {
    let (status, body) = d.call("GET", &format!("/v1/drop/{cidr}"), None);
    match status {
        200 => true,
        404 => false,
        other => panic!("GET {cidr}: {other} {body}"),
    }
}

/// What a client knows of its addresses: the state its last answered
/// request left, or `None` where a request got no answer (killed).
type Known = HashMap<String, Option<bool>>;

/// Adds and deletes addresses of its own until the daemon dies or `stop`.
fn churn(
    socket: PathBuf,
    token: String,
    client: usize,
    round: usize,
    stop: Arc<AtomicBool>,
) -> Known {
    let mut api = Api::new(&socket, Some(&token), Duration::from_secs(5));
    let mut known = Known::new();
    let mut seed = (client * 7919 + round * 104_729) as u64 | 1;
    while !stop.load(Ordering::Relaxed) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let host = (seed % POOL as u64) as u8;
        let cidr = format!("10.{client}.{round}.{host}/32");
        let was = known.get(&cidr).copied().flatten().unwrap_or(false);
        let answer = if was {
            api.call("DELETE", &format!("/v1/drop/{cidr}"), None)
        } else {
            let body = json!({"cidr": cidr, "tag": "durable", "expiration": 0});
            api.call("POST", "/v1/drop", Some(body.to_string().as_bytes()))
        };
        match answer {
            Ok((200 | 201 | 204, _)) => {
                known.insert(cidr, Some(!was));
            }
            Ok((status, body)) => panic!("{cidr}: {status} {}", String::from_utf8_lossy(&body)),
            Err(_) => {
                // Killed mid-request: either outcome is right.
                known.insert(cidr, None);
                break;
            }
        }
    }
    known
}

#[test]
fn acknowledged_adds_and_deletes_survive_kill_9_at_random_moments() {
    let mut d = start();
    let mut expected: HashMap<String, bool> = HashMap::new();
    let mut unsure = 0;
    for round in 0..10 {
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (socket, token, stop) = (d.socket(), d.token().to_string(), stop.clone());
                std::thread::spawn(move || churn(socket, token, client, round, stop))
            })
            .collect();
        // A moment of its own per round, 100 to 600 ms into the churn.
        std::thread::sleep(Duration::from_millis(100 + (round as u64 * 269) % 500));
        d.kill();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            for (cidr, state) in client.join().unwrap() {
                match state {
                    Some(state) => {
                        expected.insert(cidr, state);
                    }
                    None => {
                        expected.remove(&cidr);
                        unsure += 1;
                    }
                }
            }
        }
        d.spawn().unwrap();
        d.wait_ready().unwrap();
        let mut wrong = Vec::new();
        for (cidr, &state) in &expected {
            if present(&d, cidr) != state {
                wrong.push(format!(
                    "{cidr} should be {}",
                    if state { "present" } else { "absent" }
                ));
            }
        }
        assert!(wrong.is_empty(), "round {round}: {wrong:?}\n{}", d.log());
        // The store is what the check route and the data path answer from.
        for (cidr, &state) in expected.iter().filter(|(c, _)| c.ends_with(".1/32")) {
            let ip = cidr.trim_end_matches("/32");
            let (status, body) = d.call("GET", &format!("/v1/check/{ip}"), None);
            assert_eq!(status, 200, "{body}");
            let matched = body["policy"] == "drop";
            assert_eq!(matched, state, "check {ip}: {body}");
        }
    }
    assert!(
        expected.len() > 200,
        "the rounds did enough: {}",
        expected.len()
    );
    assert!(unsure <= 10 * CLIENTS, "{unsure}");
}

/// The newest journal file and the offset where its records end.
fn journal_end(d: &Daemon) -> (PathBuf, usize) {
    let state = d.work().join("state");
    let mut journals: Vec<PathBuf> = fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("journal-") && !name.contains('.')
        })
        .collect();
    journals.sort();
    let path = journals.pop().expect("a journal");
    let data = fs::read(&path).unwrap();
    let mut at = 16;
    loop {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            return (path, at);
        }
        at += 8 + len;
    }
}

fn add(d: &Daemon, cidr: &str) {
    let (status, body) = d.call(
        "POST",
        "/v1/drop",
        Some(json!({"cidr": cidr, "tag": "t", "expiration": 0})),
    );
    assert_eq!(status, 201, "{body}");
}

fn stop(d: &mut Daemon) {
    d.sigterm().unwrap();
    assert!(
        d.wait_exit(Duration::from_secs(20)).unwrap().success(),
        "{}",
        d.log()
    );
}

#[test]
fn a_torn_last_record_is_skipped_with_its_offset_and_the_others_kept() {
    let mut d = start();
    add(&d, "192.0.2.1/32");
    add(&d, "192.0.2.2/32");
    d.kill();
    // A record cut short: a length and a CRC, then part of the payload.
    let (path, end) = journal_end(&d);
    let mut data = fs::read(&path).unwrap();
    data[end..end + 4].copy_from_slice(&60u32.to_le_bytes());
    data[end + 4..end + 8].copy_from_slice(&0xdead_beef_u32.to_le_bytes());
    data[end + 8..end + 30].fill(0x41);
    fs::write(&path, data).unwrap();

    d.spawn().unwrap();
    d.wait_ready().unwrap();
    let log = d.log();
    assert!(
        log.contains(&format!("cut short at offset {end}"))
            && log.contains(&path.display().to_string()),
        "the warning names the file and the offset: {log}"
    );
    assert!(present(&d, "192.0.2.1/32") && present(&d, "192.0.2.2/32"));
    // Folded into a clean snapshot: the next start says nothing of it.
    stop(&mut d);
    d.spawn().unwrap();
    d.wait_ready().unwrap();
    assert!(!d.log().contains("cut short"), "{}", d.log());
    assert!(present(&d, "192.0.2.2/32"));
}

#[test]
fn a_truncated_file_loses_only_its_cut_record() {
    let mut d = start();
    add(&d, "192.0.2.1/32");
    add(&d, "192.0.2.2/32");
    d.kill();
    let (path, end) = journal_end(&d);
    // Cut inside the last record, as a crash with no zeroed tail would.
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(end as u64 - 5).unwrap();
    d.spawn().unwrap();
    d.wait_ready().unwrap();
    assert!(d.log().contains("cut short"), "{}", d.log());
    assert!(present(&d, "192.0.2.1/32"));
    assert!(!present(&d, "192.0.2.2/32"));
}

#[test]
fn damage_before_good_records_stops_startup_until_salvaged() {
    let mut d = start();
    for i in 1..=3 {
        add(&d, &format!("192.0.2.{i}/32"));
    }
    d.kill();
    let (path, _) = journal_end(&d);
    let mut data = fs::read(&path).unwrap();
    // A flipped byte inside the first record's payload.
    data[16 + 12] ^= 0xff;
    fs::write(&path, data).unwrap();

    let (status, out) = d.run_to_exit(Duration::from_secs(20)).unwrap();
    assert!(!status.success(), "a damaged store stops startup: {out}");
    assert!(
        out.contains("damaged at offset 16") && out.contains("--salvage-state"),
        "the error says where and the way out: {out}"
    );

    d.set_args(&["--salvage-state"]);
    d.spawn().unwrap();
    d.wait_ready().unwrap();
    // What came before the damage is kept: here, nothing of that file.
    assert!(!present(&d, "192.0.2.1/32"));
    assert!(
        path.with_extension("damaged").exists(),
        "the damaged file is kept"
    );
    add(&d, "192.0.2.9/32");
    stop(&mut d);
    d.set_args(&[]);
    d.spawn().unwrap();
    d.wait_ready().unwrap();
    assert!(present(&d, "192.0.2.9/32"), "{}", d.log());
}

#[test]
fn state_files_are_private_and_a_readable_one_is_fixed() {
    let mut d = start();
    add(&d, "192.0.2.1/32");
    stop(&mut d);
    let state = d.work().join("state");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    let (path, _) = journal_end(&d);
    assert_eq!(mode(&path), 0o600);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    d.spawn().unwrap();
    d.wait_ready().unwrap();
    assert!(d.log().contains("had mode 644: set to 600"), "{}", d.log());
    assert_eq!(mode(&path), 0o600);
    assert!(present(&d, "192.0.2.1/32"));
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
}

/// A tmpfs mounted by the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// The status, applied and failed counts, and the first item error.
fn bulk(d: &Daemon, first: u32, count: u32) -> (u16, Value) {
    let entries: Vec<Value> = (first..first + count)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            json!({"cidr": format!("{ip}/32"), "tag": "fill", "expiration": 0})
        })
        .collect();
    let (status, body) = d.call("POST", "/v1/drop/bulk", Some(json!({ "add": entries })));
    let first_error = body["add"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i.get("error").is_some()).cloned());
    let summary = json!({
        "applied": body["applied"],
        "failed": body["failed"],
        "first_error": first_error,
        "message": body["message"],
    });
    (status, summary)
}

#[test]
fn a_full_disk_refuses_the_change_whole_and_keeps_what_was_acknowledged() {
    let spec = Spec::new(COUIC)
        .env("RUST_LOG", "info")
        .limits(262_144, 1024);
    let mut d = Daemon::new(spec).unwrap();
    let state = d.work().join("state");
    fs::create_dir(&state).unwrap();
    run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=5m,mode=0700",
            "tmpfs",
            state.to_str().unwrap(),
        ],
    );
    let _tmpfs = Tmpfs(state.clone());
    d.spawn().unwrap();
    d.wait_ready().unwrap();
    // Whatever the journal left free is taken.
    let filler = state.join("filler");
    let _ = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", filler.display()),
            "bs=64k",
        ])
        .output();

    // Bulk adds fill the journal's zeroed space, until one is refused.
    let mut acknowledged = 0u32;
    let refused = loop {
        let (status, body) = bulk(&d, acknowledged, 8192);
        if status != 200 || body["failed"].as_u64().unwrap_or(0) > 0 {
            break (status, body);
        }
        acknowledged += 8192;
        assert!(acknowledged < 1 << 20, "the disk never filled: {body}");
    };
    assert!(acknowledged > 0, "some went in first: {refused:?}");
    let (_, summary) = &refused;
    assert_eq!(summary["applied"], 0, "refused whole: {refused:?}");
    let why = summary["first_error"]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("no space left"), "{refused:?}");
    // Single adds take less room: they go on until the last bytes are used.
    let (status, body) = loop {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + acknowledged);
        let (status, body) = d.call(
            "POST",
            "/v1/drop",
            Some(json!({"cidr": format!("{ip}/32"), "tag": "", "expiration": 0})),
        );
        if status != 201 {
            break (status, body);
        }
        acknowledged += 1;
    };
    assert_eq!(status, 500, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no space left"),
        "the cause is named: {body}"
    );
    let ip = std::net::Ipv4Addr::from(0x0a00_0000 + acknowledged);
    assert!(!present(&d, &format!("{ip}/32")), "nothing was applied");
    let (_, stats) = d.call("GET", "/v1/stats", None);
    assert_eq!(stats["drop_cidr_count"], acknowledged, "{refused:?}");

    // Space again: the same add goes through; a restart keeps everything.
    fs::remove_file(&filler).unwrap();
    add(&d, "192.0.2.77/32");
    d.kill();
    d.spawn().unwrap();
    d.wait_ready().unwrap();
    let (_, stats) = d.call("GET", "/v1/stats", None);
    assert_eq!(stats["drop_cidr_count"], acknowledged + 1);
    let _ = api(&d);
}

#[test]
fn an_entry_put_back_at_start_still_expires() {
    let mut d = start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (status, body) = d.call(
        "POST",
        "/v1/drop",
        Some(json!({"cidr": "192.0.2.5/32", "tag": "", "expiration": now + 3})),
    );
    assert_eq!(status, 201, "{body}");
    stop(&mut d);
    d.spawn().unwrap();
    d.wait_ready().unwrap();
    assert!(
        present(&d, "192.0.2.5/32"),
        "put back before its expiration"
    );
    assert!(
        couic_testkit::wait_until(Duration::from_secs(10), || !present(&d, "192.0.2.5/32")),
        "the Expirer knows entries put back at start"
    );
}
