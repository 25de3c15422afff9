//! `openapi/openapi.json` against the code: the same routes and scopes as
//! the route table, and every documented operation exercised over the real
//! socket, answering only statuses the document lists.

mod api_support;

use std::collections::BTreeSet;

use api_support::*;
use couic::api::ROUTES;
use serde_json::Value;

fn document() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// (METHOD, path) -> operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                ops.push((method.to_uppercase(), path.clone(), op.clone()));
            }
        }
    }
    ops
}

#[test]
fn documents_exactly_the_served_routes_and_scopes() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(documented, served);
    for (method, path, op) in operations(&doc) {
        let spec = ROUTES
            .iter()
            .find(|r| r.method == method && r.path == path)
            .unwrap();
        let scopes: Vec<String> = spec.scopes.iter().map(|s| s.as_string()).collect();
        let listed: Vec<String> = op["x-couic-scopes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        assert_eq!(listed, scopes, "{method} {path}");
        assert!(
            op["responses"].get("401").is_some(),
            "{method} {path} documents 401"
        );
    }
}

/// The example request of each operation, in an order that makes each
/// one succeed: (operationId, method, path, body).
const EXAMPLES: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "addEntry",
        "POST",
        "/v1/drop",
        Some(r#"{"cidr":"192.0.2.9/24","tag":"doc","expiration":0}"#),
    ),
    ("listEntries", "GET", "/v1/drop", None),
    ("getEntry", "GET", "/v1/drop/192.0.2.0/24", None),
    ("checkAddress", "GET", "/v1/check/192.0.2.1", None),
    ("deleteEntry", "DELETE", "/v1/drop/192.0.2.0/24", None),
    (
        "peerBatch",
        "POST",
        "/v1/ignore/peer",
        Some(r#"[{"action":"add","entry":{"cidr":"10.0.0.0/8","expiration":0}}]"#),
    ),
    ("peerDigest", "GET", "/v1/ignore/peer/digest", None),
    // 10.0.0.0/8 is in shard 53 (FNV-1a 64 of its text, modulo 64).
    (
        "peerShard",
        "PUT",
        "/v1/ignore/peer/shard/53",
        Some(r#"[{"cidr":"10.0.0.0/8","tag":null,"expiration":0}]"#),
    ),
    ("listPeers", "GET", "/v1/peers", None),
    ("fleetStatus", "GET", "/v1/fleet", None),
    (
        "bulk",
        "POST",
        "/v1/ignore/bulk",
        Some(r#"{"atomic":true,"remove":["10.0.0.0/8"]}"#),
    ),
    ("stats", "GET", "/v1/stats", None),
    ("tagStats", "GET", "/v1/stats/tags/drop", None),
    ("metrics", "GET", "/v1/metrics?format=prometheus", None),
    (
        "createClient",
        "POST",
        "/v1/client",
        Some(r#"{"name":"doc","group":"monitoring"}"#),
    ),
    ("listClients", "GET", "/v1/client", None),
    ("getClient", "GET", "/v1/client/doc", None),
    ("deleteClient", "DELETE", "/v1/client/doc", None),
    (
        "createSet",
        "POST",
        "/v1/sets/drop",
        Some(r#"{"name":"doc","entries":["198.51.100.0/24"]}"#),
    ),
    ("listSets", "GET", "/v1/sets/drop", None),
    ("getSet", "GET", "/v1/sets/drop/doc", None),
    (
        "updateSet",
        "PUT",
        "/v1/sets/drop/doc",
        Some(r#"{"name":"doc","entries":["198.51.100.0/25"]}"#),
    ),
    ("reloadSets", "POST", "/v1/sets/reload", None),
    ("deleteSet", "DELETE", "/v1/sets/drop/doc", None),
];

/// Requests each operation should refuse with a documented 400.
const BAD: &[(&str, &str, &str, Option<&str>)] = &[
    ("addEntry", "POST", "/v1/drop", Some("{")),
    ("listEntries", "GET", "/v1/DROP", None),
    ("getEntry", "GET", "/v1/drop/1.2.3/8", None),
    ("deleteEntry", "DELETE", "/v1/drop/1.2.3.4/40", None),
    ("peerBatch", "POST", "/v1/drop/peer", Some("[")),
    ("peerDigest", "GET", "/v1/DROP/peer/digest", None),
    ("peerShard", "PUT", "/v1/drop/peer/shard/64", Some("[]")),
    ("bulk", "POST", "/v1/drop/bulk", Some("{")),
    ("bulk", "POST", "/v1/drop/bulk", Some("[]")),
    ("checkAddress", "GET", "/v1/check/nope", None),
    ("tagStats", "GET", "/v1/stats/tags/nope", None),
    ("metrics", "GET", "/v1/metrics?format=a&format=b", None),
    ("createClient", "POST", "/v1/client", Some("{")),
    ("getClient", "GET", "/v1/client/a.b", None),
    ("deleteClient", "DELETE", "/v1/client/a.b", None),
    ("listSets", "GET", "/v1/sets/nope", None),
];

#[test]
fn every_documented_operation_answers_documented_statuses() {
    let doc = document();
    let ops = operations(&doc);
    let d = Daemon::start();
    let mut api = d.admin();
    let mut anon = d.client(None);
    let mut exercised = BTreeSet::new();
    for (bad, examples) in [(false, EXAMPLES), (true, BAD)] {
        for (id, method, path, body) in examples {
            let (_, _, op) = ops
                .iter()
                .find(|(_, _, op)| op["operationId"] == *id)
                .unwrap_or_else(|| panic!("{id}"));
            let headers = [("Content-Type", "application/json")];
            let resp = api.raw(method, path, &headers, body.map(str::as_bytes));
            let status = resp.status.to_string();
            assert!(
                op["responses"].get(&status).is_some(),
                "{id}: {status} is not documented ({})",
                resp.text()
            );
            if bad {
                assert_eq!(resp.status, 400, "{id}");
            } else {
                assert!(resp.status < 300, "{id}: {} {}", resp.status, resp.text());
                exercised.insert(id.to_string());
            }
            assert_eq!(
                anon.raw(method, path, &headers, body.map(str::as_bytes))
                    .status,
                401,
                "{id}"
            );
        }
    }
    let all: BTreeSet<String> = ops
        .iter()
        .map(|(_, _, op)| op["operationId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(exercised, all, "every operation has a successful example");
}

/// Each validated value's schema is the one the code builds.
#[test]
fn constraints_are_the_codes() {
    let doc = document();
    let mut wrong = Vec::new();
    for (name, expected) in couic::api::schema::components() {
        if doc["components"]["schemas"][name] != expected {
            wrong.push(format!(
                "\"{name}\": {}",
                serde_json::to_string_pretty(&expected).unwrap()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "openapi/openapi.json: components.schemas should hold:\n{}",
        wrong.join(",\n")
    );
}

/// The component a `$ref` at `pointer` names.
fn referred(doc: &Value, pointer: &str) -> String {
    let reference = doc
        .pointer(pointer)
        .and_then(|v| v["$ref"].as_str())
        .unwrap_or_else(|| panic!("{pointer} is not a $ref"));
    reference
        .trim_start_matches("#/components/schemas/")
        .to_string()
}

/// Wherever a validated value goes, the document refers to its schema:
/// path parameters by name, body fields by place.
#[test]
fn validated_values_refer_to_their_schema() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let operations = METHODS.iter().filter_map(|m| item.get(*m));
        let lists = std::iter::once(item).chain(operations);
        for parameter in lists.filter_map(|v| v["parameters"].as_array()).flatten() {
            if parameter["in"] != "path" {
                continue;
            }
            let expected = match parameter["name"].as_str().unwrap() {
                "policy" => "Policy",
                "ip" => "IpAddress",
                "prefix" => "Prefix",
                "shard" => "Shard",
                "name" if path.starts_with("/v1/client/") => "ClientName",
                "name" if path.starts_with("/v1/sets/") => "SetName",
                other => panic!("{path}: path parameter {other} has no rule here"),
            };
            let schema = &parameter["schema"]["$ref"];
            assert_eq!(
                schema.as_str(),
                Some(format!("#/components/schemas/{expected}").as_str()),
                "{path} {}",
                parameter["name"]
            );
        }
    }
    let s = "/components/schemas";
    for (pointer, component) in [
        ("EntryRequest/properties/cidr", "Cidr"),
        ("EntryRequest/properties/tag", "Tag"),
        ("EntryRequest/properties/expiration", "Expiration"),
        ("PeerJob/properties/entry", "PeerEntry"),
        ("PeerEntry/properties/cidr", "Cidr"),
        ("PeerEntry/properties/tag", "Tag"),
        ("PeerEntry/properties/expiration", "Expiration"),
        ("BulkRequest/properties/add/items", "BulkEntry"),
        ("BulkEntry/properties/expiration", "Expiration"),
        ("ClientRequest/properties/name", "ClientName"),
        ("ClientRequest/properties/group", "GroupRequest"),
        ("Set/properties/name", "SetName"),
        ("Set/properties/entries/items", "Cidr"),
        ("Entry/properties/cidr", "Cidr"),
        ("Client/properties/name", "ClientName"),
        ("Client/properties/group", "Group"),
        ("CheckResult/properties/ip", "IpAddress"),
    ] {
        assert_eq!(
            referred(&doc, &format!("{s}/{pointer}")),
            component,
            "{pointer}"
        );
    }
}
