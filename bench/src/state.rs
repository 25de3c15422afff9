//! (f) Durable entries and restarts (`--only state`): the release daemon
//! with its state directory on this machine's disk.
//!
//! 1. Single adds with durability on against the same build with
//!    `[state] durable = false`, in turns; the disk written per add
//!    (`write_bytes` of /proc/<pid>/io) against the journal's records.
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
         by the adds, against the bytes of the journal's records. *Startup*: 262,144 IPv4 \
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
    single_adds(&bins, settings, &mut section)?;
    startup(&bins, &mut section)?;
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
    let (mut best_off, mut best_on) = (0f64, 0f64);
    let (mut written, mut records, mut adds) = (0u64, 0u64, 0u64);
    for _ in 0..2 {
        let off = Daemon::start(daemon::spec(bins).extra("[state]\ndurable = false\n"))?;
        best_off = best_off.max(api::single_adds(&off, settings.api_requests, 0)?);
        drop(off);
        let on = daemon::start(bins)?;
        let before = write_bytes(on.pid())?;
        best_on = best_on.max(api::single_adds(&on, settings.api_requests, 0)?);
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
