//! What couicctl prints (§14.4): entry, client and tag-statistics tables,
//! remaining times, pretty JSON.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use comfy_table::{presets::UTF8_FULL, Table};
use couic_common::{Client, Entry, Policy, TagStats};
use serde::Serialize;

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Remaining life of an entry: `never` (0), `expired` (past), else the time
/// left with the largest non-zero unit first: `1d 2h3m4s`, `2h3m4s`, `3m4s`, `4s`.
pub fn format_remaining(expiration: u64, now: u64) -> String {
    if expiration == 0 {
        return "never".into();
    }
    if expiration <= now {
        return "expired".into();
    }
    let left = expiration - now;
    let (d, h, m, s) = (left / 86_400, left / 3_600 % 24, left / 60 % 60, left % 60);
    if d > 0 {
        format!("{d}d {h}h{m}m{s}s")
    } else if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL).set_header(header.to_vec());
    t
}

/// Columns `Policy`, `CIDR`, `Tag`, `Expiration`; a `null` tag shows `-`, an
/// empty one an empty cell.
pub fn entry_table(policy: Policy, entries: &[Entry], now: u64) -> Table {
    let mut t = table(&["Policy", "CIDR", "Tag", "Expiration"]);
    for e in entries {
        t.add_row(vec![
            policy.to_string(),
            e.cidr.clone(),
            e.tag.clone().unwrap_or_else(|| "-".into()),
            format_remaining(e.expiration, now),
        ]);
    }
    t
}

/// Columns `Name`, `Group` (display form, `client_ro`), `Token`.
pub fn client_table(clients: &[Client]) -> Table {
    let mut t = table(&["Name", "Group", "Token"]);
    for c in clients {
        t.add_row(vec![
            c.name.clone(),
            c.group.display_name().to_string(),
            c.token.to_string(),
        ]);
    }
    t
}

/// Columns `Tag`, `Policy`, `RX Packets`, `RX Bytes`, sorted by tag; `None`
/// when there is nothing to show.
pub fn tag_stats_table(policy: Policy, stats: &TagStats) -> Option<Table> {
    if stats.tags.is_empty() {
        return None;
    }
    let mut t = table(&["Tag", "Policy", "RX Packets", "RX Bytes"]);
    // `tags` is a BTreeMap: already sorted by tag.
    for (tag, s) in &stats.tags {
        t.add_row(vec![
            tag.clone(),
            policy.to_string(),
            s.rx_packets.to_string(),
            s.rx_bytes.to_string(),
        ]);
    }
    Some(t)
}

pub fn print_table(out: &mut dyn Write, table: &Table) -> io::Result<()> {
    writeln!(out, "{table}")
}

pub fn print_json(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    let text = serde_json::to_string_pretty(value).expect("wire types always serialise");
    writeln!(out, "{text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use couic_common::{Group, PktStats};

    #[test]
    fn remaining_time_uses_the_largest_unit_first() {
        let now = 1_000_000;
        assert_eq!(format_remaining(0, now), "never");
        assert_eq!(format_remaining(now - 1, now), "expired");
        assert_eq!(format_remaining(now, now), "expired");
        assert_eq!(format_remaining(now + 5, now), "5s");
        assert_eq!(format_remaining(now + 60, now), "1m0s");
        assert_eq!(format_remaining(now + 3_605, now), "1h0m5s");
        assert_eq!(
            format_remaining(now + 86_400 + 2 * 3_600 + 3 * 60 + 4, now),
            "1d 2h3m4s"
        );
        assert_eq!(format_remaining(now + 3 * 86_400, now), "3d 0h0m0s");
    }

    fn entry(tag: Option<&str>, expiration: u64) -> Entry {
        Entry {
            creation: 1,
            cidr: "192.0.2.0/24".into(),
            tag: tag.map(str::to_string),
            expiration,
        }
    }

    #[test]
    fn entry_table_shows_null_and_empty_tags_differently() {
        let text = entry_table(
            Policy::Drop,
            &[
                entry(None, 0),
                entry(Some(""), 100),
                entry(Some("ssh"), 130),
            ],
            100,
        )
        .to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "│ Policy ┆ CIDR         ┆ Tag ┆ Expiration │");
        assert_eq!(lines[3], "│ drop   ┆ 192.0.2.0/24 ┆ -   ┆ never      │");
        assert_eq!(lines[5], "│ drop   ┆ 192.0.2.0/24 ┆     ┆ expired    │");
        assert_eq!(lines[7], "│ drop   ┆ 192.0.2.0/24 ┆ ssh ┆ 30s        │");
        assert!(lines[0].starts_with('┌') && lines[8].starts_with('└'));
    }

    #[test]
    fn client_table_uses_display_groups() {
        let c = Client {
            name: "ro".into(),
            token: uuid::Uuid::nil(),
            group: Group::Clientro,
        };
        let text = client_table(&[c]).to_string();
        assert!(
            text.contains("│ ro   ┆ client_ro ┆ 00000000-0000-0000-0000-000000000000 │"),
            "{text}"
        );
    }

    #[test]
    fn tag_stats_sorted_or_absent() {
        assert!(tag_stats_table(Policy::Drop, &TagStats::default()).is_none());
        let mut stats = TagStats::default();
        stats.tags.insert(
            "b".into(),
            PktStats {
                rx_packets: 2,
                rx_bytes: 20,
            },
        );
        stats.tags.insert(
            "a".into(),
            PktStats {
                rx_packets: 1,
                rx_bytes: 10,
            },
        );
        let text = tag_stats_table(Policy::Ignore, &stats).unwrap().to_string();
        let a = text.find("│ a ").unwrap();
        assert!(a < text.find("│ b ").unwrap());
        assert!(
            text.contains("│ a   ┆ ignore ┆ 1          ┆ 10       │"),
            "{text}"
        );
    }
}
