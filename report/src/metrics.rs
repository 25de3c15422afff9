//! `GET /metrics`: what couic-report received and sent since it started,
//! in the Prometheus (OpenMetrics) text format.
//!
//! Counters are updated once per batch from its [`Tally`], not per report.
//! Tags come from senders, so the number of tag series is capped: past
//! [`MAX_TAG_SERIES`], or for a tag longer than [`MAX_TAG_LEN`], reports
//! count under `tag="(other)"`; untagged reports under `tag="(untagged)"`.
//! Neither name can be a couic tag (parentheses are not allowed in tags).

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::period::Tally;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const MAX_TAG_SERIES: usize = 1000;
pub const MAX_TAG_LEN: usize = 64;
pub const UNTAGGED: &str = "(untagged)";
pub const OTHER_TAGS: &str = "(other)";

const ACTIONS: [&str; 2] = ["add", "remove"];
const POLICIES: [&str; 2] = ["drop", "ignore"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabels {
    action: &'static str,
    policy: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TagLabels {
    action: &'static str,
    tag: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifierLabels {
    notifier: &'static str,
    outcome: &'static str,
}

/// What a period's end led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodOutcome {
    Empty,
    BelowThreshold,
    Notified,
}

impl PeriodOutcome {
    fn as_str(self) -> &'static str {
        match self {
            PeriodOutcome::Empty => "empty",
            PeriodOutcome::BelowThreshold => "below_threshold",
            PeriodOutcome::Notified => "notified",
        }
    }
}

/// What became of one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// Every attempt failed, or the destination refused it.
    Failed,
    /// Its destination's outbox was full.
    Dropped,
    /// One more attempt after a failure.
    Retry,
}

impl Delivery {
    fn as_str(self) -> &'static str {
        match self {
            Delivery::Sent => "sent",
            Delivery::Failed => "failed",
            Delivery::Dropped => "dropped",
            Delivery::Retry => "retry",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<StatusLabels, Counter>,
    reports_received: Counter,
    reports: Family<ReportLabels, Counter>,
    tag_reports: Family<TagLabels, Counter>,
    duplicate_batches: Counter,
    overloaded_batches: Counter,
    queued_reports: Gauge,
    periods: Family<OutcomeLabels, Counter>,
    notifications: Family<NotifierLabels, Counter>,
    tag_series: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("couic_report"),
            requests: Family::default(),
            reports_received: Counter::default(),
            reports: Family::default(),
            tag_reports: Family::default(),
            duplicate_batches: Counter::default(),
            overloaded_batches: Counter::default(),
            queued_reports: Gauge::default(),
            periods: Family::default(),
            notifications: Family::default(),
            tag_series: Mutex::new(HashSet::new()),
        };
        let r = &mut m.registry;
        r.register(
            "requests",
            "Report POSTs answered, by HTTP status",
            m.requests.clone(),
        );
        r.register(
            "reports_received",
            "Reports counted (duplicate batches excluded)",
            m.reports_received.clone(),
        );
        r.register(
            "reports",
            "Reports counted, by action and policy",
            m.reports.clone(),
        );
        r.register(
            "tag_reports",
            "Reports counted, by action and tag",
            m.tag_reports.clone(),
        );
        r.register(
            "duplicate_batches",
            "Batches acknowledged but not counted: their X-Couic-Batch id was seen within the hour",
            m.duplicate_batches.clone(),
        );
        r.register(
            "overloaded_batches",
            "Batches refused with 503 because the queue to the aggregator was full",
            m.overloaded_batches.clone(),
        );
        r.register(
            "queued_reports",
            "Reports accepted and waiting for the aggregator",
            m.queued_reports.clone(),
        );
        r.register(
            "periods",
            "Aggregation periods closed, by outcome",
            m.periods.clone(),
        );
        r.register(
            "notifications",
            "Notification attempts and results, by notifier and outcome",
            m.notifications.clone(),
        );
        m
    }

    pub fn request(&self, status: u16) {
        self.requests.get_or_create(&StatusLabels { status }).inc();
    }

    pub fn overloaded(&self) {
        self.overloaded_batches.inc();
    }

    pub fn set_queued(&self, reports: usize) {
        self.queued_reports
            .set(i64::try_from(reports).unwrap_or(i64::MAX));
    }

    pub fn duplicate(&self) {
        self.duplicate_batches.inc();
    }

    pub fn counted(&self, tally: &Tally) {
        self.reports_received.inc_by(tally.reports());
        for (a, action) in ACTIONS.iter().enumerate() {
            for (p, policy) in POLICIES.iter().enumerate() {
                let n = tally.counts[a][p];
                if n > 0 {
                    let labels = ReportLabels { action, policy };
                    self.reports.get_or_create(&labels).inc_by(n);
                }
            }
        }
        let mut series = self.tag_series.lock().unwrap_or_else(|e| e.into_inner());
        for (tag, per_action) in &tally.tags {
            let tag = tag_label(&mut series, tag);
            for (a, action) in ACTIONS.iter().enumerate() {
                if per_action[a] > 0 {
                    let labels = TagLabels {
                        action,
                        tag: tag.to_string(),
                    };
                    self.tag_reports
                        .get_or_create(&labels)
                        .inc_by(per_action[a]);
                }
            }
        }
    }

    pub fn period(&self, outcome: PeriodOutcome) {
        let labels = OutcomeLabels {
            outcome: outcome.as_str(),
        };
        self.periods.get_or_create(&labels).inc();
    }

    pub fn notification(&self, notifier: &'static str, delivery: Delivery) {
        let labels = NotifierLabels {
            notifier,
            outcome: delivery.as_str(),
        };
        self.notifications.get_or_create(&labels).inc();
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The label a tag counts under, admitting it as a new series if there is
/// room.
fn tag_label<'a>(series: &mut HashSet<String>, tag: &'a str) -> &'a str {
    if tag.is_empty() {
        return UNTAGGED;
    }
    if tag.len() > MAX_TAG_LEN {
        return OTHER_TAGS;
    }
    if series.contains(tag) {
        return tag;
    }
    if series.len() < MAX_TAG_SERIES {
        series.insert(tag.to_string());
        return tag;
    }
    OTHER_TAGS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(counts: [[u64; 2]; 2], tags: &[(&str, [u64; 2])]) -> Tally {
        Tally {
            counts,
            tags: tags.iter().map(|(t, c)| (t.to_string(), *c)).collect(),
        }
    }

    #[test]
    fn per_action_policy_and_tag() {
        let m = Metrics::new();
        m.counted(&tally([[3, 1], [2, 0]], &[("ssh", [3, 1]), ("", [1, 1])]));
        m.counted(&tally([[1, 0], [0, 0]], &[("ssh", [1, 0])]));
        m.request(200);
        m.request(401);
        m.duplicate();
        m.period(PeriodOutcome::Notified);
        m.notification("discord", Delivery::Retry);
        let text = m.encode().unwrap();
        for line in [
            "couic_report_reports_received_total 7",
            "couic_report_reports_total{action=\"add\",policy=\"drop\"} 4",
            "couic_report_reports_total{action=\"add\",policy=\"ignore\"} 1",
            "couic_report_reports_total{action=\"remove\",policy=\"drop\"} 2",
            "couic_report_tag_reports_total{action=\"add\",tag=\"ssh\"} 4",
            "couic_report_tag_reports_total{action=\"remove\",tag=\"ssh\"} 1",
            "couic_report_tag_reports_total{action=\"add\",tag=\"(untagged)\"} 1",
            "couic_report_requests_total{status=\"200\"} 1",
            "couic_report_requests_total{status=\"401\"} 1",
            "couic_report_duplicate_batches_total 1",
            "couic_report_periods_total{outcome=\"notified\"} 1",
            "couic_report_notifications_total{notifier=\"discord\",outcome=\"retry\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("policy=\"ignore\"} 0"));
    }

    #[test]
    fn tag_series_are_capped() {
        let mut series = HashSet::new();
        for i in 0..MAX_TAG_SERIES {
            assert_eq!(tag_label(&mut series, &format!("t{i}")), format!("t{i}"));
        }
        assert_eq!(tag_label(&mut series, "one-more"), OTHER_TAGS);
        assert_eq!(tag_label(&mut series, "t0"), "t0");
        assert_eq!(tag_label(&mut series, &"x".repeat(65)), OTHER_TAGS);
        assert_eq!(tag_label(&mut series, ""), UNTAGGED);
    }
}
