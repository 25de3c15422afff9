//! The couic binary with `[peering]`: its batches reach a recording server
//! standing for a reference peer (no catch-up routes), `couicctl peers` and
//! the metrics show the link, and the token is never logged or shown.

use std::path::Path;
use std::time::Duration;

use couic_testkit::ctl;
use couic_testkit::http::{Answer, HttpRecorder};
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
