//! A fake couic daemon for couicctl's integration tests: an HTTP/1.1 server
//! on a Unix socket (or loopback TCP) that records every request and answers
//! with whatever the test's handler returns. Plain std threads, no runtime.

#![allow(dead_code)] // Each test file uses part of it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use couic_testkit::ctl::{self, Out};
use serde_json::Value;

pub const TOKEN: &str = "6f1c2b9a-3d4e-4f50-8a6b-7c8d9e0f1a2b";
pub const BIN: &str = env!("CARGO_BIN_EXE_couicctl");

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, value: Value) -> Reply {
        Reply {
            status,
            content_type: Some("application/json"),
            body: serde_json::to_vec(&value).unwrap(),
        }
    }

    pub fn text(status: u16, text: &str) -> Reply {
        Reply {
            status,
            content_type: Some("text/plain; charset=utf-8"),
            body: text.as_bytes().to_vec(),
        }
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            content_type: None,
            body: Vec::new(),
        }
    }

    /// The contract's error envelope.
    pub fn envelope(status: u16, code: &str, message: &str, errors: Value) -> Reply {
        Reply::json(
            status,
            serde_json::json!({"code": code, "message": message, "errors": errors}),
        )
    }
}

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;
type Log = Arc<Mutex<Vec<Recorded>>>;

/// Serves one connection until the client closes it (keep-alive allowed).
fn serve<S: Read + Write>(stream: S, handler: &Handler, log: &Log) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Recorded {
            method,
            path,
            headers,
            body,
        };
        let reply = handler(&request);
        log.lock().unwrap().push(request);

        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        if let Some(ct) = reply.content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str("\r\n");
        let stream = reader.get_mut();
        if stream.write_all(head.as_bytes()).is_err() || stream.write_all(&reply.body).is_err() {
            return;
        }
        let _ = stream.flush();
    }
}

/// A fake daemon on a Unix socket, with a local-mode configuration for it.
pub struct FakeDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    log: Log,
}

impl FakeDaemon {
    pub fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> FakeDaemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("couic.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let handler: Handler = Arc::new(handler);
        let log: Log = Arc::default();
        let (h, l) = (handler.clone(), log.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (h, l) = (h.clone(), l.clone());
                thread::spawn(move || serve(stream, &h, &l));
            }
        });
        let client_file = dir.path().join("couicctl.toml");
        std::fs::write(
            &client_file,
            format!("token = \"{TOKEN}\"\ngroup = \"admin\"\n"),
        )
        .unwrap();
        let config = dir.path().join("couicctl-local.toml");
        ctl::write_local_config(&config, &socket, &client_file);
        FakeDaemon {
            dir,
            socket,
            config,
            log,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// The only request the test expects.
    pub fn request(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected one request, got {all:?}");
        all.into_iter().next().unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Out {
        run_with(&self.config, args, &[])
    }
}

/// A fake HTTP server on 127.0.0.1 (remote mode, RIPEstat).
pub struct FakeTcp {
    pub port: u16,
    log: Log,
}

impl FakeTcp {
    pub fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> FakeTcp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handler: Handler = Arc::new(handler);
        let log: Log = Arc::default();
        let (h, l) = (handler.clone(), log.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (h, l) = (h.clone(), l.clone());
                thread::spawn(move || serve(stream, &h, &l));
            }
        });
        FakeTcp { port, log }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }
}

/// Runs this crate's couicctl with `-c config`, `args` and `env` added.
pub fn run_with(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    ctl::run(Path::new(BIN), config, args, env)
}

/// An `Entry` as the API returns it.
pub fn entry(cidr: &str, tag: Value, expiration: u64) -> Value {
    serde_json::json!({"creation": 1_700_000_000u64, "cidr": cidr, "tag": tag, "expiration": expiration})
}
