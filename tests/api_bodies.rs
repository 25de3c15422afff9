//! Request bodies cannot hold a connection: a body trickled past its
//! deadline is answered 408 (the envelope), and a declared Content-Length
//! over the route's limit is refused before the body is read, with the
//! status the route gives any body too large (§4, §4.5). Over the real
//! socket, byte by byte.

mod api_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use api_support::*;
use serde_json::Value;

/// Every route that reads a body: (method, path, operationId).
const BODY_ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/v1/drop", "addEntry"),
    ("POST", "/v1/drop/peer", "peerBatch"),
    ("PUT", "/v1/drop/peer/shard/0", "peerShard"),
    ("POST", "/v1/drop/bulk", "bulk"),
    ("POST", "/v1/client", "createClient"),
    ("POST", "/v1/sets/drop", "createSet"),
    ("PUT", "/v1/sets/drop/x", "updateSet"),
];

/// How long a test waits for an answer that should come at once.
const PATIENCE: Duration = Duration::from_secs(5);

fn connect(d: &Daemon) -> UnixStream {
    let stream = UnixStream::connect(&d.socket).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

fn head(d: &Daemon, method: &str, path: &str, length: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        d.admin
    )
}

/// Status, content type and body of the one response on `stream`.
fn response(stream: &mut UnixStream) -> (u16, String, String) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let headers = &text[..end].to_ascii_lowercase();
            let length: usize = headers
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if raw.len() >= end + 4 + length {
                let status = text[9..12].parse().unwrap();
                let ctype = headers
                    .lines()
                    .find_map(|l| l.strip_prefix("content-type:"))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                return (status, ctype, text[end + 4..end + 4 + length].to_string());
            }
        }
        let n = stream
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("no answer ({e}); read so far: {text:?}"));
        assert!(n > 0, "closed without an answer: {text:?}");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Whether the daemon closed the connection (EOF or a reset) rather than
/// left it open (the read times out).
fn closed(stream: &mut UnixStream) -> bool {
    use std::io::ErrorKind::{ConnectionReset, WouldBlock};
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) if e.kind() == ConnectionReset => true,
        Err(e) if e.kind() == WouldBlock => false,
        Err(e) => panic!("{e}"),
    }
}

fn documented(id: &str, status: u16) -> bool {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .find(|op| op["operationId"] == id)
        .unwrap_or_else(|| panic!("{id}"))["responses"]
        .get(status.to_string())
        .is_some()
}

#[test]
fn a_body_trickled_past_its_deadline_is_408() {
    let deadline = Duration::from_millis(500);
    let d = Daemon::start_body_deadline(deadline);
    for (method, path, id) in BODY_ROUTES {
        let mut stream = connect(&d);
        stream
            .write_all(head(&d, method, path, "100").as_bytes())
            .unwrap();
        let started = Instant::now();
        // A byte every 50 ms: 100 bytes would take 5 s.
        let mut writer = stream.try_clone().unwrap();
        let trickle = std::thread::spawn(move || {
            for _ in 0..100 {
                if writer.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let (status, ctype, body) = response(&mut stream);
        let took = started.elapsed();
        assert_eq!(status, 408, "{method} {path}: {body}");
        assert_eq!(ctype, "application/json", "{method} {path}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], "bad_request", "{body}");
        assert_eq!(
            body["message"], "Request body not received within 0.5 seconds",
            "{body}"
        );
        assert_eq!(body["errors"], serde_json::json!({}));
        assert!(took >= deadline && took < 3 * deadline, "{took:?}");
        assert!(closed(&mut stream), "{method} {path}: the connection goes");
        drop(stream);
        trickle.join().unwrap();
        assert!(documented(id, 408), "{id} documents 408");
    }
    // A body on time is served as ever.
    assert_eq!(d.admin().add("drop", "192.0.2.1/32", None, 0).status, 201);
}

#[test]
fn a_declared_length_over_the_limit_is_refused_unread() {
    let d = Daemon::start();
    let huge = u64::MAX.to_string();
    let bulk_limit = (couic::api::bulk::BULK_BODY_LIMIT + 1).to_string();
    let cases: &[(&str, &str, &str, u16)] = &[
        ("POST", "/v1/drop", &huge, 400),
        ("POST", "/v1/client", &huge, 400),
        ("POST", "/v1/sets/drop", &huge, 400),
        ("PUT", "/v1/sets/drop/x", &huge, 400),
        ("POST", "/v1/drop/bulk", &huge, 400),
        ("POST", "/v1/drop/bulk", &bulk_limit, 400),
        ("POST", "/v1/drop/peer", &huge, 413),
        ("PUT", "/v1/drop/peer/shard/0", &huge, 413),
    ];
    for (method, path, length, expected) in cases {
        let mut stream = connect(&d);
        let started = Instant::now();
        stream
            .write_all(head(&d, method, path, length).as_bytes())
            .unwrap();
        let (status, ctype, body) = response(&mut stream);
        assert_eq!(status, *expected, "{method} {path}: {body}");
        assert!(started.elapsed() < PATIENCE, "answered at once");
        if status == 400 {
            assert_eq!(ctype, "application/json");
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["code"], "bad_request");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("Invalid JSON format: "),
                "{body}"
            );
        } else {
            assert!(ctype.starts_with("text/plain"), "{ctype}");
            assert!(body.contains("length limit exceeded"), "{body}");
        }
        assert!(closed(&mut stream), "{method} {path}: the connection goes");
    }
}
