//! The real `couic` daemon for the control-plane figures: the release
//! binaries, built first, and the daemon started through the harness the
//! tests use (`couic-testkit`): a temporary configuration with no
//! interface, user and group root, its own working directory and socket,
//! killed and cleaned up when its guard drops, even when a figure fails
//! half-way.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use couic_testkit::{Api, Daemon, Spec};

/// The binaries measured: release builds next to couic-bench.
pub struct Binaries {
    pub couic: PathBuf,
    pub couicctl: PathBuf,
    pub couic_report: PathBuf,
}

impl Binaries {
    /// Builds (or confirms up to date) `couic` and `couicctl` in release
    /// mode, so that the figures are those of the current sources, and
    /// finds them next to this executable. Without cargo at hand (e.g. a
    /// root PATH without it), binaries already built are used, with a
    /// warning.
    pub fn build() -> anyhow::Result<Binaries> {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("the bench crate sits in the workspace")?;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        println!(
            "  building the binaries (cargo build --release -p couic -p couicctl -p couic-report)"
        );
        match Command::new(&cargo)
            .args([
                "build",
                "--release",
                "-p",
                "couic",
                "-p",
                "couicctl",
                "-p",
                "couic-report",
            ])
            .current_dir(workspace)
            .status()
        {
            Ok(status) if status.success() => {}
            Ok(status) => bail!("cargo build --release of the binaries: {status}"),
            Err(e) => println!("  warning: cannot run cargo ({e}); using the binaries as built"),
        }
        let dir = std::env::current_exe()?
            .parent()
            .context("couic-bench has a directory")?
            .to_path_buf();
        let bins = Binaries {
            couic: dir.join("couic"),
            couicctl: dir.join("couicctl"),
            couic_report: dir.join("couic-report"),
        };
        for bin in [&bins.couic, &bins.couicctl, &bins.couic_report] {
            if !bin.is_file() {
                bail!(
                    "{} missing: run cargo build --release -p couic -p couicctl -p couic-report",
                    bin.display()
                );
            }
        }
        Ok(bins)
    }
}

/// The spec of every daemon the bench starts: the release binaries,
/// full-size maps (the defaults of a production configuration).
pub fn spec(bins: &Binaries) -> Spec {
    let spec = Spec::new(&bins.couic)
        .couicctl(&bins.couicctl)
        .limits(262_144, 65_536);
    // COUIC_BENCH_DURABLE=0: the figures of a daemon that keeps no state,
    // to compare with the default in the same session.
    if std::env::var("COUIC_BENCH_DURABLE").is_ok_and(|v| v == "0") {
        return spec.extra("[state]\ndurable = false\n");
    }
    spec
}

/// Starts a daemon with an empty working directory and waits until it
/// answers.
pub fn start(bins: &Binaries) -> anyhow::Result<Daemon> {
    Daemon::start(spec(bins))
}

/// Resident and peak resident memory of the daemon in bytes (VmRSS,
/// VmHWM).
pub fn rss(daemon: &Daemon) -> anyhow::Result<(u64, u64)> {
    let pid = daemon.pid();
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kb * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// `drop_cidr_count` and `ignore_cidr_count` of `GET /v1/stats`.
pub fn counts(api: &mut Api) -> anyhow::Result<(u64, u64)> {
    let stats = api.expect("GET", "/v1/stats", None, 200)?;
    let count = |k: &str| {
        stats[k]
            .as_u64()
            .with_context(|| format!("no {k} in {stats}"))
    };
    Ok((count("drop_cidr_count")?, count("ignore_cidr_count")?))
}

/// The machine's CPU time spent idle so far, all cores, in seconds.
pub fn idle_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("a cpu line")?;
    // cpu user nice system idle iowait ...: idle and iowait.
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((fields[3] + fields[4]) as f64 / hz)
}

/// CPU seconds (user + system) of process `pid` so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command (which may hold spaces), from field 3.
    let rest = stat.rsplit_once(')').context("a stat line")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}
