//! (f) Durable entries and restarts (`--only state`): the release daemon
//! with its state directory on this machine's disk.
//!
//! 1. Single adds with durability on against the same build with
//!    `[state] durable = false`, in turns; the disk written per add
//!    (`write_bytes` of /proc/<pid>/io) against the journal's records;
//!    the disk's sync alone, and the most durability can keep of the
//!    rate with that sync.
//! 2. 262,144 durable entries and a veth in a namespace of the bench's:
//!    spawn to the program attached with every entry in place, with no
//!    pins (as after a reboot); spawn to the API serving, with pins (a
//!    restart, the program swapped onto the pinned link).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use couic::journal::files::FILE_HEADER;
use couic::journal::record::{read_frame, Frame};
use couic_testkit::net::VethPair;
use couic_testkit::Daemon;

use crate::api::{self, FULL};
use crate::daemon::{self, Binaries};
use crate::report::{Figure, Goal, Section};
use crate::Settings;

/// Adds each single-add run makes: 8 connections, 500 not timed each.
const CLIENTS: u64 = 8;
const WARMUP: u64 = 500;

pub fn method(settings: &Settings) -> String {
    format!(
        "The release `couic`, its working directory (and so `state/`) in a temporary \
         directory on the VM's disk (ext4 on virtio). *Single adds*: as in the control plane \
         ({} requests per connection, 8 keep-alive connections), a fresh daemon with \
         durability on and one with `[state] durable = false`, in turns, best of 2 each. \
         *Disk per add*: the growth of `write_bytes` in /proc/<pid>/io over that run (what \
         reached the block layer: records, the space zero-filled ahead, file metadata) divided \
         by the adds, against the bytes of the journal's records. *Sync*: 2,000 writes of 128 \
         bytes over a file already written, each followed by `fdatasync`, in the same \
         directory, p50; *ceiling*: each connection waiting for one sync after its \
         record is written, a durable add takes at least a lone add's round trip without \
         durability (2,000 on one connection of the daemon without, p50, the least of the \
         turns) plus one sync, so 8 connections make at most 8 / (that + sync). *Startup*: 262,144 IPv4 \
         hosts added in bulk to a daemon attached to a veth in a namespace of the bench's, \
         SIGTERM; then `couic --detach` (no pins, as after a reboot) and a spawn, timed to \
         `ip link` showing the program attached (it is attached once every entry is in the \
         maps); then SIGTERM and a spawn with the pins in place, timed to the API answering.",
        settings.api_requests
    )
}

pub fn run(settings: &Settings) -> anyhow::Result<Section> {
    let bins = Binaries::build()?;
    let mut section = Section::goals("Durable entries and restarts", method(settings));
    // COUIC_BENCH_STATE=adds,startup: only those figures.
    let wants = crate::parts("COUIC_BENCH_STATE");
    if wants("adds") {
        single_adds(&bins, settings, &mut section)?;
    }
    if wants("startup") {
        startup(&bins, &mut section)?;
    }
    Ok(section)
}

/// Bytes the process made the kernel write to storage so far.
fn write_bytes(pid: u32) -> anyhow::Result<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .context("no write_bytes in /proc/<pid>/io")?
        .trim()
        .parse()
        .context("write_bytes")
}

/// The bytes of the records in the state directory's journals.
fn record_bytes(state: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(state)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("journal-") || name.contains('.') {
            continue;
        }
        let data = fs::read(&path)?;
        let mut at = FILE_HEADER;
        while let Frame::Record(_, len) = read_frame(&data[at..]) {
            at += len;
        }
        total += (at - FILE_HEADER) as u64;
    }
    Ok(total)
}

fn single_adds(bins: &Binaries, settings: &Settings, section: &mut Section) -> anyhow::Result<()> {
    let (mut best_off, mut best_on, mut alone) = (0f64, 0f64, f64::MAX);
    let (mut cpu_off, mut cpu_on, mut idle_off, mut idle_on) = (f64::MAX, f64::MAX, 1f64, 1f64);
    let (mut written, mut records, mut adds) = (0u64, 0u64, 0u64);
    for _ in 0..2 {
        let off = Daemon::start(daemon::spec(bins).extra("[state]\ndurable = false\n"))?;
        let (rate, cpu, idle) = timed(&off, settings)?;
        best_off = best_off.max(rate);
        cpu_off = cpu_off.min(cpu);
        idle_off = idle_off.min(idle);
        alone = alone.min(one_connection_p50(&off)?);
        drop(off);
        let on = daemon::start(bins)?;
        let before = write_bytes(on.pid())?;
        let (rate, cpu, idle) = timed(&on, settings)?;
        best_on = best_on.max(rate);
        cpu_on = cpu_on.min(cpu);
        idle_on = idle_on.min(idle);
        written = write_bytes(on.pid())? - before;
        records = record_bytes(&on.work().join("state"))?;
        adds = CLIENTS * (WARMUP + settings.api_requests as u64);
    }
    section.push(Figure::ratio(
        "single adds, durable, 8 keep-alive connections",
        "req/s",
        best_on,
        best_off,
        "durability off",
        Goal::AtLeast(0.8),
    ));
    section.push(Figure::limit(
        "single adds, durable, 8 keep-alive connections",
        "req/s",
        best_on,
        Goal::AtLeast(30_000.0),
    ));
    let sync = sync_p50()?;
    for (label, unit, value) in [
        (
            "the daemon's CPU per single add, durability off",
            "µs",
            cpu_off,
        ),
        ("the daemon's CPU per single add, durable", "µs", cpu_on),
        (
            "the machine idle during the single adds, durability off",
            "%",
            idle_off * 100.0,
        ),
        (
            "the machine idle during the single adds, durable",
            "%",
            idle_on * 100.0,
        ),
        (
            "the disk's fdatasync after a 128-byte write, p50",
            "µs",
            sync * 1e6,
        ),
        (
            "a single add alone on one connection, durability off, p50",
            "µs",
            alone * 1e6,
        ),
    ] {
        section.push(Figure::plain(label, unit, value));
    }
    // A durable add takes at least that and one sync more (none can start
    // before its record is written), whatever the load.
    section.push(Figure::compared(
        "so 8 connections make at most 8 / (that + sync)",
        "req/s",
        CLIENTS as f64 / (alone + sync),
        best_off,
        "durability off",
    ));
    let per_add = written as f64 / adds as f64;
    let record = records as f64 / adds as f64;
    section.push(Figure::plain(
        "disk written per durable single add",
        "B",
        per_add,
    ));
    section.push(Figure::plain("journal record of a single add", "B", record));
    section.push(Figure::plain(
        "write amplification (disk written / records)",
        "x",
        per_add / record,
    ));
    Ok(())
}

/// Single adds on `d`: the rate, the daemon's CPU per add in µs, and the
/// share of the machine left idle meanwhile.
fn timed(d: &Daemon, settings: &Settings) -> anyhow::Result<(f64, f64, f64)> {
    let (cpu, idle, start) = (
        daemon::cpu_seconds(d.pid())?,
        daemon::idle_seconds()?,
        Instant::now(),
    );
    let rate = api::single_adds(d, settings.api_requests, 0)?;
    let cores = std::thread::available_parallelism()?.get() as f64;
    let idle = (daemon::idle_seconds()? - idle) / (start.elapsed().as_secs_f64() * cores);
    let adds = CLIENTS * (WARMUP + settings.api_requests as u64);
    let cpu = (daemon::cpu_seconds(d.pid())? - cpu) * 1e6 / adds as f64;
    Ok((rate, cpu, idle))
}

/// Single adds one after the other on one connection, nothing else
/// running: the round trip's p50 in seconds.
fn one_connection_p50(d: &Daemon) -> anyhow::Result<f64> {
    let mut api = d.api();
    let base = u32::from(std::net::Ipv4Addr::new(172, 16, 0, 0));
    let mut took = Vec::with_capacity(2_000);
    for i in 0..2_000u32 {
        let body = format!(
            r#"{{"cidr":"{}/32","expiration":0}}"#,
            std::net::Ipv4Addr::from(base + i)
        );
        let start = Instant::now();
        api.expect("POST", "/v1/drop", Some(body.as_bytes()), 201)?;
        took.push(start.elapsed().as_secs_f64());
    }
    took.sort_by(f64::total_cmp);
    Ok(took[took.len() / 2])
}

/// The disk's `fdatasync` after a small write over a file already
/// written (as the journal's, zero-filled ahead), p50 in seconds.
fn sync_p50() -> anyhow::Result<f64> {
    use std::os::unix::fs::FileExt as _;
    let dir = tempfile::tempdir()?;
    let file = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("probe"))?;
    let (count, size) = (2_000u64, 128u64);
    file.write_all_at(&vec![0; (count * size) as usize], 0)?;
    file.sync_all()?;
    let mut took = Vec::with_capacity(count as usize);
    for i in 0..count {
        file.write_all_at(&[0x5a; 128], i * size)?;
        let start = Instant::now();
        file.sync_data()?;
        took.push(start.elapsed().as_secs_f64());
    }
    took.sort_by(f64::total_cmp);
    Ok(took[took.len() / 2])
}

fn startup(bins: &Binaries, section: &mut Section) -> anyhow::Result<()> {
    let pair = VethPair::new();
    let spec = daemon::spec(bins)
        .attach(&[&pair.rx_if], "auto")
        .netns(pair.rx.path());
    let mut d = Daemon::start(spec)?;
    let cidrs = api::hosts(u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)), FULL);
    api::send_bulk(&d, "drop", api::add_bodies(&cidrs, 0), 2)?;
    stop(&mut d)?;

    // After a reboot: no pins.
    let detach = d.detach()?;
    if !detach.status.success() || pair.rx.has_xdp(&pair.rx_if) {
        bail!("couic --detach: {detach:?}");
    }
    d.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pair.rx.has_xdp(&pair.rx_if) {
        d.check_alive()?;
        if Instant::now() > deadline {
            bail!("not attached after 30 s: {}", d.log());
        }
    }
    let filtering = d.spawned().elapsed();
    d.wait_ready()?;
    let (drops, _) = daemon::counts(&mut d.api())?;
    if drops != FULL as u64 {
        bail!("{drops} entries after the start, not {FULL}");
    }
    section.push(Figure::limit(
        "start with 262,144 durable entries, no pins: spawn to filtering",
        "s",
        filtering.as_secs_f64(),
        Goal::AtMost(1.0),
    ));

    // A restart: the pins are there.
    stop(&mut d)?;
    d.spawn()?;
    d.wait_ready()?;
    let serving = d.spawned().elapsed();
    if !d.log().contains("filtering was not interrupted") {
        bail!("the restart did not take over the pinned link: {}", d.log());
    }
    section.push(Figure::limit(
        "restart with 262,144 durable entries and pins: spawn to the API serving",
        "s",
        serving.as_secs_f64(),
        Goal::AtMost(1.0),
    ));
    Ok(())
}

fn stop(d: &mut Daemon) -> anyhow::Result<()> {
    d.sigterm()?;
    let status = d.wait_exit(Duration::from_secs(30))?;
    if !status.success() {
        bail!("couic exited with {status}: {}", d.log());
    }
    Ok(())
}
