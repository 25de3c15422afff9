//! What the integration tests share: the real couic-report binary on a free
//! loopback port, a client, and a small HTTP server standing in for Discord
//! or a webhook, which records what it gets and answers from a script.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub const SECRET: &str = "5b8f3c1e-2a4d-4f6b-9c7e-1d2f3a4b5c6d";
pub const BIN: &str = env!("CARGO_BIN_EXE_couic-report");
/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` until it returns `Some`, or panics with `what`.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running couic-report, killed on drop.
pub struct Receiver {
    pub port: u16,
    child: RefCell<Child>,
    dir: TempDir,
}

impl Receiver {
    /// Starts the binary with `[server]` on a free port and `rest` around it
    /// (top-level keys and other tables), and waits until it answers.
    pub fn start(rest: &str) -> Receiver {
        let port = free_port();
        let config = format!(
            "{rest}\n[server]\nname = \"edge-test\"\nport = {port}\nsecret = \"{SECRET}\"\n"
        );
        let receiver = Receiver::spawn(&config, port);
        eventually("couic-report to answer", || {
            if let Some(status) = receiver.exited() {
                panic!("couic-report exited ({status}):\n{}", receiver.logs());
            }
            let (status, _) = get(&receiver.url("/metrics"));
            (status == 200).then_some(())
        });
        receiver
    }

    /// Starts the binary with exactly `config`, without waiting.
    pub fn spawn(config: &str, port: u16) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).unwrap();
        let out = std::fs::File::create(dir.path().join("out.log")).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(BIN)
            .arg("-c")
            .arg(&path)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap();
        Receiver {
            port,
            child: RefCell::new(child),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn reports_url(&self) -> String {
        self.url(&format!("/v1/reports/{SECRET}"))
    }

    pub fn exited(&self) -> Option<ExitStatus> {
        self.child.borrow_mut().try_wait().unwrap()
    }

    /// Waits for the process to end by itself.
    pub fn wait(self) -> (ExitStatus, String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.exited() {
                return (status, self.logs());
            }
            assert!(Instant::now() < deadline, "couic-report did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it printed so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("out.log")
    }

    pub fn metrics(&self) -> String {
        let (status, body) = get(&self.url("/metrics"));
        assert_eq!(status, 200);
        body
    }

    /// The value of one sample, `name` with its labels as printed.
    pub fn metric(&self, sample: &str) -> f64 {
        metric(&self.metrics(), sample)
    }

    /// Waits until `sample` reads `value`.
    pub fn wait_metric(&self, sample: &str, value: f64) {
        eventually(&format!("{sample} = {value}"), || {
            (self.metric(sample) == value).then_some(())
        });
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One sample's value in a metrics text; 0 when absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

pub fn get(url: &str) -> (u16, String) {
    match agent().get(url).call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(_) => (0, String::new()),
    }
}

/// POSTs `body` as a reference daemon does (§11.2), plus `headers`.
pub fn post(url: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = agent()
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .header("User-Agent", "couic/1.0.2");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let mut r = req.send(body).unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap_or_default())
}

/// `n` add reports in the reference's shape, tagged `tag` (or `null`).
pub fn adds(n: usize, tag: Option<&str>) -> Value {
    let reports: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "action": "add",
                "policy": "drop",
                "entry": {
                    "creation": 1_765_000_000u64,
                    "cidr": format!("10.{}.{}.{}/32", i / 65536 % 256, i / 256 % 256, i % 256),
                    "tag": tag,
                    "expiration": 0
                },
                "metadata": null
            })
        })
        .collect();
    Value::Array(reports)
}

pub fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub body: Value,
}

/// An answer of the stand-in.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn json(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
        }
    }
}

#[derive(Default)]
struct Log {
    received: Vec<Received>,
    script: VecDeque<Answer>,
}

/// A loopback HTTP/1.1 server that records each request and answers the
/// next scripted [`Answer`], or 204 once the script is spent.
pub struct StandIn {
    pub port: u16,
    shared: Arc<(Mutex<Log>, Condvar)>,
}

impl StandIn {
    pub fn start(script: Vec<Answer>) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new((
            Mutex::new(Log {
                received: Vec::new(),
                script: script.into(),
            }),
            Condvar::new(),
        ));
        let serving = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = serving.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        StandIn { port, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `n` requests have arrived and returns them all.
    pub fn wait_for(&self, n: usize) -> Vec<Received> {
        let (log, cond) = &*self.shared;
        let deadline = Instant::now() + PATIENCE;
        let mut guard = log.lock().unwrap();
        while guard.received.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "stand-in got {} of {n} requests",
                guard.received.len()
            );
            guard = cond.wait_timeout(guard, left).unwrap().0;
        }
        guard.received.clone()
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.0.lock().unwrap().received.clone()
    }
}

fn serve(stream: TcpStream, shared: &(Mutex<Log>, Condvar)) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let (log, cond) = shared;
        let answer = {
            let mut log = log.lock().unwrap();
            log.received.push(Received {
                at: Instant::now(),
                path,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
            cond.notify_all();
            log.script.pop_front().unwrap_or(Answer::status(204))
        };
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            answer.status,
            answer.body.len()
        );
        for (name, value) in &answer.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if stream.write_all(head.as_bytes()).is_err()
            || stream.write_all(answer.body.as_bytes()).is_err()
        {
            return;
        }
    }
}
