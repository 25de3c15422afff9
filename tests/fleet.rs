//! The couic binary with `[fleet]`, against a real `nats-server -js` on a
//! loopback port: changes reach every node through the bucket, concurrent
//! writes converge, a node away catches up, the server restarting or
//! missing at start loses nothing, bad settings are clear errors.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use couic_testkit::nats::NatsServer;
use couic_testkit::{ctl, wait_until, Daemon, Spec};
use serde_json::{json, Value};

const COUIC: &str = env!("CARGO_BIN_EXE_couic");
/// How long a change may take to reach the other nodes (the issue's 1 s,
/// with room for a loaded CI machine).
const SPREAD: Duration = Duration::from_secs(5);
const CONVERGE: Duration = Duration::from_secs(30);

fn fleet(url: &str, node: &str, extra: &str) -> Spec {
    Spec::new(COUIC)
        .couicctl(ctl::couicctl_next_to(Path::new(COUIC)))
        .extra(&format!(
            "[fleet]\nenabled = true\nservers = [\"{url}\"]\nnode = \"{node}\"\n{extra}"
        ))
}

fn status(d: &Daemon) -> Value {
    let (code, body) = d.call("GET", "/v1/fleet", None);
    assert_eq!(code, 200, "{body}");
    body
}

fn wait_caught_up(d: &Daemon) {
    assert!(
        wait_until(CONVERGE, || status(d)["caught_up"] == true),
        "never caught up: {}\n{}",
        status(d),
        d.log()
    );
}

/// Nodes `a` and `b` of the fleet at `nats`, caught up.
fn two_nodes(nats: &NatsServer) -> (Daemon, Daemon) {
    let a = Daemon::start(fleet(&nats.url(), "a", "")).unwrap();
    let b = Daemon::start(fleet(&nats.url(), "b", "")).unwrap();
    wait_caught_up(&a);
    wait_caught_up(&b);
    (a, b)
}

fn entry(d: &Daemon, policy: &str, cidr: &str) -> Option<Value> {
    let (code, body) = d.call("GET", &format!("/v1/{policy}/{cidr}"), None);
    match code {
        200 => Some(body),
        404 => None,
        _ => panic!("GET {cidr}: {code} {body}"),
    }
}

fn add(d: &Daemon, policy: &str, cidr: &str, tag: &str, expiration: u64) {
    let body = json!({"cidr": cidr, "tag": tag, "expiration": expiration});
    let (code, answer) = d.call("POST", &format!("/v1/{policy}"), Some(body));
    assert_eq!(code, 201, "{answer}");
}

fn set(d: &Daemon, policy: &str) -> BTreeSet<String> {
    d.cidrs(policy).into_iter().collect()
}

#[test]
fn changes_reach_every_node_and_concurrent_writes_converge() {
    let nats = NatsServer::start(None).unwrap();
    let nodes: Vec<Daemon> = ["a", "b", "c"]
        .iter()
        .map(|n| Daemon::start(fleet(&nats.url(), n, "")).unwrap())
        .collect();
    for d in &nodes {
        wait_caught_up(d);
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);

    // An add on A is on B and C, with its tag, expiration and creation.
    let expiration = couic_testkit::now() + 3600;
    add(a, "drop", "192.0.2.0/24", "ssh", expiration);
    let on_a = entry(a, "drop", "192.0.2.0/24").unwrap();
    let started = Instant::now();
    for d in [b, c] {
        assert!(
            wait_until(SPREAD, || entry(d, "drop", "192.0.2.0/24").is_some()),
            "not spread: {}",
            d.log()
        );
        assert_eq!(entry(d, "drop", "192.0.2.0/24").unwrap(), on_a);
    }
    eprintln!("spread to two nodes in {:?}", started.elapsed());
    let (_, checked) = b.call("GET", "/v1/check/192.0.2.1", None);
    assert_eq!(checked["origin"], "fleet", "{checked}");

    // An ignore stays an ignore; IPv6 keys work.
    add(b, "ignore", "2001:db8::/32", "office", 0);
    for d in [a, c] {
        assert!(wait_until(SPREAD, || entry(d, "ignore", "2001:db8::/32").is_some()));
        assert!(entry(d, "drop", "2001:db8::/32").is_none());
    }

    // A delete on C follows everywhere.
    let (code, body) = c.call("DELETE", "/v1/drop/192.0.2.0/24", None);
    assert_eq!(code, 204, "{body}");
    for d in [a, b] {
        assert!(wait_until(SPREAD, || entry(d, "drop", "192.0.2.0/24").is_none()));
    }

    // So far every word came in a notice: none was read from the bucket.
    for d in &nodes {
        assert_eq!(status(d)["fetched"], 0, "{}", status(d));
    }

    // Concurrent writes of one CIDR on A and B: one entry everywhere.
    // Either may see the other's first (409); both taking theirs is the
    // conflict the bucket's order settles.
    let mut conflicts = 0;
    for round in 0..20 {
        let cidr = format!("198.51.100.{round}/32");
        let barrier = std::sync::Barrier::new(2);
        let try_add = |d: &Daemon, tag: String| {
            let body = json!({"cidr": cidr, "tag": tag, "expiration": 0});
            barrier.wait();
            let (code, answer) = d.call("POST", "/v1/drop", Some(body));
            assert!(code == 201 || code == 409, "{code} {answer}");
            code == 201
        };
        let both = std::thread::scope(|s| {
            let on_a = s.spawn(|| try_add(a, format!("a{round}")));
            let on_b = s.spawn(|| try_add(b, format!("b{round}")));
            on_a.join().unwrap() && on_b.join().unwrap()
        });
        conflicts += usize::from(both);
    }
    eprintln!("{conflicts} of 20 rounds were real conflicts");
    let tags = |d: &Daemon| -> Vec<Option<Value>> {
        (0..20)
            .map(|r| entry(d, "drop", &format!("198.51.100.{r}/32")).map(|e| e["tag"].clone()))
            .collect()
    };
    assert!(
        wait_until(CONVERGE, || {
            let on_a = tags(a);
            on_a.iter().all(Option::is_some) && tags(b) == on_a && tags(c) == on_a
        }),
        "diverged:\n{:?}\n{:?}\n{:?}",
        tags(a),
        tags(b),
        tags(c)
    );

    let s = status(a);
    assert_eq!(s["connected"], true);
    assert_eq!(s["node"], "a");
    assert!(s["published"].as_u64().unwrap() > conflicts as u64, "{s}");
    assert_eq!(s["queued"], 0);
    let (code, text) = a
        .api()
        .call("GET", "/v1/metrics?format=prometheus", None)
        .unwrap();
    assert_eq!(code, 200);
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("couic_fleet_connected 1"), "{text}");
    let shown = a.ctl(&["fleet"]);
    assert!(shown.ok().contains("connected"), "{}", shown.stdout);
}

/// Bulk adds through the API: `n` drop entries `10.<i>.0/24` from `from`.
fn bulk_add(d: &Daemon, from: u32, n: u32, tag: &str) {
    let items: Vec<Value> = (from..from + n)
        .map(|i| json!({"cidr": format!("10.{}.{}.0/24", i / 256, i % 256), "tag": tag, "expiration": 0}))
        .collect();
    let body = json!({"add": items});
    let (code, body) = d.call("POST", "/v1/drop/bulk", Some(body));
    assert_eq!(code, 200, "{body}");
}

fn converged(nodes: &[&Daemon]) -> bool {
    let first = (set(nodes[0], "drop"), set(nodes[0], "ignore"));
    nodes[1..]
        .iter()
        .all(|d| (set(d, "drop"), set(d, "ignore")) == first)
}

#[test]
fn a_node_away_catches_up_and_reconciles() {
    let nats = NatsServer::start(None).unwrap();
    let a = Daemon::start(fleet(&nats.url(), "a", "")).unwrap();
    let mut c = Daemon::start(fleet(&nats.url(), "c", "")).unwrap();
    wait_caught_up(&a);
    wait_caught_up(&c);
    // Held by both before C goes: some stay, some are deleted while away.
    bulk_add(&a, 0, 100, "before");
    assert!(wait_until(CONVERGE, || set(&c, "drop").len() == 100));

    c.sigterm().unwrap();
    c.wait_exit(Duration::from_secs(30)).unwrap();
    // 1,000 changes while C is away: 900 adds, 50 deletes of entries C
    // holds, 50 deletes of entries added meanwhile.
    bulk_add(&a, 100, 900, "away");
    for i in (0..100).step_by(2).chain((100..200).step_by(2)) {
        let path = format!("/v1/drop/10.{}.{}.0/24", i / 256, i % 256);
        let (code, body) = a.call("DELETE", &path, None);
        assert_eq!(code, 204, "{body}");
    }
    let want = set(&a, "drop");
    assert_eq!(want.len(), 900);

    c.spawn().unwrap();
    c.wait_ready().unwrap();
    assert!(
        wait_until(CONVERGE, || set(&c, "drop") == want),
        "C has {} of {}:\n{}",
        set(&c, "drop").len(),
        want.len(),
        c.log()
    );
    wait_caught_up(&c);
    assert_eq!(set(&c, "drop"), want, "0 missing, 0 extra");
}

#[test]
fn the_server_restarting_mid_stream_loses_and_duplicates_nothing() {
    let mut nats = NatsServer::start(None).unwrap();
    let (a, b) = two_nodes(&nats);
    // A writes on until 200 adds after the server came back.
    let written = AtomicU32::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                add(
                    &a,
                    "drop",
                    &format!("10.9.{}.{}/32", i / 256, i % 256),
                    "w",
                    0,
                );
                i += 1;
                written.store(i, Ordering::Relaxed);
            }
        });
        assert!(wait_until(CONVERGE, || set(&b, "drop").len() >= 50));
        nats.restart().unwrap();
        let back = written.load(Ordering::Relaxed);
        assert!(wait_until(CONVERGE, || written.load(Ordering::Relaxed) >= back + 200));
        stop.store(true, Ordering::Relaxed);
    });
    let total = written.load(Ordering::Relaxed) as usize;
    assert_eq!(set(&a, "drop").len(), total, "every add was acknowledged");
    assert!(
        wait_until(CONVERGE, || converged(&[&a, &b])),
        "B has {} of {total}:\nA: {}\nB: {}",
        set(&b, "drop").len(),
        status(&a),
        status(&b)
    );
    assert!(wait_until(CONVERGE, || status(&a)["queued"] == 0));
    assert!(
        status(&a)["reconnects"].as_u64().unwrap() >= 1,
        "{}",
        status(&a)
    );
    // A third node reads the bucket alone: one key per entry, no more.
    let c = Daemon::start(fleet(&nats.url(), "c", "")).unwrap();
    wait_caught_up(&c);
    assert_eq!(set(&c, "drop"), set(&a, "drop"));
}

#[test]
fn a_node_started_without_its_server_filters_queues_and_catches_up() {
    let mut nats = NatsServer::start(None).unwrap();
    let url = nats.url();
    nats.stop();
    let a = Daemon::start(fleet(&url, "a", "")).unwrap();
    // Degraded, said so, serving.
    assert!(wait_until(CONVERGE, || status(&a)["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("cannot connect"))));
    assert_eq!(status(&a)["connected"], false);
    add(&a, "drop", "203.0.113.0/24", "offline", 0);
    add(&a, "ignore", "203.0.113.7/32", "offline", 0);
    assert!(wait_until(CONVERGE, || status(&a)["queued"] == 2));

    nats.restart().unwrap();
    wait_caught_up(&a);
    let b = Daemon::start(fleet(&url, "b", "")).unwrap();
    wait_caught_up(&b);
    assert!(wait_until(SPREAD, || converged(&[&a, &b])));
    assert_eq!(
        set(&b, "drop"),
        BTreeSet::from(["203.0.113.0/24".to_string()])
    );
    assert_eq!(status(&a)["queued"], 0);
    let log = a.log();
    assert!(log.contains("changes are queued"), "{log}");
}

#[test]
fn expired_entries_are_purged_from_the_bucket() {
    let nats = NatsServer::start(None).unwrap();
    let (a, b) = two_nodes(&nats);
    add(
        &a,
        "drop",
        "192.0.2.9/32",
        "short",
        couic_testkit::now() + 2,
    );
    assert!(wait_until(SPREAD, || entry(&b, "drop", "192.0.2.9/32").is_some()));
    // Gone everywhere at its expiration, and from the bucket: a node
    // starting afterwards finds nothing to put back.
    assert!(
        wait_until(CONVERGE, || status(&a)["purged"] == 1),
        "{}",
        status(&a)
    );
    assert!(wait_until(SPREAD, || entry(&b, "drop", "192.0.2.9/32").is_none()));
    let c = Daemon::start(fleet(&nats.url(), "c", "")).unwrap();
    wait_caught_up(&c);
    assert!(set(&c, "drop").is_empty());
}

/// An entry whose writer is gone when it expires: another node purges it
/// from the bucket, one node only.
#[test]
fn an_expired_entry_of_a_node_gone_is_purged_by_another() {
    let nats = NatsServer::start(None).unwrap();
    let mut a = Daemon::start(fleet(&nats.url(), "a", "")).unwrap();
    let b = Daemon::start(fleet(&nats.url(), "b", "")).unwrap();
    let c = Daemon::start(fleet(&nats.url(), "c", "")).unwrap();
    for d in [&a, &b, &c] {
        wait_caught_up(d);
    }
    add(
        &a,
        "drop",
        "192.0.2.9/32",
        "short",
        couic_testkit::now() + 2,
    );
    for d in [&b, &c] {
        assert!(wait_until(SPREAD, || entry(d, "drop", "192.0.2.9/32").is_some()));
    }
    a.sigterm().unwrap();
    a.wait_exit(Duration::from_secs(30)).unwrap();
    let purged = |d: &Daemon| status(d)["purged"].as_u64().unwrap();
    // Expired at 2 s, left to its writer 5 s, then 0-10 s more.
    assert!(
        wait_until(CONVERGE, || purged(&b) + purged(&c) > 0),
        "{}\n{}",
        status(&b),
        status(&c)
    );
    assert!(entry(&b, "drop", "192.0.2.9/32").is_none());
    // The first purge's marker reached the other, or its condition failed.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(purged(&b) + purged(&c), 1);
    let messages = with_jetstream(&nats, |js| async move {
        let mut stream = js.get_stream("KV_couic").await.unwrap();
        stream.info().await.unwrap().state.messages
    });
    assert_eq!(messages, 1, "only the purge marker is left");
}

/// Runs `work` with a JetStream client of the test's own on `nats`.
fn with_jetstream<T, F>(
    nats: &NatsServer,
    work: impl FnOnce(async_nats::jetstream::Context) -> F,
) -> T
where
    F: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        work(async_nats::jetstream::new(client)).await
    })
}

#[test]
fn bad_credentials_are_a_clear_degraded_state_and_never_logged() {
    const GOOD: &str = "s3cret-fleet-token";
    const BAD: &str = "not-the-fleet-token";
    let nats = NatsServer::start(Some(GOOD)).unwrap();
    let bad = Daemon::start(fleet(&nats.url(), "bad", &format!("token = \"{BAD}\"\n"))).unwrap();
    assert!(
        wait_until(CONVERGE, || status(&bad)["last_error"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("authorization"))),
        "{}",
        status(&bad)
    );
    let good = Daemon::start(fleet(&nats.url(), "good", &format!("token = \"{GOOD}\"\n"))).unwrap();
    wait_caught_up(&good);
    add(&good, "drop", "192.0.2.1/32", "", 0);
    for d in [&bad, &good] {
        let log = d.log();
        assert!(!log.contains(GOOD) && !log.contains(BAD), "{log}");
        let shown = status(d).to_string();
        assert!(!shown.contains(GOOD) && !shown.contains(BAD));
    }
}

#[test]
fn bad_fleet_settings_stop_startup_with_a_clear_error() {
    for (extra, said) in [
        ("bucket = \"no.dots\"\n", "bucket 'no.dots'"),
        ("replicas = 2\n", "replicas must be 1, 3 or 5"),
        (
            "token = \"t\"\nuser = \"u\"\npassword = \"p\"\n",
            "give one of",
        ),
    ] {
        let mut d = Daemon::new(fleet("nats://127.0.0.1:4222", "x", extra)).unwrap();
        let (status, out) = d.run_to_exit(Duration::from_secs(30)).unwrap();
        assert!(!status.success());
        assert!(out.contains(said), "{extra}: {out}");
    }
    let mut d = Daemon::new(
        Spec::new(COUIC).extra("[fleet]\nenabled = true\nservers = [\"http://x:1\"]\n"),
    )
    .unwrap();
    let (status, out) = d.run_to_exit(Duration::from_secs(30)).unwrap();
    assert!(
        !status.success() && out.contains("not a nats://host:port"),
        "{out}"
    );
}

/// Stops `a`, a daemon without `[fleet]`, and starts it again as node
/// "a" of the fleet at `nats` (with `extra` settings), caught up.
fn join(a: &mut Daemon, nats: &NatsServer, extra: &str) {
    a.sigterm().unwrap();
    a.wait_exit(Duration::from_secs(30)).unwrap();
    let mut config = std::fs::read_to_string(a.config()).unwrap();
    config.push_str(&format!(
        "[fleet]\nenabled = true\nservers = [\"{}\"]\nnode = \"a\"\n{extra}",
        nats.url()
    ));
    std::fs::write(a.config(), config).unwrap();
    a.spawn().unwrap();
    a.wait_ready().unwrap();
    wait_caught_up(a);
}

#[test]
fn a_node_joining_the_fleet_writes_the_entries_it_had() {
    let nats = NatsServer::start(None).unwrap();
    let mut a = Daemon::start(Spec::new(COUIC)).unwrap();
    add(&a, "drop", "192.0.2.0/24", "before", 0);
    add(&a, "ignore", "2001:db8::1/128", "before", 0);
    join(&mut a, &nats, "");
    let b = Daemon::start(fleet(&nats.url(), "b", "")).unwrap();
    wait_caught_up(&b);
    assert!(
        wait_until(SPREAD, || converged(&[&a, &b])),
        "{:?} {:?}",
        set(&b, "drop"),
        set(&b, "ignore")
    );
    assert_eq!(set(&b, "ignore").len(), 1);
}

#[test]
fn delete_markers_past_their_retention_are_swept() {
    let nats = NatsServer::start(None).unwrap();
    let short = "tombstone_retention = 1\n";
    let a = Daemon::start(fleet(&nats.url(), "a", short)).unwrap();
    wait_caught_up(&a);
    add(&a, "drop", "192.0.2.0/24", "gone", 0);
    add(&a, "drop", "192.0.2.1/32", "kept", 0);
    let (code, body) = a.call("DELETE", "/v1/drop/192.0.2.0/24", None);
    assert_eq!(code, 204, "{body}");
    assert!(wait_until(CONVERGE, || status(&a)["queued"] == 0));
    // The next catch-up (a node starting) finds the marker past 1 s and
    // removes it; the one after finds no marker, and the entry kept.
    let started = Instant::now();
    let swept = wait_until(CONVERGE, || {
        if started.elapsed() < Duration::from_millis(1100) {
            return false;
        }
        let b = Daemon::start(fleet(&nats.url(), "b", short)).unwrap();
        wait_caught_up(&b);
        status(&b)["swept"] == 1
    });
    assert!(swept);
    let c = Daemon::start(fleet(&nats.url(), "c", short)).unwrap();
    wait_caught_up(&c);
    assert_eq!(status(&c)["swept"], 0);
    assert_eq!(
        set(&c, "drop"),
        BTreeSet::from(["192.0.2.1/32".to_string()])
    );
}

/// The other logins and TLS, against a server that asks for them: a user
/// and password, then TLS with a CA of the test's (and refused with
/// another CA).
#[test]
fn user_password_and_tls_logins_work() {
    let args: Vec<String> = ["--user", "couic", "--pass", "fleet-pass"]
        .map(String::from)
        .to_vec();
    let nats = NatsServer::start_with(&args).unwrap();
    let login = "user = \"couic\"\npassword = \"fleet-pass\"\n";
    let a = Daemon::start(fleet(&nats.url(), "a", login)).unwrap();
    wait_caught_up(&a);
    assert!(!a.log().contains("fleet-pass"));

    let dir = tempfile::tempdir().unwrap();
    let pki = couic_testkit::pki::Pki::make(dir.path());
    let tls: Vec<String> = vec![
        "--tls".into(),
        "--tlscert".into(),
        pki.cert.display().to_string(),
        "--tlskey".into(),
        pki.key.display().to_string(),
    ];
    let nats = NatsServer::start_with(&tls).unwrap();
    let trusted = format!("ca_file = \"{}\"\n", pki.ca.display());
    let b = Daemon::start(fleet(&nats.tls_url(), "b", &trusted)).unwrap();
    let c = Daemon::start(fleet(&nats.tls_url(), "c", &trusted)).unwrap();
    wait_caught_up(&b);
    wait_caught_up(&c);
    add(&b, "drop", "192.0.2.0/24", "tls", 0);
    assert!(wait_until(SPREAD, || entry(&c, "drop", "192.0.2.0/24").is_some()));
    let untrusted = format!("ca_file = \"{}\"\n", pki.other_ca.display());
    assert_refused(&nats.tls_url(), &untrusted);
}

/// A node given `login` for the server at `url` says it was refused and
/// stays unconnected.
fn assert_refused(url: &str, login: &str) {
    let d = Daemon::start(fleet(url, "refused", login)).unwrap();
    assert!(
        wait_until(CONVERGE, || status(&d)["last_error"].is_string()),
        "{}",
        status(&d)
    );
    assert_eq!(status(&d)["connected"], false);
}

/// An nkey login: the server knows the user's public key, the node holds
/// its seed in `nkey_file`; a seed file that cannot be read is a clear
/// error, not a crash.
#[test]
fn an_nkey_login_works_and_a_missing_seed_file_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let seed = dir.path().join("fleet.nk");
    std::fs::write(&seed, user.seed().unwrap()).unwrap();
    let nats = NatsServer::start_with(&["-c".to_string(), conf.display().to_string()]).unwrap();
    let login = format!("nkey_file = \"{}\"\n", seed.display());
    let a = Daemon::start(fleet(&nats.url(), "a", &login)).unwrap();
    wait_caught_up(&a);
    assert!(!a.log().contains(&user.seed().unwrap()));

    let missing = format!("nkey_file = \"{}\"\n", dir.path().join("nope.nk").display());
    let b = Daemon::start(fleet(&nats.url(), "b", &missing)).unwrap();
    assert!(
        wait_until(CONVERGE, || status(&b)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot read nkey_file"))),
        "{}",
        status(&b)
    );
}

/// base64url without padding, as JWTs are written.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A NATS JWT of `claims` for `subject`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let header = base64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = json!({
        "jti": format!("{name}{}", couic_testkit::now()),
        "iat": couic_testkit::now(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let payload = base64url(claims.to_string().as_bytes());
    let signed = format!("{header}.{payload}");
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", base64url(&signature))
}

/// `dir/name`: a credentials file of `jwt` and `user`'s seed, as `nsc`
/// writes one.
fn creds_file(dir: &Path, name: &str, jwt: &str, user: &nkeys::KeyPair) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    path
}

/// A credentials file (a user's JWT and seed, as `nsc` writes it) against
/// a server in operator mode: the decentralised login.
#[test]
fn a_credentials_file_login_works() {
    let dir = tempfile::tempdir().unwrap();
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "test",
        json!({"type": "operator", "version": 2}),
    );
    let unlimited = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "couic",
        json!({"limits": unlimited, "type": "account", "version": 2}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "fleet",
        json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
               "type": "user", "version": 2}),
    );
    // JetStream wants a system account.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        json!({"type": "account", "version": 2}),
    );
    std::fs::write(dir.path().join("operator.jwt"), &operator_jwt).unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "operator: {}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{ {}: \"{account_jwt}\", {sys}: \"{system_jwt}\" }}\n",
            dir.path().join("operator.jwt").display(),
            account.public_key(),
            sys = system.public_key(),
        ),
    )
    .unwrap();
    let creds = creds_file(dir.path(), "fleet.creds", &user_jwt, &user);
    let nats = NatsServer::start_with(&["-c".to_string(), conf.display().to_string()]).unwrap();
    let login = format!("creds_file = \"{}\"\n", creds.display());
    let a = Daemon::start(fleet(&nats.url(), "a", &login)).unwrap();
    let b = Daemon::start(fleet(&nats.url(), "b", &login)).unwrap();
    wait_caught_up(&a);
    wait_caught_up(&b);
    add(&a, "drop", "192.0.2.0/24", "creds", 0);
    assert!(wait_until(SPREAD, || entry(&b, "drop", "192.0.2.0/24").is_some()));
    assert!(!a.log().contains(&user.seed().unwrap()));

    // A user the account did not sign: refused, and said.
    let stranger = nkeys::KeyPair::new_account();
    let forged = jwt(
        &stranger,
        &user.public_key(),
        "fleet",
        json!({"type": "user", "version": 2}),
    );
    let bad = creds_file(dir.path(), "bad.creds", &forged, &user);
    assert_refused(
        &nats.url(),
        &format!("creds_file = \"{}\"\n", bad.display()),
    );
}

/// The conditional writes themselves, on the bucket: a purge on condition
/// spares a newer word, and a sweep below a marker spares a word written
/// after it.
#[test]
fn purges_and_sweeps_on_condition_spare_newer_words() {
    use couic::fleet::link::{self, Link};
    use couic::fleet::outbox::Op;
    use couic::fleet::value::Value;

    let nats = NatsServer::start(None).unwrap();
    let fleet: couic::config::Fleet = toml::from_str(&format!(
        "enabled = true\nservers = [\"{}\"]\nnode = \"t\"\n",
        nats.url()
    ))
    .unwrap();
    let value = |expiration: u64| {
        Op::Put(Box::new(Value {
            node: "t".into(),
            tag: None,
            creation: 1,
            expiration,
            metadata: None,
        }))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = link::options(&fleet, |_| {}).await.unwrap();
        let link = Link::open(options, &fleet.servers, &fleet.bucket, 1)
            .await
            .unwrap();
        let key = "drop.192_0_2_1.32";
        let put = |op: Op| {
            let link = &link;
            async move { link.send(key, &op).await.unwrap().await.unwrap() }
        };
        let old = put(value(5)).await;
        let new = put(value(0)).await;
        assert_eq!(
            link.purge_at(key, old).await.unwrap(),
            None,
            "a newer word stays"
        );
        assert_eq!(link.purge_expired(key, 5, 10).await.unwrap(), None);
        // Read by revision: the word there, none for one replaced.
        let read = link.read(new).await.unwrap().expect("the last word");
        assert_eq!((read.key.as_str(), read.marker), (key, false));
        assert_eq!(Value::parse(&read.payload).unwrap().expiration, 0);
        assert!(link.read(old).await.unwrap().is_none());
        let marker = link.purge_at(key, new).await.unwrap().expect("purged");
        assert!(link.read(marker).await.unwrap().expect("the marker").marker);
        // The purge left a marker; a word after it survives its sweep.
        assert_eq!(link.state().await.unwrap(), (1, new + 1));
        assert_eq!(marker, new + 1);
        let after = put(value(0)).await;
        assert!(after > marker);
        assert!(!link.sweep(key, marker).await.unwrap());
        assert_eq!(
            link.state().await.unwrap(),
            (1, after),
            "the word after it stays"
        );
        // A marker that is the key's last word goes.
        link.send(key, &Op::Delete).await.unwrap().await.unwrap();
        let (_, marker) = link.state().await.unwrap();
        assert!(link.sweep(key, marker).await.unwrap());
        assert_eq!(link.state().await.unwrap().0, 0);
    });
}

/// Words another program writes to the bucket come with no notice: the
/// nodes read them from it, skip a bad one, and go on with the next. A
/// notice of a word past the bucket's last revision is dropped.
#[test]
fn words_without_a_notice_are_read_from_the_bucket() {
    let nats = NatsServer::start(None).unwrap();
    let (a, b) = two_nodes(&nats);
    with_jetstream(&nats, |js| async move {
        let value = br#"{"node":"ops","tag":"by-hand","creation":1,"expiration":0}"#;
        // A notice that lies: a word far past anything the bucket holds.
        let lie = br#"{"node":"x","words":[{"key":"drop.203_0_113_66.32","revision":1000000000,"value":{"node":"x","tag":null,"creation":1,"expiration":0}}]}"#;
        js.client()
            .publish("couic.fleet.couic", lie.to_vec().into())
            .await
            .unwrap();
        for (key, payload) in [
            ("drop.203_0_113_0.24", &value[..]),
            ("drop.203_0_113_9.32", b"nonsense"),
        ] {
            let subject = format!("$KV.couic.{key}");
            js.publish(subject, payload.to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    // An API change right after: its notice comes before the words it
    // follows are read.
    add(&a, "drop", "198.51.100.0/24", "after", 0);
    for d in [&a, &b] {
        assert!(
            wait_until(SPREAD, || entry(d, "drop", "203.0.113.0/24").is_some()
                && entry(d, "drop", "198.51.100.0/24").is_some()),
            "{}\n{}",
            status(d),
            d.log()
        );
        assert_eq!(
            entry(d, "drop", "203.0.113.0/24").unwrap()["tag"],
            "by-hand"
        );
        assert!(entry(d, "drop", "203.0.113.9/32").is_none());
        assert!(entry(d, "drop", "203.0.113.66/32").is_none());
        let s = status(d);
        assert!(s["fetched"].as_u64().unwrap() >= 2, "{s}");
        // The bad value, and the lie once it is seen past the bucket.
        assert!(
            wait_until(SPREAD, || status(d)["rejected"].as_u64().unwrap() >= 2),
            "{}",
            status(d)
        );
    }
    // And the next words come by notice again.
    let before = status(&b)["fetched"].clone();
    add(&a, "drop", "198.51.100.128/25", "next", 0);
    assert!(wait_until(SPREAD, || entry(
        &b,
        "drop",
        "198.51.100.128/25"
    )
    .is_some()));
    assert_eq!(status(&b)["fetched"], before);
}

/// A delete made while the server is away, then couic killed (kill -9):
/// the delete was on disk but not in the bucket. At the next start the
/// bucket's put of it, by this node, is not brought back but deleted; a
/// put another node made meanwhile would be left alone.
#[test]
fn a_delete_lost_in_a_crash_is_not_undone_by_the_bucket() {
    let mut nats = NatsServer::start(None).unwrap();
    let mut a = Daemon::start(fleet(&nats.url(), "a", "")).unwrap();
    let b = Daemon::start(fleet(&nats.url(), "b", "")).unwrap();
    wait_caught_up(&a);
    wait_caught_up(&b);
    for cidr in ["192.0.2.0/24", "192.0.2.1/32", "198.51.100.0/24"] {
        add(&a, "drop", cidr, "t", 0);
    }
    assert!(wait_until(SPREAD, || set(&b, "drop").len() == 3));
    nats.stop();
    for cidr in ["192.0.2.0/24", "198.51.100.0/24"] {
        let (code, body) = a.call("DELETE", &format!("/v1/drop/{cidr}"), None);
        assert_eq!(code, 204, "{body}");
    }
    a.kill();
    nats.restart().unwrap();
    // Meanwhile B writes one of them again: its put is newer and stays.
    wait_caught_up(&b);
    let (code, body) = b.call("DELETE", "/v1/drop/198.51.100.0/24", None);
    assert_eq!(code, 204, "{body}");
    add(&b, "drop", "198.51.100.0/24", "b", 0);
    a.spawn().unwrap();
    a.wait_ready().unwrap();
    wait_caught_up(&a);
    let want = BTreeSet::from(["192.0.2.1/32".to_string(), "198.51.100.0/24".to_string()]);
    assert!(
        wait_until(SPREAD, || set(&a, "drop") == want
            && set(&b, "drop") == want),
        "A {:?}, B {:?}\n{}",
        set(&a, "drop"),
        set(&b, "drop"),
        a.log()
    );
    assert_eq!(entry(&a, "drop", "198.51.100.0/24").unwrap()["tag"], "b");
    let c = Daemon::start(fleet(&nats.url(), "c", "")).unwrap();
    wait_caught_up(&c);
    assert_eq!(set(&c, "drop"), want);
}

/// A delete made while the server is away, then couic stopped before the
/// server comes back: the delete is kept and written at the next start,
/// so the bucket does not bring the entry back, here or elsewhere.
#[test]
fn a_delete_queued_at_a_stop_is_written_at_the_next_start() {
    let mut nats = NatsServer::start(None).unwrap();
    let mut a = Daemon::start(fleet(&nats.url(), "a", "")).unwrap();
    wait_caught_up(&a);
    add(&a, "drop", "192.0.2.0/24", "gone", 0);
    add(&a, "drop", "192.0.2.1/32", "kept", 0);
    assert!(wait_until(CONVERGE, || status(&a)["published"] == 2));
    nats.stop();
    let (code, body) = a.call("DELETE", "/v1/drop/192.0.2.0/24", None);
    assert_eq!(code, 204, "{body}");
    a.sigterm().unwrap();
    a.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(
        a.log().contains("1 deletes (kept in the state directory)"),
        "{}",
        a.log()
    );

    nats.restart().unwrap();
    a.spawn().unwrap();
    a.wait_ready().unwrap();
    wait_caught_up(&a);
    let b = Daemon::start(fleet(&nats.url(), "b", "")).unwrap();
    wait_caught_up(&b);
    let want = BTreeSet::from(["192.0.2.1/32".to_string()]);
    assert!(
        wait_until(SPREAD, || set(&a, "drop") == want
            && set(&b, "drop") == want),
        "A {:?}, B {:?}",
        set(&a, "drop"),
        set(&b, "drop")
    );
}

/// `before` of `d`'s mark (README "Fleet", `state/fleet-synced`), if any.
fn mark(d: &Daemon) -> Option<u64> {
    let text = std::fs::read_to_string(d.work().join("state/fleet-synced")).ok()?;
    text.split_whitespace().nth(2)?.parse().ok()
}

/// C's own entry is deleted on A while C is away, and the delete marker
/// swept before C comes back: C must remove it rather than write it back
/// (its mark says it was in the bucket), and still write an entry of its
/// own the bucket never had.
#[test]
fn an_entry_deleted_while_its_writer_was_away_past_the_retention_stays_deleted() {
    let nats = NatsServer::start(None).unwrap();
    let short = "tombstone_retention = 1\n";
    let a = Daemon::start(fleet(&nats.url(), "a", short)).unwrap();
    let mut c = Daemon::start(fleet(&nats.url(), "c", short)).unwrap();
    wait_caught_up(&a);
    wait_caught_up(&c);
    add(&c, "drop", "192.0.2.0/24", "c", 0);
    add(&c, "drop", "192.0.2.1/32", "kept", 0);
    assert!(wait_until(SPREAD, || set(&a, "drop").len() == 2));
    let made = entry(&c, "drop", "192.0.2.0/24").unwrap()["creation"]
        .as_u64()
        .unwrap();
    assert!(
        wait_until(CONVERGE, || mark(&c).is_some_and(|m| m > made)),
        "no mark past {made}: {:?}\n{}",
        mark(&c),
        c.log()
    );
    c.sigterm().unwrap();
    c.wait_exit(Duration::from_secs(30)).unwrap();
    // An entry C makes while it cannot reach the server (a port where
    // none listens), queued and never sent: the bucket never had it.
    let config = std::fs::read_to_string(c.config()).unwrap();
    let nowhere = format!("nats://127.0.0.1:{}", couic_testkit::free_port());
    std::fs::write(c.config(), config.replace(&nats.url(), &nowhere)).unwrap();
    c.spawn().unwrap();
    c.wait_ready().unwrap();
    add(&c, "drop", "198.51.100.0/24", "offline", 0);
    c.sigterm().unwrap();
    c.wait_exit(Duration::from_secs(30)).unwrap();
    std::fs::write(c.config(), config).unwrap();

    let (code, body) = a.call("DELETE", "/v1/drop/192.0.2.0/24", None);
    assert_eq!(code, 204, "{body}");
    // A node catching up past the retention sweeps the marker: no trace of
    // the delete is left in the bucket.
    let started = Instant::now();
    assert!(wait_until(CONVERGE, || {
        if started.elapsed() < Duration::from_millis(1100) {
            return false;
        }
        let b = Daemon::start(fleet(&nats.url(), "b", short)).unwrap();
        wait_caught_up(&b);
        status(&b)["swept"] == 1
    }));

    c.spawn().unwrap();
    c.wait_ready().unwrap();
    wait_caught_up(&c);
    let want = BTreeSet::from(["192.0.2.1/32".to_string(), "198.51.100.0/24".to_string()]);
    assert_eq!(set(&c, "drop"), want, "{}", c.log());
    // What C wrote at its catch-up is before this add in its outbox.
    add(&c, "drop", "203.0.113.0/24", "after", 0);
    assert!(wait_until(SPREAD, || entry(&a, "drop", "203.0.113.0/24").is_some()));
    let mut want = want;
    want.insert("203.0.113.0/24".into());
    assert_eq!(set(&a, "drop"), want);
    assert!(
        c.log().contains("1 of them this node's, deleted elsewhere"),
        "{}",
        c.log()
    );
}

/// The server loses its store: the bucket made again is another, and
/// nothing of C's is taken for deleted, though its mark is past it all.
#[test]
fn a_server_that_lost_its_store_gets_every_entry_back() {
    let mut nats = NatsServer::start(None).unwrap();
    // A short retention: the marks trail by 1 s rather than 5 minutes.
    let short = "tombstone_retention = 1\n";
    let a = Daemon::start(fleet(&nats.url(), "a", short)).unwrap();
    let c = Daemon::start(fleet(&nats.url(), "c", short)).unwrap();
    wait_caught_up(&a);
    wait_caught_up(&c);
    add(&c, "drop", "192.0.2.0/24", "c", 0);
    add(&a, "drop", "192.0.2.1/32", "a", 0);
    let made = entry(&c, "drop", "192.0.2.0/24").unwrap()["creation"]
        .as_u64()
        .unwrap();
    assert!(wait_until(CONVERGE, || mark(&c).is_some_and(|m| m > made)));
    nats.restart_empty().unwrap();
    let want = BTreeSet::from(["192.0.2.0/24".to_string(), "192.0.2.1/32".to_string()]);
    // Both find the bucket gone, make it again and write their own again:
    // a node that joins now gets them all from it.
    let b = Daemon::start(fleet(&nats.url(), "b", "")).unwrap();
    assert!(
        wait_until(CONVERGE, || set(&b, "drop") == want),
        "B {:?}\n{}",
        set(&b, "drop"),
        c.log()
    );
    assert_eq!(set(&a, "drop"), want);
    assert_eq!(set(&c, "drop"), want);
    assert!(
        c.log()
            .contains("the bucket is not as this node last marked it"),
        "{}",
        c.log()
    );
}

/// An API entry hidden under a set line when the node first catches up
/// is written to the bucket all the same: when the line goes, the entry
/// comes back, and the mark must not take it for one deleted elsewhere.
#[test]
fn an_entry_hidden_under_a_set_line_reaches_the_bucket_and_stays() {
    let nats = NatsServer::start(None).unwrap();
    let mut a = Daemon::start(Spec::new(COUIC)).unwrap();
    add(&a, "drop", "192.0.2.0/24", "api", 0);
    let made = entry(&a, "drop", "192.0.2.0/24").unwrap()["creation"]
        .as_u64()
        .unwrap();
    let reload = |d: &Daemon| {
        let (code, body) = d.call("POST", "/v1/sets/reload", None);
        assert_eq!(code, 201, "{body}");
    };
    a.write_set("drop", "hide", "192.0.2.0/24\n").unwrap();
    reload(&a);
    assert_eq!(
        entry(&a, "drop", "192.0.2.0/24").unwrap()["tag"],
        "hide.couic"
    );
    join(&mut a, &nats, "tombstone_retention = 1\n");
    assert!(
        wait_until(CONVERGE, || mark(&a).is_some_and(|m| m > made)),
        "{}",
        a.log()
    );
    a.write_set("drop", "hide", "").unwrap();
    reload(&a);
    assert_eq!(entry(&a, "drop", "192.0.2.0/24").unwrap()["tag"], "api");
    a.sigterm().unwrap();
    a.wait_exit(Duration::from_secs(30)).unwrap();
    a.spawn().unwrap();
    a.wait_ready().unwrap();
    wait_caught_up(&a);
    assert_eq!(
        entry(&a, "drop", "192.0.2.0/24").map(|e| e["tag"].clone()),
        Some(json!("api")),
        "{}",
        a.log()
    );
    let b = Daemon::start(fleet(&nats.url(), "b", "")).unwrap();
    wait_caught_up(&b);
    assert_eq!(
        set(&b, "drop"),
        BTreeSet::from(["192.0.2.0/24".to_string()])
    );
}
