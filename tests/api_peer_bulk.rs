//! The peer batch route (§4.5: atomic and ordered as §18.4 asks,
//! idempotent for retries) and the bulk route.

mod api_support;

use api_support::*;
use couic::bpf::Capacities;
use couic_common::Policy;
use serde_json::{json, Value};

fn job(action: &str, cidr: &str, tag: Option<&str>, expiration: u64) -> Value {
    json!({"action": action, "entry": {"cidr": cidr, "tag": tag, "expiration": expiration, "metadata": null}})
}

fn peer(api: &mut Api, policy: &str, jobs: &[Value]) -> couic_common::uds::Response {
    api.post(
        &format!("/v1/{policy}/peer"),
        &Value::from(jobs.to_vec()).to_string(),
    )
}

#[test]
fn peer_batches_apply_in_order_and_echo() {
    let d = Daemon::start();
    let mut api = d.admin();
    let old = peer(
        &mut api,
        "drop",
        &[job("add", "10.0.0.9/32", Some("old"), 0)],
    );
    assert_eq!(old.status, 201);

    let resp = peer(
        &mut api,
        "drop",
        &[
            job("add", "10.1.2.3/16", None, 0),
            job("add", "10.0.0.1/32", Some("x"), T0 + 60),
            job("remove", "10.0.0.1/32", Some("ignored"), 0),
            job("remove", "10.0.0.9/32", None, 0),
            job("add", "10.0.0.9/32", Some("new"), 0),
            job("add", "2001:db8::5/64", Some(""), 0),
        ],
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let echo = json(&resp);
    assert_eq!(echo[0]["entry"]["cidr"], "10.1.0.0/16");
    assert_eq!(echo[0]["entry"]["tag"], json!(null));
    assert_eq!(echo[0]["action"], "add");
    assert_eq!(echo[5]["entry"]["cidr"], "2001:db8::/64");
    assert_eq!(echo[5]["entry"]["tag"], "");
    assert_eq!(echo.as_array().unwrap().len(), 6);

    assert_eq!(api.get("/v1/drop/10.1.0.0/16").status, 200);
    assert_eq!(
        api.get("/v1/drop/10.0.0.1/32").status,
        404,
        "added then removed"
    );
    assert_eq!(
        json(&api.get("/v1/drop/10.0.0.9/32"))["tag"],
        "new",
        "removed then re-added"
    );
    assert_eq!(api.count("drop"), 3);

    let empty = api.post("/v1/ignore/peer", "[]");
    assert_eq!((empty.status, json(&empty)), (201, json!([])));
    assert_eq!(
        peer(&mut api, "ignore", &[job("add", "192.0.2.1/32", None, 0)]).status,
        201
    );
    assert_eq!(api.count("ignore"), 1);
}

/// The reference sender's request (§10.2), written to the socket as is.
#[test]
fn the_reference_senders_request_is_accepted() {
    use std::io::{Read, Write};
    let d = Daemon::start();
    let token = d.create_client("couic2", "peering");
    let body = r#"[{"action":"add","entry":{"cidr":"1.1.1.1/32","tag":"x","expiration":0,"metadata":null}}]"#;
    let request = format!(
        "POST /v1/drop/peer HTTP/1.1\r\n\
         content-type: application/json\r\n\
         accept: application/json\r\n\
         user-agent: CouicClient/1.0.0\r\n\
         authorization: Bearer {token}\r\n\
         host: couic1.example:2900\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    // The connection stays open (keep-alive): read up to the body's length.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let echo = loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer).to_string();
        let Some((head, rest)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        assert!(head.starts_with("HTTP/1.1 201"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_string)
            })
            .expect("a content length")
            .parse()
            .unwrap();
        if rest.len() >= length {
            break rest.to_string();
        }
    };
    // What the reference sender parses: an array of valid jobs.
    let jobs: Vec<couic_common::PeerJob> = serde_json::from_str(&echo).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].entry.cidr, "1.1.1.1/32");
    let entry = json(&d.admin().get("/v1/drop/1.1.1.1/32"));
    assert_eq!(
        (entry["tag"].as_str(), entry["expiration"].as_u64()),
        (Some("x"), Some(0))
    );
}

/// `Prefer: return=minimal` (RFC 7240, what couic's senders ask): the
/// batch is applied the same and answered `[]`, a valid answer for any
/// sender, instead of the echo.
#[test]
fn a_peer_batch_asking_for_a_minimal_answer_gets_an_empty_array() {
    let d = Daemon::start();
    let mut api = d.admin();
    let jobs = Value::from(vec![
        job("add", "10.1.2.3/16", None, 0),
        job("add", "10.0.0.1/32", Some("x"), 0),
    ])
    .to_string();
    let headers = [
        ("Content-Type", "application/json"),
        ("Prefer", "respond-async, return=minimal"),
    ];
    let resp = api.raw("POST", "/v1/drop/peer", &headers, Some(jobs.as_bytes()));
    assert_eq!((resp.status, json(&resp)), (201, json!([])));
    assert_eq!(resp.header("preference-applied"), Some("return=minimal"));
    assert_eq!(api.count("drop"), 2);
    // Without it, the echo, as the reference answers.
    let again = api.raw(
        "POST",
        "/v1/drop/peer",
        &[("Content-Type", "application/json")],
        Some(jobs.as_bytes()),
    );
    assert_eq!(again.status, 201);
    assert_eq!(json(&again).as_array().map(Vec::len), Some(2));
}

#[test]
fn peer_batches_are_idempotent() {
    let d = Daemon::start();
    let mut api = d.admin();
    // node-a's token: entries it sends are node-a's (peer origin).
    let node_a = d.create_client("node-a", "peering");
    let mut a = d.client(Some(&node_a));
    assert_eq!(api.add("drop", "10.0.0.1/32", Some("mine"), 0).status, 201);
    d.add_set_entry(Policy::Drop, "192.168.0.0/16", "lan");

    let batch = [
        job("add", "10.0.0.2/32", Some("x"), 0),
        job("add", "10.0.0.3/32", None, T0 + 60),
        job("remove", "10.9.9.9/32", None, 0),
    ];
    // The same batch twice (a retry after a lost answer): both succeed.
    for _ in 0..2 {
        let resp = peer(&mut a, "drop", &batch);
        assert_eq!(resp.status, 201, "{}", resp.text());
        assert_eq!(json(&resp).as_array().unwrap().len(), 3);
    }
    assert_eq!(api.count("drop"), 4);

    // An add over another origin's entry succeeds and leaves it as it is;
    // so does a remove of it. An add of one of node-a's entries with a new
    // tag replaces it; a duplicate inside the batch: the last one wins.
    let resp = peer(
        &mut a,
        "drop",
        &[
            job("add", "10.0.0.1/32", Some("theirs"), 0),
            job("remove", "10.0.0.1/32", None, 0),
            job("add", "192.168.0.0/16", Some("theirs"), 0),
            job("add", "10.0.0.2/32", Some("y"), 0),
            job("add", "10.0.0.4/32", Some("first"), 0),
            job("add", "10.0.0.4/32", Some("last"), 0),
        ],
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(json(&api.get("/v1/drop/10.0.0.1/32"))["tag"], "mine");
    assert_eq!(
        json(&api.get("/v1/drop/192.168.0.0/16"))["tag"],
        "lan.couic"
    );
    assert_eq!(json(&api.get("/v1/drop/10.0.0.2/32"))["tag"], "y");
    assert_eq!(json(&api.get("/v1/drop/10.0.0.4/32"))["tag"], "last");

    // A remove of node-a's entry removes it, and again is still a success.
    for _ in 0..2 {
        let resp = peer(&mut a, "drop", &[job("remove", "10.0.0.2/32", None, 0)]);
        assert_eq!(resp.status, 201, "{}", resp.text());
    }
    assert_eq!(api.get("/v1/drop/10.0.0.2/32").status, 404);
    // Another peer client does not own node-a's entries.
    let node_b = d.create_client("node-b", "peering");
    let mut b = d.client(Some(&node_b));
    let resp = peer(&mut b, "drop", &[job("remove", "10.0.0.4/32", None, 0)]);
    assert_eq!(resp.status, 201);
    assert_eq!(api.get("/v1/drop/10.0.0.4/32").status, 200);
}

#[test]
fn peer_failures_apply_nothing() {
    let d = Daemon::start_with(Capacities {
        drop: 3,
        ..Capacities::default()
    });
    let mut api = d.admin();
    d.add_set_entry(Policy::Drop, "192.168.0.0/16", "lan");

    // A set entry cannot be removed by a peer (§18.5): 422, and the job
    // before it is not applied.
    let resp = peer(
        &mut api,
        "drop",
        &[
            job("add", "10.0.0.2/32", None, 0),
            job("remove", "192.168.0.0/16", None, 0),
        ],
    );
    assert_eq!(resp.status, 422);
    assert_eq!(resp.text(), "Entry defined in a set cannot be removed");
    // A full map: 409, nothing applied.
    let resp = peer(
        &mut api,
        "drop",
        &[
            job("add", "10.0.0.1/32", None, 0),
            job("add", "10.0.0.2/32", None, 0),
            job("add", "10.0.0.3/32", None, 0),
        ],
    );
    assert_eq!(resp.status, 409, "{}", resp.text());
    assert_eq!(api.count("drop"), 1);
    assert_eq!(api.get("/v1/drop/10.0.0.2/32").status, 404);
}

#[test]
fn peer_body_rejections_are_plain_text() {
    let d = Daemon::start();
    let mut api = d.admin();
    let one = Value::from(vec![job("add", "10.0.0.1/32", None, 0)]).to_string();
    let check = |resp: couic_common::uds::Response, status: u16| {
        assert_eq!(resp.status, status, "{}", resp.text());
        assert!(
            resp.header("content-type")
                .unwrap()
                .starts_with("text/plain"),
            "{status}"
        );
    };
    check(
        api.raw("POST", "/v1/drop/peer", &[], Some(one.as_bytes())),
        415,
    );
    check(
        api.raw(
            "POST",
            "/v1/drop/peer",
            &[("Content-Type", "text/plain")],
            Some(one.as_bytes()),
        ),
        415,
    );
    check(api.post("/v1/drop/peer", ""), 400);
    check(api.post("/v1/drop/peer", "[{"), 400);
    for bad in [
        json!({"action": "add"}),
        json!([{"action": "ADD", "entry": {"cidr": "10.0.0.1/32", "expiration": 0}}]),
        json!([{"action": "add"}]),
        json!([{"action": "add", "entry": {"expiration": 0}}]),
        json!([{"action": "add", "entry": {"cidr": "10.0.0.1/32"}}]),
        json!([{"action": "add", "entry": {"cidr": "10.0.0.1", "expiration": 0}}]),
        json!([{"action": "add", "entry": {"cidr": "10.0.0.1/32", "tag": "untagged", "expiration": 0}}]),
        json!([{"action": "add", "entry": {"cidr": "10.0.0.1/32", "tag": "x.couic", "expiration": 0}}]),
        json!([{"action": "remove", "entry": {"cidr": "10.0.0.1/32", "expiration": T0}}]),
        // A valid job before a bad one is not applied either.
        json!([
            {"action": "add", "entry": {"cidr": "10.0.0.2/32", "expiration": 0}},
            {"action": "add", "entry": {"cidr": "10.0.0.3/32", "expiration": T0 - 1}},
        ]),
        json!([
            {"action": "add", "entry": {"cidr": "10.0.0.2/32", "expiration": 0}},
            {"action": "add", "entry": {"cidr": "10.0.0.3/32", "tag": "bad tag!", "expiration": 0}},
        ]),
    ] {
        check(api.post("/v1/drop/peer", &bad.to_string()), 422);
    }
    let resp = api.post(
        "/v1/drop/peer",
        r#"[{"action":"add","entry":{"cidr":"10.0.0.1","expiration":0}}]"#,
    );
    assert!(
        resp.text()
            .starts_with("Failed to deserialize the JSON body into the target type: "),
        "{}",
        resp.text()
    );
    let big = format!("[{}]", vec![one.trim_matches(['[', ']']); 30_000].join(","));
    assert!(big.len() > 2 * 1024 * 1024);
    check(api.post("/v1/drop/peer", &big), 413);
    // The policy is checked before the body, as an envelope.
    let resp = api.post("/v1/nope/peer", "garbage");
    assert_eq!(
        (resp.status, json(&resp)["code"].clone()),
        (400, json!("bad_request"))
    );
    assert_eq!(api.count("drop"), 0);
}

#[test]
fn bulk_non_atomic_gives_a_result_per_item() {
    let d = Daemon::start_with(Capacities {
        drop: 3,
        ignore: 16,
        tags: 16,
    });
    let mut api = d.admin();
    assert_eq!(api.add("drop", "10.0.0.1/32", None, 0).status, 201);
    d.add_set_entry(Policy::Drop, "192.168.0.0/16", "lan");
    let body = json!({
        "remove": ["10.0.0.1/32", "10.0.0.99/32", "192.168.0.0/16", "bad"],
        "add": [
            {"cidr": "10.0.0.2/32", "tag": "t", "expiration": 0},
            {"cidr": "10.0.0.2/32", "expiration": 0},
            {"cidr": "10.0.0.3/32", "expiration": T0},
            {"cidr": "10.0.0.4/32", "expiration": 0},
            {"cidr": "10.0.0.5/32", "expiration": 0},
            {"cidr": "2001:db8::/32", "expiration": 0}
        ]
    });
    let resp = api.post("/v1/drop/bulk", &body.to_string());
    assert_eq!(resp.status, 200, "{}", resp.text());
    let out = json(&resp);
    let statuses = |key: &str| -> Vec<u64> {
        out[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(statuses("remove"), vec![204, 404, 422, 422]);
    assert_eq!(statuses("add"), vec![201, 409, 422, 201, 409, 201]);
    assert_eq!(
        out["add"][4]["error"]["message"],
        "couic underlying ebpf map is full: max 3 entries"
    );
    assert_eq!(
        out["add"][2]["error"]["errors"]["expiration"]["code"],
        "invalid"
    );
    assert_eq!(out["remove"][3]["cidr"], "bad");
    assert_eq!(
        (
            out["applied"].clone(),
            out["failed"].clone(),
            out["atomic"].clone()
        ),
        (json!(4), json!(6), json!(false))
    );
    assert_eq!(api.count("drop"), 4);
    assert_eq!(json(&api.get("/v1/drop/10.0.0.2/32"))["tag"], "t");
}

#[test]
fn bulk_atomic_is_all_or_nothing() {
    let d = Daemon::start();
    let mut api = d.admin();
    assert_eq!(api.add("ignore", "10.0.0.1/32", None, 0).status, 201);
    let body = json!({
        "atomic": true,
        "remove": ["10.0.0.1/32"],
        "add": [{"cidr": "10.0.0.2/32", "expiration": 0}, {"cidr": "10.0.0.2/32", "expiration": 0}]
    });
    let out = json(&api.post("/v1/ignore/bulk", &body.to_string()));
    assert_eq!(out["applied"], 0);
    assert_eq!(out["remove"][0]["status"], 424);
    assert_eq!(out["add"][0]["status"], 424);
    assert_eq!(out["add"][1]["status"], 409);
    assert_eq!(
        api.get("/v1/ignore/10.0.0.1/32").status,
        200,
        "nothing applied"
    );
    assert_eq!(api.count("ignore"), 1);

    // A validation error also stops everything.
    let body = json!({"atomic": true, "add": [{"cidr": "10.0.0.3/32", "expiration": 0}, {"cidr": "x", "expiration": 0}]});
    let out = json(&api.post("/v1/ignore/bulk", &body.to_string()));
    assert_eq!(
        (
            out["add"][0]["status"].clone(),
            out["add"][1]["status"].clone()
        ),
        (json!(424), json!(422))
    );
    assert_eq!(api.count("ignore"), 1);

    // Replacing an entry in one atomic request.
    let body = json!({"atomic": true, "remove": ["10.0.0.1/32"], "add": [{"cidr": "10.0.0.1/32", "tag": "v2", "expiration": 0}]});
    let out = json(&api.post("/v1/ignore/bulk", &body.to_string()));
    assert_eq!(
        (out["applied"].clone(), out["failed"].clone()),
        (json!(2), json!(0))
    );
    assert_eq!(json(&api.get("/v1/ignore/10.0.0.1/32"))["tag"], "v2");
}

#[test]
fn bulk_loads_many_entries_and_checks_its_body() {
    let d = Daemon::start_with(Capacities {
        drop: 65_536,
        ignore: 16,
        tags: 16,
    });
    let mut api = d.admin();
    let add: Vec<Value> = (0..50_000u32)
        .map(|i| json!({"cidr": format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255), "tag": "bulk", "expiration": 0}))
        .collect();
    let body = json!({"atomic": true, "add": add}).to_string();
    assert!(
        body.len() > 2 * 1024 * 1024,
        "beyond the single-route limit"
    );
    let out = json(&api.post("/v1/drop/bulk", &body));
    assert_eq!(
        (out["applied"].clone(), out["failed"].clone()),
        (json!(50_000), json!(0))
    );
    assert_eq!(api.count("drop"), 50_000);
    let remove: Vec<String> = (0..50_000u32)
        .map(|i| format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let out = json(&api.post("/v1/drop/bulk", &json!({"remove": remove}).to_string()));
    assert_eq!(out["applied"], 50_000);
    assert_eq!(api.count("drop"), 0);

    for bad in [
        "",
        "null",
        r#"{"add":{}}"#,
        r#"{"atomic":"yes"}"#,
        r#"{"remove":[1]}"#,
    ] {
        let resp = api.post("/v1/drop/bulk", bad);
        assert_eq!(resp.status, 400, "{bad}");
        assert_eq!(json(&resp)["code"], "bad_request");
    }
    let resp = api.raw(
        "POST",
        "/v1/drop/bulk",
        &[("Content-Type", "text/plain")],
        Some(b"{}"),
    );
    assert_eq!(resp.status, 400);
    assert_eq!(json(&api.post("/v1/drop/bulk", "{}"))["applied"], 0);
}

/// Catch-up: the digest of what a peer sent, and a shard made exactly what
/// the peer says.
#[test]
fn peer_digest_and_shard_replace() {
    use couic_common::peer::shard_of;
    use couic_common::PeerDigest;
    let d = Daemon::start();
    let mut api = d.admin();
    let token = d.create_client("node-a", "peering");
    let mut a = d.client(Some(&token));
    // Three CIDRs of one shard, one of another.
    let shard = shard_of("10.0.0.1/32");
    let same: Vec<String> = (2..2000)
        .map(|i| format!("10.0.{}.{}/32", i / 256, i % 256))
        .filter(|c| shard_of(c) == shard)
        .take(2)
        .collect();
    let other = (2..2000)
        .map(|i| format!("10.1.{}.{}/32", i / 256, i % 256))
        .find(|c| shard_of(c) != shard)
        .unwrap();
    let resp = peer(
        &mut a,
        "drop",
        &[
            job("add", "10.0.0.1/32", Some("t"), 0),
            job("add", &same[0], None, T0 + 100),
            job("add", &other, None, 0),
        ],
    );
    assert_eq!(resp.status, 201);
    // The API's entry of the same shard is not node-a's.
    assert_eq!(api.add("drop", &same[1], None, 0).status, 201);

    let mut expected = PeerDigest::default();
    expected.add("10.0.0.1/32", "t", 0);
    expected.add(&same[0], "", T0 + 100);
    expected.add(&other, "", 0);
    let digest: PeerDigest = serde_json::from_value(json(&a.get("/v1/drop/peer/digest"))).unwrap();
    assert_eq!(digest, expected);
    let none: PeerDigest = serde_json::from_value(json(&api.get("/v1/drop/peer/digest"))).unwrap();
    assert_eq!(none, PeerDigest::default(), "the admin sent nothing");

    // node-a now holds, in that shard, only same[0] with another tag, and
    // same[1] (the API's entry: left as it is).
    let body = json!([
        {"cidr": same[0], "tag": "new", "expiration": T0 + 100},
        {"cidr": same[1], "tag": "x", "expiration": 0},
    ]);
    let path = format!("/v1/drop/peer/shard/{shard}");
    let resp = a.send("PUT", &path, &body.to_string());
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert_eq!(api.get("/v1/drop/10.0.0.1/32").status, 404);
    assert_eq!(
        json(&api.get(&format!("/v1/drop/{}", same[0])))["tag"],
        "new"
    );
    assert_eq!(json(&api.get(&format!("/v1/drop/{}", same[1])))["tag"], "");
    assert_eq!(
        api.get(&format!("/v1/drop/{other}")).status,
        200,
        "another shard"
    );
    let mut expected = PeerDigest::default();
    expected.add(&same[0], "new", T0 + 100);
    expected.add(&other, "", 0);
    let digest: PeerDigest = serde_json::from_value(json(&a.get("/v1/drop/peer/digest"))).unwrap();
    assert_eq!(digest, expected);

    // An entry of another shard: 422, nothing applied.
    let resp = a.send(
        "PUT",
        &path,
        &json!([{"cidr": other, "expiration": 0}]).to_string(),
    );
    assert_eq!(resp.status, 422, "{}", resp.text());
    assert_eq!(api.get(&format!("/v1/drop/{}", same[0])).status, 200);
    assert_eq!(a.send("PUT", "/v1/drop/peer/shard/64", "[]").status, 400);
}
