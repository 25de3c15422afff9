//! `/v1/stats`, `/v1/stats/tags/{policy}`, `/v1/metrics` (§9) with counters
//! the kernel really counted, and `/v1/check/{ip}`.

mod api_support;

use api_support::*;
use couic::bpf;
use couic_common::Policy;
use serde_json::json;

fn ipv4_frame(src: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[12] = 0x08; // IPv4
    f[14] = 0x45;
    f[26..30].copy_from_slice(&src);
    f
}

#[test]
fn stats_count_entries_and_kernel_packets() {
    let d = Daemon::start();
    let mut api = d.admin();
    let empty = json(&api.get("/v1/stats"));
    assert_eq!(empty["drop_cidr_count"], 0);
    let keys: Vec<&String> = empty["xdp"].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5);
    for action in [
        "XDP_ABORTED",
        "XDP_DROP",
        "XDP_PASS",
        "XDP_TX",
        "XDP_REDIRECT",
    ] {
        assert_eq!(
            empty["xdp"][action],
            json!({"rx_packets": 0, "rx_bytes": 0}),
            "{action}"
        );
    }

    assert_eq!(api.add("drop", "192.0.2.0/24", Some("web"), 0).status, 201);
    assert_eq!(api.add("drop", "198.51.100.0/24", None, 0).status, 201);
    assert_eq!(api.add("ignore", "203.0.113.0/24", None, 0).status, 201);
    d.add_set_entry(Policy::Ignore, "10.0.0.0/8", "lan");
    assert_eq!(
        bpf::test_run(&d.program, &ipv4_frame([192, 0, 2, 7]), 3)
            .unwrap()
            .0,
        1
    );
    assert_eq!(
        bpf::test_run(&d.program, &ipv4_frame([198, 51, 100, 1]), 1)
            .unwrap()
            .0,
        1
    );
    assert_eq!(
        bpf::test_run(&d.program, &ipv4_frame([10, 1, 1, 1]), 2)
            .unwrap()
            .0,
        2
    );
    assert_eq!(
        bpf::test_run(&d.program, &ipv4_frame([1, 1, 1, 1]), 1)
            .unwrap()
            .0,
        2
    );

    let stats = json(&api.get("/v1/stats"));
    assert_eq!(
        (
            stats["drop_cidr_count"].clone(),
            stats["ignore_cidr_count"].clone()
        ),
        (json!(2), json!(2))
    );
    assert_eq!(
        stats["xdp"]["XDP_DROP"],
        json!({"rx_packets": 4, "rx_bytes": 256})
    );
    assert_eq!(stats["xdp"]["XDP_PASS"]["rx_packets"], 3);

    let drop_tags = json(&api.get("/v1/stats/tags/drop"));
    assert_eq!(
        drop_tags,
        json!({"tags": {"web": {"rx_packets": 3, "rx_bytes": 192}, "untagged": {"rx_packets": 1, "rx_bytes": 64}}})
    );
    let ignore_tags = json(&api.get("/v1/stats/tags/ignore"));
    assert_eq!(ignore_tags["tags"]["lan.couic"]["rx_packets"], 2);
    assert_eq!(api.get("/v1/stats/tags/DROP").status, 400);
    assert_eq!(api.get("/v1/stats/tags/sets").status, 400);

    let metrics = json(&api.get("/v1/metrics"));
    assert_eq!(metrics["drop_cidr_count"], 2);
    assert_eq!(metrics["xdp"]["XDP_DROP"]["rx_packets"], 4);
    assert_eq!(metrics["drop_tags"], drop_tags);
    assert_eq!(metrics["ignore_tags"], ignore_tags);

    for path in ["/v1/stats", "/v1/metrics", "/v1/stats/tags/drop"] {
        let head = api.raw("HEAD", path, &[], None);
        assert_eq!((head.status, head.body.len()), (200, 0), "{path}");
    }
}

#[test]
fn prometheus_text_and_query_rules() {
    let d = Daemon::start();
    let mut api = d.admin();
    assert_eq!(api.add("drop", "192.0.2.0/24", Some("web"), 0).status, 201);
    assert_eq!(
        bpf::test_run(&d.program, &ipv4_frame([192, 0, 2, 7]), 2)
            .unwrap()
            .0,
        1
    );
    let resp = api.get("/v1/metrics?format=prometheus");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = resp.text();
    assert!(text.starts_with("# HELP couic_drop_cidr_total Current number of CIDR dropped by couic.\n# TYPE couic_drop_cidr_total gauge\ncouic_drop_cidr_total 1\n"), "{text}");
    assert!(text.contains("# TYPE couic_stats_rx_packets_total counter\n"));
    assert!(text.contains("couic_stats_rx_packets_total{action=\"XDP_DROP\"} 2\n"));
    assert!(text.contains("couic_stats_rx_bytes_total{action=\"XDP_DROP\"} 128\n"));
    assert!(text.contains("couic_drop_tag_rx_packets_total{tag=\"web\"} 2\n"));
    assert!(
        text.contains("# TYPE couic_ignore_tag_rx_bytes_total counter\n# EOF\n"),
        "no ignore tag yet"
    );
    assert!(text.ends_with("# EOF\n"));
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    assert_eq!(
        families,
        [
            "couic_drop_cidr_total gauge",
            "couic_ignore_cidr_total gauge",
            "couic_stats_rx_packets_total counter",
            "couic_stats_rx_bytes_total counter",
            "couic_drop_tag_rx_packets_total counter",
            "couic_drop_tag_rx_bytes_total counter",
            "couic_ignore_tag_rx_packets_total counter",
            "couic_ignore_tag_rx_bytes_total counter",
        ]
    );
    assert_eq!(api.get("/v1/metrics?x=1&format=prometheus").status, 200);
    assert_eq!(
        api.raw(
            "GET",
            "/v1/metrics?format=prometheus",
            &[("Accept", "application/json")],
            None
        )
        .header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "Accept is ignored"
    );
    for query in [
        "",
        "?format=Prometheus",
        "?format=",
        "?format=json",
        "?other=prometheus",
    ] {
        let resp = api.get(&format!("/v1/metrics{query}"));
        assert_eq!(
            resp.header("content-type"),
            Some("application/json"),
            "{query}"
        );
    }
    let resp = api.get("/v1/metrics?format=prometheus&format=prometheus");
    assert_eq!(resp.status, 400);
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
}

#[test]
fn stats_scopes() {
    let d = Daemon::start();
    let monitoring = d.create_client("grafana", "monitoring");
    let mut mon = d.client(Some(&monitoring));
    assert_eq!(mon.get("/v1/stats").status, 200);
    assert_eq!(mon.get("/v1/metrics?format=prometheus").status, 200);
    assert_eq!(mon.get("/v1/stats/tags/ignore").status, 200);
    assert_eq!(mon.get("/v1/drop").status, 401);
    assert_eq!(mon.get("/v1/check/1.2.3.4").status, 401);
}

#[test]
fn check_gives_the_deciding_entry() {
    let d = Daemon::start();
    let mut api = d.admin();
    assert_eq!(api.add("drop", "10.0.0.0/8", Some("wide"), 0).status, 201);
    assert_eq!(
        api.add("drop", "10.1.0.0/16", Some("narrow"), 0).status,
        201
    );
    assert_eq!(api.add("ignore", "10.1.2.0/24", None, 0).status, 201);

    let hit = json(&api.get("/v1/check/10.1.9.9"));
    assert_eq!(hit["verdict"], "drop");
    assert_eq!(hit["reason"], "drop");
    assert_eq!(hit["policy"], "drop");
    assert_eq!(hit["origin"], "api");
    assert_eq!(hit["entry"]["tag"], "narrow");
    assert_eq!(hit["ip"], "10.1.9.9");

    let ignored = json(&api.get("/v1/check/10.1.2.3"));
    assert_eq!(
        (ignored["verdict"].clone(), ignored["reason"].clone()),
        (json!("pass"), json!("ignore"))
    );
    assert_eq!(ignored["entry"]["tag"], "");

    let miss = json(&api.get("/v1/check/2001:db8::1"));
    assert_eq!(
        miss,
        json!({"ip":"2001:db8::1","verdict":"pass","reason":"none","entry":null,"policy":null,"origin":null})
    );
    let resp = api.get("/v1/check/10.1.2");
    assert_eq!(resp.status, 400);
    assert_eq!(
        json(&resp)["errors"]["ip"]["message"],
        "10.1.2 is not a valid IP address"
    );
    let ro = d.create_client("reader", "clientro");
    assert_eq!(d.client(Some(&ro)).get("/v1/check/10.1.2.3").status, 200);
}
