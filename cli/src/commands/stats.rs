//! `stats`: global counters, per-tag counters, and a live view of rates.

use std::fmt::Write as _;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use clap::Subcommand;
use couic_common::{Policy, Stats, TagStats};

use super::Ctx;
use crate::output;

/// Time between two samples of `stats global --live`.
const LIVE_PERIOD: Duration = Duration::from_secs(1);
const CLEAR_SCREEN: &str = "\x1b[2J\x1b[1;1H";
const HIGHLIGHT: &str = "\x1b[47;30m";
const RESET: &str = "\x1b[0m";

#[derive(Debug, Subcommand)]
pub enum StatsCommand {
    /// Entry counts and packets/bytes per XDP action
    Global {
        /// Refresh every second with packet and byte rates, until Ctrl-C
        #[arg(short, long)]
        live: bool,
        /// Print the statistics as JSON
        #[arg(long, conflicts_with = "live")]
        json: bool,
    },
    /// Packets and bytes dropped per tag
    Drop {
        /// Print the statistics as JSON
        #[arg(long)]
        json: bool,
    },
    /// Packets and bytes ignored (let through) per tag
    Ignore {
        /// Print the statistics as JSON
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: StatsCommand, ctx: &mut Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        StatsCommand::Global { live: true, .. } => live(ctx, out),
        StatsCommand::Global { json, .. } => {
            let stats: Stats = ctx.api.get("/v1/stats")?;
            if json {
                output::print_json(out, &stats)?;
            } else {
                out.write_all(global_text(&stats).as_bytes())?;
            }
            Ok(())
        }
        StatsCommand::Drop { json } => tags(ctx, out, Policy::Drop, json),
        StatsCommand::Ignore { json } => tags(ctx, out, Policy::Ignore, json),
    }
}

fn tags(ctx: &mut Ctx, out: &mut dyn Write, policy: Policy, json: bool) -> anyhow::Result<()> {
    let stats: TagStats = ctx.api.get(&format!("/v1/stats/tags/{policy}"))?;
    if json {
        output::print_json(out, &stats)?;
    } else {
        match output::tag_stats_table(policy, &stats) {
            Some(table) => output::print_table(out, &table)?,
            None => writeln!(out, "No tag statistics available.")?,
        }
    }
    Ok(())
}

/// The reference's text block; actions sorted by name, then an empty line.
pub fn global_text(stats: &Stats) -> String {
    let mut s = format!(
        "Drop CIDR Count: {}\nIgnore CIDR Count: {}\nXDP Stats:\n",
        stats.drop_cidr_count, stats.ignore_cidr_count
    );
    for (action, pkt) in &stats.xdp {
        let _ = write!(
            s,
            "  Action: {action}\n    RX Packets: {}\n    RX Bytes: {}\n",
            pkt.rx_packets, pkt.rx_bytes
        );
    }
    s.push('\n');
    s
}

/// Runs until interrupted (Ctrl-C ends the process) or the API fails.
fn live(ctx: &mut Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut view = LiveView::default();
    let mut last = Instant::now();
    loop {
        let stats: Stats = ctx.api.get("/v1/stats")?;
        let now = Instant::now();
        let frame = view.frame(stats, now.duration_since(last).as_secs_f64());
        last = now;
        out.write_all(frame.as_bytes())?;
        out.flush()?;
        thread::sleep(LIVE_PERIOD);
    }
}

/// `1.5kpps`, `2.0mbps`, `12.0 pps`: one decimal, `k`/`m`/`g` from 1e3/1e6/1e9.
pub fn format_rate(value: f64, unit: &str) -> String {
    if value >= 1e9 {
        format!("{:.1}g{unit}", value / 1e9)
    } else if value >= 1e6 {
        format!("{:.1}m{unit}", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1}k{unit}", value / 1e3)
    } else {
        format!("{value:.1} {unit}")
    }
}

/// The screens of `--live`: rates come from the previous sample, and values
/// whose text changed since the previous screen are highlighted.
#[derive(Debug, Default)]
pub struct LiveView {
    previous: Option<Stats>,
    previous_values: Vec<String>,
}

impl LiveView {
    pub fn frame(&mut self, stats: Stats, elapsed_secs: f64) -> String {
        let mut values = vec![
            stats.drop_cidr_count.to_string(),
            stats.ignore_cidr_count.to_string(),
        ];
        let mut actions = Vec::new();
        for (action, pkt) in &stats.xdp {
            let (pps, bps) = match self.previous.as_ref().and_then(|p| p.xdp.get(action)) {
                Some(before) if elapsed_secs > 0.0 => (
                    pkt.rx_packets.saturating_sub(before.rx_packets) as f64 / elapsed_secs,
                    pkt.rx_bytes.saturating_sub(before.rx_bytes) as f64 / elapsed_secs,
                ),
                _ => (0.0, 0.0),
            };
            actions.push(action.clone());
            values.push(format_rate(pps, "pps"));
            values.push(format_rate(bps, "bps"));
        }
        let shown: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| match self.previous_values.get(i) {
                Some(before) if before != v => format!("{HIGHLIGHT}{v}{RESET}"),
                _ => v.clone(),
            })
            .collect();

        let mut s = format!(
            "{CLEAR_SCREEN}Every {elapsed_secs:.1}s: stats\n\nDrop CIDR Count: {}\nIgnore CIDR Count: {}\nXDP Stats:\n",
            shown[0], shown[1]
        );
        for (i, action) in actions.iter().enumerate() {
            let _ = write!(
                s,
                "  Action: {action}\n    RX Packets: {}\n    RX Bytes: {}\n",
                shown[2 + 2 * i],
                shown[3 + 2 * i]
            );
        }
        self.previous = Some(stats);
        self.previous_values = values;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use couic_common::PktStats;

    fn stats(drop: usize, pass_packets: u64, pass_bytes: u64) -> Stats {
        let mut s = Stats {
            drop_cidr_count: drop,
            ignore_cidr_count: 1,
            ..Stats::default()
        };
        for a in couic_common::XDP_ACTIONS {
            s.xdp.insert(a.into(), PktStats::default());
        }
        s.xdp.insert(
            "XDP_PASS".into(),
            PktStats {
                rx_packets: pass_packets,
                rx_bytes: pass_bytes,
            },
        );
        s
    }

    #[test]
    fn rates() {
        assert_eq!(format_rate(0.0, "pps"), "0.0 pps");
        assert_eq!(format_rate(999.94, "pps"), "999.9 pps");
        assert_eq!(format_rate(1_500.0, "pps"), "1.5kpps");
        assert_eq!(format_rate(2_000_000.0, "bps"), "2.0mbps");
        assert_eq!(format_rate(3.25e9, "bps"), "3.2gbps");
    }

    #[test]
    fn global_text_block() {
        let text = global_text(&stats(2, 10, 1000));
        assert!(text.starts_with(
            "Drop CIDR Count: 2\nIgnore CIDR Count: 1\nXDP Stats:\n  Action: XDP_ABORTED\n"
        ));
        assert!(text.contains("  Action: XDP_PASS\n    RX Packets: 10\n    RX Bytes: 1000\n"));
        assert!(text.ends_with("    RX Bytes: 0\n\n"));
        let order: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("  Action: "))
            .collect();
        assert_eq!(
            order,
            [
                "XDP_ABORTED",
                "XDP_DROP",
                "XDP_PASS",
                "XDP_REDIRECT",
                "XDP_TX"
            ]
        );
    }

    #[test]
    fn live_frames_show_rates_and_highlight_changes() {
        let mut view = LiveView::default();
        let first = view.frame(stats(2, 100, 10_000), 0.0);
        assert!(first.starts_with("\x1b[2J\x1b[1;1HEvery 0.0s: stats\n"));
        assert!(
            first.contains("  Action: XDP_PASS\n    RX Packets: 0.0 pps\n    RX Bytes: 0.0 bps\n")
        );
        assert!(!first.contains(HIGHLIGHT));

        let second = view.frame(stats(2, 2_100, 10_000), 2.0);
        assert!(second.contains("Every 2.0s: stats"));
        assert!(
            second.contains("Drop CIDR Count: 2\n"),
            "unchanged count not highlighted"
        );
        assert!(second.contains(&format!("    RX Packets: {HIGHLIGHT}1.0kpps{RESET}\n")));
        assert!(second.contains("    RX Bytes: 0.0 bps\n"));

        let third = view.frame(stats(3, 2_100, 10_000), 1.0);
        assert!(third.contains(&format!("Drop CIDR Count: {HIGHLIGHT}3{RESET}\n")));
        assert!(third.contains(&format!("    RX Packets: {HIGHLIGHT}0.0 pps{RESET}\n")));
    }

    #[test]
    fn counter_reset_gives_zero_not_overflow() {
        let mut view = LiveView::default();
        view.frame(stats(0, 1_000, 1_000), 0.0);
        let after_restart = view.frame(stats(0, 10, 10), 1.0);
        assert!(after_restart.contains("  Action: XDP_PASS\n    RX Packets: 0.0 pps\n"));
    }
}
