//! Entry routes over the real socket: list, add, get, delete, and every
//! status code of §4.2-§4.4, routing (§1) and authentication (§2).

mod api_support;

use api_support::*;
use couic::bpf::Capacities;
use couic_common::Policy;
use serde_json::json;

const FUTURE: u64 = T0 + 3600;

#[test]
fn add_get_list_delete_in_both_families() {
    let d = Daemon::start();
    let mut api = d.admin();

    let resp = api.add("drop", "192.168.1.100/24", None, 0);
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(
        json(&resp),
        json!({"creation": T0, "cidr": "192.168.1.0/24", "tag": null, "expiration": 0})
    );

    let resp = api.add("drop", "2001:DB8::1/32", Some("fail2ban-sshd"), FUTURE);
    assert_eq!(
        json(&resp),
        json!({"creation": T0, "cidr": "2001:db8::/32", "tag": "fail2ban-sshd", "expiration": FUTURE})
    );
    // "" is untagged too: null on POST, "" on GET.
    assert_eq!(
        json(&api.add("ignore", "::ffff:192.168.1.7/120", Some(""), 0))["tag"],
        json!(null)
    );

    let resp = api.get("/v1/drop/192.168.1.0/24");
    assert_eq!(resp.status, 200);
    assert_eq!(
        json(&resp),
        json!({"creation": T0, "cidr": "192.168.1.0/24", "tag": "", "expiration": 0})
    );
    // Host bits are truncated before the exact lookup; another prefix is another entry.
    assert_eq!(api.get("/v1/drop/192.168.1.77/24").status, 200);
    assert_eq!(api.get("/v1/drop/192.168.1.0/25").status, 404);
    assert_eq!(
        json(&api.get("/v1/drop/2001:db8::/32"))["tag"],
        "fail2ban-sshd"
    );
    assert_eq!(
        json(&api.get("/v1/ignore/::ffff:192.168.1.0/120"))["tag"],
        ""
    );

    let list = json(&api.get("/v1/drop"));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["cidr"], "192.168.1.0/24", "IPv4 entries come first");
    assert_eq!(list[0]["tag"], "");
    let head = api.raw("HEAD", "/v1/drop", &[], None);
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(
        api.raw("HEAD", "/v1/drop/192.168.1.0/24", &[], None).status,
        200
    );

    let resp = api.delete("/v1/drop/192.168.1.0/24");
    assert_eq!((resp.status, resp.body.len()), (204, 0));
    assert_eq!(api.get("/v1/drop/192.168.1.0/24").status, 404);
    assert_eq!(api.delete("/v1/drop/2001:db8::1/32").status, 204);
    assert_eq!(api.count("drop"), 0);
    assert_eq!(api.count("ignore"), 1);
}

#[test]
fn positional_form_unknown_fields_and_metadata() {
    let d = Daemon::start();
    let mut api = d.admin();
    let resp = api.post("/v1/drop", r#"["10.0.0.1/32", "t", 0]"#);
    assert_eq!(resp.status, 201, "{}", resp.text());
    let resp = api.post(
        "/v1/drop",
        r#"["10.0.0.2/32", null, 0, {"kind":"k","detail":"d"}]"#,
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let body = r#"{"cidr":"10.0.0.3/32","expiration":0,"whatever":[1],"metadata":{"kind":"k","detail":"d","extra":{"a":1}}}"#;
    assert_eq!(api.post("/v1/drop", body).status, 201);
    assert_eq!(
        json(&api.post("/v1/drop", body))["errors"]["cidr"]["code"],
        "conflict"
    );
    let charset = api.raw(
        "POST",
        "/v1/drop",
        &[("Content-Type", "application/json; charset=utf-8")],
        Some(br#"{"cidr":"10.0.0.4/32","expiration":0}"#),
    );
    assert_eq!(charset.status, 201);
}

#[test]
fn unreadable_bodies_are_400_and_change_nothing() {
    let d = Daemon::start();
    let mut api = d.admin();
    let good = br#"{"cidr":"10.0.0.1/32","expiration":0}"#;
    for ct in ["text/plain", "application/xml", "application/jsonx"] {
        let resp = api.raw("POST", "/v1/drop", &[("Content-Type", ct)], Some(good));
        assert_eq!(resp.status, 400, "{ct}");
        assert_eq!(json(&resp)["code"], "bad_request");
    }
    let resp = api.raw("POST", "/v1/drop", &[], Some(good));
    assert_eq!(resp.status, 400, "no content type");
    let msg = json(&resp)["message"].as_str().unwrap().to_string();
    assert!(msg.starts_with("Invalid JSON format: "), "{msg}");

    for body in [
        "",
        "{",
        "null",
        "\"x\"",
        "42",
        "[]",
        r#"{"cidr":"10.0.0.1/32"}"#,
        r#"{"expiration":0}"#,
        r#"{"cidr":1,"expiration":0}"#,
        r#"{"cidr":["10.0.0.1/32"],"expiration":0}"#,
        r#"{"cidr":null,"expiration":0}"#,
        r#"{"cidr":"10.0.0.1/32","expiration":"0"}"#,
        r#"{"cidr":"10.0.0.1/32","expiration":-1}"#,
        r#"{"cidr":"10.0.0.1/32","expiration":1.5}"#,
        r#"{"cidr":"10.0.0.1/32","tag":5,"expiration":0}"#,
        r#"{"cidr":"10.0.0.1/32","expiration":0,"metadata":{"detail":"d"}}"#,
        r#"{"cidr":"10.0.0.1/32","expiration":0,"metadata":{"kind":null,"detail":"d"}}"#,
        r#"{"cidr":"10.0.0.1/32","expiration":0,"metadata":{"kind":"k","detail":"d","extra":[1]}}"#,
    ] {
        let resp = api.post("/v1/drop", body);
        assert_eq!(resp.status, 400, "{body}: {}", resp.text());
        let envelope = json(&resp);
        assert_eq!(envelope["code"], "bad_request", "{body}");
        assert!(envelope["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON format: "));
        assert_eq!(envelope["errors"], json!({}));
    }
    // More than 2 MiB.
    let big = format!(
        r#"{{"cidr":"10.0.0.1/32","expiration":0,"pad":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let resp = api.post("/v1/drop", &big);
    assert_eq!(resp.status, 400);
    assert_eq!(json(&resp)["code"], "bad_request");
    assert_eq!(d.admin().count("drop"), 0);
}

#[test]
fn invalid_cidrs_tags_and_expirations_are_422() {
    let d = Daemon::start();
    let mut api = d.admin();
    for cidr in [
        "192.168.1.0",
        "192.168.1.0/33",
        "::/129",
        "10.0.0.0/-1",
        "10.0.0.0/a",
        "",
        " 10.0.0.0/8",
        "10.0.0.0/8 ",
        "10.0.0.0//8",
        "10.0.0.0/",
        "fe80::1%eth0/64",
        "[::1]/128",
    ] {
        let resp = api.add("drop", cidr, None, 0);
        assert_eq!(resp.status, 422, "{cidr:?}");
        assert_eq!(
            json(&resp),
            json!({"code":"invalid","message":"Validation failed","errors":{"cidr":{"code":"invalid","message":"invalid IP address syntax"}}})
        );
    }
    let long = "a".repeat(65);
    for (tag, message) in [
        (long.as_str(), "Tag must be at most 64 characters"),
        ("x.couic", "Tag cannot end with special suffix: .couic"),
        (
            "UNTAGGED",
            "Tag cannot be 'untagged' (reserved for display)",
        ),
        (
            "a.b",
            "Tag can only contain alphanumeric characters, hyphens, and underscores",
        ),
        (
            "a b",
            "Tag can only contain alphanumeric characters, hyphens, and underscores",
        ),
        (
            "été",
            "Tag can only contain alphanumeric characters, hyphens, and underscores",
        ),
    ] {
        let resp = api.add("drop", "10.0.0.1/32", Some(tag), 0);
        assert_eq!(resp.status, 422, "{tag}");
        assert_eq!(json(&resp)["errors"]["tag"]["message"], message);
    }
    assert_eq!(
        api.add("drop", "10.0.0.1/32", Some(&"a".repeat(64)), 0)
            .status,
        201
    );

    for expiration in [T0, T0 - 1, 1] {
        let resp = api.add("drop", "10.0.0.2/32", None, expiration);
        assert_eq!(resp.status, 422, "{expiration}");
        assert_eq!(
            json(&resp)["errors"]["expiration"],
            json!({"code":"invalid","message":"expiration timestamp must be in the future or zero"})
        );
    }
    assert_eq!(api.add("drop", "10.0.0.2/32", None, T0 + 1).status, 201);
    assert_eq!(
        api.add("drop", "10.0.0.3/32", None, 4_102_444_800).status,
        201
    );

    // Every field error at once.
    let resp = api.add("drop", "nope", Some("x.couic"), 5);
    let errors = json(&resp)["errors"].clone();
    assert_eq!(errors.as_object().unwrap().len(), 3, "{errors}");
    assert_eq!(api.count("drop"), 3);
}

#[test]
fn duplicates_cross_policy_and_capacity() {
    let d = Daemon::start_with(Capacities {
        drop: 2,
        ignore: 2,
        tags: 8,
    });
    let mut api = d.admin();
    assert_eq!(api.add("drop", "10.0.0.0/8", None, 0).status, 201);
    let resp = api.add("drop", "10.1.2.3/8", Some("other"), 0);
    assert_eq!(resp.status, 409);
    assert_eq!(
        json(&resp),
        json!({"code":"conflict","message":"submitted entry is not valid","errors":{"cidr":{"code":"conflict","message":"10.0.0.0/8 already exists"}}})
    );
    assert_eq!(
        api.add("ignore", "10.0.0.0/8", None, 0).status,
        201,
        "the other policy is independent"
    );
    assert_eq!(api.add("drop", "11.0.0.0/8", None, 0).status, 201);
    let resp = api.add("drop", "12.0.0.0/8", None, 0);
    assert_eq!(resp.status, 409);
    assert_eq!(
        json(&resp),
        json!({"code":"conflict","message":"couic underlying ebpf map is full: max 2 entries","errors":{}})
    );
    assert_eq!(
        api.add("drop", "::1/128", None, 0).status,
        201,
        "IPv6 has its own capacity"
    );
    assert_eq!(api.delete("/v1/ignore/10.0.0.0/8").status, 204);
    assert_eq!(
        api.get("/v1/drop/10.0.0.0/8").status,
        200,
        "deleting one policy leaves the other"
    );
    // A set entry is a duplicate too.
    d.add_set_entry(Policy::Ignore, "172.16.0.0/12", "lan");
    assert_eq!(api.add("ignore", "172.16.0.0/12", None, 0).status, 409);
}

#[test]
fn path_parameters_are_400_and_absent_entries_404() {
    let d = Daemon::start();
    let mut api = d.admin();
    let resp = api.get("/v1/DROP");
    assert_eq!(resp.status, 400);
    assert_eq!(
        json(&resp),
        json!({"code":"bad_request","message":"Bad request","errors":{"policy":{"code":"invalid","message":"invalid policy: 'DROP' (expected 'drop' or 'ignore')"}}})
    );
    assert_eq!(
        api.post("/v1/sets", "{").status,
        400,
        "policy checked before the body"
    );
    assert_eq!(
        json(&api.get("/v1/sets"))["errors"]["policy"]["code"],
        "invalid"
    );

    let resp = api.get("/v1/nope/1.2.3/x");
    let errors = json(&resp)["errors"].clone();
    assert_eq!(resp.status, 400);
    assert_eq!(errors["ip"]["message"], "1.2.3 is not a valid IP address");
    assert_eq!(errors["prefix"]["message"], "x is not a valid prefix value");
    assert!(errors.get("policy").is_some());
    assert_eq!(
        json(&api.get("/v1/drop/1.2.3.4/33"))["errors"]["prefix"]["message"],
        "Prefix must be between 0 and 32, got 33"
    );
    assert_eq!(
        json(&api.delete("/v1/drop/::/129"))["errors"]["prefix"]["message"],
        "Prefix must be between 0 and 128, got 129"
    );
    assert_eq!(
        json(&api.get("/v1/drop/1.2.3.4/256"))["errors"]["prefix"]["message"],
        "256 is not a valid prefix value"
    );
    assert_eq!(
        json(&api.get("/v1/drop/1.2.3.4/-1"))["errors"]["prefix"]["message"],
        "-1 is not a valid prefix value"
    );
    assert_eq!(api.get("/v1/drop/%5B::1%5D/128").status, 400, "no brackets");

    let resp = api.get("/v1/drop/10.0.0.0/8");
    assert_eq!(resp.status, 404);
    assert_eq!(
        json(&resp),
        json!({"code":"not_found","message":"submitted entry not found","errors":{"cidr":{"code":"not_found","message":"cidr `10.0.0.0/8` not found"}}})
    );
    assert_eq!(
        json(&api.delete("/v1/ignore/2001:db8::/32"))["errors"]["cidr"]["message"],
        "cidr `2001:db8::/32` not found"
    );
    // Percent-encoded segments are decoded, /0 works.
    assert_eq!(api.add("drop", "0.0.0.0/0", None, 0).status, 201);
    assert_eq!(api.get("/v1/drop/0.0.0.0/0").status, 200);
    assert_eq!(api.add("ignore", "8000::/1", None, 0).status, 201);
    assert_eq!(api.get("/v1/ignore/8000%3A%3A/1").status, 200);
}

#[test]
fn set_entries_cannot_be_deleted() {
    let d = Daemon::start();
    let mut api = d.admin();
    d.add_set_entry(Policy::Drop, "198.51.100.0/24", "blocklist");
    let entry = json(&api.get("/v1/drop/198.51.100.0/24"));
    assert_eq!(entry["tag"], "blocklist.couic");
    let resp = api.delete("/v1/drop/198.51.100.0/24");
    assert_eq!(resp.status, 422);
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(resp.text(), "Entry defined in a set cannot be removed");
    assert_eq!(api.get("/v1/drop/198.51.100.0/24").status, 200);
}

#[test]
fn routing_comes_before_authentication() {
    let d = Daemon::start();
    let mut anon = d.client(None);
    for path in [
        "/",
        "/v1",
        "/v2/drop",
        "/v1/drop/",
        "/v1/stats/",
        "/v1/drop/1.2.3.4",
        "/v1/drop/1.2.3.4/32/x",
        "/v1/stats/tags",
    ] {
        let resp = anon.get(path);
        assert_eq!((resp.status, resp.body.len()), (404, 0), "{path}");
    }
    for (method, path) in [
        ("PUT", "/v1/drop"),
        ("PATCH", "/v1/drop"),
        ("PUT", "/v1/drop/1.2.3.4/32"),
        ("PATCH", "/v1/drop/1.2.3.4/32"),
        ("POST", "/v1/drop/1.2.3.4/32"),
        ("PUT", "/v1/client"),
        ("PATCH", "/v1/client/x"),
        ("POST", "/v1/stats"),
        ("PUT", "/v1/stats"),
        ("DELETE", "/v1/stats"),
        ("POST", "/v1/metrics"),
        ("DELETE", "/v1/metrics"),
        ("GET", "/v1/drop/peer"),
        ("PUT", "/v1/drop/peer"),
        ("DELETE", "/v1/ignore/peer"),
        ("GET", "/v1/drop/bulk"),
        ("POST", "/v1/stats/tags/drop"),
        ("OPTIONS", "/v1/drop"),
        ("OPTIONS", "/v1/stats"),
    ] {
        let resp = anon.raw(method, path, &[], None);
        assert_eq!((resp.status, resp.body.len()), (405, 0), "{method} {path}");
        assert!(resp.header("allow").is_some(), "{method} {path}");
    }
}

#[test]
fn authentication_failures_are_401() {
    let d = Daemon::start();
    let unauthorized = json!({"code":"unauthorized","message":"Unauthorized","errors":{}});
    let admin = d.admin.clone();
    let simple = admin.replace('-', "");
    let mut anon = d.client(None);
    for auth in [
        None,
        Some(format!("bearer {admin}")),
        Some(format!("Bearer  {admin}")),
        Some(format!("Basic {admin}")),
        Some(admin.clone()),
        Some("Bearer not-a-uuid".to_string()),
        Some(format!("Bearer {}", uuid::Uuid::new_v4())),
        Some(format!("Bearer {}", uuid::Uuid::nil())),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let resp = anon.raw("GET", "/v1/drop", &headers, None);
        assert_eq!(resp.status, 401, "{auth:?}");
        assert_eq!(json(&resp), unauthorized);
        // Even a bad policy is a 401 first.
        assert_eq!(anon.raw("GET", "/v1/DROP", &headers, None).status, 401);
    }
    // Other spellings of the same UUID are the same token.
    for token in [
        simple.clone(),
        simple.to_uppercase(),
        format!("{{{admin}}}"),
        format!("urn:uuid:{admin}"),
    ] {
        assert_eq!(
            d.client(Some(&token)).get("/v1/drop").status,
            200,
            "{token}"
        );
    }
}

#[test]
fn bad_input_never_breaks_the_connection_or_the_daemon() {
    let d = Daemon::start();
    let mut api = d.admin();
    let junk: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, 0x00],
        b"{\"cidr\":\"\xff\xff\",\"expiration\":0}".to_vec(),
        "[".repeat(10_000).into_bytes(),
        br#"{"cidr":"10.0.0.1/32","expiration":18446744073709551616}"#.to_vec(),
        br#"{"cidr":"10.0.0.1/32","expiration":18446744073709551615,"tag":"\u0000"}"#.to_vec(),
    ];
    for body in &junk {
        let resp = api.raw(
            "POST",
            "/v1/drop",
            &[("Content-Type", "application/json")],
            Some(body),
        );
        assert!(
            resp.status == 400 || resp.status == 422,
            "{}: {}",
            resp.status,
            resp.text()
        );
        let resp = api.raw(
            "POST",
            "/v1/drop/peer",
            &[("Content-Type", "application/json")],
            Some(body),
        );
        assert!((400..500).contains(&resp.status));
    }
    assert_eq!(api.count("drop"), 0);
    assert_eq!(api.add("drop", "10.0.0.1/32", None, u64::MAX).status, 201);
}
