//! Expiry with a manual clock (§5.4): entries stay visible until swept,
//! then leave the store and the kernel maps; nothing sleeps.

mod api_support;

use std::time::{Duration, Instant};

use api_support::*;
use couic::bpf::{self, Capacities};
use serde_json::json;

fn frame_from(src: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[12] = 0x08;
    f[14] = 0x45;
    f[26..30].copy_from_slice(&src);
    f
}

#[test]
fn entries_leave_the_store_and_the_maps_when_due() {
    let d = Daemon::start();
    let mut api = d.admin();
    assert_eq!(api.add("drop", "192.0.2.1/32", None, T0 + 10).status, 201);
    assert_eq!(api.add("drop", "192.0.2.2/32", None, T0 + 20).status, 201);
    assert_eq!(api.add("drop", "192.0.2.3/32", None, 0).status, 201);
    assert_eq!(
        api.add("ignore", "198.51.100.0/24", None, T0 + 10).status,
        201
    );
    let drop_frame = frame_from([192, 0, 2, 1]);
    assert_eq!(
        bpf::test_run(&d.program, &drop_frame, 1).unwrap().0,
        1,
        "dropped"
    );

    d.clock.set(T0 + 10);
    // Due but not swept yet: still there, as the contract allows.
    assert_eq!(api.get("/v1/drop/192.0.2.1/32").status, 200);
    d.sweep();
    assert_eq!(api.get("/v1/drop/192.0.2.1/32").status, 404);
    assert_eq!(api.get("/v1/ignore/198.51.100.0/24").status, 404);
    assert_eq!(
        bpf::test_run(&d.program, &drop_frame, 1).unwrap().0,
        2,
        "passes once expired"
    );
    assert_eq!(api.count("drop"), 2);

    d.clock.set(T0 + 1_000_000);
    d.sweep();
    let left = json(&api.get("/v1/drop"));
    assert_eq!(
        left,
        json!([{"creation": T0, "cidr": "192.0.2.3/32", "tag": "", "expiration": 0}])
    );
    assert_eq!(json(&api.get("/v1/stats"))["drop_cidr_count"], 1);
    // An expiration equal to the new "now" is refused.
    assert_eq!(
        api.add("drop", "192.0.2.4/32", None, T0 + 1_000_000).status,
        422
    );
}

#[test]
fn a_re_added_entry_keeps_its_new_expiration() {
    let d = Daemon::start();
    let mut api = d.admin();
    assert_eq!(api.add("drop", "10.0.0.1/32", None, T0 + 5).status, 201);
    assert_eq!(api.delete("/v1/drop/10.0.0.1/32").status, 204);
    assert_eq!(
        api.add("drop", "10.0.0.1/32", Some("again"), T0 + 100)
            .status,
        201
    );
    d.clock.set(T0 + 6);
    d.sweep();
    assert_eq!(
        json(&api.get("/v1/drop/10.0.0.1/32"))["expiration"],
        T0 + 100
    );
    // Entries from peers and bulk expire the same way.
    let jobs =
        json!([{"action":"add","entry":{"cidr":"10.0.0.2/32","tag":null,"expiration":T0 + 50}}]);
    assert_eq!(api.post("/v1/drop/peer", &jobs.to_string()).status, 201);
    let bulk = json!({"add":[{"cidr":"10.0.0.3/32","expiration":T0 + 50}]});
    assert_eq!(
        json(&api.post("/v1/drop/bulk", &bulk.to_string()))["applied"],
        1
    );
    d.clock.set(T0 + 100);
    d.sweep();
    assert_eq!(api.count("drop"), 0);
}

#[test]
fn a_large_wave_expires_in_chunks_while_requests_are_served() {
    let d = Daemon::start_with(Capacities {
        drop: 65_536,
        ignore: 16,
        tags: 16,
    });
    let mut api = d.admin();
    let n = 20_000u32;
    let add: Vec<_> = (0..n)
        .map(|i| json!({"cidr": format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255), "expiration": T0 + 1}))
        .collect();
    let out = json(&api.post("/v1/drop/bulk", &json!({"add": add}).to_string()));
    assert_eq!(out["applied"], n);

    d.clock.set(T0 + 1);
    d.sweep();
    // The first chunk went synchronously; the rest follow on their own.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = api.get("/v1/stats");
        assert_eq!(stats.status, 200);
        if json(&stats)["drop_cidr_count"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "expiry did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(api.count("drop"), 0);
}
