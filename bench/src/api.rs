//! (c) The control plane: the release `couic` daemon, started by the bench
//! with a temporary configuration (see `daemon.rs`), driven over its Unix
//! socket only. Each group of figures gets a fresh daemon, so that one
//! group's entries neither fill the maps nor weigh on the next.
//!
//! 1. Single-entry adds, `POST /v1/drop`, from several client threads with
//!    their own keep-alive connections: requests per second.
//! 2. `POST /v1/drop/bulk` end to end, entries per second, against the
//!    kernel's own batch update of the same keys into the same kind of map,
//!    timed in this process on a second copy of the program.
//! 3. Resident memory of the daemon holding full drop and ignore maps.
//! 4. `GET /v1/stats` latency while 262,144 entries expire in one second.
//! 5. A 262,144-line set file: start to filtering, and a reload where one
//!    line changed.
//! 6. `couicctl drop add`, process start to exit.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use couic::bpf;
use couic_common::Cidr;
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use couic::dirs::{Layout, Owner};
use couic_testkit::{Api, Daemon};

use crate::daemon::{self, counts, rss, Binaries};
use crate::report::{Figure, Goal, Section};
use crate::rules::{Blocklist, Family, Rng};
use crate::Settings;

/// Entries of the large loads: the default drop capacity per family.
pub const FULL: usize = 262_144;
/// Ignore entries of the memory figure: the default ignore capacity.
const IGNORE_FULL: usize = 65_536;
/// The same, as labels show them.
const FULL_TEXT: &str = "262,144";
const IGNORE_TEXT: &str = "65,536";
/// Client threads (and connections) of the single-add figure.
pub const CLIENTS: usize = 8;
/// Items per bulk request.
const BULK_CHUNK: usize = 16_384;
/// Connections the bulk loads are spread over.
const BULK_CONNECTIONS: usize = 2;
/// Lines of the set changed, one per reload.
const RELOADS: usize = 5;
const MB: f64 = 1e6;

/// `n` with commas between thousands: 262,144.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn method(settings: &Settings) -> String {
    let (full, ignore_full, chunk) = (grouped(FULL), grouped(IGNORE_FULL), grouped(BULK_CHUNK));
    format!(
        "The release `couic` (`cargo build --release -p couic -p couicctl`, which the bench runs \
         first) started by the bench with a temporary configuration: `ifaces = []`, user and group \
         root, default limits (262,144 drop and 65,536 ignore entries per family), its own \
         working directory and socket; a fresh daemon for each group of figures, killed at the \
         end. All traffic goes over the Unix socket. *Single adds*: {CLIENTS} client threads, each \
         with its own keep-alive connection, send {} `POST /v1/drop` of distinct IPv4 hosts in \
         all (after 500 each not timed). *Bulk*: {full} IPv4 hosts in requests of {chunk} \
         items to `POST /v1/drop/bulk`, first over one connection, then (after a bulk removal) \
         over {BULK_CONNECTIONS} at once; the kernel figure is one BPF_MAP_UPDATE_BATCH of the \
         same {full} keys into a fresh kernel hash map of couic's key and value sizes, made by \
         the bench (best of 3). *Memory*: VmRSS of the daemon 1 s after bulk loads of {full} \
         drop entries (half IPv4, half IPv6, about 90 % hosts) and {ignore_full} ignore entries \
         of the same mix. *Expiry wave*: {full} IPv4 hosts added by bulk with one expiration a \
         few seconds ahead; 2 threads poll `GET /v1/stats` back to back on their own \
         connections; latencies are those of requests started from 1 s before the expiration \
         second until 1 s after the store was seen empty; the wave's length runs from the \
         expiration second to the first answer with `drop_cidr_count` = 0. *Sets*: a {full}-line \
         drop set (IPv4, about 90 % hosts) written before the spawn; start = spawn to the first \
         `GET /v1/stats` answered with `drop_cidr_count` = {full} (the initial load is applied \
         before the API serves). Then {RELOADS} reloads, each after one more line of the file \
         was replaced by a new CIDR: time of `POST /v1/sets/reload`; the changes are those the \
         daemon logs. *couicctl*: `couicctl -c <local config> drop add <new /32> -e 0`, spawn \
         to exit, {} runs after 5 not timed.",
        grouped(CLIENTS * settings.api_requests),
        settings.ctl_runs
    )
}

/// The control-plane figures and the conditions they were measured in.
pub struct Measured {
    pub section: Section,
    /// Building the binaries left out.
    pub took: Duration,
    /// /proc/loadavg once the binaries are built, and at the end.
    pub load_before: String,
    pub load_after: String,
}

pub fn run(settings: &Settings) -> anyhow::Result<Measured> {
    let bins = Binaries::build()?;
    let load_before = crate::loadavg();
    let start = Instant::now();
    let mut section = Section::goals(
        "Control plane: the couic daemon and its API",
        method(settings),
    );
    // COUIC_BENCH_API=bulk measures the bulk figure alone (quick iterations
    // on the bulk route); the section is then incomplete, so do not --write it.
    let bulk_only = std::env::var("COUIC_BENCH_API").is_ok_and(|v| v == "bulk");
    if bulk_only {
        bulk_vs_kernel(&bins, &mut section)?;
    } else {
        single_adds_and_couicctl(&bins, settings, &mut section)?;
        let bulk = bulk_vs_kernel(&bins, &mut section)?;
        memory(&bins, &mut section)?;
        expiry_wave(&bins, bulk, &mut section)?;
        sets(&bins, &mut section)?;
    }
    Ok(Measured {
        section,
        took: start.elapsed(),
        load_before,
        load_after: crate::loadavg(),
    })
}

fn v4(a: u32) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

/// `count` IPv4 hosts from `base` up, as CIDRs.
pub fn hosts(base: u32, count: usize) -> Vec<Cidr> {
    (0..count as u32)
        .map(|i| Cidr::new(v4(base + i).into(), 32).expect("a /32"))
        .collect()
}

/// The value at `p` percent of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Current Unix time in seconds.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Figures 1 and 6 on one daemon.
fn single_adds_and_couicctl(
    bins: &Binaries,
    settings: &Settings,
    section: &mut Section,
) -> anyhow::Result<()> {
    let daemon = daemon::start(bins)?;
    let rate = single_adds(&daemon, settings.api_requests, 0)?;
    section.push(Figure::limit(
        format!("single adds, POST /v1/drop, {CLIENTS} keep-alive connections"),
        "req/s",
        rate,
        Goal::AtLeast(30_000.0),
    ));

    // couicctl against the same daemon.
    let config = daemon.ctl_config();
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let mut times = Vec::with_capacity(settings.ctl_runs);
    for i in 0..5 + settings.ctl_runs {
        let cidr = format!("{}/32", v4(base + i as u32));
        let start = Instant::now();
        let out = Command::new(&bins.couicctl)
            .arg("-c")
            .arg(&config)
            .args(["drop", "add", &cidr, "-e", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("run couicctl")?;
        let took = start.elapsed();
        if !out.status.success() {
            bail!(
                "couicctl drop add {cidr}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if i >= 5 {
            times.push(ms(took));
        }
    }
    let times = sorted(times);
    section.push(Figure::limit(
        format!(
            "couicctl drop add, spawn to exit, median of {}",
            times.len()
        ),
        "ms",
        percentile(&times, 50.0),
        Goal::AtMost(20.0),
    ));
    section.push(Figure::plain(
        "couicctl drop add, 90th percentile",
        "ms",
        percentile(&times, 90.0),
    ));
    Ok(())
}

/// Adds each connection of [`single_adds`] makes before it is timed.
pub const WARMUP: usize = 500;

/// Single-entry adds, `POST /v1/drop`, from [`CLIENTS`] threads with their
/// own keep-alive connection, after a warm-up: requests per second. Thread
/// `t` adds hosts of `10.(round * 8 + t) / 12`, so rounds on one daemon do
/// not collide.
pub fn single_adds(daemon: &Daemon, requests: usize, round: u32) -> anyhow::Result<f64> {
    let (before, _) = counts(&mut daemon.api())?;
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let mut threads = Vec::new();
    for t in 0..CLIENTS {
        let mut api = daemon.api();
        let barrier = barrier.clone();
        let slot = round * CLIENTS as u32 + t as u32;
        let base = u32::from(Ipv4Addr::new(10, 0, 0, 0)) + (slot << 20);
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let body =
                |i: usize| format!(r#"{{"cidr":"{}/32","expiration":0}}"#, v4(base + i as u32));
            for i in 0..WARMUP {
                api.expect("POST", "/v1/drop", Some(body(i).as_bytes()), 201)?;
            }
            let bodies: Vec<String> = (WARMUP..WARMUP + requests).map(body).collect();
            barrier.wait();
            for b in &bodies {
                let (status, resp) = api.call("POST", "/v1/drop", Some(b.as_bytes()))?;
                if status != 201 {
                    bail!(
                        "POST /v1/drop {b}: {status} {}",
                        String::from_utf8_lossy(&resp)
                    );
                }
            }
            Ok(())
        }));
    }
    barrier.wait();
    let start = Instant::now();
    for t in threads {
        t.join().expect("client thread")?;
    }
    let elapsed = start.elapsed();
    let (drops, _) = counts(&mut daemon.api())?;
    let added = (CLIENTS * (WARMUP + requests)) as u64;
    if drops != before + added {
        bail!("after {added} single adds the daemon holds {drops} drop entries, not {before} + {added}");
    }
    Ok((CLIENTS * requests) as f64 / elapsed.as_secs_f64())
}

/// Bulk request bodies adding `cidrs` with `expiration`.
pub fn add_bodies(cidrs: &[Cidr], expiration: u64) -> Vec<Vec<u8>> {
    cidrs
        .chunks(BULK_CHUNK)
        .map(|chunk| {
            let items: Vec<String> = chunk
                .iter()
                .map(|c| format!(r#"{{"cidr":"{c}","expiration":{expiration}}}"#))
                .collect();
            format!(r#"{{"add":[{}]}}"#, items.join(",")).into_bytes()
        })
        .collect()
}

/// Bulk request bodies removing `cidrs`.
fn remove_bodies(cidrs: &[Cidr]) -> Vec<Vec<u8>> {
    cidrs
        .chunks(BULK_CHUNK)
        .map(|chunk| {
            let items: Vec<String> = chunk.iter().map(|c| format!(r#""{c}""#)).collect();
            format!(r#"{{"remove":[{}]}}"#, items.join(",")).into_bytes()
        })
        .collect()
}

/// Sends the bodies to `POST /v1/{policy}/bulk` over `connections`
/// connections (body i on connection i mod n); every item must succeed.
/// Time from the first request to the last answer.
pub fn send_bulk(
    daemon: &Daemon,
    policy: &str,
    bodies: Vec<Vec<u8>>,
    connections: usize,
) -> anyhow::Result<Duration> {
    let bodies = Arc::new(bodies);
    let barrier = Arc::new(Barrier::new(connections + 1));
    let path = format!("/v1/{policy}/bulk");
    let mut threads = Vec::new();
    for c in 0..connections {
        let (bodies, barrier, path) = (bodies.clone(), barrier.clone(), path.clone());
        let mut api = daemon.api();
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            // Connect before the clock starts.
            api.expect("GET", "/v1/stats", None, 200)?;
            barrier.wait();
            for body in bodies.iter().skip(c).step_by(connections) {
                let (status, resp) = api.call("POST", &path, Some(body))?;
                // The answer starts {"atomic":false,"applied":N,"failed":F,...
                let head = String::from_utf8_lossy(&resp[..resp.len().min(80)]).into_owned();
                if status != 200 || !head.contains(r#""failed":0,"#) {
                    bail!("POST {path}: {status} {head}...");
                }
            }
            Ok(())
        }));
    }
    barrier.wait();
    let start = Instant::now();
    for t in threads {
        t.join().expect("bulk thread")?;
    }
    Ok(start.elapsed())
}

/// The kernel's own batch update: `cidrs` (IPv4 hosts) written with one
/// BPF_MAP_UPDATE_BATCH into a fresh kernel hash map with couic's key and
/// value sizes and capacity, entries per second, best of 3 (the map emptied
/// in between). It is independent of how couic lays out its own maps.
fn kernel_batch(cidrs: &[Cidr]) -> anyhow::Result<f64> {
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        map_flags: libbpf_sys::BPF_F_NO_PREALLOC,
        ..Default::default()
    };
    let keys: Vec<u8> = cidrs.iter().flat_map(|c| bpf::key_bytes(*c)).collect();
    let values: Vec<u8> = cidrs.iter().flat_map(|_| bpf::rule_bytes(0)).collect();
    let map = MapHandle::create(
        MapType::Hash,
        Some("bench_batch"),
        (keys.len() / cidrs.len()) as u32,
        (values.len() / cidrs.len()) as u32,
        FULL as u32,
        &opts,
    )
    .context("create a kernel hash map (run as root)")?;
    let count = cidrs.len() as u32;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        map.update_batch(&keys, &values, count, MapFlags::ANY, MapFlags::ANY)
            .context("update_batch")?;
        best = best.min(start.elapsed().as_secs_f64());
        map.delete_batch(&keys, count, MapFlags::ANY, MapFlags::ANY)
            .context("delete_batch")?;
    }
    Ok(cidrs.len() as f64 / best)
}

/// Figure 2. Returns the time of the faster bulk load.
fn bulk_vs_kernel(bins: &Binaries, section: &mut Section) -> anyhow::Result<Duration> {
    let cidrs = hosts(u32::from(Ipv4Addr::new(11, 0, 0, 0)), FULL);
    let kernel = kernel_batch(&cidrs)?;
    let daemon = daemon::start(bins)?;
    let one = send_bulk(&daemon, "drop", add_bodies(&cidrs, 0), 1)?;
    if counts(&mut daemon.api())?.0 != FULL as u64 {
        bail!("the bulk load over one connection did not leave {FULL} entries");
    }
    send_bulk(&daemon, "drop", remove_bodies(&cidrs), BULK_CONNECTIONS)?;
    if counts(&mut daemon.api())?.0 != 0 {
        bail!("the bulk removal left entries");
    }
    let many = send_bulk(&daemon, "drop", add_bodies(&cidrs, 0), BULK_CONNECTIONS)?;
    if counts(&mut daemon.api())?.0 != FULL as u64 {
        bail!("the bulk load over {BULK_CONNECTIONS} connections did not leave {FULL} entries");
    }
    let kernel_label = "kernel batch update";
    for (connections, took) in [(1, one), (BULK_CONNECTIONS, many)] {
        section.push(Figure::ratio(
            format!(
                "bulk add of {FULL_TEXT} hosts, {connections} connection{}",
                if connections == 1 { "" } else { "s" }
            ),
            "entries/s",
            FULL as f64 / took.as_secs_f64(),
            kernel,
            kernel_label,
            Goal::AtLeast(0.5),
        ));
    }
    section.push(Figure::plain(
        format!("kernel batch update of the same {FULL_TEXT} keys, one call"),
        "entries/s",
        kernel,
    ));
    Ok(one.min(many))
}

/// `count` rules of the usual mix for each family, none in `avoid`.
fn mix(rng: &mut Rng, per_family: usize, avoid: &HashSet<Cidr>) -> Vec<Cidr> {
    let mut out = Vec::with_capacity(2 * per_family);
    for family in [Family::V4, Family::V6] {
        let list = Blocklist::generate(rng, family, per_family + per_family / 8);
        out.extend(
            list.rules
                .into_iter()
                .filter(|c| !avoid.contains(c))
                .take(per_family),
        );
    }
    out
}

/// Figure 3.
fn memory(bins: &Binaries, section: &mut Section) -> anyhow::Result<()> {
    let mut rng = Rng::new(0xc0_1c);
    let drops = mix(&mut rng, FULL / 2, &HashSet::new());
    let avoid: HashSet<Cidr> = drops.iter().copied().collect();
    let ignores = mix(&mut rng, IGNORE_FULL / 2, &avoid);
    if drops.len() != FULL || ignores.len() != IGNORE_FULL {
        bail!("the rule generator fell short");
    }
    let daemon = daemon::start(bins)?;
    std::thread::sleep(Duration::from_millis(500));
    let (idle, _) = rss(&daemon)?;
    send_bulk(&daemon, "drop", add_bodies(&drops, 0), BULK_CONNECTIONS)?;
    send_bulk(&daemon, "ignore", add_bodies(&ignores, 0), BULK_CONNECTIONS)?;
    let counts = counts(&mut daemon.api())?;
    if counts != (FULL as u64, IGNORE_FULL as u64) {
        bail!("the daemon holds {counts:?} entries after the loads");
    }
    std::thread::sleep(Duration::from_secs(1));
    let (rss, peak) = rss(&daemon)?;
    section.push(Figure::plain(
        "daemon RSS, idle and empty",
        "MB",
        idle as f64 / MB,
    ));
    section.push(Figure::limit(
        format!("daemon RSS holding {FULL_TEXT} drop + {IGNORE_TEXT} ignore entries"),
        "MB",
        rss as f64 / MB,
        Goal::AtMost(48.0),
    ));
    section.push(Figure::plain(
        "daemon peak RSS (VmHWM) over the loads",
        "MB",
        peak as f64 / MB,
    ));
    Ok(())
}

/// One `GET /v1/stats`: when it started, how long it took, the drop count.
struct Sample {
    start: Instant,
    latency: Duration,
    drops: u64,
}

/// Figure 4. `bulk` is how long a load of FULL entries took, to place the
/// expiration after the load.
fn expiry_wave(bins: &Binaries, bulk: Duration, section: &mut Section) -> anyhow::Result<()> {
    let cidrs = hosts(u32::from(Ipv4Addr::new(12, 0, 0, 0)), FULL);
    let daemon = daemon::start(bins)?;
    let expiration = unix_now() + 3 + (bulk.as_secs_f64() * 2.0).ceil() as u64;
    send_bulk(
        &daemon,
        "drop",
        add_bodies(&cidrs, expiration),
        BULK_CONNECTIONS,
    )?;
    // The expiration second, as an Instant.
    let until = UNIX_EPOCH + Duration::from_secs(expiration);
    let Ok(ahead) = until.duration_since(SystemTime::now()) else {
        bail!("the bulk load ended after the expiration it set");
    };
    let wave = Instant::now() + ahead;
    if counts(&mut daemon.api())?.0 != FULL as u64 {
        bail!("the expiring load did not leave {FULL} entries");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let deadline = wave + Duration::from_secs(60);
    let mut pollers = Vec::new();
    for _ in 0..2 {
        let (stop, samples) = (stop.clone(), samples.clone());
        let mut api: Api = daemon.api();
        pollers.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let start = Instant::now();
                let (drops, _) = counts(&mut api)?;
                mine.push(Sample {
                    start,
                    latency: start.elapsed(),
                    drops,
                });
            }
            samples.lock().expect("samples").extend(mine);
            Ok(())
        }));
    }
    // Watch for the empty store on a connection of its own, coarsely.
    let mut watch = daemon.api();
    let mut empty_seen = None;
    while Instant::now() < deadline {
        if counts(&mut watch)?.0 == 0 {
            empty_seen = Some(Instant::now());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if empty_seen.is_some() {
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    for p in pollers {
        p.join().expect("poller")?;
    }
    let samples = std::mem::take(&mut *samples.lock().expect("samples"));
    let Some(empty) = samples
        .iter()
        .filter(|s| s.drops == 0)
        .map(|s| s.start + s.latency)
        .min()
    else {
        bail!("the {FULL} entries did not leave the store within 60 s of their expiration");
    };
    let from = wave - Duration::from_secs(1);
    let to = empty + Duration::from_secs(1);
    let during = sorted(
        samples
            .iter()
            .filter(|s| s.start >= from && s.start <= to)
            .map(|s| ms(s.latency))
            .collect(),
    );
    let before = sorted(
        samples
            .iter()
            .filter(|s| s.start < from)
            .map(|s| ms(s.latency))
            .collect(),
    );
    let n = during.len();
    section.push(Figure::limit(
        format!("GET /v1/stats p99 while {FULL_TEXT} entries expire ({n} requests)"),
        "ms",
        percentile(&during, 99.0),
        Goal::AtMost(20.0),
    ));
    section.push(Figure::plain(
        "GET /v1/stats p50 during the wave",
        "ms",
        percentile(&during, 50.0),
    ));
    section.push(Figure::plain(
        "GET /v1/stats max during the wave",
        "ms",
        during.last().copied().unwrap_or(f64::NAN),
    ));
    section.push(Figure::plain(
        "GET /v1/stats p99 with the full store, before the wave",
        "ms",
        percentile(&before, 99.0),
    ));
    section.push(Figure::plain(
        format!("expiry wave: expiration second to {FULL_TEXT} entries gone"),
        "ms",
        ms(empty.saturating_duration_since(wave)),
    ));
    Ok(())
}

/// The `changes=...` of the `n`-th "sets reloaded" line of the log, waiting
/// a little for the daemon's background writer.
fn reload_changes(daemon: &Daemon, n: usize) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let log = daemon.log();
        let line = log.lines().filter(|l| l.contains("sets reloaded")).nth(n);
        if let Some(line) = line {
            // Drop colour escapes, then take what follows changes=.
            let mut plain = String::new();
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                } else {
                    plain.push(c);
                }
            }
            let changes = plain
                .split_once("changes=")
                .map(|(_, rest)| rest.trim_start_matches('"'))
                .and_then(|rest| rest.split('"').next())
                .map(|s| {
                    s.split(" sets reloaded")
                        .next()
                        .unwrap_or(s)
                        .trim()
                        .to_string()
                })
                .unwrap_or(plain);
            return Ok(changes);
        }
        if Instant::now() > deadline {
            bail!("no log line for reload {n}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Figure 5.
fn sets(bins: &Binaries, section: &mut Section) -> anyhow::Result<()> {
    let mut rng = Rng::new(0x5e7);
    let list = Blocklist::generate(&mut rng, Family::V4, FULL);
    let mut lines: Vec<String> = list.rules.iter().map(|c| c.to_string()).collect();
    let text = lines.join("\n") + "\n";
    if text.len() as u64 > couic_common::SET_MAX_FILE_SIZE {
        bail!("the set file would be {} bytes, over the limit", text.len());
    }
    let mut daemon = Daemon::new(daemon::spec(bins))?;
    Layout::prepare(&daemon.work(), Owner::current())?;
    let set_path = daemon.write_set("drop", "bench", &text)?;
    daemon.spawn()?;
    // Connecting succeeds once the socket is bound; the answer comes once
    // the initial load is done and the API serves.
    let start_to_filtering = daemon.wait_for(
        "the set was not loaded",
        Duration::from_secs(60),
        Duration::from_millis(1),
        |d| {
            let Some(token) = d.read_token().map(String::from) else {
                return Ok(None);
            };
            let mut api = Api::new(&d.socket(), Some(&token), Duration::from_secs(60));
            match api.call("GET", "/v1/stats", None) {
                Ok((200, body)) => {
                    let stats: serde_json::Value = serde_json::from_slice(&body)?;
                    let loaded = stats["drop_cidr_count"].as_u64() == Some(FULL as u64);
                    Ok(loaded.then(|| d.spawned().elapsed()))
                }
                _ => Ok(None),
            }
        },
    )?;
    daemon.wait_ready()?;
    section.push(Figure::limit(
        format!("start with a {FULL_TEXT}-line set: spawn to filtering"),
        "ms",
        ms(start_to_filtering),
        Goal::AtMost(1000.0),
    ));

    let present: HashSet<String> = lines.iter().cloned().collect();
    let mut api = daemon.api();
    let mut times = Vec::new();
    let mut changes = Vec::new();
    for i in 0..RELOADS {
        let new = (0..=255u8)
            .map(|x| format!("{}/32", Ipv4Addr::new(198, 51, 100 + i as u8, x)))
            .find(|c| !present.contains(c))
            .context("a CIDR not in the set")?;
        let k = (i + 1) * FULL / (RELOADS + 1);
        lines[k] = new;
        std::fs::write(&set_path, lines.join("\n") + "\n")?;
        let start = Instant::now();
        api.expect("POST", "/v1/sets/reload", None, 201)?;
        times.push(ms(start.elapsed()));
        changes.push(reload_changes(&daemon, i)?);
    }
    if counts(&mut api)?.0 != FULL as u64 {
        bail!("the reloads did not leave {FULL} entries");
    }
    let distinct: HashSet<&String> = changes.iter().collect();
    let logged = if distinct.len() == 1 {
        format!("each logged `{}`", changes[0])
    } else {
        format!("logged {}", changes.join("; "))
    };
    let times = sorted(times);
    section.push(Figure::limit(
        format!("sets reload, 1 line of {FULL_TEXT} changed, median of {RELOADS} ({logged})"),
        "ms",
        percentile(&times, 50.0),
        Goal::AtMost(200.0),
    ));
    section.push(Figure::plain(
        "sets reload, slowest",
        "ms",
        times.last().copied().unwrap_or(f64::NAN),
    ));
    Ok(())
}

/// Single adds of `total` IPv4 hosts from `first` on `daemon`, paced: the
/// i-th goes no sooner than i / `rate` seconds after `start`, on
/// connection i mod `connections` (one durable add waits for a sync: one
/// connection alone falls behind a fast pace). The time of each 201, in no
/// particular order.
pub fn paced_adds(
    daemon: &Daemon,
    first: u32,
    total: usize,
    rate: u64,
    connections: usize,
    start: Instant,
) -> anyhow::Result<Vec<Instant>> {
    let senders: Vec<_> = (0..connections)
        .map(|c| {
            let mut conn = daemon.api();
            std::thread::spawn(move || -> anyhow::Result<Vec<Instant>> {
                let mut acked = Vec::with_capacity(total / connections + 1);
                for i in (c..total).step_by(connections) {
                    let due = start + Duration::from_micros(i as u64 * 1_000_000 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let body =
                        format!(r#"{{"cidr":"{}/32","expiration":0}}"#, v4(first + i as u32));
                    conn.expect("POST", "/v1/drop", Some(body.as_bytes()), 201)?;
                    acked.push(Instant::now());
                }
                Ok(acked)
            })
        })
        .collect();
    let mut acked = Vec::with_capacity(total);
    for sender in senders {
        acked.extend(sender.join().expect("sender")?);
    }
    Ok(acked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_counts_agree() {
        assert_eq!(grouped(FULL), FULL_TEXT);
        assert_eq!(grouped(IGNORE_FULL), IGNORE_TEXT);
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000_000), "1,000,000");
    }
}
