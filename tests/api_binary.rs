//! The real `couic` binary: startup creates the layout and the default
//! client, serves on its socket (stale file replaced, mode 0660), and on
//! SIGTERM stops and removes the socket; a bad client file stops startup
//! with its path and reason.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use couic_testkit::{status_field, wait_until, Daemon, Spec};
use serde_json::json;

/// How long a start that must fail, or a stop, may take.
const EXIT: Duration = Duration::from_secs(20);

fn prepare() -> Daemon {
    Daemon::new(Spec::new(env!("CARGO_BIN_EXE_couic")).env("RUST_LOG", "info")).unwrap()
}

#[test]
fn serves_on_its_socket_and_cleans_up_on_sigterm() {
    let mut d = prepare();
    // A stale socket left by a killed daemon.
    drop(UnixListener::bind(d.socket()).unwrap());
    d.spawn().unwrap();
    d.wait_ready().unwrap();

    assert_eq!(fs::metadata(d.socket()).unwrap().mode() & 0o7777, 0o660);
    for sub in ["rbac", "rbac/clients", "sets", "sets/drop", "sets/ignore"] {
        assert_eq!(
            fs::metadata(d.work().join(sub)).unwrap().mode() & 0o7777,
            0o755,
            "{sub}"
        );
    }
    let token = d.token().to_string();
    let mut api = d.api();
    let body = json!({"cidr": "192.0.2.0/24", "tag": "bin", "expiration": 0});
    let (status, entry) = api.json("POST", "/v1/drop", Some(&body));
    assert_eq!(status, 201, "{entry}");
    let (status, stats) = api.json("GET", "/v1/stats", None);
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["drop_cidr_count"], 1);

    d.sigterm().unwrap();
    let status = d.wait_exit(EXIT).unwrap();
    assert!(status.success(), "{status:?}: {}", d.log());
    assert!(!d.socket().exists(), "socket removed on shutdown");

    // A second start keeps the default client: the first token still works.
    d.spawn().unwrap();
    d.wait_ready().unwrap();
    assert_eq!(d.token(), token, "the default client file is kept");
    assert_eq!(
        d.call_as(&token, "GET", "/v1/drop", None),
        (200, json!([entry])),
        "entries persist, creation and all"
    );
    d.sigterm().unwrap();
    assert!(d.wait_exit(EXIT).unwrap().success(), "{}", d.log());
}

#[test]
fn a_bad_client_file_stops_startup_with_its_path_and_reason() {
    let mut d = prepare();
    let clients = d.work().join("rbac/clients");
    fs::create_dir_all(&clients).unwrap();
    for dir in [d.work().join("rbac"), clients.clone()] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bad = clients.join("broken.toml");
    fs::write(&bad, "token = \"not-a-uuid\"\ngroup = \"admin\"\n").unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
    let (status, text) = d.run_to_exit(EXIT).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("Failed to instantiate RBAC service"),
        "{text}"
    );
    assert!(
        text.contains(&bad.display().to_string()) && text.contains("token"),
        "{text}"
    );
    assert!(!d.socket().exists());

    fs::write(
        &bad,
        format!("token = \"{}\"\ngroup = \"admin\"\n", uuid::Uuid::new_v4()),
    )
    .unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o644)).unwrap();
    let (status, text) = d.run_to_exit(EXIT).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(&bad.display().to_string()) && text.contains("wrong permissions"),
        "{text}"
    );
}

#[test]
fn a_wrong_directory_mode_stops_startup() {
    let mut d = prepare();
    fs::create_dir(d.work().join("rbac")).unwrap();
    fs::set_permissions(d.work().join("rbac"), fs::Permissions::from_mode(0o777)).unwrap();
    let (status, text) = d.run_to_exit(EXIT).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("Error initializing default directories") && text.contains("rbac"),
        "{text}"
    );
}

/// Bytes written on `stream` that the peer has not read yet (SIOCOUTQ:
/// a Unix socket's sent data stays charged to the sender until read).
fn unread(stream: &std::os::unix::net::UnixStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer, which
    // points to a live c_int; the fd is open for the call.
    let ret = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(ret, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    usize::try_from(n).unwrap()
}

#[test]
fn graceful_stop_answers_the_request_in_flight() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixStream;

    let mut d = prepare();
    d.spawn().unwrap();
    d.wait_ready().unwrap();

    let mut stream = UnixStream::connect(d.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let body = br#"{"cidr":"192.0.2.0/24","expiration":0}"#;
    let head = format!(
        "POST /v1/drop HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        d.token(),
        body.len()
    );
    // Half the request, then the signal, then the rest.
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..10]).unwrap();
    stream.flush().unwrap();
    // The signal must find the request in a worker's hands: wait until the
    // daemon has read everything sent so far.
    assert!(
        wait_until(EXIT, || unread(&stream) == 0),
        "the daemon did not read the request head: {} bytes unread",
        unread(&stream)
    );
    d.sigterm().unwrap();
    // And the stop must have begun before the rest of the body arrives.
    assert!(
        wait_until(EXIT, || d.log().contains("shutting down")),
        "no shutdown after SIGTERM: {}",
        d.log()
    );
    assert_eq!(d.exited().unwrap(), None, "still serving the request");
    stream.write_all(&body[10..]).unwrap();

    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 201"), "{status}");
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    drop(reader);
    assert!(d.wait_exit(EXIT).unwrap().success(), "{}", d.log());
    assert!(!d.socket().exists());
}

/// SIGTERM sends what is queued for the webhook before the daemon exits,
/// even while a backoff would hold it for seconds; the webhook's secret
/// path never reaches the log.
#[test]
fn sigterm_flushes_queued_reports() {
    use couic_testkit::http::{Answer, HttpRecorder};
    let receiver = HttpRecorder::start();
    receiver.answer(|_, _| Answer::status(503));
    let webhook = receiver.url("/v1/reports/s3cr3t-path");
    let spec = Spec::new(env!("CARGO_BIN_EXE_couic"))
        .env("RUST_LOG", "info")
        .extra(&format!(
            "[reporting]\nenabled = true\nwebhook = \"{webhook}\"\n"
        ));
    let mut d = Daemon::new(spec).unwrap();
    d.spawn().unwrap();
    d.wait_ready().unwrap();
    let body = json!({"cidr": "192.0.2.0/24", "tag": "bin", "expiration": 0});
    let (status, _) = d.api().json("POST", "/v1/drop", Some(&body));
    assert_eq!(status, 201);
    // Three failures: the next try would be 4 s away.
    receiver.wait_for(EXIT, |r| r.len() >= 3);
    receiver.answer(|_, _| Answer::status(200));
    d.sigterm().unwrap();
    assert!(d.wait_exit(EXIT).unwrap().success());
    let requests = receiver.requests();
    let last = requests.last().unwrap();
    assert_eq!(requests.len(), 4, "flushed once, at the stop");
    assert_eq!(last.json()[0]["entry"]["cidr"], "192.0.2.0/24");
    let log = d.log();
    assert!(
        log.contains("sent 1 queued reports before stopping"),
        "{log}"
    );
    assert!(!log.contains("s3cr3t"), "{log}");
}

/// The daemon's anonymous resident memory, in kB.
fn rss_anon_kb(pid: u32) -> u64 {
    status_field(pid, "RssAnon").parse().unwrap()
}

#[test]
fn the_memory_a_burst_freed_goes_back_once_it_is_over() {
    let spec = Spec::new(env!("CARGO_BIN_EXE_couic")).limits(65_536, 1024);
    let mut d = Daemon::new(spec).unwrap();
    d.spawn().unwrap();
    d.wait_ready().unwrap();
    let mut api = d.api();
    let cidrs: Vec<String> = (0..65_536u32)
        .map(|i| format!("10.{}.{}.{}/32", (i >> 16) & 255, (i >> 8) & 255, i & 255))
        .collect();
    // The burst: 65,536 hosts added, then removed, 16,384 a request. The
    // most memory seen between its requests, none trimmed meanwhile (a
    // trim waits for a quiet half second).
    let mut most = 0;
    for chunk in cidrs.chunks(16_384) {
        let adds: Vec<_> = chunk
            .iter()
            .map(|c| json!({"cidr": c, "expiration": 0}))
            .collect();
        let (status, _) = api.json("POST", "/v1/drop/bulk", Some(&json!({"add": adds})));
        assert_eq!(status, 200);
        most = most.max(rss_anon_kb(d.pid()));
    }
    let (_, stats) = api.json("GET", "/v1/stats", None);
    assert_eq!(stats["drop_cidr_count"], 65_536, "{stats}");
    for chunk in cidrs.chunks(16_384) {
        let (status, _) = api.json("POST", "/v1/drop/bulk", Some(&json!({"remove": chunk})));
        assert_eq!(status, 200);
        most = most.max(rss_anon_kb(d.pid()));
    }
    // Without the trim, glibc keeps what the burst freed: the figure stays.
    let back = wait_until(Duration::from_secs(10), || {
        rss_anon_kb(d.pid()) + 1_500 <= most
    });
    assert!(
        back,
        "RssAnon stayed at {} kB after a burst that reached {most} kB",
        rss_anon_kb(d.pid())
    );
}
