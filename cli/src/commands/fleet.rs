//! `fleet`: how the daemon's sync with its fleet's NATS bucket is doing, as
//! `GET /v1/fleet` reports it (never a credential).

use std::io::Write;

use clap::Args;
use comfy_table::{presets::UTF8_FULL, Table};
use couic_common::FleetStatus;

use super::Ctx;
use crate::output::{self, now_secs};

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Print the answer as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: FleetArgs, ctx: &mut Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    let status: FleetStatus = ctx.get_newer("/v1/fleet", "fleet")?;
    if args.json {
        output::print_json(out, &status)?;
    } else if !status.enabled {
        writeln!(
            out,
            "Fleet sync is off: no [fleet] section, or enabled = false."
        )?;
    } else {
        output::print_table(out, &table(&status, now_secs()))?;
    }
    Ok(())
}

/// One row per field: the state first, then the counters.
pub fn table(s: &FleetStatus, now: u64) -> Table {
    let state = match (s.connected, s.caught_up) {
        (true, true) => "connected",
        (true, false) => "connected, catching up",
        (false, _) => "disconnected",
    };
    let error = match (&s.last_error, s.last_error_at) {
        (Some(e), Some(at)) => format!(
            "{e} ({} ago)",
            output::format_remaining(now + now.saturating_sub(at), now)
        ),
        (Some(e), None) => e.clone(),
        (None, _) => "-".into(),
    };
    let mut t = Table::new();
    t.load_preset(UTF8_FULL).set_header(vec!["Fleet", "Value"]);
    for (name, value) in [
        ("Node", s.node.clone()),
        ("Bucket", s.bucket.clone()),
        ("Servers", s.servers.join(", ")),
        ("State", state.to_string()),
        ("Last revision", s.last_revision.to_string()),
        ("Lag", s.lag.to_string()),
        ("Queued", s.queued.to_string()),
        ("Dropped", s.dropped.to_string()),
        ("Published", s.published.to_string()),
        ("Applied", s.applied.to_string()),
        ("Rejected", s.rejected.to_string()),
        ("Purged", s.purged.to_string()),
        ("Swept", s.swept.to_string()),
        ("Fetched", s.fetched.to_string()),
        ("Reconnects", s.reconnects.to_string()),
        ("Last error", error),
    ] {
        t.add_row(vec![name.to_string(), value]);
    }
    t
}
