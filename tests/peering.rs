//! Peer sync between real daemons (in-process, real BPF maps, real
//! sockets), each behind a real nginx on loopback, one with TLS and a CA
//! the test makes; and against a recording server that stands for a
//! reference peer or a slow one.

mod api_support;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use api_support::*;
use couic::actors::peer_broadcaster::PeerParts;
use couic::backoff::Backoff;
use couic::config::Peer;
use couic::peering::link::{Answer, Failure, HttpPeer, Link};
use couic::peering::{Job, PeerCounters, PeerQueue, MAX_BATCH};
use couic_common::{PeerDigest, PeerEntry, PeerJob, PeerState, Policy};
use couic_testkit::http::{self, HttpRecorder};
use couic_testkit::nginx::Nginx;
use couic_testkit::pki::Pki;
use couic_testkit::wait_until;

/// How soon a change on one node must be on its peers.
const WITHIN: Duration = Duration::from_secs(1);

/// A link whose peer is known only once every node runs (its token is made
/// on the peer); until then every attempt fails, as with a peer down.
#[derive(Clone, Default)]
struct Later(Arc<OnceLock<HttpPeer>>);

impl Later {
    fn peer(&self) -> Result<&HttpPeer, Failure> {
        self.0
            .get()
            .ok_or_else(|| Failure::new("not reachable yet"))
    }
}

impl Link for Later {
    fn post(&self, policy: Policy, jobs: &[Job]) -> Result<(), Failure> {
        self.peer()?.post(policy, jobs)
    }

    fn digest(&self, policy: Policy) -> Result<Answer<PeerDigest>, Failure> {
        self.peer()?.digest(policy)
    }

    fn put_shard(
        &self,
        policy: Policy,
        shard: usize,
        entries: &[PeerEntry],
    ) -> Result<Answer<()>, Failure> {
        self.peer()?.put_shard(policy, shard, entries)
    }

    fn shown(&self) -> &str {
        self.0.get().map_or("a peer not set yet", |p| p.shown())
    }
}

fn parts(name: &str, link: Arc<dyn Link>, capacity: usize) -> PeerParts {
    PeerParts {
        link,
        queue: PeerQueue::new(capacity, MAX_BATCH),
        // Short, so that a test waits little for the first retry.
        backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(400)),
        counters: Arc::new(PeerCounters::new(name, "-")),
        resync_interval: Duration::from_secs(600),
    }
}

/// A daemon, nginx in front of it, and its links to the other nodes.
struct Node {
    nginx: Nginx,
    daemon: Daemon,
    links: Vec<(usize, Later)>,
    _dir: tempfile::TempDir,
}

/// `n` nodes in a full mesh, each sending to every other through its
/// nginx (TLS with the test CA when `pki` is given). Queues of `capacity`.
fn mesh(n: usize, pki: Option<&Pki>, capacity: usize) -> Vec<Node> {
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| {
            let links: Vec<(usize, Later)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| (j, Later::default()))
                .collect();
            let peers = links
                .iter()
                .map(|(j, l)| parts(&format!("node-{j}"), Arc::new(l.clone()), capacity))
                .collect();
            let daemon = Daemon::start_peering(peers);
            let dir = tempfile::tempdir().unwrap();
            let upstream = Nginx::socket_upstream(&daemon.socket);
            let nginx = match pki {
                Some(pki) => Nginx::start(dir.path(), pki, &upstream),
                None => Nginx::plain(dir.path(), &upstream),
            };
            Node {
                nginx,
                daemon,
                links,
                _dir: dir,
            }
        })
        .collect();
    for i in 0..n {
        for k in 0..nodes[i].links.len() {
            let j = nodes[i].links[k].0;
            connect(&mut nodes, i, j, pki);
        }
    }
    nodes
}

/// Makes node `i`'s link to node `j` work: a `peering` client `node-i` on
/// `j`, whose token `i` sends.
fn connect(nodes: &mut [Node], i: usize, j: usize, pki: Option<&Pki>) {
    let token = nodes[j]
        .daemon
        .create_client(&format!("node-{i}"), "peering");
    let peer = Peer {
        host: "127.0.0.1".into(),
        port: nodes[j].nginx.port,
        tls: pki.is_some(),
        token: token.parse().unwrap(),
        ca_file: pki.map(|p| p.ca.clone()),
        name: Some(format!("node-{j}")),
    };
    let link = HttpPeer::new(&peer).unwrap();
    let later = &nodes[i].links.iter().find(|(k, _)| *k == j).unwrap().1;
    assert!(later.0.set(link).is_ok());
}

fn present(d: &Daemon, policy: &str, cidr: &str) -> bool {
    d.admin().get(&format!("/v1/{policy}/{cidr}")).status == 200
}

/// Waits until `cond` holds on every daemon of `nodes`; the time it took.
fn on_all(nodes: &[&Daemon], cond: impl Fn(&Daemon) -> bool) -> Duration {
    let start = Instant::now();
    assert!(
        wait_until(WITHIN, || nodes.iter().all(|d| cond(d))),
        "not on every peer within {WITHIN:?}"
    );
    start.elapsed()
}

#[test]
fn three_nodes_with_tls_sync_adds_deletes_and_ignores_without_echo() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::make(dir.path());
    let nodes = mesh(3, Some(&pki), 65_536);
    let (a, b, c) = (&nodes[0].daemon, &nodes[1].daemon, &nodes[2].daemon);
    let others = [b, c];

    assert_eq!(
        a.admin()
            .add("drop", "198.51.100.7/32", Some("ssh"), 0)
            .status,
        201
    );
    on_all(&others, |d| present(d, "drop", "198.51.100.7/32"));
    let entry = json(&b.admin().get("/v1/drop/198.51.100.7/32"));
    assert_eq!(
        (entry["tag"].as_str(), entry["expiration"].as_u64()),
        (Some("ssh"), Some(0))
    );

    // An ignore stays an ignore (§18.1).
    assert_eq!(
        a.admin()
            .add("ignore", "192.0.2.0/24", None, T0 + 3600)
            .status,
        201
    );
    on_all(&others, |d| present(d, "ignore", "192.0.2.0/24"));
    assert!(!present(b, "drop", "192.0.2.0/24"));

    // A delete follows.
    assert_eq!(a.admin().delete("/v1/drop/198.51.100.7/32").status, 204);
    on_all(&others, |d| !present(d, "drop", "198.51.100.7/32"));

    // Add, delete, add inside one window: present everywhere at the end.
    let mut api = a.admin();
    assert_eq!(
        api.add("drop", "203.0.113.5/32", Some("one"), 0).status,
        201
    );
    assert_eq!(api.delete("/v1/drop/203.0.113.5/32").status, 204);
    assert_eq!(
        api.add("drop", "203.0.113.5/32", Some("two"), 0).status,
        201
    );
    on_all(&others, |d| {
        present(d, "drop", "203.0.113.5/32")
            && json(&d.admin().get("/v1/drop/203.0.113.5/32"))["tag"] == "two"
    });

    // Changes from C reach A and B too.
    assert_eq!(c.admin().add("drop", "203.0.113.9/32", None, 0).status, 201);
    on_all(&[a, b], |d| present(d, "drop", "203.0.113.9/32"));

    // No echo: B made no API change, so it sent no job, and A's entries
    // came back to A from nobody (A holds each once, as an API entry).
    std::thread::sleep(Duration::from_millis(600));
    for peer in &b.peers {
        assert_eq!(peer.read().jobs_sent, 0, "B sent on what it received");
    }
    for peer in &a.peers {
        let status = peer.read();
        assert_eq!(status.state, PeerState::Ok, "{status:?}");
        assert!(status.jobs_sent >= 4, "{status:?}");
    }
    assert_eq!(a.admin().count("drop"), 2);
    assert_eq!(b.admin().count("drop"), 2);
    assert_eq!(c.admin().count("ignore"), 1);
}

#[test]
fn a_slow_peer_does_not_delay_a_healthy_one() {
    let slow = HttpRecorder::start();
    slow.answer(|_, _| {
        std::thread::sleep(Duration::from_secs(5));
        http::Answer::Status(201, Vec::new(), "[]".into())
    });
    let b = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::plain(dir.path(), &Nginx::socket_upstream(&b.socket));
    let token = b.create_client("node-a", "peering");
    let peer = |port: u16, token: &str, name: &str| Peer {
        host: "127.0.0.1".into(),
        port,
        tls: false,
        token: token.parse().unwrap(),
        ca_file: None,
        name: Some(name.into()),
    };
    let slow_link = HttpPeer::new(&peer(slow.addr().port(), &token, "slow")).unwrap();
    let healthy = HttpPeer::new(&peer(nginx.port, &token, "b")).unwrap();
    let a = Daemon::start_peering(vec![
        parts("slow", Arc::new(slow_link), 65_536),
        parts("b", Arc::new(healthy), 65_536),
    ]);
    for i in 0..6 {
        let cidr = format!("198.51.100.{i}/32");
        assert_eq!(a.admin().add("drop", &cidr, None, 0).status, 201);
        on_all(&[&b], |d| present(d, "drop", &cidr));
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(!slow.requests().is_empty(), "the slow peer was tried");
}

#[test]
fn an_overflowed_peer_is_behind_then_resynced() {
    let mut nodes = mesh_one_way(100);
    let (a, b) = (&nodes[0].daemon, &nodes[1].daemon);
    // B holds a stale entry from A, which A does not have.
    let stale = b.create_client("node-0", "peering");
    let resp = b.client(Some(&stale)).post(
        "/v1/drop/peer",
        r#"[{"action":"add","entry":{"cidr":"10.9.9.9/32","tag":null,"expiration":0,"metadata":null}}]"#,
    );
    assert_eq!(resp.status, 201);
    // A's own API entry on B is B's: a resync leaves it.
    assert_eq!(b.admin().add("drop", "10.8.8.8/32", None, 0).status, 201);

    // While B cannot be reached, 10,000 changes (a bulk add) overflow A's
    // queue of 100.
    let mut api = a.admin();
    let adds: Vec<serde_json::Value> = (0..10_000u32)
        .map(|i| serde_json::json!({"cidr": format!("10.0.{}.{}/32", i / 256, i % 256), "tag": "bulk", "expiration": 0}))
        .collect();
    let body = serde_json::json!({ "add": adds }).to_string();
    assert_eq!(api.post("/v1/drop/bulk", &body).status, 200);
    assert_eq!(api.add("ignore", "10.7.0.0/16", None, 0).status, 201);
    // The PeerBroadcaster counts on its own thread: poll.
    assert!(
        wait_until(WITHIN, || a.peers[0].read().jobs_dropped >= 9_900),
        "{:?}",
        a.peers[0].read()
    );
    let status = a.peers[0].read();
    assert_eq!(status.state, PeerState::Behind, "{status:?}");
    assert!(status.jobs_dropped >= 9_900, "{status:?}");
    assert!(status.queued <= 100);

    // B answers again (its token is the one it already knew): A resyncs.
    let token = stale.clone();
    set_link(&mut nodes, token);
    let (a, b) = (&nodes[0].daemon, &nodes[1].daemon);
    assert!(
        wait_until(Duration::from_secs(10), || b.admin().count("drop")
            == 10_001),
        "B holds {} drop entries",
        b.admin().count("drop")
    );
    assert!(
        !present(b, "drop", "10.9.9.9/32"),
        "the stale entry is gone"
    );
    assert!(present(b, "drop", "10.8.8.8/32"), "B's own entry stays");
    assert!(present(b, "ignore", "10.7.0.0/16"));
    assert!(wait_until(WITHIN, || a.peers[0].read().state == PeerState::Ok));
    let status = a.peers[0].read();
    assert!(status.shards_resynced > 0, "{status:?}");
    // Both digests now agree: a new resync sends nothing.
    let digest: PeerDigest =
        serde_json::from_value(json(&b.client(Some(&stale)).get("/v1/drop/peer/digest"))).unwrap();
    assert_eq!(digest.shards.iter().map(|s| s.count).sum::<u64>(), 10_000);
}

/// Two nodes, 0 sending to 1 (not back), the link not set yet.
fn mesh_one_way(capacity: usize) -> Vec<Node> {
    let later = Later::default();
    let a = Daemon::start_peering(vec![parts("node-1", Arc::new(later.clone()), capacity)]);
    // Room for the overflow test's 10,000 entries.
    let b = Daemon::start_peering(Vec::new());
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let [da, db] = dirs;
    let na = Nginx::plain(da.path(), &Nginx::socket_upstream(&a.socket));
    let nb = Nginx::plain(db.path(), &Nginx::socket_upstream(&b.socket));
    vec![
        Node {
            nginx: na,
            daemon: a,
            links: vec![(1, later)],
            _dir: da,
        },
        Node {
            nginx: nb,
            daemon: b,
            links: Vec::new(),
            _dir: db,
        },
    ]
}

fn set_link(nodes: &mut [Node], token: String) {
    let peer = Peer {
        host: "127.0.0.1".into(),
        port: nodes[1].nginx.port,
        tls: false,
        token: token.parse().unwrap(),
        ca_file: None,
        name: Some("node-1".into()),
    };
    let link = HttpPeer::new(&peer).unwrap();
    assert!(nodes[0].links[0].1 .0.set(link).is_ok());
}

/// Our batches as a reference receiver sees them (§10.2), and the fallback
/// to changes only when the peer has no catch-up routes.
#[test]
fn batches_carry_the_reference_headers_and_a_reference_peer_gets_deltas() {
    let recorder = HttpRecorder::start();
    recorder.answer(|req, _| {
        if req.path.ends_with("/peer") && req.method == "POST" {
            // Echo, as a receiver does: the sender parses it.
            echo(&req.body)
        } else {
            http::Answer::status(404)
        }
    });
    let token = "6f1c1a52-4b6a-4c1e-9a57-3a3e2f0b9c11";
    let peer = Peer {
        host: "127.0.0.1".into(),
        port: recorder.addr().port(),
        tls: false,
        token: token.parse().unwrap(),
        ca_file: None,
        name: None,
    };
    let a = Daemon::start_peering(vec![parts(
        "ref",
        Arc::new(HttpPeer::new(&peer).unwrap()),
        65_536,
    )]);
    let mut api = a.admin();
    assert_eq!(api.add("drop", "198.51.100.1/32", Some("x"), 0).status, 201);
    assert_eq!(api.add("ignore", "198.51.100.2/32", None, 0).status, 201);
    let requests = recorder.wait_for(Duration::from_secs(3), |r| {
        r.iter().filter(|q| q.method == "POST").count() >= 2
    });
    let posts: Vec<_> = requests.iter().filter(|q| q.method == "POST").collect();
    for post in &posts {
        assert_eq!(
            post.header("authorization"),
            Some(&*format!("Bearer {token}"))
        );
        assert_eq!(post.header("content-type"), Some("application/json"));
        assert_eq!(post.header("accept"), Some("application/json"));
        assert_eq!(post.header("user-agent"), Some("CouicClient/1.0.0"));
        // Beyond §10.2: a couic receiver then answers `[]`, others echo.
        assert_eq!(post.header("prefer"), Some("return=minimal"));
        let jobs: Vec<PeerJob> = serde_json::from_slice(&post.body).unwrap();
        assert_eq!(jobs.len(), 1);
        assert!(jobs[0].entry.metadata.is_none());
    }
    assert_eq!(posts[0].path, "/v1/drop/peer");
    assert_eq!(
        posts[0].json(),
        serde_json::json!([{"action": "add", "entry": {"cidr": "198.51.100.1/32", "tag": "x", "expiration": 0, "metadata": null}}])
    );
    assert_eq!(posts[1].path, "/v1/ignore/peer");
    // The digest was asked once (404): no catch-up, no shard sent.
    let digests = requests
        .iter()
        .filter(|q| q.path.ends_with("/digest"))
        .count();
    assert_eq!(digests, 1);
    assert!(requests.iter().all(|q| q.method != "PUT"));
    assert!(wait_until(WITHIN, || a.peers[0].read().jobs_sent == 2));
    assert_eq!(a.peers[0].read().state, PeerState::Ok);
    assert_eq!(a.peers[0].read().name, "ref");
}

/// A peer that answers 2xx with something else than an array of jobs has
/// not taken the batch: it is kept and sent again once the answer is right.
#[test]
fn a_2xx_that_is_not_an_array_of_jobs_is_a_failure() {
    let recorder = HttpRecorder::start();
    let json = |text: &str| {
        http::Answer::Status(
            200,
            vec![("Content-Type".into(), "application/json".into())],
            text.to_string(),
        )
    };
    recorder.answer(
        move |req, _| match (req.method.as_str(), req.path.ends_with("/peer")) {
            ("POST", true) => json(r#"[{"cidr": "198.51.100.1/32"}]"#),
            _ => http::Answer::status(404),
        },
    );
    let peer = Peer {
        host: "127.0.0.1".into(),
        port: recorder.addr().port(),
        tls: false,
        token: "6f1c1a52-4b6a-4c1e-9a57-3a3e2f0b9c11".parse().unwrap(),
        ca_file: None,
        name: None,
    };
    let a = Daemon::start_peering(vec![parts(
        "liar",
        Arc::new(HttpPeer::new(&peer).unwrap()),
        65_536,
    )]);
    assert_eq!(
        a.admin().add("drop", "198.51.100.1/32", None, 0).status,
        201
    );
    assert!(wait_until(WITHIN, || a.peers[0]
        .read()
        .last_error
        .is_some_and(|e| e.contains("not an array of jobs"))));
    let status = a.peers[0].read();
    assert_eq!((status.jobs_sent, status.queued), (0, 1), "{status:?}");
    assert_eq!(status.state, PeerState::Retrying);

    recorder.answer(
        |req, _| match (req.method.as_str(), req.path.ends_with("/peer")) {
            ("POST", true) => echo(&req.body),
            _ => http::Answer::status(404),
        },
    );
    assert!(
        wait_until(Duration::from_secs(10), || a.peers[0].read().jobs_sent == 1),
        "{:?}",
        a.peers[0].read()
    );
}

/// A 201 answer echoing the jobs received.
fn echo(body: &[u8]) -> http::Answer {
    http::Answer::Status(
        201,
        vec![("Content-Type".into(), "application/json".into())],
        String::from_utf8_lossy(body).into_owned(),
    )
}

/// A TLS peer whose certificate is signed by a CA the link does not trust:
/// nothing is sent, the link retries and says why.
#[test]
fn a_peer_with_an_untrusted_certificate_is_retried_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::make(dir.path());
    let b = Daemon::start();
    let nginx = Nginx::start(dir.path(), &pki, &Nginx::socket_upstream(&b.socket));
    let token = b.create_client("node-a", "peering");
    let peer = Peer {
        host: "127.0.0.1".into(),
        port: nginx.port,
        tls: true,
        token: token.parse().unwrap(),
        ca_file: Some(pki.other_ca.clone()),
        name: Some("b".into()),
    };
    let a = Daemon::start_peering(vec![parts(
        "b",
        Arc::new(HttpPeer::new(&peer).unwrap()),
        100,
    )]);
    assert_eq!(
        a.admin().add("drop", "198.51.100.1/32", None, 0).status,
        201
    );
    assert!(wait_until(Duration::from_secs(2), || {
        a.peers[0].read().last_error.is_some()
    }));
    let status = a.peers[0].read();
    assert_eq!(status.state, PeerState::Retrying, "{status:?}");
    let error = status.last_error.unwrap().to_lowercase();
    assert!(
        error.contains("certificate") || error.contains("tls"),
        "{error}"
    );
    assert!(!present(&b, "drop", "198.51.100.1/32"));
}
