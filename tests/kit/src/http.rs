//! A real HTTP/1.1 server on loopback that records what it is sent and
//! answers as the test says: the stand-in for a webhook receiver, a chat
//! service or a peer. Keep-alive, `Content-Length` bodies only (what ureq
//! and the daemons send). Stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it was read in full.
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// How to answer a request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status, these headers, this body.
    Status(u16, Vec<(String, String)>, String),
    /// Close the connection without answering (a receiver that dies).
    Hang,
}

impl Answer {
    pub fn status(code: u16) -> Answer {
        Answer::Status(code, Vec::new(), String::new())
    }
}

type Script = dyn Fn(&Request, usize) -> Answer + Send + Sync;

struct Shared {
    requests: Mutex<Vec<Request>>,
    /// Given each request and how many came before it.
    script: Mutex<Arc<Script>>,
    /// While set, connections are closed as soon as they are accepted.
    down: AtomicBool,
    stop: AtomicBool,
}

pub struct HttpRecorder {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl HttpRecorder {
    /// Listens on 127.0.0.1 on a free port; answers 200 until told.
    pub fn start() -> HttpRecorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(Arc::new(|_: &Request, _| Answer::status(200))),
            down: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let serving = shared.clone();
        let thread = std::thread::spawn(move || accept_loop(listener, serving));
        HttpRecorder {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, answer with `script(request, requests before it)`.
    pub fn answer(&self, script: impl Fn(&Request, usize) -> Answer + Send + Sync + 'static) {
        *self.shared.script.lock().unwrap() = Arc::new(script);
    }

    /// While down, every connection is closed at once, unanswered.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Polls until `done(requests)` holds; panics after `patience`.
    pub fn wait_for(&self, patience: Duration, done: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        let deadline = Instant::now() + patience;
        loop {
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "the condition did not hold within {patience:?}; {} requests received",
                requests.len()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for HttpRecorder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if shared.down.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                let shared = shared.clone();
                std::thread::spawn(move || serve(stream, shared));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => return,
        }
    }
}

/// Requests of one connection, answered in turn until it closes.
fn serve(stream: TcpStream, shared: Arc<Shared>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let request = match read_request(&mut reader, &shared.stop) {
            Some(request) => request,
            None => return,
        };
        if shared.down.load(Ordering::SeqCst) {
            return;
        }
        let answer = {
            let mut requests = shared.requests.lock().unwrap();
            let script = shared.script.lock().unwrap().clone();
            let answer = script(&request, requests.len());
            requests.push(request);
            answer
        };
        match answer {
            Answer::Hang => return,
            Answer::Status(code, headers, body) => {
                let mut head = format!("HTTP/1.1 {code} X\r\nContent-Length: {}\r\n", body.len());
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                if writer.write_all(head.as_bytes()).is_err()
                    || writer.write_all(body.as_bytes()).is_err()
                {
                    return;
                }
            }
        }
    }
}

/// One request, or `None` when the connection closed (or the recorder
/// stops).
fn read_request(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<Request> {
    let mut line = String::new();
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut header = String::new();
        read_line_patiently(reader, &mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        if name == "content-length" {
            length = value.parse().ok()?;
        }
        headers.push((name, value));
    }
    let mut body = vec![0; length];
    let mut read = 0;
    while read < length {
        match reader.read(&mut body[read..]) {
            Ok(0) => return None,
            Ok(n) => read += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    Some(Request {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    })
}

fn read_line_patiently(reader: &mut BufReader<TcpStream>, line: &mut String) -> Option<()> {
    loop {
        match reader.read_line(line) {
            Ok(0) => return None,
            Ok(_) => return Some(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
}
