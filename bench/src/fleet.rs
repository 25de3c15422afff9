//! (g) Fleet sync (`--only fleet`): release daemons with `[fleet]` and one
//! Debian `nats-server -js` on loopback, all on this machine.
//!
//! 1. Single adds on a node of the fleet against a daemon without it.
//! 2. A node fills the bucket with 262,144 entries; a node with an empty
//!    working directory joins: from its spawn to holding them all. Then it
//!    restarts with its state: from its spawn to caught up.
//! 3. `NODES` daemons (`ifaces = []`); 100 single adds on one, one at a
//!    time: from its 201 to the entry held by all of them, p50 and p99.
//! 4. 10,000 adds a second on one node for 10 s: from the last 201 to every
//!    node holding them all. Memory per daemon, the server's CPU.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use couic_testkit::nats::NatsServer;
use couic_testkit::{Api, Daemon, Spec};

use crate::api::{self, FULL};
use crate::daemon::{self, counts, cpu_seconds, rss, Binaries};
use crate::report::{Figure, Goal, Section};
use crate::Settings;

/// Daemons of the convergence figures.
const NODES: usize = 100;
/// Their drop capacity: the 100,000 adds of the rate figure and more.
const NODE_CAPACITY: u32 = 131_072;
const RATE: u64 = 10_000;
const SECONDS: u64 = 10;

pub fn method(settings: &Settings) -> String {
    format!(
        "The release `couic` with `[fleet]` and Debian's `nats-server` 2.9 (`-js`, a store in a \
         temporary directory) on loopback, everything on this machine's 2 cores and one disk. \
         *Single adds*: as in the control plane ({} requests per connection), a node of a \
         fleet of two against a daemon without `[fleet]`, in turns, best of 2. *Join*: a node \
         fills the bucket with 262,144 entries in bulk; a node with an empty working \
         directory is spawned: until it holds them all; then it is restarted with its state: \
         until `GET /v1/fleet` says caught up. *Convergence*: {NODES} daemons (`ifaces = []`, \
         {NODE_CAPACITY} drop entries each, durable; the first on the disk, the others' \
         working directories on a tmpfs standing for a disk of their own each: on one disk \
         their syncs would queue behind each other's, as no two real nodes' do); 100 \
         single adds on the first, one at a time; every daemon polled (`GET /v1/drop/<cidr>`) \
         by 4 threads; the latency of an add is from its 201 to the last daemon holding it. \
         *Rate*: {RATE} adds a second on the first daemon, paced over 4 connections for \
         {SECONDS} s; from the last 201 to every daemon counting them all (`GET /v1/stats`). \
         Memory: VmRSS of each daemon after that; the server's CPU: its user and system \
         time over the rate figure's wall time. *CPU per change*: the same for the writing \
         daemon per add and for the other daemons per change applied; the cores the asked \
         rate would take is that rate times the CPU per add of the writer, of each other \
         daemon and of the server (per delivery). The rate figure again with 10 daemons.",
        settings.api_requests
    )
}

pub fn run(settings: &Settings) -> anyhow::Result<Section> {
    let bins = Binaries::build()?;
    let mut section = Section::goals("Fleet sync through NATS JetStream", method(settings));
    // COUIC_BENCH_FLEET=join,convergence: only those figures.
    let wants = crate::parts("COUIC_BENCH_FLEET");
    if wants("adds") {
        single_adds(&bins, settings, &mut section)?;
    }
    if wants("join") {
        join(&bins, &mut section)?;
    }
    if wants("convergence") {
        convergence(&bins, &mut section)?;
    }
    Ok(section)
}

fn fleet_spec(bins: &Binaries, url: &str, node: &str) -> Spec {
    daemon::spec(bins).extra(&format!(
        "[fleet]\nenabled = true\nservers = [\"{url}\"]\nnode = \"{node}\"\n"
    ))
}

/// `GET /v1/fleet`.
fn status(api: &mut Api) -> anyhow::Result<serde_json::Value> {
    api.expect("GET", "/v1/fleet", None, 200)
}

fn wait_caught_up(d: &Daemon, patience: Duration) -> anyhow::Result<()> {
    let mut api = d.api();
    let deadline = Instant::now() + patience;
    while status(&mut api)?["caught_up"] != true {
        if Instant::now() > deadline {
            bail!("not caught up within {patience:?}: {}", status(&mut api)?);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn single_adds(bins: &Binaries, settings: &Settings, section: &mut Section) -> anyhow::Result<()> {
    let (mut best_alone, mut best_fleet) = (0f64, 0f64);
    for _ in 0..2 {
        let alone = daemon::start(bins)?;
        best_alone = best_alone.max(api::single_adds(&alone, settings.api_requests, 0)?);
        drop(alone);
        let nats = NatsServer::start(None)?;
        let a = Daemon::start(fleet_spec(bins, &nats.url(), "a"))?;
        let b = Daemon::start(fleet_spec(bins, &nats.url(), "b"))?;
        wait_caught_up(&a, Duration::from_secs(10))?;
        wait_caught_up(&b, Duration::from_secs(10))?;
        best_fleet = best_fleet.max(api::single_adds(&a, settings.api_requests, 0)?);
    }
    section.push(Figure::ratio(
        "single adds on a node of a fleet of two",
        "req/s",
        best_fleet,
        best_alone,
        "without [fleet]",
        Goal::AtLeast(0.9),
    ));
    Ok(())
}

fn join(bins: &Binaries, section: &mut Section) -> anyhow::Result<()> {
    let nats = NatsServer::start(None)?;
    let a = Daemon::start(fleet_spec(bins, &nats.url(), "a"))?;
    wait_caught_up(&a, Duration::from_secs(10))?;
    let cidrs = api::hosts(u32::from(Ipv4Addr::new(60, 0, 0, 0)), FULL);
    api::send_bulk(&a, "drop", api::add_bodies(&cidrs, 0), 1)?;
    // The bucket holds them all once A's queue is empty.
    let mut api_a = a.api();
    let deadline = Instant::now() + Duration::from_secs(120);
    while status(&mut api_a)?["queued"] != 0 || status(&mut api_a)?["published"] != FULL {
        if Instant::now() > deadline {
            bail!("A did not write its entries: {}", status(&mut api_a)?);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // And once A is done applying its own words coming back: the figure
    // is R's catch-up, not R and A sharing the cores.
    let settled = settle(a.pid(), deadline)?;
    println!("  A idle {settled:?} after its last write");

    let mut r = Daemon::new(fleet_spec(bins, &nats.url(), "r"))?;
    r.spawn()?;
    r.wait_ready()?;
    let spawned = r.spawned();
    let mut api_r = r.api();
    let deadline = spawned + Duration::from_secs(120);
    while counts(&mut api_r)?.0 < FULL as u64 {
        if Instant::now() > deadline {
            bail!("R holds {} of {FULL}", counts(&mut api_r)?.0);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "  R: {:.2} CPU seconds, the server {:.2}",
        cpu_seconds(r.pid())?,
        cpu_seconds(nats.pid().context("the server runs")?)?
    );
    section.push(Figure::limit(
        "a new node catches up 262,144 entries, spawn to all held",
        "s",
        spawned.elapsed().as_secs_f64(),
        Goal::AtMost(5.0),
    ));
    wait_caught_up(&r, Duration::from_secs(30))?;

    r.sigterm()?;
    r.wait_exit(Duration::from_secs(60))?;
    r.spawn()?;
    r.wait_ready()?;
    let spawned = r.spawned();
    wait_caught_up(&r, Duration::from_secs(60))?;
    section.push(Figure::limit(
        "the node restarted with its state, spawn to caught up (262,144 entries)",
        "s",
        spawned.elapsed().as_secs_f64(),
        Goal::AtMost(5.0),
    ));
    Ok(())
}

/// Waits until process `pid` spends under 5 % of a core for 200 ms; how
/// long that took.
fn settle(pid: u32, deadline: Instant) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut before = cpu_seconds(pid)?;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = cpu_seconds(pid)?;
        if now - before < 0.01 {
            return Ok(start.elapsed());
        }
        if Instant::now() > deadline {
            bail!("process {pid} still busy");
        }
        before = now;
    }
}

fn convergence(bins: &Binaries, section: &mut Section) -> anyhow::Result<()> {
    let nats = NatsServer::start(None)?;
    let nodes = spawn_nodes(bins, &nats.url(), NODES)?;

    // 100 single adds on n0, one at a time; 4 threads poll every daemon.
    let current = Arc::new(std::sync::Mutex::new(String::new()));
    let pending = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut pollers = Vec::new();
    for part in 0..4 {
        let mut apis: Vec<Api> = nodes
            .iter()
            .skip(part)
            .step_by(4)
            .map(Daemon::api)
            .collect();
        let (current, pending, stop) = (current.clone(), pending.clone(), stop.clone());
        pollers.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut seen = vec![String::new(); apis.len()];
            while !stop.load(Ordering::Relaxed) {
                let cidr = current.lock().unwrap().clone();
                if cidr.is_empty() {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                for (api, seen) in apis.iter_mut().zip(&mut seen) {
                    if *seen == cidr {
                        continue;
                    }
                    let (code, _) = api.call("GET", &format!("/v1/drop/{cidr}"), None)?;
                    if code == 200 {
                        *seen = cidr.clone();
                        pending.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
            Ok(())
        }));
    }
    let mut api0 = nodes[0].api();
    let mut latencies = Vec::with_capacity(100);
    for i in 0..100u32 {
        let cidr = format!(
            "{}/32",
            Ipv4Addr::from(u32::from(Ipv4Addr::new(70, 0, 0, 0)) + i)
        );
        let body = format!(r#"{{"cidr":"{cidr}","expiration":0}}"#);
        pending.store(NODES, Ordering::SeqCst);
        api0.expect("POST", "/v1/drop", Some(body.as_bytes()), 201)?;
        let acked = Instant::now();
        *current.lock().unwrap() = cidr.clone();
        let deadline = acked + Duration::from_secs(30);
        while pending.load(Ordering::SeqCst) > 0 {
            if Instant::now() > deadline {
                bail!(
                    "{cidr}: {} daemons still lack it after 30 s",
                    pending.load(Ordering::SeqCst)
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        latencies.push(acked.elapsed().as_secs_f64() * 1e3);
    }
    stop.store(true, Ordering::Relaxed);
    for p in pollers {
        p.join().expect("poller")?;
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p / 100.0).round() as usize];
    section.push(Figure::plain(
        format!("one add on all {NODES} daemons, p50 (100 adds)"),
        "ms",
        pct(50.0),
    ));
    section.push(Figure::limit(
        format!("one add on all {NODES} daemons, p99 (100 adds)"),
        "ms",
        pct(99.0),
        Goal::AtMost(1000.0),
    ));

    rate(&nodes, &nats, &format!("{NODES} daemons"), section)?;
    memory(&nodes, section)?;
    drop(nodes);
    drop(nats);

    // The same rate on a fleet of 10: what one node does when the machine
    // is not 100 nodes at once.
    let nats = NatsServer::start(None)?;
    let nodes = spawn_nodes(bins, &nats.url(), 10)?;
    rate(&nodes, &nats, "10 daemons", section)
}

/// `count` daemons of the fleet at `url`, caught up.
fn spawn_nodes(bins: &Binaries, url: &str, count: usize) -> anyhow::Result<Vec<Daemon>> {
    // Spawned together, then waited for: loading takes a while each.
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let mut spec = fleet_spec(bins, url, &format!("n{i}")).limits(NODE_CAPACITY, 1024);
        if i > 0 {
            // A disk of their own: on one, the others' syncs would queue
            // behind each other and n0's, as no two real nodes do.
            spec = spec.under("/dev/shm");
        }
        let mut d = Daemon::new(spec)?;
        d.spawn()?;
        nodes.push(d);
    }
    for d in &mut nodes {
        d.wait_ready()?;
    }
    for d in &nodes {
        wait_caught_up(d, Duration::from_secs(60))?;
    }
    println!("  {count} daemons caught up");
    Ok(nodes)
}

fn rate(
    nodes: &[Daemon],
    nats: &NatsServer,
    label: &str,
    section: &mut Section,
) -> anyhow::Result<()> {
    const CONNECTIONS: usize = 4;
    let total = (RATE * SECONDS) as usize;
    let base = counts(&mut nodes[0].api())?.0;
    let server = nats.pid().context("the server runs")?;
    let cpu_before = cpu_seconds(server)?;
    let nodes_cpu = || -> anyhow::Result<(f64, f64)> {
        let others: anyhow::Result<f64> = nodes[1..].iter().map(|d| cpu_seconds(d.pid())).sum();
        Ok((cpu_seconds(nodes[0].pid())?, others?))
    };
    let (writer_before, others_before) = nodes_cpu()?;
    let first = u32::from(Ipv4Addr::new(80, 0, 0, 0));
    let start = Instant::now();
    api::paced_adds(&nodes[0], first, total, RATE, CONNECTIONS, start)?;
    let last = Instant::now();
    let sent_in = last - start;
    let want = base + total as u64;
    let mut apis: Vec<Api> = nodes.iter().map(Daemon::api).collect();
    let mut done = vec![false; apis.len()];
    let deadline = last + Duration::from_secs(120);
    while done.iter().any(|d| !d) {
        for (api, done) in apis.iter_mut().zip(&mut done) {
            if !*done && counts(api)?.0 >= want {
                *done = true;
            }
        }
        if Instant::now() > deadline {
            let behind = done.iter().filter(|d| !**d).count();
            bail!("{behind} daemons lack entries 2 minutes after the last add");
        }
        // Counting reads every CPU's counters: the polling must not take
        // the cores the daemons need.
        std::thread::sleep(Duration::from_millis(20));
    }
    let converged = last.elapsed();
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server)? - cpu_before;
    let (writer_after, others_after) = nodes_cpu()?;
    // The server's CPU per change delivered to a daemon.
    let per_delivery = cpu / (total * nodes.len()) as f64;
    section.push(Figure::limit(
        format!("{label}: adds acknowledged on one daemon, asked {RATE}/s"),
        "adds/s",
        total as f64 / sent_in.as_secs_f64(),
        Goal::AtLeast(RATE as f64 * 0.95),
    ));
    section.push(Figure::limit(
        format!("{label}: last add to every daemon holding all {total}"),
        "s",
        converged.as_secs_f64(),
        Goal::AtMost(2.0),
    ));
    section.push(Figure::plain(
        format!("{label}: nats-server CPU over the rate figure (1.0 = one core)"),
        "cores",
        cpu / wall,
    ));
    section.push(Figure::plain(
        format!("{label}: nats-server CPU per word and daemon"),
        "µs",
        per_delivery * 1e6,
    ));
    // What the asked rate would take of a machine, from the CPU each part
    // spent per change here (the writer per add, every other daemon and
    // the server per change delivered), against this machine's 2 cores.
    let writer = (writer_after - writer_before) / total as f64;
    let applied = (total * (nodes.len() - 1)) as f64;
    let other = (others_after - others_before) / applied;
    let others = (nodes.len() - 1) as f64;
    for (what, value) in [
        ("the writing daemon's CPU per add", writer),
        ("another daemon's CPU per change applied", other),
    ] {
        section.push(Figure::plain(format!("{label}: {what}"), "µs", value * 1e6));
    }
    section.push(Figure::plain(
        format!("{label}: so {RATE} adds/s need (writer + others + server)"),
        "cores",
        RATE as f64 * (writer + others * (other + per_delivery) + per_delivery),
    ));
    Ok(())
}

/// Resident memory of each daemon: median and largest.
fn memory(nodes: &[Daemon], section: &mut Section) -> anyhow::Result<()> {
    let held = counts(&mut nodes[0].api())?.0;
    let mut memory: Vec<f64> = nodes
        .iter()
        .map(|d| rss(d).map(|(now, _)| now as f64 / 1e6))
        .collect::<anyhow::Result<_>>()?;
    memory.sort_by(f64::total_cmp);
    section.push(Figure::plain(
        format!("memory per daemon holding {held} entries, median"),
        "MB",
        memory[memory.len() / 2],
    ));
    section.push(Figure::plain(
        "memory per daemon, largest",
        "MB",
        memory[memory.len() - 1],
    ));
    Ok(())
}
