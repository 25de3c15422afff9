//! (d) Webhook reports (`--only reports`): the release daemon reporting to
//! the release couic-report on loopback.
//!
//! 1. Single adds with reporting on, to a live couic-report, against the
//!    same daemon build with reporting off; the two take turns.
//! 2. 100,000 entries through the bulk route: from the last API answer to
//!    couic-report having counted the last report.
//! 3. couic-report alone: batches of 5,000 reports posted as a daemon
//!    does, reports per second.
//! 4. Daemon memory through a 60 s outage of the receiver while 5,000
//!    changes a second are made, against its memory before.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use couic_testkit::Daemon;

use crate::api::{self, FULL};
use crate::daemon::{self, rss, Binaries};
use crate::report::{Figure, Goal, Section};
use crate::Settings;

const SECRET: &str = "4b1f2d8e-6a53-4c1e-9f7a-0d2b5c3e8a91";
const MB: f64 = 1e6;

pub fn method(settings: &Settings) -> String {
    format!(
        "The release `couic` and `couic-report`, started by the bench on loopback. *Single adds*: \
         as in the control plane ({} requests per connection), on a daemon reporting to a live \
         couic-report and on one with no `[reporting]`, in turns, a fresh daemon each turn, \
         best of 2 each. *Bulk to \
         receiver*: 100,000 adds in bulk requests of 16,384, then polling couic-report's \
         `couic_report_reports_received_total` until it counts them all. *couic-report intake*: \
         20 POSTs of 5,000 reports on 2 keep-alive connections. *Outage*: the webhook points at \
         a closed loopback port for 60 s while 5,000 adds or deletes a second are made; VmRSS \
         before and its highest during.",
        settings.api_requests
    )
}

pub fn run(settings: &Settings) -> anyhow::Result<Section> {
    let bins = Binaries::build()?;
    let mut section = Section::goals("Webhook reports", method(settings));
    let receiver = Receiver::start(&bins.couic_report)?;
    single_adds(&bins, settings, &receiver, &mut section)?;
    bulk_to_receiver(&bins, &receiver, &mut section)?;
    intake(&receiver, &mut section)?;
    outage(&bins, &mut section)?;
    Ok(section)
}

/// `[reporting]` to `url`.
fn reporting(url: &str) -> String {
    format!("[reporting]\nenabled = true\nwebhook = \"{url}\"\n")
}

fn single_adds(
    bins: &Binaries,
    settings: &Settings,
    receiver: &Receiver,
    section: &mut Section,
) -> anyhow::Result<()> {
    let (mut best_off, mut best_on) = (0f64, 0f64);
    // Fresh daemons each round: a round fills a good part of the map.
    for _ in 0..2 {
        let off = daemon::start(bins)?;
        best_off = best_off.max(api::single_adds(&off, settings.api_requests, 0)?);
        drop(off);
        let on = Daemon::start(daemon::spec(bins).extra(&reporting(&receiver.webhook())))?;
        best_on = best_on.max(api::single_adds(&on, settings.api_requests, 0)?);
    }
    section.push(Figure::ratio(
        "single adds with reports to couic-report",
        "req/s",
        best_on,
        best_off,
        "without reporting",
        Goal::AtLeast(0.9),
    ));
    Ok(())
}

fn bulk_to_receiver(
    bins: &Binaries,
    receiver: &Receiver,
    section: &mut Section,
) -> anyhow::Result<()> {
    const N: usize = 100_000;
    let daemon = Daemon::start(daemon::spec(bins).extra(&reporting(&receiver.webhook())))?;
    let before = receiver.received()?;
    let cidrs = api::hosts(u32::from(std::net::Ipv4Addr::new(20, 0, 0, 0)), N);
    api::send_bulk(&daemon, "drop", api::add_bodies(&cidrs, 0), 1)?;
    let answered = Instant::now();
    let deadline = answered + Duration::from_secs(30);
    while receiver.received()? < before + N as u64 {
        if Instant::now() > deadline {
            bail!(
                "couic-report counted {} of {N} reports after 30 s",
                receiver.received()? - before
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    section.push(Figure::limit(
        "100,000 bulk adds: last API answer to the last report counted by couic-report",
        "s",
        answered.elapsed().as_secs_f64(),
        Goal::AtMost(1.0),
    ));
    Ok(())
}

/// Reports posted straight to couic-report, as our daemon sends them.
fn intake(receiver: &Receiver, section: &mut Section) -> anyhow::Result<()> {
    const PER_POST: usize = 5_000;
    const POSTS: usize = 20;
    let body = batch_body(PER_POST);
    let before = receiver.received()?;
    let start = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (port, body) = (receiver.port, body.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut conn = TcpStream::connect(("127.0.0.1", port))?;
                for i in 0..POSTS / 2 {
                    let id = format!("bench-{t}-{i}");
                    post(&mut conn, &format!("/v1/reports/{SECRET}"), &id, &body)?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().expect("intake thread")?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.received()? < before + (PER_POST * POSTS) as u64 {
        if Instant::now() > deadline {
            bail!("couic-report did not count the intake reports");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let rate = (PER_POST * POSTS) as f64 / start.elapsed().as_secs_f64();
    section.push(Figure::limit(
        "couic-report intake, batches of 5,000",
        "reports/s",
        rate,
        Goal::AtLeast(100_000.0),
    ));
    Ok(())
}

fn outage(bins: &Binaries, section: &mut Section) -> anyhow::Result<()> {
    // A port nobody listens on: bound, then closed.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}/v1/reports/{SECRET}");
    let daemon = Daemon::start(daemon::spec(bins).extra(&reporting(&url)))?;
    let mut conn = daemon.api();
    // Warm: a first wave through the add path and the queue.
    let warm = api::hosts(u32::from(std::net::Ipv4Addr::new(30, 0, 0, 0)), 5_000);
    for c in &warm {
        let body = format!(r#"{{"cidr":"{c}","expiration":0}}"#);
        conn.expect("POST", "/v1/drop", Some(body.as_bytes()), 201)?;
    }
    std::thread::sleep(Duration::from_secs(1));
    let (before, _) = rss(&daemon)?;
    let cidrs = api::hosts(u32::from(std::net::Ipv4Addr::new(40, 0, 0, 0)), FULL / 4);
    let mut peak = before;
    let start = Instant::now();
    let mut made = 0usize;
    while start.elapsed() < Duration::from_secs(60) {
        // 5,000 changes a second: adds, then deletes of the same hosts.
        let second = start.elapsed().as_secs() as usize;
        while made < (second + 1) * 5_000 {
            let c = cidrs[(made / 2) % cidrs.len()];
            if made.is_multiple_of(2) {
                let body = format!(r#"{{"cidr":"{c}","expiration":0}}"#);
                conn.expect("POST", "/v1/drop", Some(body.as_bytes()), 201)?;
            } else {
                let path = format!("/v1/drop/{}/{}", c.addr(), c.prefix_len());
                conn.expect("DELETE", &path, None, 204)?;
            }
            made += 1;
        }
        peak = peak.max(rss(&daemon)?.0);
        std::thread::sleep(Duration::from_millis(50));
    }
    section.push(Figure::limit(
        format!("RSS growth through a 60 s receiver outage, {made} changes"),
        "MB",
        peak.saturating_sub(before) as f64 / MB,
        Goal::AtMost(16.0),
    ));
    Ok(())
}

/// One JSON array of `n` add reports.
fn batch_body(n: usize) -> String {
    let reports: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"action":"add","policy":"drop","entry":{{"creation":1700000000,"cidr":"10.{}.{}.{}/32","tag":"bench","expiration":0}},"metadata":null}}"#,
                i >> 16,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect();
    format!("[{}]", reports.join(","))
}

/// One keep-alive POST; the answer must be a 200.
fn post(conn: &mut TcpStream, path: &str, batch: &str, body: &str) -> anyhow::Result<()> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         User-Agent: couic/bench\r\nX-Couic-Batch: {batch}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    let (status, _) = read_answer(conn)?;
    if status != 200 {
        bail!("couic-report answered {status}");
    }
    Ok(())
}

/// Status and body of one HTTP/1.1 answer with a Content-Length.
fn read_answer(conn: &mut TcpStream) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            bail!("couic-report closed the connection");
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("a status line")?
        .parse()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok((status, body))
}

/// couic-report on a free loopback port, killed on drop.
struct Receiver {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start(bin: &Path) -> anyhow::Result<Receiver> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "batch_interval_secs = 3600\n[server]\nname = \"bench\"\naddr = \"127.0.0.1\"\n\
                 port = {port}\nsecret = \"{SECRET}\"\n"
            ),
        )?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let receiver = Receiver {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while receiver.received().is_err() {
            if Instant::now() > deadline {
                bail!("couic-report did not answer on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(receiver)
    }

    fn webhook(&self) -> String {
        format!("http://127.0.0.1:{}/v1/reports/{SECRET}", self.port)
    }

    /// `couic_report_reports_received_total` from its `/metrics`.
    fn received(&self) -> anyhow::Result<u64> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port))?;
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let (status, body) = read_answer(&mut conn)?;
        if status != 200 {
            bail!("GET /metrics: {status}");
        }
        let text = String::from_utf8(body)?;
        text.lines()
            .find_map(|l| l.strip_prefix("couic_report_reports_received_total "))
            .context("no couic_report_reports_received_total")?
            .trim()
            .parse()
            .context("a count")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
