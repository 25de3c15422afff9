//! `/v1/stats`, `/v1/stats/tags/{policy}` and `/v1/metrics` (§9): store
//! sizes and the kernel's counters, as JSON or OpenMetrics text.

use std::collections::BTreeMap;

use actix_web::http::{header, StatusCode};
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use couic_common::{
    FleetStatus, Metrics, PeerState, PeerStatus, PktStats, Policy, ReportStats, Stats, TagStats,
    XDP_ACTIONS,
};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::error::ApiError;
use super::{json, params, AppState};
use crate::actors::map_writer::ReadSnapshot;
use crate::bpf::Counter;
use crate::firewall::Snapshot;
use crate::rbac::Scope;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// How per-tag statistics name the empty tag.
const UNTAGGED: &str = "untagged";

fn pkt(c: &Counter) -> PktStats {
    PktStats {
        rx_packets: c.packets,
        rx_bytes: c.bytes,
    }
}

fn stats_of(s: &Snapshot, reports: Option<ReportStats>) -> Stats {
    Stats {
        reports,
        drop_cidr_count: s.drop_count,
        ignore_cidr_count: s.ignore_count,
        xdp: XDP_ACTIONS
            .iter()
            .zip(&s.xdp)
            .map(|(name, c)| (name.to_string(), pkt(c)))
            .collect(),
    }
}

fn tag_name(tag: &str) -> &str {
    if tag.is_empty() {
        UNTAGGED
    } else {
        tag
    }
}

fn tags_of(tags: &[(String, Counter)]) -> TagStats {
    TagStats {
        tags: tags
            .iter()
            .map(|(t, c)| (tag_name(t).to_string(), pkt(c)))
            .collect::<BTreeMap<_, _>>(),
    }
}

async fn snapshot(state: &AppState) -> Result<Snapshot, ApiError> {
    state
        .writer
        .send(ReadSnapshot)
        .await?
        .map_err(ApiError::internal)
}

pub async fn global(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::STATS_LIST)?;
    let snap = snapshot(&state).await?;
    Ok(json(StatusCode::OK, &stats_of(&snap, state.report_stats())))
}

pub async fn tags(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::STATS_GET)?;
    let policy = params::policy(&req)?;
    let snap = snapshot(&state).await?;
    let tags = match policy {
        Policy::Drop => &snap.drop_tags,
        Policy::Ignore => &snap.ignore_tags,
    };
    Ok(json(StatusCode::OK, &tags_of(tags)))
}

pub async fn metrics(req: HttpRequest, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::STATS_LIST)?;
    let prometheus = wants_prometheus(req.query_string())?;
    let snap = snapshot(&state).await?;
    let reports = state.report_stats();
    if prometheus {
        let peers: Vec<PeerStatus> = state.peers.iter().map(|p| p.read()).collect();
        let now = state.clock.now();
        let fleet = state.fleet.as_ref().map(|f| f.read());
        let text = openmetrics(&snap, reports.as_ref(), &peers, fleet.as_ref(), now)
            .map_err(ApiError::internal)?;
        return Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE))
            .body(text));
    }
    let metrics = Metrics {
        stats: stats_of(&snap, reports),
        drop_tags: tags_of(&snap.drop_tags),
        ignore_tags: tags_of(&snap.ignore_tags),
    };
    Ok(json(StatusCode::OK, &metrics))
}

/// `format=prometheus` exactly; any other value or none means JSON, and
/// other parameters are ignored. `format` twice cannot be read (400 text).
fn wants_prometheus(query: &str) -> Result<bool, ApiError> {
    let mut format = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key) != "format" {
            continue;
        }
        if format.is_some() {
            return Err(ApiError::Plain {
                status: StatusCode::BAD_REQUEST,
                message: "Failed to deserialize query string: duplicate field `format`".into(),
            });
        }
        format = Some(percent_decode(value));
    }
    Ok(format.as_deref() == Some("prometheus"))
}

/// Form decoding of a query component: `+` is a space, `%XX` a byte.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Samples of one family, written under the exact registered name. The
/// counters are encoded as plain values so that the `# TYPE` line and the
/// samples both carry the `_total` name the reference's dashboards use.
#[derive(Debug)]
struct Samples {
    kind: MetricType,
    label: &'static str,
    values: Vec<(String, u64)>,
}

impl EncodeMetric for Samples {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (label, value) in &self.values {
            if self.label.is_empty() {
                encoder.encode_gauge(value)?;
            } else {
                encoder
                    .encode_family(&[(self.label, label.as_str())])?
                    .encode_gauge(value)?;
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

/// The text of §9.3, families in the contract's order, then the webhook
/// reporter's when reporting is on, then the peers' (labelled `peer`),
/// then the fleet sync's when `[fleet]` is on.
pub fn openmetrics(
    s: &Snapshot,
    reports: Option<&ReportStats>,
    peers: &[PeerStatus],
    fleet: Option<&FleetStatus>,
    now: u64,
) -> Result<String, std::fmt::Error> {
    let gauge = |v: u64| Samples {
        kind: MetricType::Gauge,
        label: "",
        values: vec![(String::new(), v)],
    };
    let counter = |label: &'static str, values: Vec<(String, u64)>| Samples {
        kind: MetricType::Counter,
        label,
        values,
    };
    let xdp = |f: fn(&Counter) -> u64| {
        let values = XDP_ACTIONS.iter().zip(&s.xdp);
        counter(
            "action",
            values.map(|(a, c)| (a.to_string(), f(c))).collect(),
        )
    };
    let tags = |t: &[(String, Counter)], f: fn(&Counter) -> u64| {
        let values = t.iter().map(|(name, c)| (tag_name(name).to_string(), f(c)));
        counter("tag", values.collect())
    };
    let packets: fn(&Counter) -> u64 = |c| c.packets;
    let bytes: fn(&Counter) -> u64 = |c| c.bytes;
    let mut families = vec![
        (
            "couic_drop_cidr_total",
            "Current number of CIDR dropped by couic",
            gauge(s.drop_count as u64),
        ),
        (
            "couic_ignore_cidr_total",
            "Current number of CIDR ignored by couic",
            gauge(s.ignore_count as u64),
        ),
        (
            "couic_stats_rx_packets_total",
            "Current number of packets handled by XDP",
            xdp(packets),
        ),
        (
            "couic_stats_rx_bytes_total",
            "Current number of bytes handled by XDP",
            xdp(bytes),
        ),
        (
            "couic_drop_tag_rx_packets_total",
            "Number of packets dropped per tag",
            tags(&s.drop_tags, packets),
        ),
        (
            "couic_drop_tag_rx_bytes_total",
            "Number of bytes dropped per tag",
            tags(&s.drop_tags, bytes),
        ),
        (
            "couic_ignore_tag_rx_packets_total",
            "Number of packets ignored per tag",
            tags(&s.ignore_tags, packets),
        ),
        (
            "couic_ignore_tag_rx_bytes_total",
            "Number of bytes ignored per tag",
            tags(&s.ignore_tags, bytes),
        ),
    ];
    if let Some(r) = reports {
        let one = |v: u64| counter("", vec![(String::new(), v)]);
        let causes = vec![
            ("queue_full".to_string(), r.dropped_queue_full),
            ("refused".to_string(), r.dropped_refused),
        ];
        families.extend([
            (
                "couic_reports_queued",
                "Webhook reports waiting to be sent",
                gauge(r.queued),
            ),
            (
                "couic_reports_sent_total",
                "Webhook reports delivered",
                one(r.sent),
            ),
            (
                "couic_reports_dropped_total",
                "Webhook reports dropped, by cause",
                counter("cause", causes),
            ),
            (
                "couic_reports_failed_attempts_total",
                "Webhook posts that failed and were retried",
                one(r.failed_attempts),
            ),
        ]);
        if let Some(since) = r.seconds_since_success {
            let help = "Seconds since a batch of reports was last delivered";
            families.push(("couic_reports_seconds_since_success", help, gauge(since)));
        }
    }
    if !peers.is_empty() {
        let per_peer = |kind: MetricType, f: &dyn Fn(&PeerStatus) -> u64| Samples {
            kind,
            label: "peer",
            values: peers.iter().map(|p| (p.name.clone(), f(p))).collect(),
        };
        let since: Vec<&PeerStatus> = peers.iter().filter(|p| p.last_success.is_some()).collect();
        families.extend([
            (
                "couic_peer_up",
                "1 when the last attempt to reach the peer worked",
                per_peer(MetricType::Gauge, &|p| u64::from(p.state == PeerState::Ok)),
            ),
            (
                "couic_peer_behind",
                "1 while the peer misses dropped jobs and waits for a resync",
                per_peer(MetricType::Gauge, &|p| {
                    u64::from(p.state == PeerState::Behind)
                }),
            ),
            (
                "couic_peer_queued",
                "Jobs waiting to be sent to the peer",
                per_peer(MetricType::Gauge, &|p| p.queued),
            ),
            (
                "couic_peer_jobs_sent_total",
                "Jobs the peer acknowledged",
                per_peer(MetricType::Counter, &|p| p.jobs_sent),
            ),
            (
                "couic_peer_jobs_dropped_total",
                "Jobs dropped when the peer's queue overflowed",
                per_peer(MetricType::Counter, &|p| p.jobs_dropped),
            ),
            (
                "couic_peer_shards_resynced_total",
                "Shards sent to the peer by resyncs",
                per_peer(MetricType::Counter, &|p| p.shards_resynced),
            ),
        ]);
        if !since.is_empty() {
            families.push((
                "couic_peer_seconds_since_success",
                "Seconds since the peer last acknowledged a batch or a resync",
                Samples {
                    kind: MetricType::Gauge,
                    label: "peer",
                    values: since
                        .iter()
                        .map(|p| {
                            let last = p.last_success.unwrap_or(now);
                            (p.name.clone(), now.saturating_sub(last))
                        })
                        .collect(),
                },
            ));
        }
    }
    if let Some(f) = fleet {
        use MetricType::{Counter as C, Gauge as G};
        #[rustfmt::skip]
        let fleet_families = [
            ("couic_fleet_connected", "1 while connected to a NATS server", G, u64::from(f.connected)),
            ("couic_fleet_caught_up", "1 once the catch-up with the bucket is done", G, u64::from(f.caught_up)),
            ("couic_fleet_last_revision", "Revision of the last word of the bucket applied", G, f.last_revision),
            ("couic_fleet_lag", "Revisions of the bucket not applied yet", G, f.lag),
            ("couic_fleet_queued", "This node's changes waiting to be written to the bucket", G, f.queued),
            ("couic_fleet_dropped_total", "This node's changes dropped when the queue was full", C, f.dropped),
            ("couic_fleet_published_total", "This node's changes written to the bucket", C, f.published),
            ("couic_fleet_applied_total", "Words of the bucket applied", C, f.applied),
            ("couic_fleet_rejected_total", "Words of the bucket skipped as malformed", C, f.rejected),
            ("couic_fleet_purged_total", "Expired keys purged from the bucket", C, f.purged),
            ("couic_fleet_swept_total", "Delete markers past their retention removed from the bucket", C, f.swept),
            ("couic_fleet_fetched_total", "Words read from the bucket one at a time: no notice brought them", C, f.fetched),
            ("couic_fleet_reconnects_total", "Connections made again after a failure", C, f.reconnects),
        ];
        families.extend(fleet_families.map(|(name, help, kind, value)| {
            let samples = Samples {
                kind,
                label: "",
                values: vec![(String::new(), value)],
            };
            (name, help, samples)
        }));
    }
    let mut registry = Registry::default();
    for (name, help, samples) in families {
        registry.register(name, help, samples);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_format() {
        assert!(wants_prometheus("format=prometheus").unwrap());
        assert!(wants_prometheus("a=1&format=prometheus&b").unwrap());
        assert!(wants_prometheus("%66ormat=prometheus").unwrap());
        assert!(!wants_prometheus("format=Prometheus").unwrap());
        assert!(!wants_prometheus("format=").unwrap());
        assert!(!wants_prometheus("").unwrap());
        assert!(wants_prometheus("format=json&format=prometheus").is_err());
    }

    #[test]
    fn openmetrics_text_is_exact() {
        let mut snap = Snapshot {
            drop_count: 3,
            ignore_count: 1,
            ..Default::default()
        };
        snap.xdp[1] = Counter {
            packets: 5,
            bytes: 300,
        };
        snap.drop_tags = vec![(
            String::new(),
            Counter {
                packets: 2,
                bytes: 120,
            },
        )];
        snap.ignore_tags = vec![(
            "lan.couic".into(),
            Counter {
                packets: 1,
                bytes: 60,
            },
        )];
        let text = openmetrics(&snap, None, &[], None, 0).unwrap();
        let expected = "\
# HELP couic_drop_cidr_total Current number of CIDR dropped by couic.
# TYPE couic_drop_cidr_total gauge
couic_drop_cidr_total 3
# HELP couic_ignore_cidr_total Current number of CIDR ignored by couic.
# TYPE couic_ignore_cidr_total gauge
couic_ignore_cidr_total 1
# HELP couic_stats_rx_packets_total Current number of packets handled by XDP.
# TYPE couic_stats_rx_packets_total counter
couic_stats_rx_packets_total{action=\"XDP_ABORTED\"} 0
couic_stats_rx_packets_total{action=\"XDP_DROP\"} 5
couic_stats_rx_packets_total{action=\"XDP_PASS\"} 0
couic_stats_rx_packets_total{action=\"XDP_TX\"} 0
couic_stats_rx_packets_total{action=\"XDP_REDIRECT\"} 0
# HELP couic_stats_rx_bytes_total Current number of bytes handled by XDP.
# TYPE couic_stats_rx_bytes_total counter
couic_stats_rx_bytes_total{action=\"XDP_ABORTED\"} 0
couic_stats_rx_bytes_total{action=\"XDP_DROP\"} 300
couic_stats_rx_bytes_total{action=\"XDP_PASS\"} 0
couic_stats_rx_bytes_total{action=\"XDP_TX\"} 0
couic_stats_rx_bytes_total{action=\"XDP_REDIRECT\"} 0
# HELP couic_drop_tag_rx_packets_total Number of packets dropped per tag.
# TYPE couic_drop_tag_rx_packets_total counter
couic_drop_tag_rx_packets_total{tag=\"untagged\"} 2
# HELP couic_drop_tag_rx_bytes_total Number of bytes dropped per tag.
# TYPE couic_drop_tag_rx_bytes_total counter
couic_drop_tag_rx_bytes_total{tag=\"untagged\"} 120
# HELP couic_ignore_tag_rx_packets_total Number of packets ignored per tag.
# TYPE couic_ignore_tag_rx_packets_total counter
couic_ignore_tag_rx_packets_total{tag=\"lan.couic\"} 1
# HELP couic_ignore_tag_rx_bytes_total Number of bytes ignored per tag.
# TYPE couic_ignore_tag_rx_bytes_total counter
couic_ignore_tag_rx_bytes_total{tag=\"lan.couic\"} 60
# EOF
";
        assert_eq!(text, expected);

        // With reporting on, its families follow; the reference's are as
        // they were.
        let reports = ReportStats {
            queued: 7,
            sent: 40,
            dropped_queue_full: 2,
            dropped_refused: 1,
            failed_attempts: 3,
            seconds_since_success: Some(9),
        };
        let text = openmetrics(&snap, Some(&reports), &[], None, 0).unwrap();
        let expected = expected.strip_suffix("# EOF\n").unwrap().to_string()
            + "\
# HELP couic_reports_queued Webhook reports waiting to be sent.
# TYPE couic_reports_queued gauge
couic_reports_queued 7
# HELP couic_reports_sent_total Webhook reports delivered.
# TYPE couic_reports_sent_total counter
couic_reports_sent_total 40
# HELP couic_reports_dropped_total Webhook reports dropped, by cause.
# TYPE couic_reports_dropped_total counter
couic_reports_dropped_total{cause=\"queue_full\"} 2
couic_reports_dropped_total{cause=\"refused\"} 1
# HELP couic_reports_failed_attempts_total Webhook posts that failed and were retried.
# TYPE couic_reports_failed_attempts_total counter
couic_reports_failed_attempts_total 3
# HELP couic_reports_seconds_since_success Seconds since a batch of reports was last delivered.
# TYPE couic_reports_seconds_since_success gauge
couic_reports_seconds_since_success 9
# EOF
";
        assert_eq!(text, expected);
    }

    #[test]
    fn peer_families_are_labelled_by_peer() {
        let peer = |name: &str, state, last_success| PeerStatus {
            name: name.into(),
            url: "https://b:443".into(),
            state,
            queued: 3,
            jobs_sent: 40,
            jobs_dropped: 0,
            shards_resynced: 2,
            last_success,
            last_error: None,
            last_error_at: None,
        };
        let peers = [
            peer("b", PeerState::Ok, Some(95)),
            peer("c", PeerState::Behind, None),
        ];
        let text = openmetrics(&Snapshot::default(), None, &peers, None, 100).unwrap();
        let start = text.find("# HELP couic_peer_up").expect("peer families");
        let expected = "\
# HELP couic_peer_up 1 when the last attempt to reach the peer worked.
# TYPE couic_peer_up gauge
couic_peer_up{peer=\"b\"} 1
couic_peer_up{peer=\"c\"} 0
# HELP couic_peer_behind 1 while the peer misses dropped jobs and waits for a resync.
# TYPE couic_peer_behind gauge
couic_peer_behind{peer=\"b\"} 0
couic_peer_behind{peer=\"c\"} 1
# HELP couic_peer_queued Jobs waiting to be sent to the peer.
# TYPE couic_peer_queued gauge
couic_peer_queued{peer=\"b\"} 3
couic_peer_queued{peer=\"c\"} 3
# HELP couic_peer_jobs_sent_total Jobs the peer acknowledged.
# TYPE couic_peer_jobs_sent_total counter
couic_peer_jobs_sent_total{peer=\"b\"} 40
couic_peer_jobs_sent_total{peer=\"c\"} 40
# HELP couic_peer_jobs_dropped_total Jobs dropped when the peer's queue overflowed.
# TYPE couic_peer_jobs_dropped_total counter
couic_peer_jobs_dropped_total{peer=\"b\"} 0
couic_peer_jobs_dropped_total{peer=\"c\"} 0
# HELP couic_peer_shards_resynced_total Shards sent to the peer by resyncs.
# TYPE couic_peer_shards_resynced_total counter
couic_peer_shards_resynced_total{peer=\"b\"} 2
couic_peer_shards_resynced_total{peer=\"c\"} 2
# HELP couic_peer_seconds_since_success Seconds since the peer last acknowledged a batch or a resync.
# TYPE couic_peer_seconds_since_success gauge
couic_peer_seconds_since_success{peer=\"b\"} 5
# EOF
";
        assert_eq!(&text[start..], expected);
    }
}
