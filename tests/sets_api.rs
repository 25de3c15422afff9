//! The set routes over the real socket (§7.6): files written and read
//! through the API, validation, statuses and bodies, scopes.

mod api_support;

use std::fs;
use std::os::unix::fs::MetadataExt;

use api_support::*;
use serde_json::json;

#[test]
fn create_get_update_delete() {
    let d = Daemon::start();
    let mut api = d.admin();

    let body = json!({"name": "lan", "entries": ["192.168.1.5/24", "2001:DB8::1/32"]});
    let resp = api.post("/v1/sets/drop", &body.to_string());
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(
        json(&resp),
        json!({"name": "lan", "entries": ["192.168.1.5/24", "2001:db8::1/32"]})
    );

    // Written atomically: mode 0600, our owner, no trailing newline, no
    // temp file left.
    let path = d.set_dir("drop").join("lan.couic");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid()),
        (0o600, unsafe { libc::geteuid() })
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "192.168.1.5/24\n2001:db8::1/32"
    );
    assert_eq!(fs::read_dir(d.set_dir("drop")).unwrap().count(), 1);

    let resp = api.post("/v1/sets/drop", &body.to_string());
    assert_eq!(resp.status, 409);
    assert_eq!(
        json(&resp),
        json!({"code": "conflict", "message": "Set 'lan' already exists for policy 'drop'", "errors": {}})
    );
    // The same name in the other policy is another set.
    assert_eq!(api.post("/v1/sets/ignore", &body.to_string()).status, 201);

    let resp = api.get("/v1/sets/drop/lan");
    assert_eq!(resp.status, 200);
    assert_eq!(
        json(&resp),
        json!({"name": "lan", "entries": ["192.168.1.5/24", "2001:db8::1/32"]})
    );
    assert_eq!(api.raw("HEAD", "/v1/sets/drop/lan", &[], None).status, 200);

    // PUT answers with the path's name; the body's must only be valid.
    let resp = api.send(
        "PUT",
        "/v1/sets/drop/lan",
        &json!({"name": "other", "entries": ["10.0.0.1/8"]}).to_string(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        json(&resp),
        json!({"name": "lan", "entries": ["10.0.0.1/8"]})
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), "10.0.0.1/8");
    let resp = api.send(
        "PUT",
        "/v1/sets/drop/nope",
        &json!({"name": "nope", "entries": []}).to_string(),
    );
    assert_eq!(resp.status, 404);
    assert_eq!(
        json(&resp)["message"],
        "Set 'nope' not found for policy 'drop'"
    );
    assert!(!d.set_dir("drop").join("nope.couic").exists());

    // API writes apply nothing until a reload.
    assert!(api.entries("drop").is_empty());

    let resp = api.delete("/v1/sets/drop/lan");
    assert_eq!(resp.status, 200);
    assert_eq!(
        json(&resp),
        json!({"deleted": true, "reload_required": true})
    );
    assert!(!path.exists());
    assert_eq!(api.delete("/v1/sets/drop/lan").status, 404);
    let resp = api.get("/v1/sets/drop/lan");
    assert_eq!(resp.status, 404);
    assert_eq!(
        json(&resp),
        json!({"code": "not_found", "message": "Set 'lan' not found for policy 'drop'", "errors": {}})
    );
}

#[test]
fn bodies_and_paths_are_validated() {
    let d = Daemon::start();
    let mut api = d.admin();

    let resp = api.post(
        "/v1/sets/drop",
        &json!({"name": "a.b", "entries": ["1.1.1.1/32", "1.1.1.1", "x"]}).to_string(),
    );
    assert_eq!(resp.status, 422);
    let body = json(&resp);
    assert_eq!(body["message"], "Validation failed");
    let keys: Vec<&String> = body["errors"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["entries[1]", "entries[2]", "name"]);

    let resp = api.post("/v1/sets/drop", "{\"name\":");
    assert_eq!(resp.status, 400);
    assert!(json(&resp)["message"]
        .as_str()
        .unwrap()
        .starts_with("Invalid JSON format: "));
    let resp = api.raw(
        "POST",
        "/v1/sets/drop",
        &[],
        Some(br#"{"name":"a","entries":[]}"#),
    );
    assert_eq!(resp.status, 400, "no JSON content type");

    let resp = api.post(
        "/v1/sets/DROP",
        &json!({"name": "a", "entries": []}).to_string(),
    );
    assert_eq!(resp.status, 400);
    assert!(json(&resp)["errors"]["policy"].is_object());
    let resp = api.get("/v1/sets/bogus/a.b");
    assert_eq!(resp.status, 400);
    assert_eq!(json(&resp)["message"], "Bad request");
    let body = json(&resp);
    let keys: Vec<&String> = body["errors"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["name", "policy"]);
    assert_eq!(
        api.get(&format!("/v1/sets/drop/{}", "n".repeat(49))).status,
        400
    );

    // Literal segments win over {policy}; GET /v1/sets is the policy route.
    assert_eq!(api.get("/v1/sets").status, 400);
    assert_eq!(api.get("/v1/sets/reload").status, 405);
    assert!(fs::read_dir(d.set_dir("drop")).unwrap().next().is_none());
}

#[test]
fn a_full_size_set_fits_through_the_api() {
    let d = Daemon::start();
    let mut api = d.admin();
    // 16 bytes + newline per line: the largest count within 5 MiB.
    let line = "100.100.100.1/32";
    let max = (5 * 1024 * 1024 + 1) / (line.len() + 1);
    let body = json!({"name": "big", "entries": vec![line; max]}).to_string();
    assert!(
        body.len() > 2 * 1024 * 1024,
        "above the 2 MiB of other routes"
    );
    let resp = api.post("/v1/sets/drop", &body);
    assert_eq!(
        resp.status,
        201,
        "{}",
        &resp.text()[..200.min(resp.text().len())]
    );
    let size = fs::metadata(d.set_dir("drop").join("big.couic"))
        .unwrap()
        .len();
    assert!(size <= 5 * 1024 * 1024);

    let body = json!({"name": "bigger", "entries": vec![line; max + 1]}).to_string();
    let resp = api.post("/v1/sets/drop", &body);
    assert_eq!(resp.status, 422);
    assert!(json(&resp)["errors"]["entries"].is_object());
    assert!(!d.set_dir("drop").join("bigger.couic").exists());
}

#[test]
fn get_reports_permissions_and_every_bad_line() {
    let d = Daemon::start();
    let mut api = d.admin();
    d.write_set(
        "drop",
        "mixed",
        "# office\n\n 10.0.0.7/24 \nnot-a-cidr\n1.1.1.1\n2.2.2.2/32\n",
    );
    let resp = api.get("/v1/sets/drop/mixed");
    assert_eq!(resp.status, 422);
    let body = json(&resp);
    assert_eq!(body["message"], "Invalid set file");
    let keys: Vec<&String> = body["errors"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["line 4", "line 5"]);
    assert_eq!(body["errors"]["line 4"]["code"], "invalid");

    d.write_set("drop", "ok", "# c\n 10.0.0.7/24 \n\n2.2.2.2/32");
    assert_eq!(
        json(&api.get("/v1/sets/drop/ok")),
        json!({"name": "ok", "entries": ["10.0.0.7/24", "2.2.2.2/32"]})
    );

    d.write_file("drop", "open.couic", "1.1.1.1/32", 0o644);
    let resp = api.get("/v1/sets/drop/open");
    assert_eq!(resp.status, 422);
    assert!(json(&resp)["message"]
        .as_str()
        .unwrap()
        .starts_with("Set file has wrong permissions: "));
}

#[test]
fn list_shows_what_a_reload_would_load() {
    let d = Daemon::start();
    let mut api = d.admin();
    assert_eq!(json(&api.get("/v1/sets/drop")), json!([]));
    d.write_set("drop", "b", "1.1.1.1/32\n# c\n\nbad line\n");
    d.write_set("drop", "a", "");
    d.write_file("drop", "notes.txt", "x", 0o644);
    d.write_file("drop", "b.couic.tmp", "x", 0o644);
    let resp = api.get("/v1/sets/drop");
    assert_eq!(resp.status, 200);
    assert_eq!(
        json(&resp),
        json!([
            {"name": "a", "entry_count": 0, "file_size": 0},
            {"name": "b", "entry_count": 2, "file_size": 25},
        ])
    );
    // A file a reload refuses is refused here too, not silently skipped.
    d.write_file("drop", "a.b.couic", "", 0o600);
    let resp = api.get("/v1/sets/drop");
    assert_eq!(resp.status, 422);
    assert!(json(&resp)["message"]
        .as_str()
        .unwrap()
        .starts_with("Invalid set name: "));
    fs::remove_file(d.set_dir("drop").join("a.b.couic")).unwrap();
    d.write_file("drop", "wide.couic", "", 0o640);
    assert_eq!(api.get("/v1/sets/drop").status, 422);
    fs::remove_dir_all(d.set_dir("ignore")).unwrap();
    let resp = api.get("/v1/sets/ignore");
    assert_eq!(resp.status, 500);
    assert!(json(&resp)["message"]
        .as_str()
        .unwrap()
        .starts_with("Sets directory does not exist: "));
}

#[test]
fn scopes() {
    let d = Daemon::start();
    let mut admin = d.admin();
    let ro = json(&admin.post("/v1/client", r#"{"name":"ro","group":"clientro"}"#))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let rw = json(&admin.post("/v1/client", r#"{"name":"rw","group":"clientrw"}"#))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mon = json(&admin.post("/v1/client", r#"{"name":"mon","group":"monitoring"}"#))["token"]
        .as_str()
        .unwrap()
        .to_string();
    let body = json!({"name": "s", "entries": []}).to_string();

    let mut ro = d.client(Some(&ro));
    assert_eq!(ro.get("/v1/sets/drop").status, 200);
    assert_eq!(ro.post("/v1/sets/drop", &body).status, 401);
    assert_eq!(ro.reload().status, 401);
    let mut rw = d.client(Some(&rw));
    assert_eq!(rw.post("/v1/sets/drop", &body).status, 201);
    assert_eq!(rw.send("PUT", "/v1/sets/drop/s", &body).status, 200);
    assert_eq!(ro.get("/v1/sets/drop/s").status, 200);
    assert_eq!(ro.delete("/v1/sets/drop/s").status, 401);
    assert_eq!(rw.reload().status, 201);
    assert_eq!(rw.delete("/v1/sets/drop/s").status, 200);
    let mut mon = d.client(Some(&mon));
    assert_eq!(mon.get("/v1/sets/drop").status, 401);
    let mut anon = d.client(None);
    let resp = anon.reload();
    assert_eq!(resp.status, 401);
    assert_eq!(
        json(&resp),
        json!({"code": "unauthorized", "message": "Unauthorized", "errors": {}})
    );
    // Auth comes before path parameters.
    assert_eq!(anon.get("/v1/sets/bogus/x").status, 401);
}

#[test]
fn concurrent_creates_make_one_set() {
    let d = Daemon::start();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let mut api = d.admin();
                s.spawn(move || {
                    let body =
                        json!({"name": "race", "entries": [format!("10.0.0.{i}/32")]}).to_string();
                    api.post("/v1/sets/drop", &body).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 409).count(),
        7,
        "{statuses:?}"
    );
    let names: Vec<String> = fs::read_dir(d.set_dir("drop"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["race.couic"]);
}
