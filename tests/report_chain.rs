//! The whole reporting chain, every part real: the couic binary reports to
//! the couic-report binary on loopback, which sums the period up for a
//! Discord stand-in (a recording HTTP server on loopback).

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use couic_testkit::ctl::couic_report_next_to;
use couic_testkit::http::HttpRecorder;
use couic_testkit::{wait_until, Daemon, Guard, Spec};
use serde_json::{json, Value};

const SECRET: &str = "7d0c2f55-3a1e-4c9b-8e6f-1b2a3c4d5e6f";
const PATIENCE: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn embeds_of(requests: &[couic_testkit::http::Request]) -> Vec<Value> {
    requests
        .iter()
        .map(|r| r.json()["embeds"][0].clone())
        .collect()
}

/// Adds, deletes and expiries over every period's embed.
fn totals(embeds: &[Value]) -> [u64; 3] {
    let mut totals = [0u64; 3];
    for e in embeds {
        let removed = numbers(field(e, "Removed"));
        totals[0] += numbers(field(e, "Total CIDRs"))[0];
        totals[1] += removed[0];
        totals[2] += removed[1];
    }
    totals
}

/// The numbers of a field's text, in order.
fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .map(|n| n.parse().unwrap())
        .collect()
}

fn field<'a>(embed: &'a Value, name: &str) -> &'a str {
    embed["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no field {name} in {embed}"))["value"]
        .as_str()
        .unwrap()
}

#[test]
fn daemon_to_couic_report_to_discord() {
    let couic = env!("CARGO_BIN_EXE_couic");
    let discord = HttpRecorder::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "batch_interval_secs = 3\n[server]\nname = \"edge-1\"\naddr = \"127.0.0.1\"\n\
             port = {port}\nsecret = \"{SECRET}\"\n[discord]\nwebhook_url = \"{}\"\ndetails = true\n",
            discord.url("/api/webhooks/1/token")
        ),
    )
    .unwrap();
    let child = Command::new(couic_report_next_to(couic.as_ref()))
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _report = Guard::new("couic-report", child);

    let webhook = format!("http://127.0.0.1:{port}/v1/reports/{SECRET}");
    let spec = Spec::new(couic).extra(&format!(
        "[reporting]\nenabled = true\nwebhook = \"{webhook}\"\nnode = \"fw-1\"\n"
    ));
    let d = Daemon::start(spec).unwrap();
    let mut api = d.api();
    let add = json!({"cidr": "192.0.2.7/32", "tag": "ssh", "expiration": 0,
                     "metadata": {"kind": "fail2ban", "detail": "sshd", "extra": null}});
    assert_eq!(api.json("POST", "/v1/drop", Some(&add)).0, 201);
    let adds: Vec<Value> = (0..1000u32)
        .map(|i| json!({"cidr": format!("10.1.{}.{}/32", i >> 8, i & 255), "tag": "bulk", "expiration": 0}))
        .collect();
    assert_eq!(
        api.json("POST", "/v1/drop/bulk", Some(&json!({ "add": adds })))
            .0,
        200
    );
    assert_eq!(api.json("DELETE", "/v1/drop/192.0.2.7/32", None).0, 204);
    // Expires within a second or two on the daemon's own clock.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let short = json!({"cidr": "198.51.100.0/24", "tag": "short", "expiration": now + 2});
    assert_eq!(api.json("POST", "/v1/ignore", Some(&short)).0, 201);
    assert!(
        wait_until(PATIENCE, || d.cidrs("ignore").is_empty()),
        "the entry expired"
    );

    // Periods of 3 s: the reports may straddle two; add them up.
    let requests = discord.wait_for(PATIENCE, |requests| {
        let t = totals(&embeds_of(requests));
        t[0] >= 1002 && t[1] >= 1 && t[2] >= 1
    });
    let embeds = embeds_of(&requests);
    let totals = totals(&embeds);
    assert_eq!(totals, [1002, 1, 1], "adds, deletes, expiries, each once");
    let big = embeds
        .iter()
        .find(|e| {
            field(e, "Total CIDRs").contains("1001") || field(e, "Total CIDRs").contains("1002")
        })
        .expect("the bulk's period");
    assert_eq!(
        big["color"], 16711680,
        "red: past the default red threshold"
    );
    assert!(field(big, "Top Tag").contains("**bulk** (×1000)"), "{big}");
    assert_eq!(big["author"]["name"], "Server: edge-1");
    assert!(embeds.iter().all(|e| field(e, "Nodes").contains('1')));
}
