//! The generic notifier's JSON: the period's figures under plain names, and
//! a `text` line so that Slack-compatible endpoints show something too.

use serde_json::{json, Value};

use crate::notify::Notice;

pub fn payload(notice: &Notice) -> Value {
    let s = &notice.summary;
    let ranked = |key: &str, items: &[(String, u64)]| -> Vec<Value> {
        items
            .iter()
            .map(|(k, c)| json!({ key: k, "count": c }))
            .collect()
    };
    let top_tag = s
        .top_tag()
        .map_or(Value::Null, |(t, c)| json!({ "tag": t, "count": c }));
    json!({
        "text": text(notice),
        "server": notice.server,
        "timestamp": notice.timestamp(),
        "period_secs": s.length.as_secs(),
        "level": notice.level.as_str(),
        "total": s.total,
        "distinct": s.distinct,
        "adds": { "drop": s.adds_drop, "ignore": s.adds_ignore },
        "top_tag": top_tag,
        "top_tags": ranked("tag", &s.top_tags),
        "top_networks": ranked("network", &s.top_networks),
        "removed": { "expired": s.removed_expired, "deleted": s.removed_deleted },
        "nodes": s.nodes,
        "capped": s.capped,
    })
}

fn text(notice: &Notice) -> String {
    let s = &notice.summary;
    let top = match s.top_tag() {
        Some((tag, count)) => format!(", top tag {tag} (×{count})"),
        None => String::new(),
    };
    format!(
        "Couic {} report from {}: {} CIDRs added ({} distinct){top}, level {}",
        notice.period(),
        notice.server,
        s.total,
        s.distinct,
        notice.level
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::notice;
    use crate::thresholds::Level;

    #[test]
    fn every_figure_of_the_period() {
        let body = payload(&notice(900, 42, Level::Orange));
        let expected = json!({
            "text": "Couic 15-minute report from edge: 42 CIDRs added (41 distinct), top tag ssh (×4), level orange",
            "server": "edge",
            "timestamp": "2026-12-01T10:15:00Z",
            "period_secs": 900,
            "level": "orange",
            "total": 42,
            "distinct": 41,
            "adds": { "drop": 42, "ignore": 0 },
            "top_tag": { "tag": "ssh", "count": 4 },
            "top_tags": [{ "tag": "ssh", "count": 4 }, { "tag": "web", "count": 2 }],
            "top_networks": [{ "network": "192.0.2.0/24", "count": 3 }],
            "removed": { "expired": 2, "deleted": 1 },
            "nodes": 2,
            "capped": false,
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn no_tag_is_null() {
        let mut n = notice(60, 1, Level::Green);
        n.summary.top_tags.clear();
        let body = payload(&n);
        assert_eq!(body["top_tag"], Value::Null);
        assert_eq!(body["top_tags"], json!([]));
        assert!(!body["text"].as_str().unwrap().contains("top tag"));
    }
}
