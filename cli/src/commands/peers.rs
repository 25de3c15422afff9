//! `peers`: how the daemon's links to its peers are doing, as `GET
//! /v1/peers` reports them (never a token).

use std::io::Write;

use clap::Args;
use comfy_table::{presets::UTF8_FULL, Table};
use couic_common::PeerStatus;

use super::Ctx;
use crate::output::{self, now_secs};

#[derive(Debug, Args)]
pub struct PeersArgs {
    /// Print the answer as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PeersArgs, ctx: &mut Ctx, out: &mut dyn Write) -> anyhow::Result<()> {
    let peers: Vec<PeerStatus> = ctx.get_newer("/v1/peers", "peers")?;
    if args.json {
        output::print_json(out, &peers)?;
    } else if peers.is_empty() {
        writeln!(out, "No peer: peering is off or has no peers.")?;
    } else {
        output::print_table(out, &table(&peers, now_secs()))?;
    }
    Ok(())
}

/// How long ago `at` (Unix seconds) was: `1m30s ago`, `now`, or `never`.
fn ago(at: Option<u64>, now: u64) -> String {
    match at.map(|at| now.saturating_sub(at)) {
        None => "never".into(),
        Some(0) => "now".into(),
        Some(secs) => format!("{} ago", output::format_remaining(now + secs, now)),
    }
}

/// Columns `Name`, `URL`, `State`, `Queued`, `Sent`, `Last success`,
/// `Last error`.
pub fn table(peers: &[PeerStatus], now: u64) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL).set_header(vec![
        "Name",
        "URL",
        "State",
        "Queued",
        "Sent",
        "Last success",
        "Last error",
    ]);
    for p in peers {
        let error = match (&p.last_error, p.last_error_at) {
            (Some(e), at) => format!("{e} ({})", ago(at, now)),
            (None, _) => "-".into(),
        };
        t.add_row(vec![
            p.name.clone(),
            p.url.clone(),
            p.state.to_string(),
            p.queued.to_string(),
            p.jobs_sent.to_string(),
            ago(p.last_success, now),
            error,
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use couic_common::PeerState;

    #[test]
    fn renders_every_column() {
        let peer = PeerStatus {
            name: "couic2".into(),
            url: "https://couic2.example:443".into(),
            state: PeerState::Retrying,
            queued: 12,
            jobs_sent: 340,
            jobs_dropped: 0,
            shards_resynced: 0,
            last_success: Some(1_000 - 90),
            last_error: Some("HTTP 502".into()),
            last_error_at: Some(1_000),
        };
        let text = table(&[peer], 1_000).to_string();
        for cell in [
            "couic2",
            "https://couic2.example:443",
            "retrying",
            "12",
            "340",
            "1m30s ago",
            "HTTP 502 (now)",
        ] {
            assert!(text.contains(cell), "{cell} in\n{text}");
        }
        assert_eq!(ago(None, 5), "never");
    }
}
