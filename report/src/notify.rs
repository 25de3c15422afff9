//! What is sent at the end of a notified period, and the two formats: the
//! reference's Discord embed and a generic JSON document.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::period::Summary;
use crate::thresholds::Level;
use crate::{discord, webhook};

/// A closed period worth telling about.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub summary: Summary,
    pub level: Level,
    /// `[server].name`.
    pub server: String,
    /// When the period closed.
    pub at: DateTime<Utc>,
}

impl Notice {
    /// RFC 3339, UTC, whole seconds: `2026-12-01T10:15:00Z`.
    pub fn timestamp(&self) -> String {
        self.at.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// The period as the reference's title says it: `1-hour`, `15-minute`,
    /// `90-second`: the largest unit that divides it.
    pub fn period(&self) -> String {
        let secs = self.summary.length.as_secs();
        if secs.is_multiple_of(3600) {
            format!("{}-hour", secs / 3600)
        } else if secs.is_multiple_of(60) {
            format!("{}-minute", secs / 60)
        } else {
            format!("{secs}-second")
        }
    }
}

/// How a destination wants its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `details`: the extra fields after the reference's three.
    Discord {
        details: bool,
    },
    Webhook,
}

impl Format {
    pub fn body(self, notice: &Notice) -> Value {
        match self {
            Format::Discord { details } => discord::message(notice, details),
            Format::Webhook => webhook::payload(notice),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub fn notice(secs: u64, total: u64, level: Level) -> Notice {
        Notice {
            summary: Summary {
                length: Duration::from_secs(secs),
                total,
                distinct: total.saturating_sub(1),
                adds_drop: total,
                adds_ignore: 0,
                top_tags: vec![("ssh".into(), 4), ("web".into(), 2)],
                top_networks: vec![("192.0.2.0/24".into(), 3)],
                removed_expired: 2,
                removed_deleted: 1,
                nodes: 2,
                capped: false,
            },
            level,
            server: "edge".into(),
            at: DateTime::parse_from_rfc3339("2026-12-01T10:15:00Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn period_names_as_the_reference() {
        let name = |secs| notice(secs, 1, Level::Green).period();
        assert_eq!(name(900), "15-minute");
        assert_eq!(name(3600), "1-hour");
        assert_eq!(name(7200), "2-hour");
        assert_eq!(name(5400), "90-minute");
        assert_eq!(name(60), "1-minute");
        assert_eq!(name(90), "90-second");
        assert_eq!(name(1), "1-second");
    }

    #[test]
    fn timestamp_is_rfc3339_utc() {
        assert_eq!(
            notice(1, 1, Level::Green).timestamp(),
            "2026-12-01T10:15:00Z"
        );
    }
}
