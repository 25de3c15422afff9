//! The real `couic` binary: startup creates the layout and the default
//! client, serves on its socket (stale file replaced, mode 0660), and on
//! SIGTERM stops and removes the socket; a bad client file stops startup
//! with its path and reason.

mod api_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use api_support::json;
use couic_common::uds::UdsClient;

const COUIC: &str = env!("CARGO_BIN_EXE_couic");

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
    work: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir(&work).unwrap();
    let socket = dir.path().join("couic.sock");
    let text = format!(
        "ifaces = []\nworking_dir = \"{}\"\nuser = \"root\"\ngroup = \"root\"\n[server]\nsocket = \"{}\"\n\
         [limits]\ndrop_max_entries = 1024\nignore_max_entries = 1024\n",
        work.display(),
        socket.display()
    );
    let config = dir.path().join("couic.toml");
    fs::write(&config, text).unwrap();
    Setup {
        dir,
        config,
        socket,
        work,
    }
}

fn spawn(setup: &Setup) -> Child {
    let log = fs::File::create(setup.dir.path().join("out.log")).unwrap();
    Command::new(COUIC)
        .arg("-c")
        .arg(&setup.config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Polls until the daemon answers on its socket.
fn wait_ready(socket: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut client = UdsClient::new(socket, Duration::from_secs(5));
        if let Ok(resp) = client.request("GET", "/v1/stats", &[], None) {
            assert_eq!(resp.status, 401);
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "couic exited during startup"
        );
        assert!(Instant::now() < deadline, "couic did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "couic did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &Child) {
    // SAFETY: kill with a pid this test spawned and still owns.
    let ret = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(ret, 0);
}

#[test]
fn serves_on_its_socket_and_cleans_up_on_sigterm() {
    let s = setup();
    // A stale socket left by a killed daemon.
    drop(UnixListener::bind(&s.socket).unwrap());
    let mut child = spawn(&s);
    wait_ready(&s.socket, &mut child);

    assert_eq!(fs::metadata(&s.socket).unwrap().mode() & 0o7777, 0o660);
    for sub in ["rbac", "rbac/clients", "sets", "sets/drop", "sets/ignore"] {
        assert_eq!(
            fs::metadata(s.work.join(sub)).unwrap().mode() & 0o7777,
            0o755,
            "{sub}"
        );
    }
    let text = fs::read_to_string(s.work.join("rbac/clients/couicctl.toml")).unwrap();
    let token = text.split('"').nth(1).unwrap().to_string();
    let auth = format!("Bearer {token}");
    let mut client = UdsClient::new(&s.socket, Duration::from_secs(5));
    let body = br#"{"cidr":"192.0.2.0/24","tag":"bin","expiration":0}"#;
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let resp = client
        .request("POST", "/v1/drop", &headers, Some(body))
        .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    let resp = client
        .request("GET", "/v1/stats", &headers[..1], None)
        .unwrap();
    assert_eq!(json(&resp)["drop_cidr_count"], 1);

    sigterm(&child);
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
    assert!(!s.socket.exists(), "socket removed on shutdown");

    // A second start keeps the default client.
    let mut child = spawn(&s);
    wait_ready(&s.socket, &mut child);
    let resp = UdsClient::new(&s.socket, Duration::from_secs(5))
        .request("GET", "/v1/drop", &headers[..1], None)
        .unwrap();
    assert_eq!(
        (resp.status, json(&resp)),
        (200, serde_json::json!([])),
        "entries do not persist"
    );
    sigterm(&child);
    assert!(wait_exit(&mut child).success());
}

fn run_to_exit(s: &Setup) -> (Output, String) {
    let out = Command::new(COUIC)
        .arg("-c")
        .arg(&s.config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

#[test]
fn a_bad_client_file_stops_startup_with_its_path_and_reason() {
    let s = setup();
    let clients = s.work.join("rbac/clients");
    fs::create_dir_all(&clients).unwrap();
    for dir in [s.work.join("rbac"), clients.clone()] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bad = clients.join("broken.toml");
    fs::write(&bad, "token = \"not-a-uuid\"\ngroup = \"admin\"\n").unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
    let (out, text) = run_to_exit(&s);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Failed to instantiate RBAC service"),
        "{text}"
    );
    assert!(
        text.contains(&bad.display().to_string()) && text.contains("token"),
        "{text}"
    );
    assert!(!s.socket.exists());

    fs::write(
        &bad,
        format!("token = \"{}\"\ngroup = \"admin\"\n", uuid::Uuid::new_v4()),
    )
    .unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o644)).unwrap();
    let (out, text) = run_to_exit(&s);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains(&bad.display().to_string()) && text.contains("wrong permissions"),
        "{text}"
    );
}

#[test]
fn a_wrong_directory_mode_stops_startup() {
    let s = setup();
    fs::create_dir(s.work.join("rbac")).unwrap();
    fs::set_permissions(s.work.join("rbac"), fs::Permissions::from_mode(0o777)).unwrap();
    let (out, text) = run_to_exit(&s);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains("Error initializing default directories") && text.contains("rbac"),
        "{text}"
    );
}

#[test]
fn graceful_stop_answers_the_request_in_flight() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixStream;

    let s = setup();
    let mut child = spawn(&s);
    wait_ready(&s.socket, &mut child);
    let text = fs::read_to_string(s.work.join("rbac/clients/couicctl.toml")).unwrap();
    let token = text.split('"').nth(1).unwrap().to_string();

    let mut stream = UnixStream::connect(&s.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let body = br#"{"cidr":"192.0.2.0/24","expiration":0}"#;
    let head = format!(
        "POST /v1/drop HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // Half the request, then the signal, then the rest.
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..10]).unwrap();
    stream.flush().unwrap();
    // Give the worker time to take the connection before the signal; the
    // outcome does not depend on this delay, only the path taken does.
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(100));
    stream.write_all(&body[10..]).unwrap();

    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 201"), "{status}");
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    drop(reader);
    assert!(wait_exit(&mut child).success());
    assert!(!s.socket.exists());
}
