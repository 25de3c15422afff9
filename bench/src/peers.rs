//! (e) Peering (`--only peers`): release daemons on loopback, each peer
//! behind its own nginx with TLS (a CA the bench makes), as an operator
//! would run them.
//!
//! 1. Single adds on A with two peers, against a daemon with none; the
//!    two take turns, fresh daemons each turn.
//! 2. 10,000 adds a second on A for 10 s: from the k-th 201 on A to the
//!    k-th entry held by B (B's count polled every 5 ms; batches keep
//!    order), p50 and p99.
//! 3. A full resync of 262,144 entries to a peer that was down while they
//!    were added: from its proxy coming up to the peer holding them all.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use couic_testkit::http::{Answer, HttpRecorder};
use couic_testkit::nginx::Nginx;
use couic_testkit::pki::Pki;
use couic_testkit::Daemon;

use crate::api::{self, FULL};
use crate::daemon::{self, counts, Binaries};
use crate::report::{Figure, Goal, Section};
use crate::Settings;

pub fn method(settings: &Settings) -> String {
    format!(
        "The release `couic`, three daemons A, B and C on loopback; B and C each behind nginx \
         with TLS and a certificate of a CA the bench makes, A peering with both (`ca_file`). \
         *Single adds*: as in the control plane ({} requests per connection), in {TURNS} turns, \
         fresh daemons for each setting: A without peers; A with its two peers; the same with \
         B, C and their nginx under SCHED_IDLE (they take only what A leaves of the 2 cores, as \
         on machines of their own); A with two peers that answer every batch at once (the \
         sender's own cost, with no peer daemon sharing the cores). The goal's ratio is of the \
         best rates over the turns; the median is of each turn's ratio, with peers to without. \
         *CPU per add*: user and system time of the daemon (and of B and C) over those runs, \
         warm-up included, divided by the adds; the least of the turns. \
         *Latency*: 10,000 adds a second on A paced over 4 connections for 10 s; B's \
         `drop_cidr_count` polled every 5 ms; the k-th entry's latency is from A's k-th 201 to \
         B holding k entries. *Resync*: C's proxy down while A takes 262,144 adds in bulk, \
         then up: until C holds them all.",
        settings.api_requests
    )
}

pub fn run(settings: &Settings) -> anyhow::Result<Section> {
    let bins = Binaries::build()?;
    let mut section = Section::goals("Peering", method(settings));
    let dir = tempfile::tempdir()?;
    let pki = Pki::make(dir.path());
    // COUIC_BENCH_PEERS=adds,latency: only those figures.
    let wants = crate::parts("COUIC_BENCH_PEERS");
    if wants("adds") {
        single_adds(&bins, settings, &pki, &mut section)?;
    }
    if wants("latency") {
        latency(&bins, &pki, &mut section)?;
    }
    if wants("resync") {
        resync(&bins, &pki, &mut section)?;
    }
    Ok(section)
}

/// A peer: a daemon, a `peering` client's token on it, nginx in front.
struct Peer {
    nginx: Option<Nginx>,
    daemon: Daemon,
    token: String,
    dir: tempfile::TempDir,
}

impl Peer {
    fn start(bins: &Binaries, pki: &Pki) -> anyhow::Result<Peer> {
        let daemon = daemon::start(bins)?;
        let token = daemon.create_client("node-a", "peering");
        let dir = tempfile::tempdir()?;
        let mut peer = Peer {
            nginx: None,
            daemon,
            token,
            dir,
        };
        peer.proxy_up(pki);
        Ok(peer)
    }

    fn proxy_up(&mut self, pki: &Pki) {
        let upstream = Nginx::socket_upstream(&self.daemon.socket());
        self.nginx = Some(Nginx::start(self.dir.path(), pki, &upstream));
    }

    fn port(&self) -> u16 {
        self.nginx.as_ref().map_or(0, |n| n.port)
    }

    /// A's `[[peering.peers]]` entry for this peer.
    fn entry(&self, name: &str, pki: &Pki, port: u16) -> String {
        format!(
            "[[peering.peers]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             tls = true\ntoken = \"{}\"\nca_file = \"{}\"\n",
            self.token,
            pki.ca.display()
        )
    }
}

const SINK_TOKEN: &str = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f";

/// A peer that answers every batch `201 []` and nothing else.
fn sink() -> HttpRecorder {
    let sink = HttpRecorder::start();
    sink.answer(|req, _| {
        if req.method == "POST" {
            let json = vec![("Content-Type".into(), "application/json".into())];
            Answer::Status(201, json, "[]".into())
        } else {
            Answer::status(404)
        }
    });
    sink
}

fn peering(entries: &[String]) -> String {
    format!("[peering]\nenabled = true\n{}", entries.concat())
}

/// Single adds on `a`: the rate, and the CPU of `a` (and of `peers`, the
/// daemons behind its peers) per add, in µs.
fn timed(a: &Daemon, peers: &[&Daemon], settings: &Settings) -> anyhow::Result<[f64; 3]> {
    let cpu = |d: &Daemon| daemon::cpu_seconds(d.pid());
    let peers_cpu = || -> anyhow::Result<f64> { peers.iter().map(|d| cpu(d)).sum() };
    let (a0, p0) = (cpu(a)?, peers_cpu()?);
    let rate = api::single_adds(a, settings.api_requests, 0)?;
    let adds = (api::CLIENTS * (api::WARMUP + settings.api_requests)) as f64;
    let per_add = |seconds: f64| seconds * 1e6 / adds;
    Ok([rate, per_add(cpu(a)? - a0), per_add(peers_cpu()? - p0)])
}

/// Alternated turns of the single-add settings: two turns of one setting
/// differ by up to 17 % on this shared machine.
const TURNS: usize = 4;

/// The single-add settings, measured in this order each turn.
const ALONE: usize = 0;
const PEERED: usize = 1;
const SINKS: usize = 2;
const IDLE_PEERS: usize = 3;

fn single_adds(
    bins: &Binaries,
    settings: &Settings,
    pki: &Pki,
    section: &mut Section,
) -> anyhow::Result<()> {
    // Per setting: the best rate, and the least CPU per add (of A, of B
    // and C together) over the turns.
    let mut best = [[0f64, f64::MAX, f64::MAX]; 4];
    let mut keep = |i: usize, [rate, cpu, peers]: [f64; 3]| {
        best[i] = [
            best[i][0].max(rate),
            best[i][1].min(cpu),
            best[i][2].min(peers),
        ];
        rate
    };
    // Each turn's rate with peers over its rate without.
    let mut ratios = Vec::with_capacity(TURNS);
    for _ in 0..TURNS {
        let alone = daemon::start(bins)?;
        let base = keep(ALONE, timed(&alone, &[], settings)?);
        drop(alone);
        let (a, b, c) = peered(bins, pki)?;
        ratios.push(keep(PEERED, timed(&a, &[&b.daemon, &c.daemon], settings)?) / base);
        drop((a, b, c));
        // The same with B, C and their nginx at idle priority: they take
        // only what A leaves of the 2 cores, as on machines of their own.
        let (a, b, c) = peered(bins, pki)?;
        for peer in [&b, &c] {
            idle_priority(peer.daemon.pid())?;
            if let Some(nginx) = &peer.nginx {
                idle_priority(nginx.process.id())?;
            }
        }
        keep(IDLE_PEERS, timed(&a, &[&b.daemon, &c.daemon], settings)?);
        drop((a, b, c));
        // The sender's own cost: two peers that take every batch at once
        // (a reference peer's answer, no catch-up routes), no daemon behind.
        let sinks = [sink(), sink()];
        let entries: Vec<String> = sinks
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "[[peering.peers]]\nname = \"sink{i}\"\nhost = \"127.0.0.1\"\nport = {}\n\
                     tls = false\ntoken = \"{SINK_TOKEN}\"\n",
                    s.addr().port()
                )
            })
            .collect();
        let a = Daemon::start(daemon::spec(bins).extra(&peering(&entries)))?;
        keep(SINKS, timed(&a, &[], settings)?);
    }
    let [alone, peered, sinks, idle] = best;
    section.push(Figure::ratio(
        "single adds on A with two peers (nginx, TLS)",
        "req/s",
        peered[0],
        alone[0],
        "without peers",
        Goal::AtLeast(0.9),
    ));
    ratios.sort_by(f64::total_cmp);
    section.push(Figure::plain(
        format!("the same, each turn's ratio, median of {TURNS}"),
        "x",
        (ratios[(TURNS - 1) / 2] + ratios[TURNS / 2]) / 2.0,
    ));
    section.push(Figure::compared(
        "single adds on A with two peers that take batches at once",
        "req/s",
        sinks[0],
        alone[0],
        "without peers",
    ));
    section.push(Figure::compared(
        "single adds on A with two peers (nginx, TLS), B, C and nginx at idle priority",
        "req/s",
        idle[0],
        alone[0],
        "without peers",
    ));
    section.push(Figure::plain(
        "A's CPU per single add, without peers",
        "µs",
        alone[1],
    ));
    section.push(Figure::compared(
        "A's CPU per single add, two peers (nginx, TLS)",
        "µs",
        peered[1],
        alone[1],
        "without peers",
    ));
    section.push(Figure::compared(
        "A's CPU per single add, two peers that take batches at once",
        "µs",
        sinks[1],
        alone[1],
        "without peers",
    ));
    section.push(Figure::plain(
        "B's and C's CPU per add on A, together",
        "µs",
        peered[2],
    ));
    Ok(())
}

/// A with two peers B and C, each behind nginx with TLS.
fn peered(bins: &Binaries, pki: &Pki) -> anyhow::Result<(Daemon, Peer, Peer)> {
    let (b, c) = (Peer::start(bins, pki)?, Peer::start(bins, pki)?);
    let config = peering(&[b.entry("b", pki, b.port()), c.entry("c", pki, c.port())]);
    let a = Daemon::start(daemon::spec(bins).extra(&config))?;
    Ok((a, b, c))
}

/// Puts every thread of process `pid` under SCHED_IDLE (the threads it
/// starts later inherit it): it runs only when a core has nothing else.
fn idle_priority(pid: u32) -> anyhow::Result<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid: i32 = task?.file_name().to_string_lossy().parse()?;
        crate::set_scheduler(tid, libc::SCHED_IDLE, 0)?;
    }
    Ok(())
}

fn latency(bins: &Binaries, pki: &Pki, section: &mut Section) -> anyhow::Result<()> {
    const RATE: u64 = 10_000;
    const SECONDS: u64 = 10;
    const CONNECTIONS: usize = 4;
    let b = Peer::start(bins, pki)?;
    let config = peering(&[b.entry("b", pki, b.port())]);
    let a = Daemon::start(daemon::spec(bins).extra(&config))?;
    let (base, _) = counts(&mut b.daemon.api())?;

    // B's count, polled until the bench has all it needs.
    let done = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let poller = {
        let (done, seen, mut api) = (done.clone(), seen.clone(), b.daemon.api());
        std::thread::spawn(move || -> anyhow::Result<()> {
            while !done.load(Ordering::SeqCst) {
                let (n, _) = counts(&mut api)?;
                seen.lock().unwrap().push((Instant::now(), n - base));
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        })
    };

    let total = (RATE * SECONDS) as usize;
    let first = u32::from(Ipv4Addr::new(50, 0, 0, 0));
    let start = Instant::now();
    let mut acked = api::paced_adds(&a, first, total, RATE, CONNECTIONS, start)?;
    // The k-th answer in time against B holding k entries.
    acked.sort();
    let sent_in = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().last().map_or(0, |s| s.1) < total as u64 {
        if Instant::now() > deadline {
            bail!(
                "B holds {} of {total} after 30 s",
                seen.lock().unwrap().last().map_or(0, |s| s.1)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done.store(true, Ordering::SeqCst);
    poller.join().expect("poller")?;

    let seen = seen.lock().unwrap();
    let mut latencies: Vec<f64> = Vec::with_capacity(total);
    let mut at = 0;
    for (k, acked) in acked.iter().enumerate() {
        while seen[at].1 < k as u64 + 1 {
            at += 1;
        }
        latencies.push(seen[at].0.saturating_duration_since(*acked).as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p / 100.0).round() as usize];
    section.push(Figure::plain(
        format!("adds sent on A, {total} at {RATE}/s"),
        "s",
        sent_in.as_secs_f64(),
    ));
    section.push(Figure::limit(
        "A's 201 to the entry held by B, p50",
        "ms",
        pct(50.0),
        Goal::AtMost(200.0),
    ));
    section.push(Figure::limit(
        "A's 201 to the entry held by B, p99",
        "ms",
        pct(99.0),
        Goal::AtMost(400.0),
    ));
    Ok(())
}

fn resync(bins: &Binaries, pki: &Pki, section: &mut Section) -> anyhow::Result<()> {
    let mut c = Peer::start(bins, pki)?;
    let port = c.port();
    // A small queue: the bulk overflows it, so C is behind and resynced.
    let config = format!(
        "[peering]\nenabled = true\nqueue_capacity = 1000\n{}",
        c.entry("c", pki, port)
    );
    let a = Daemon::start(daemon::spec(bins).extra(&config))?;
    // C's proxy goes down; A's adds overflow its queue for C.
    c.nginx = None;
    let cidrs = api::hosts(u32::from(Ipv4Addr::new(60, 0, 0, 0)), FULL);
    api::send_bulk(&a, "drop", api::add_bodies(&cidrs, 0), 1)?;
    // The same port again, so A's configuration still names it.
    let up = Instant::now();
    c.nginx = Some(restart_on(&c, pki, port)?);
    let deadline = up + Duration::from_secs(60);
    loop {
        let (n, _) = counts(&mut c.daemon.api())?;
        if n >= FULL as u64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("C holds {n} of {FULL} one minute after its proxy came back");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    section.push(Figure::limit(
        "full resync of 262,144 entries, proxy up to all held (retry wait included)",
        "s",
        up.elapsed().as_secs_f64(),
        Goal::AtMost(5.0),
    ));
    Ok(())
}

/// nginx for `peer` on `port` again (its earlier instance is gone).
fn restart_on(peer: &Peer, pki: &Pki, port: u16) -> anyhow::Result<Nginx> {
    let upstream = Nginx::socket_upstream(&peer.daemon.socket());
    for _ in 0..50 {
        let nginx = Nginx::start_on(peer.dir.path(), pki, &upstream, port);
        if let Some(nginx) = nginx {
            return Ok(nginx);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(anyhow::anyhow!(
        "nginx could not listen on port {port} again"
    ))
    .context("resync")
}
