//! couic-bench: measures couic and prints every figure with its ratio to a
//! baseline or goal; `--write BENCHMARKS.md` refreshes the generated
//! sections of that file. Run as root on an otherwise idle machine.
//!
//! (a) BPF_PROG_TEST_RUN cost per packet, 262,144 rules vs empty maps.
//! (b) Drop rate on a veth pair in native XDP, 10,000 vs 262,144 rules, and
//!     iptables raw + ipset holding the same rules.
//! (c) The control plane (`--only api`): the release daemon started by the
//!     bench, its API throughput, memory, expiry, sets and couicctl.
//! (d) Webhook reports (`--only reports`): the daemon reporting to
//!     couic-report, and couic-report's own intake.
//! (e) Peering (`--only peers`): daemons behind nginx with TLS, sync
//!     latency, the cost of peers to single adds, a full resync.
//! (f) Durable entries and restarts (`--only state`): single adds with and
//!     without durability, disk written per add, startup and restart with
//!     262,144 durable entries.
//! (g) Fleet sync (`--only fleet`): daemons with `[fleet]` and a real
//!     nats-server: the cost to single adds, a node joining a bucket of
//!     262,144 entries, one add on 100 daemons, 10,000 adds/s on 100.

mod api;
mod daemon;
mod fleet;
mod gen;
mod kernel;
mod memory;
mod peers;
mod report;
mod reports;
mod rules;
mod state;
mod testrun;
mod veth;

use std::path::PathBuf;

use anyhow::bail;

use report::Section;

/// What a run measures and how hard.
pub struct Settings {
    /// Distinct sources in rotating runs and live traffic.
    pub sources: usize,
    /// Repeats of the single-frame test runs.
    pub repeat: u32,
    /// Passes over the rotating frames (median kept).
    pub passes: usize,
    /// Seconds of live traffic per configuration.
    pub seconds: f64,
    /// Rounds of the live configurations (best kept).
    pub rounds: usize,
    /// Timed single-entry adds per client thread.
    pub api_requests: usize,
    /// Timed couicctl runs.
    pub ctl_runs: usize,
}

const USAGE: &str =
    "usage: couic-bench [--quick] [--only testrun|veth|api|reports|peers|state|fleet] [--write FILE]";

fn main() -> anyhow::Result<()> {
    let mut settings = Settings {
        sources: 100_000,
        repeat: 1_000_000,
        passes: 5,
        seconds: 1.0,
        rounds: 10,
        api_requests: 20_000,
        ctl_runs: 200,
    };
    let mut write: Option<PathBuf> = None;
    let mut only: Option<String> = None;
    let mut quick = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {
                quick = true;
                settings = Settings {
                    sources: 100_000,
                    repeat: 100_000,
                    passes: 1,
                    seconds: 1.0,
                    rounds: 1,
                    api_requests: 5_000,
                    ctl_runs: 50,
                }
            }
            "--write" => write = Some(args.next().ok_or_else(|| anyhow::anyhow!(USAGE))?.into()),
            "--only" => only = Some(args.next().ok_or_else(|| anyhow::anyhow!(USAGE))?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("couic-bench needs root: it loads XDP programs and creates namespaces");
    }

    let mut data_path: Vec<Section> = Vec::new();
    let wants = |what: &str| only.as_deref().is_none_or(|o| o == what);
    if let Some(o) = only.as_deref().filter(|o| {
        ![
            "testrun", "veth", "api", "reports", "peers", "state", "fleet",
        ]
        .contains(o)
    }) {
        bail!("unknown part {o}\n{USAGE}");
    }
    if wants("testrun") {
        data_path.push(testrun::run(&settings)?);
    }
    if wants("veth") {
        data_path.push(veth::run(&settings)?);
    }
    let mut control_plane = None;
    if wants("api") {
        let measured = api::run(&settings)?;
        println!(
            "\n  control plane measured in {:.0} s; load average before {}, after {}",
            measured.took.as_secs_f64(),
            measured.load_before,
            measured.load_after
        );
        control_plane = Some(measured);
    }
    // Parts written to a block of their own, each with how long it took.
    type Part = fn(&Settings) -> anyhow::Result<Section>;
    let parts: [(&str, &report::Block, Part); 4] = [
        ("peers", &report::PEERS, peers::run),
        ("reports", &report::REPORTS, reports::run),
        ("state", &report::STATE, state::run),
        ("fleet", &report::FLEET, fleet::run),
    ];
    let mut timed = Vec::new();
    for (name, block, run) in parts {
        if wants(name) {
            let start = std::time::Instant::now();
            let section = run(&settings)?;
            timed.push((block, section, start.elapsed()));
        }
    }

    if let Some(path) = write {
        // The command as run: `make bench` runs every part.
        let command = match &only {
            None => "make bench".to_string(),
            Some(o) => format!(
                "./target/release/couic-bench{} --only {o} --write {}",
                if quick { " --quick" } else { "" },
                path.display()
            ),
        };
        if !data_path.is_empty() {
            report::write(
                &path,
                &report::DATA_PATH,
                &command,
                "about 3 minutes",
                &context(),
                &data_path,
            )?;
        }
        if let Some(m) = control_plane {
            let context = format!(
                "{} Load average (1, 5, 15 min) when the control-plane part started: {}; when it \
                 ended: {}. That part took {:.0} s, building couic and couicctl left out.",
                context(),
                m.load_before,
                m.load_after,
                m.took.as_secs_f64()
            );
            report::write(
                &path,
                &report::CONTROL_PLANE,
                &command,
                "the control-plane part takes about half a minute after the build",
                &context,
                &[m.section],
            )?;
        }
        for (block, section, took) in timed {
            let duration = format!("this part took {:.0} s", took.as_secs_f64());
            report::write(&path, block, &command, &duration, &context(), &[section])?;
        }
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

/// Which parts of a figure set to run: those named, comma-separated, in
/// the environment variable `var` (`COUIC_BENCH_FLEET=join,convergence`),
/// or all when it is unset or empty.
pub fn parts(var: &str) -> impl Fn(&str) -> bool {
    let only = std::env::var(var).unwrap_or_default();
    move |part| only.is_empty() || only.split(',').any(|p| p == part)
}

/// Gives thread `tid` (0: the calling thread) scheduling `policy`
/// (`libc::SCHED_FIFO`, `libc::SCHED_IDLE`, ...) at `priority`.
pub fn set_scheduler(tid: i32, policy: libc::c_int, priority: i32) -> anyhow::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid sched_param that outlives the call.
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } != 0 {
        anyhow::bail!(
            "sched_setscheduler({tid}, policy {policy}, priority {priority}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The three load averages of /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Where the figures come from: kernel, CPU, date.
fn context() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "Measured {date} on Linux {} ({cpus} x {model}).",
        kernel.trim()
    )
}
