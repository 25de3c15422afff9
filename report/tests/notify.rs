//! Notifications from the real binary to loopback servers standing in for
//! Discord and a generic webhook: the embed exactly as §13, levels and
//! threshold_min, 429 and 5xx retries.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// A one-second period, Discord at `discord`, and `rest`.
fn config(discord: &StandIn, rest: &str) -> String {
    format!(
        "batch_interval_secs = 1\n{rest}\n[discord]\nwebhook_url = \"{}\"\n",
        discord.url("/api/webhooks/1/token")
    )
}

fn embed(body: &Value) -> &Value {
    assert_eq!(body["username"], "Couic");
    assert_eq!(body["embeds"].as_array().unwrap().len(), 1);
    &body["embeds"][0]
}

fn field(embed: &Value, i: usize) -> (&str, &str) {
    let f = &embed["fields"][i];
    assert_eq!(f["inline"], true);
    (f["name"].as_str().unwrap(), f["value"].as_str().unwrap())
}

/// 7 adds tagged ssh (one CIDR twice), 2 tagged web, 1 untagged, and
/// removes that must not count.
fn mixed_batch() -> Vec<u8> {
    let mut reports = adds(6, Some("ssh")).as_array().unwrap().clone();
    reports.push(reports[0].clone());
    for (i, tag) in [Some("web"), Some("web"), None].iter().enumerate() {
        let mut r = adds(1, *tag)[0].clone();
        r["entry"]["cidr"] = json!(format!("192.0.2.{i}/32"));
        reports.push(r);
    }
    let mut remove = reports[1].clone();
    remove["action"] = json!("remove");
    reports.push(remove.clone());
    remove["metadata"] = json!({"kind": "expired", "detail": "ttl", "extra": null});
    reports.push(remove.clone());
    reports.push(remove);
    json_bytes(&Value::Array(reports))
}

#[test]
fn the_discord_embed_is_the_references() {
    let discord = StandIn::start(vec![]);
    let r = Receiver::start(&config(&discord, ""));
    assert_eq!(post(&r.reports_url(), &mixed_batch(), &[]).0, 200);
    let got = discord.wait_for(1);
    assert_eq!(got[0].path, "/api/webhooks/1/token");
    let e = embed(&got[0].body);
    assert_eq!(e["title"], "📊 1-second Report Summary");
    // 10 adds, the default orange threshold: orange.
    assert_eq!(e["color"], 16749824);
    assert_eq!(
        e["thumbnail"]["url"],
        "https://couic.net/images/notif-orange.png"
    );
    assert_eq!(e["author"]["name"], "Server: edge-test");
    assert_eq!(
        e["footer"],
        json!({"text": "Couic Report", "icon_url": "https://couic.net/images/white-150.png"})
    );
    assert_eq!(field(e, 0), ("Total CIDRs", ":shield: **10**"));
    assert_eq!(field(e, 1), ("Distinct CIDRs", ":mag: **9**"));
    assert_eq!(field(e, 2), ("Top Tag", ":satellite: **ssh** (×7)"));
    assert_eq!(e["fields"].as_array().unwrap().len(), 3);
    let ts = e["timestamp"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    assert!(ts.ends_with('Z'));
    // The webhook URL holds Discord's token: not logged, even at debug.
    r.wait_metric(
        "couic_report_notifications_total{notifier=\"discord\",outcome=\"sent\"}",
        1.0,
    );
    let logs = r.logs();
    assert!(logs.contains("notification sent"), "{logs}");
    assert!(!logs.contains("token"), "{logs}");
}

#[test]
fn colour_follows_the_totals() {
    let discord = StandIn::start(vec![]);
    let r = Receiver::start(&config(&discord, "[thresholds]\norange = 3\nred = 5"));
    let expected = [
        (1, 65280, "notif-green.png"),
        (3, 16749824, "notif-orange.png"),
        (4, 16749824, "notif-orange.png"),
        (5, 16711680, "notif-red-fire.png"),
    ];
    for (i, (total, colour, picture)) in expected.iter().enumerate() {
        // One POST is one batch, so it is counted in one period.
        assert_eq!(
            post(&r.reports_url(), &json_bytes(&adds(*total, None)), &[]).0,
            200
        );
        let got = discord.wait_for(i + 1);
        let e = embed(&got[i].body);
        assert_eq!(field(e, 0).1, format!(":shield: **{total}**"));
        assert_eq!(e["color"], *colour, "total {total}");
        assert_eq!(
            e["thumbnail"]["url"],
            format!("https://couic.net/images/{picture}")
        );
        assert_eq!(field(e, 2), ("Top Tag", ":satellite: N/A"));
    }
}

#[test]
fn below_threshold_min_nothing_is_sent() {
    let discord = StandIn::start(vec![]);
    let r = Receiver::start(&config(
        &discord,
        "[thresholds]\norange = 3\nred = 5\nthreshold_min = \"orange\"",
    ));
    assert_eq!(
        post(&r.reports_url(), &json_bytes(&adds(2, Some("a"))), &[]).0,
        200
    );
    r.wait_metric(
        "couic_report_periods_total{outcome=\"below_threshold\"}",
        1.0,
    );
    assert!(discord.received().is_empty());
    assert_eq!(
        post(&r.reports_url(), &json_bytes(&adds(3, Some("a"))), &[]).0,
        200
    );
    let got = discord.wait_for(1);
    assert_eq!(field(embed(&got[0].body), 0).1, ":shield: **3**");
    // Empty periods are never sent, even at threshold_min = green.
    eventually("an empty period", || {
        (r.metric("couic_report_periods_total{outcome=\"empty\"}") >= 1.0).then_some(())
    });
    assert_eq!(discord.received().len(), 1);
}

#[test]
fn a_429_is_retried_after_its_retry_after_with_the_same_figures() {
    let discord = StandIn::start(vec![Answer::json(
        429,
        r#"{"message":"You are being rate limited.","retry_after":0.4,"global":false}"#,
    )]);
    let r = Receiver::start(&config(&discord, ""));
    assert_eq!(
        post(&r.reports_url(), &json_bytes(&adds(4, Some("ssh"))), &[]).0,
        200
    );
    let got = discord.wait_for(2);
    let waited = got[1].at - got[0].at;
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert_eq!(got[0].body, got[1].body, "the same notice is resent");
    assert_eq!(field(embed(&got[1].body), 0).1, ":shield: **4**");
    r.wait_metric(
        "couic_report_notifications_total{notifier=\"discord\",outcome=\"sent\"}",
        1.0,
    );
    assert_eq!(
        r.metric("couic_report_notifications_total{notifier=\"discord\",outcome=\"retry\"}"),
        1.0
    );
    assert_eq!(discord.received().len(), 2);
}

#[test]
fn a_5xx_is_retried_with_backoff() {
    let discord = StandIn::start(vec![Answer::status(502), Answer::status(503)]);
    let r = Receiver::start(&config(&discord, ""));
    assert_eq!(
        post(&r.reports_url(), &json_bytes(&adds(2, None)), &[]).0,
        200
    );
    let got = discord.wait_for(3);
    assert!(got[1].at - got[0].at >= Duration::from_secs(1));
    assert!(got[2].at - got[1].at >= Duration::from_secs(2));
    assert_eq!(got[0].body, got[2].body);
    assert_eq!(field(embed(&got[2].body), 0).1, ":shield: **2**");
    r.wait_metric(
        "couic_report_notifications_total{notifier=\"discord\",outcome=\"sent\"}",
        1.0,
    );
}

#[test]
fn the_generic_webhook_gets_every_figure() {
    let discord = StandIn::start(vec![]);
    let hook = StandIn::start(vec![]);
    let rest = format!(
        "[webhook]\nurl = \"{}\"\n[discord]\nwebhook_url = \"{}\"\ndetails = true\n",
        hook.url("/hook"),
        discord.url("/d")
    );
    let r = Receiver::start(&format!("batch_interval_secs = 1\n{rest}"));
    assert_eq!(
        post(
            &r.reports_url(),
            &mixed_batch(),
            &[("X-Couic-Node", "edge-1")]
        )
        .0,
        200
    );
    let body = &hook.wait_for(1)[0].body;
    assert_eq!(hook.received()[0].path, "/hook");
    assert_eq!(body["server"], "edge-test");
    assert_eq!(body["period_secs"], 1);
    assert_eq!(body["level"], "orange");
    assert_eq!(body["total"], 10);
    assert_eq!(body["distinct"], 9);
    assert_eq!(body["adds"], json!({"drop": 10, "ignore": 0}));
    assert_eq!(body["top_tag"], json!({"tag": "ssh", "count": 7}));
    assert_eq!(
        body["top_tags"],
        json!([{"tag": "ssh", "count": 7}, {"tag": "web", "count": 2}])
    );
    assert_eq!(
        body["top_networks"],
        json!([{"network": "10.0.0.0/24", "count": 7}, {"network": "192.0.2.0/24", "count": 3}])
    );
    assert_eq!(body["removed"], json!({"expired": 2, "deleted": 1}));
    assert_eq!(body["nodes"], 1);
    assert!(body["text"].as_str().unwrap().contains("10 CIDRs added"));

    let e = embed(&discord.wait_for(1)[0].body).clone();
    assert_eq!(e["fields"].as_array().unwrap().len(), 7);
    assert_eq!(field(&e, 3).1, ":wastebasket: **1** deleted, **2** expired");
    assert_eq!(field(&e, 4).1, ":satellite_orbital: **1**");
}
