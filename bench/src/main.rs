//! couic-bench: measures the couic data path and prints every figure with
//! its ratio to a baseline; `--write BENCHMARKS.md` refreshes the generated
//! section of that file. Run as root on an otherwise idle machine.
//!
//! (a) BPF_PROG_TEST_RUN cost per packet, 262,144 rules vs empty maps.
//! (b) Drop rate on a veth pair in native XDP, 10,000 vs 262,144 rules, and
//!     iptables raw + ipset holding the same rules.
//! (c) Hooks for figures measured elsewhere (API throughput, daemon memory):
//!     each is a function returning its section, or None until written.

mod gen;
mod kernel;
mod report;
mod rules;
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
}

const USAGE: &str = "usage: couic-bench [--quick] [--only testrun|veth] [--write FILE]";

fn main() -> anyhow::Result<()> {
    let mut settings = Settings {
        sources: 100_000,
        repeat: 1_000_000,
        passes: 3,
        seconds: 3.0,
        rounds: 3,
    };
    let mut write: Option<PathBuf> = None;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {
                settings = Settings {
                    sources: 100_000,
                    repeat: 100_000,
                    passes: 1,
                    seconds: 1.0,
                    rounds: 1,
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

    let mut sections: Vec<Section> = Vec::new();
    let wants = |what: &str| only.as_deref().is_none_or(|o| o == what);
    if wants("testrun") {
        sections.push(testrun::run(&settings)?);
    }
    if wants("veth") {
        sections.push(veth::run(&settings)?);
    }
    sections.extend(api_throughput());
    sections.extend(daemon_rss());

    if let Some(path) = write {
        let command = "make bench";
        report::write(&path, command, &context(), &sections)?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

/// Hook (c): requests per second through the API socket. To be written by
/// whoever owns the API; return the section once it measures something.
fn api_throughput() -> Option<Section> {
    None
}

/// Hook (c): resident memory of the daemon holding full maps.
fn daemon_rss() -> Option<Section> {
    None
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
