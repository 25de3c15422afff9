//! RBAC over the real socket: every group against every route (§2.2), and
//! the client routes with their files (§4.8, §8).

mod api_support;

use std::fs;
use std::os::unix::fs::MetadataExt;

use api_support::*;
use couic::api::ROUTES;
use serde_json::json;

/// The routes each group may use, as the contract's table lists them.
fn allowed(group: &str, method: &str, path: &str) -> bool {
    let policy_route = path.starts_with("/v1/{policy}") || path.starts_with("/v1/check/");
    let sets_route = path.starts_with("/v1/sets/");
    let read_only = [
        "/v1/{policy}",
        "/v1/{policy}/{ip}/{prefix}",
        "/v1/check/{ip}",
        "/v1/sets/{policy}",
        "/v1/sets/{policy}/{name}",
    ];
    match group {
        "admin" => true,
        "clientrw" => policy_route || sets_route,
        "clientro" => method == "GET" && read_only.contains(&path),
        "monitoring" => matches!(
            path,
            "/v1/stats" | "/v1/stats/tags/{policy}" | "/v1/metrics" | "/v1/peers" | "/v1/fleet"
        ),
        // The batch route, and the catch-up routes beside it.
        "peering" => path.starts_with("/v1/{policy}/peer"),
        other => panic!("unknown group {other}"),
    }
}

/// A concrete request for a route that changes nothing once authorised:
/// absent names and entries, unreadable bodies.
fn concrete(path: &str) -> String {
    path.replace("/v1/check/{ip}", "/v1/check/192.0.2.1")
        .replace("{policy}", "drop")
        .replace("{ip}/{prefix}", "192.0.2.0/24")
        .replace("{name}", "nobody")
        .replace("{shard}", "0")
}

#[test]
fn every_group_against_every_route() {
    let d = Daemon::start();
    let groups = ["admin", "clientrw", "clientro", "monitoring", "peering"];
    let tokens: Vec<(&str, String)> = groups
        .iter()
        .map(|g| (*g, d.create_client(&format!("c-{g}"), g)))
        .collect();
    let before = d.admin().get("/v1/client");
    // Per group: requests it may make, requests refused to it.
    let mut reached = vec![(0usize, 0usize); groups.len()];
    for spec in ROUTES {
        let path = concrete(spec.path);
        let methods: &[&str] = if spec.method == "GET" {
            &["GET", "HEAD"]
        } else {
            &[spec.method]
        };
        for method in methods {
            let body: Option<&[u8]> = (spec.method == "POST").then_some(b"{");
            let headers = [("Content-Type", "application/json")];
            let mut anon = d.client(None);
            assert_eq!(
                anon.raw(method, &path, &headers, body).status,
                401,
                "{method} {path} without a token"
            );
            for (i, (group, token)) in tokens.iter().enumerate() {
                let resp = d.client(Some(token)).raw(method, &path, &headers, body);
                if allowed(group, spec.method, spec.path) {
                    reached[i].0 += 1;
                    assert_ne!(resp.status, 401, "{group} should reach {method} {path}");
                    assert!(
                        resp.status != 404 || !resp.body.is_empty() || *method == "HEAD",
                        "{method} {path} routed"
                    );
                } else {
                    reached[i].1 += 1;
                    assert_eq!(resp.status, 401, "{group} must not reach {method} {path}");
                    if *method != "HEAD" {
                        assert_eq!(
                            json(&resp),
                            json!({"code":"unauthorized","message":"Unauthorized","errors":{}})
                        );
                    }
                }
            }
        }
    }
    // Each group's rights were exercised both ways (admin has no refusal):
    // an empty route table, or a table above that matches nothing, fails.
    for (group, (ok, refused)) in groups.iter().zip(&reached) {
        assert!(*ok > 0, "no route open to {group} was tried");
        assert!(
            *refused > 0 || *group == "admin",
            "no route closed to {group} was tried"
        );
    }
    assert_eq!(
        d.admin().get("/v1/client").body,
        before.body,
        "nothing changed"
    );
    assert_eq!(d.admin().count("drop"), 0);
}

#[test]
fn clients_are_created_with_a_file_and_usable_at_once() {
    let d = Daemon::start();
    let mut admin = d.admin();
    let resp = admin.post(
        "/v1/client",
        r#"{"name":"fail2ban","group":"ClientRW","scopes":["read"]}"#,
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let created = json(&resp);
    assert_eq!(
        (created["name"].clone(), created["group"].clone()),
        (json!("fail2ban"), json!("clientrw"))
    );
    let token: uuid::Uuid = created["token"].as_str().unwrap().parse().unwrap();
    assert_eq!(token.get_version_num(), 4);
    assert_eq!(
        created["token"].as_str().unwrap(),
        token.hyphenated().to_string()
    );

    let file = d.work_dir().join("rbac/clients/fail2ban.toml");
    let meta = fs::metadata(&file).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        format!("token = \"{token}\"\ngroup = \"clientrw\"\n")
    );
    let leftovers: Vec<_> = fs::read_dir(d.work_dir().join("rbac/clients"))
        .unwrap()
        .collect();
    assert_eq!(leftovers.len(), 2, "couicctl.toml and fail2ban.toml only");

    let mut f2b = d.client(Some(&token.to_string()));
    assert_eq!(
        f2b.add("drop", "203.0.113.9/32", Some("fail2ban-sshd"), 0)
            .status,
        201
    );
    assert_eq!(f2b.get("/v1/client").status, 401);

    assert_eq!(json(&admin.get("/v1/client/fail2ban")), created);
    let list = json(&admin.get("/v1/client"));
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"couicctl") && names.contains(&"fail2ban"));
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|c| c["token"].is_string()),
        "tokens are listed"
    );
    assert_eq!(
        admin.raw("HEAD", "/v1/client/fail2ban", &[], None).status,
        200
    );
}

#[test]
fn client_creation_errors() {
    let d = Daemon::start();
    let mut admin = d.admin();
    let resp = admin.post("/v1/client", r#"{"name":"couicctl","group":"admin"}"#);
    assert_eq!(resp.status, 422);
    assert_eq!(
        json(&resp),
        json!({"code":"invalid","message":"Client name already exists: couicctl","errors":{}})
    );

    let resp = admin.post("/v1/client", r#"{"name":"a b","group":"client_ro"}"#);
    assert_eq!(resp.status, 422);
    assert_eq!(
        json(&resp),
        json!({"code":"invalid","message":"Validation failed","errors":{
            "name":{"code":"invalid","message":"Client name can only contain alphanumeric characters, hyphens, and underscores"},
            "group":{"code":"invalid","message":"Invalid group: client_ro"}}})
    );
    let resp = admin.post("/v1/client", r#"{"name":"","group":"admin"}"#);
    assert_eq!(
        json(&resp)["errors"]["name"]["message"],
        "Client name cannot be empty"
    );
    let long = format!(r#"{{"name":"{}","group":"admin"}}"#, "x".repeat(49));
    assert_eq!(
        json(&admin.post("/v1/client", &long))["errors"]["name"]["message"],
        "Client name must be at most 48 characters"
    );
    assert_eq!(
        admin
            .post(
                "/v1/client",
                &long.replace(&"x".repeat(49), &"x".repeat(48))
            )
            .status,
        201
    );

    for body in [
        "",
        "{",
        r#"{"name":"x"}"#,
        r#"{"group":"admin"}"#,
        r#"{"name":1,"group":"admin"}"#,
        "[]",
    ] {
        let resp = admin.post("/v1/client", body);
        assert_eq!(resp.status, 400, "{body}");
        assert!(json(&resp)["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON format: "));
    }
    let resp = admin.raw(
        "POST",
        "/v1/client",
        &[("Content-Type", "text/plain")],
        Some(br#"{"name":"x","group":"admin"}"#),
    );
    assert_eq!(resp.status, 400);
    assert_eq!(admin.get("/v1/client/x").status, 404);
}

#[test]
fn client_lookup_and_deletion() {
    let d = Daemon::start();
    let mut admin = d.admin();
    let resp = admin.get("/v1/client/nobody");
    assert_eq!(resp.status, 404);
    assert_eq!(
        json(&resp),
        json!({"code":"not_found","message":"Client not found: nobody","errors":{}})
    );
    let resp = admin.get("/v1/client/a.b");
    assert_eq!(resp.status, 400);
    assert_eq!(
        json(&resp),
        json!({"code":"bad_request","message":"Bad request","errors":{"name":{"code":"invalid","message":"Client name can only contain alphanumeric characters, hyphens, and underscores"}}})
    );
    assert_eq!(admin.delete("/v1/client/a.b").status, 400);
    assert_eq!(admin.delete("/v1/client/nobody").status, 404);
    let resp = admin.delete("/v1/client/couicctl");
    assert_eq!(resp.status, 422);
    assert_eq!(
        json(&resp),
        json!({"code":"invalid","message":"Cannot delete default client","errors":{}})
    );

    let token = d.create_client("grafana", "monitoring");
    let mut grafana = d.client(Some(&token));
    assert_eq!(grafana.get("/v1/stats").status, 200);
    let resp = admin.delete("/v1/client/grafana");
    assert_eq!((resp.status, resp.body.len()), (204, 0));
    assert!(!d.work_dir().join("rbac/clients/grafana.toml").exists());
    assert_eq!(
        grafana.get("/v1/stats").status,
        401,
        "a deleted token stops working at once"
    );
    assert_eq!(admin.get("/v1/client/grafana").status, 404);

    // A file already gone: the client is removed all the same.
    d.create_client("gone", "peering");
    fs::remove_file(d.work_dir().join("rbac/clients/gone.toml")).unwrap();
    assert_eq!(admin.delete("/v1/client/gone").status, 204);
    assert_eq!(admin.get("/v1/client/gone").status, 404);

    // An admin may delete itself.
    let other = d.create_client("other-admin", "admin");
    let mut other_api = d.client(Some(&other));
    assert_eq!(other_api.delete("/v1/client/other-admin").status, 204);
    assert_eq!(other_api.get("/v1/client").status, 401);
}
