//! The couic binary with `[peering]`: its batches reach a recording server
//! standing for a reference peer (no catch-up routes), `couicctl peers` and
//! the metrics show the link, and the token is never logged or shown; a
//! peer killed and restarted behind nginx converges.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use couic_testkit::ctl;
use couic_testkit::http::{Answer, HttpRecorder};
use couic_testkit::nginx::Nginx;
use couic_testkit::{wait_until, Daemon, Spec};

const COUIC: &str = env!("CARGO_BIN_EXE_couic");
const TOKEN: &str = "5b0b3e4a-9a2f-4f57-8c33-1d2e3f4a5b6c";

#[test]
fn the_daemon_sends_batches_and_shows_its_peers() {
    let peer = HttpRecorder::start();
    peer.answer(
        |req, _| match (req.method.as_str(), req.path.ends_with("/peer")) {
            ("POST", true) => Answer::Status(
                201,
                vec![("Content-Type".into(), "application/json".into())],
                String::from_utf8_lossy(&req.body).into_owned(),
            ),
            _ => Answer::status(404),
        },
    );
    let port = peer.addr().port();
    let spec = Spec::new(COUIC)
        .couicctl(ctl::couicctl_next_to(Path::new(COUIC)))
        .extra(&format!(
            "[peering]\nenabled = true\nqueue_capacity = 1000\n\
             [[peering.peers]]\nname = \"ref\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = false\ntoken = \"{TOKEN}\"\n\
             [[peering.peers]]\nhost = \"::1\"\nport = 9\ntls = false\ntoken = \"{TOKEN}\"\n"
        ));
    let d = Daemon::start(spec).unwrap();
    d.ctl(&["drop", "add", "192.0.2.7/32", "-t", "ssh"]).ok();
    let requests = peer.wait_for(Duration::from_secs(3), |r| {
        r.iter().any(|q| q.method == "POST")
    });
    let post = requests.iter().find(|q| q.method == "POST").unwrap();
    assert_eq!(post.path, "/v1/drop/peer");
    assert_eq!(post.header("user-agent"), Some("CouicClient/1.0.0"));
    assert_eq!(post.json()[0]["entry"]["cidr"], "192.0.2.7/32");

    // The reference peer is ok; nothing listens on [::1]:9, retried.
    assert!(wait_until(Duration::from_secs(3), || {
        let peers = d.ctl(&["peers", "--json"]).json();
        peers[0]["jobs_sent"] == 1 && peers[1]["state"] == "retrying"
    }));
    let peers = d.ctl(&["peers", "--json"]).json();
    assert_eq!(peers[0]["name"], "ref");
    assert_eq!(peers[0]["state"], "ok");
    assert_eq!(peers[0]["url"], format!("http://127.0.0.1:{port}"));
    assert_eq!(peers[1]["name"], "[::1]:9");
    assert_eq!(peers[1]["url"], "http://[::1]:9", "IPv6 bracketed (§18.27)");
    assert!(peers[1]["last_error"].is_string());
    let table = d.ctl(&["peers"]);
    assert!(table.ok().contains("retrying"), "{}", table.stdout);

    let (status, body) = d
        .api()
        .call("GET", "/v1/metrics?format=prometheus", None)
        .unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(
        text.contains("couic_peer_jobs_sent_total{peer=\"ref\"} 1"),
        "{text}"
    );
    assert!(text.contains("couic_peer_up{peer=\"[::1]:9\"} 0"), "{text}");

    let log = d.log();
    assert!(log.contains("has no catch-up routes"), "{log}");
    assert!(!log.contains(TOKEN), "the token is never logged");
    assert!(!table.stdout.contains(TOKEN));
}

/// CIDRs of a policy, as a node lists them.
fn cidrs(d: &Daemon, policy: &str) -> BTreeSet<String> {
    let (status, body) = d.api().call("GET", &format!("/v1/{policy}"), None).unwrap();
    assert_eq!(status, 200);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    list.iter()
        .map(|e| e["cidr"].as_str().unwrap().to_string())
        .collect()
}

/// kill -9 of a peer, changes meanwhile, a restart that lost every entry:
/// the peer converges (nothing missing, nothing extra).
#[test]
fn a_peer_killed_and_restarted_converges() {
    const RESYNC_INTERVAL: u64 = 3;
    let mut c = Daemon::start(Spec::new(COUIC)).unwrap();
    let (status, body) = c
        .api()
        .call(
            "POST",
            "/v1/client",
            Some(br#"{"name":"node-a","group":"peering"}"#),
        )
        .unwrap();
    assert_eq!(status, 201);
    let token: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::plain(dir.path(), &Nginx::socket_upstream(&c.socket()));
    let a = Daemon::start(Spec::new(COUIC).extra(&format!(
        "[peering]\nenabled = true\nresync_interval = {RESYNC_INTERVAL}\n\
         [[peering.peers]]\nname = \"c\"\nhost = \"127.0.0.1\"\nport = {}\ntls = false\ntoken = \"{token}\"\n",
        nginx.port
    )))
    .unwrap();

    let bulk = |from: u32, to: u32| {
        let add: Vec<serde_json::Value> = (from..to)
            .map(|i| serde_json::json!({"cidr": format!("10.{}.{}.0/24", i / 256, i % 256), "tag": "t", "expiration": 0}))
            .collect();
        let body = serde_json::json!({ "add": add }).to_string();
        let (status, text) = a
            .api()
            .call("POST", "/v1/drop/bulk", Some(body.as_bytes()))
            .unwrap();
        assert!(status < 300, "{status} {}", String::from_utf8_lossy(&text));
    };
    bulk(0, 10);
    assert!(wait_until(Duration::from_secs(2), || cidrs(&c, "drop")
        .len()
        == 10));

    c.kill();
    bulk(10, 1010);
    for i in 0..5 {
        let (status, _) = a
            .api()
            .call("DELETE", &format!("/v1/drop/10.0.{i}.0/24"), None)
            .unwrap();
        assert_eq!(status, 204);
    }
    c.spawn().unwrap();
    c.wait_ready().unwrap();
    let back = Instant::now();
    let expected = cidrs(&a, "drop");
    assert_eq!(expected.len(), 1005);
    let patience = Duration::from_secs(RESYNC_INTERVAL + 4);
    let converged = wait_until(patience, || cidrs(&c, "drop") == expected);
    let held = cidrs(&c, "drop");
    assert!(
        converged,
        "after {:?}: {} missing, {} extra\n{}",
        back.elapsed(),
        expected.difference(&held).count(),
        held.difference(&expected).count(),
        a.log()
    );
    eprintln!("converged {:?} after the restart", back.elapsed());
}

/// A peer whose proxy answers 502 for 30 s (its daemon unreachable behind
/// it) while 1,000 changes are made: once it answers again it converges
/// (nothing missing, nothing extra) within resync_interval plus a second.
#[test]
fn a_peer_behind_a_502_for_30_s_converges() {
    use couic_testkit::pki::Pki;
    const RESYNC_INTERVAL: u64 = 3;
    let b = Daemon::start(Spec::new(COUIC)).unwrap();
    let token = b.create_client("node-a", "peering");
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::make(dir.path());
    // nginx with no daemon behind it: every request is a 502.
    let down = tempfile::tempdir().unwrap();
    let gone = down.path().join("gone.sock");
    let front = Nginx::start(down.path(), &pki, &Nginx::socket_upstream(&gone));
    let port = front.port;
    let a = Daemon::start(Spec::new(COUIC).extra(&format!(
        "[peering]\nenabled = true\nresync_interval = {RESYNC_INTERVAL}\n\
         [[peering.peers]]\nname = \"b\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = true\n\
         token = \"{token}\"\nca_file = \"{}\"\n",
        pki.ca.display()
    )))
    .unwrap();

    let started = Instant::now();
    let adds: Vec<serde_json::Value> = (0..995u32)
        .map(|i| serde_json::json!({"cidr": format!("10.1.{}.{}/32", i / 256, i % 256), "tag": "t", "expiration": 0}))
        .collect();
    let body = serde_json::json!({ "add": adds }).to_string();
    let (status, _) = a
        .api()
        .call("POST", "/v1/drop/bulk", Some(body.as_bytes()))
        .unwrap();
    assert_eq!(status, 200);
    for i in 0..5u32 {
        let path = format!("/v1/drop/10.1.0.{i}/32");
        assert_eq!(a.api().call("DELETE", &path, None).unwrap().0, 204);
    }
    assert!(wait_until(Duration::from_secs(10), || {
        let peers = a.api().call("GET", "/v1/peers", None).unwrap().1;
        let peers: serde_json::Value = serde_json::from_slice(&peers).unwrap();
        peers[0]["state"] == "retrying"
            && peers[0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("502"))
    }));
    assert!(cidrs(&b, "drop").is_empty());
    std::thread::sleep(Duration::from_secs(30).saturating_sub(started.elapsed()));

    // The proxy again, on the same port, now with B behind it.
    drop(front);
    let up = tempfile::tempdir().unwrap();
    let upstream = Nginx::socket_upstream(&b.socket());
    let mut back = None;
    assert!(wait_until(Duration::from_secs(5), || {
        back = Nginx::start_on(up.path(), &pki, &upstream, port);
        back.is_some()
    }));
    let back_at = Instant::now();
    let expected = cidrs(&a, "drop");
    assert_eq!(expected.len(), 990);
    let converged = wait_until(Duration::from_secs(RESYNC_INTERVAL + 1), || {
        cidrs(&b, "drop") == expected
    });
    let held = cidrs(&b, "drop");
    assert!(
        converged,
        "after {:?}: {} missing, {} extra",
        back_at.elapsed(),
        expected.difference(&held).count(),
        held.difference(&expected).count()
    );
}
