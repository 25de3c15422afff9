//! The Discord message, exactly the reference's (§13): one embed with three
//! inline fields, its colour and picture by level. With `details`, the
//! figures the reference does not have follow as more fields.

use serde_json::{json, Value};

use crate::notify::Notice;
use crate::thresholds::Level;

pub const USERNAME: &str = "Couic";
pub const FOOTER_TEXT: &str = "Couic Report";
pub const FOOTER_ICON: &str = "https://couic.net/images/white-150.png";

pub fn colour(level: Level) -> u32 {
    match level {
        Level::Green => 0x00FF00,
        Level::Orange => 0xFF9500,
        Level::Red => 0xFF0000,
    }
}

pub fn thumbnail(level: Level) -> &'static str {
    match level {
        Level::Green => "https://couic.net/images/notif-green.png",
        Level::Orange => "https://couic.net/images/notif-orange.png",
        Level::Red => "https://couic.net/images/notif-red-fire.png",
    }
}

pub fn message(notice: &Notice, details: bool) -> Value {
    let s = &notice.summary;
    let top_tag = match s.top_tag() {
        Some((tag, count)) => format!(":satellite: **{tag}** (×{count})"),
        None => ":satellite: N/A".to_string(),
    };
    let mut fields = vec![
        field("Total CIDRs", format!(":shield: **{}**", s.total)),
        field(
            "Distinct CIDRs",
            format!(":mag: **{}{}**", s.distinct, plus(s.capped)),
        ),
        field("Top Tag", top_tag),
    ];
    if details {
        fields.extend(detail_fields(notice));
    }
    json!({
        "username": USERNAME,
        "embeds": [{
            "title": format!("📊 {} Report Summary", notice.period()),
            "timestamp": notice.timestamp(),
            "color": colour(notice.level),
            "author": { "name": format!("Server: {}", notice.server) },
            "thumbnail": { "url": thumbnail(notice.level) },
            "footer": { "text": FOOTER_TEXT, "icon_url": FOOTER_ICON },
            "fields": fields,
        }],
    })
}

/// A period that hit a cap shows its distinct count as a lower bound.
fn plus(capped: bool) -> &'static str {
    if capped {
        "+"
    } else {
        ""
    }
}

fn field(name: &str, value: String) -> Value {
    json!({ "name": name, "value": value, "inline": true })
}

fn detail_fields(notice: &Notice) -> Vec<Value> {
    let s = &notice.summary;
    let ranked = |items: &[(String, u64)]| -> String {
        if items.is_empty() {
            return "N/A".to_string();
        }
        let lines: Vec<String> = items.iter().map(|(k, c)| format!("`{k}` ×{c}")).collect();
        lines.join("\n")
    };
    vec![
        field(
            "Removed",
            format!(
                ":wastebasket: **{}** deleted, **{}** expired",
                s.removed_deleted, s.removed_expired
            ),
        ),
        field("Nodes", format!(":satellite_orbital: **{}**", s.nodes)),
        field("Top Tags", ranked(&s.top_tags)),
        field("Top Networks", ranked(&s.top_networks)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::notice;

    #[test]
    fn the_reference_embed() {
        let body = message(&notice(900, 42, Level::Orange), false);
        let expected = json!({
            "username": "Couic",
            "embeds": [{
                "title": "📊 15-minute Report Summary",
                "timestamp": "2026-12-01T10:15:00Z",
                "color": 16749824,
                "author": { "name": "Server: edge" },
                "thumbnail": { "url": "https://couic.net/images/notif-orange.png" },
                "footer": {
                    "text": "Couic Report",
                    "icon_url": "https://couic.net/images/white-150.png"
                },
                "fields": [
                    { "name": "Total CIDRs", "value": ":shield: **42**", "inline": true },
                    { "name": "Distinct CIDRs", "value": ":mag: **41**", "inline": true },
                    { "name": "Top Tag", "value": ":satellite: **ssh** (×4)", "inline": true }
                ]
            }]
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn colours_and_pictures_by_level() {
        assert_eq!(colour(Level::Green), 65280);
        assert_eq!(colour(Level::Orange), 16749824);
        assert_eq!(colour(Level::Red), 16711680);
        let red = message(&notice(3600, 100, Level::Red), false);
        assert_eq!(red["embeds"][0]["color"], 16711680);
        assert_eq!(
            red["embeds"][0]["thumbnail"]["url"],
            "https://couic.net/images/notif-red-fire.png"
        );
        assert_eq!(red["embeds"][0]["title"], "📊 1-hour Report Summary");
        let green = message(&notice(60, 1, Level::Green), false);
        assert_eq!(
            green["embeds"][0]["thumbnail"]["url"],
            "https://couic.net/images/notif-green.png"
        );
    }

    #[test]
    fn no_tag_reads_na() {
        let mut n = notice(900, 3, Level::Green);
        n.summary.top_tags.clear();
        let body = message(&n, false);
        assert_eq!(body["embeds"][0]["fields"][2]["value"], ":satellite: N/A");
    }

    #[test]
    fn a_capped_period_shows_a_lower_bound() {
        let mut n = notice(900, 42, Level::Orange);
        n.summary.capped = true;
        let body = message(&n, false);
        assert_eq!(body["embeds"][0]["fields"][1]["value"], ":mag: **41+**");
    }

    #[test]
    fn details_follow_the_reference_fields() {
        let body = message(&notice(900, 42, Level::Orange), true);
        let fields = body["embeds"][0]["fields"].as_array().unwrap();
        assert_eq!(fields.len(), 7);
        assert_eq!(fields[0]["name"], "Total CIDRs");
        assert_eq!(
            fields[3]["value"],
            ":wastebasket: **1** deleted, **2** expired"
        );
        assert_eq!(fields[4]["value"], ":satellite_orbital: **2**");
        assert_eq!(fields[5]["value"], "`ssh` ×4\n`web` ×2");
        assert_eq!(fields[6]["value"], "`192.0.2.0/24` ×3");
    }
}
