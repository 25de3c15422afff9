//! Sending notifications: one thread per destination, fed through a small
//! bounded outbox, so that a destination that is slow or rate limited
//! delays neither the other one nor the aggregation.
//!
//! A notice is retried on its own thread with the same figures: after a
//! 429, once its `retry_after` has passed; after a 5xx or a transport
//! error, with a doubling backoff; at most [`MAX_ATTEMPTS`] times in all.
//! Any other answer is final. The posts are blocking (ureq), which is why
//! they have threads of their own and never run on the server's runtime.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use ureq::Agent;

use crate::metrics::{Delivery, Metrics};
use crate::notify::{Format, Notice};

/// Notices a destination may have waiting while it retries one.
pub const OUTBOX_CAPACITY: usize = 8;
/// The reference's Discord timeout.
pub const TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_ATTEMPTS: u32 = 5;
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A 429 without a usable delay waits this long.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest `retry_after` honoured; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Most of an answer's body read (a 429's JSON is small).
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// How one attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    /// 429, with the delay the destination asked for, if any.
    RateLimited(Option<Duration>),
    /// 5xx.
    ServerError(u16),
    /// No answer: connection, TLS or timeout.
    Unreachable(String),
    /// Any other status: retrying would not help.
    Refused(u16),
}

/// How long to wait before attempt `attempts + 1`, or `None` to stop.
pub fn retry_delay(outcome: &Outcome, attempts: u32) -> Option<Duration> {
    if attempts >= MAX_ATTEMPTS {
        return None;
    }
    match outcome {
        Outcome::Delivered | Outcome::Refused(_) => None,
        Outcome::RateLimited(after) => {
            Some(after.unwrap_or(DEFAULT_RETRY_AFTER).min(MAX_RETRY_AFTER))
        }
        Outcome::ServerError(_) | Outcome::Unreachable(_) => {
            let doubled = FIRST_BACKOFF.saturating_mul(1 << (attempts - 1).min(16));
            Some(doubled.min(MAX_BACKOFF))
        }
    }
}

/// Posts until delivered or [`retry_delay`] says stop; `wait` is called
/// with each delay before the next attempt (it sleeps, or records in tests).
/// Returns the last outcome and how many attempts were made.
pub fn deliver(
    mut post: impl FnMut() -> Outcome,
    mut wait: impl FnMut(&Outcome, Duration),
) -> (Outcome, u32) {
    let mut attempts = 0;
    loop {
        let outcome = post();
        attempts += 1;
        match retry_delay(&outcome, attempts) {
            Some(delay) => wait(&outcome, delay),
            None => return (outcome, attempts),
        }
    }
}

/// The delay of a 429: Discord's JSON `retry_after` (seconds, fractional),
/// else a `Retry-After` header in seconds.
pub fn retry_after(body: &str, header: Option<&str>) -> Option<Duration> {
    let from_body = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("retry_after").and_then(Value::as_f64));
    let from_header = || header.and_then(|h| h.trim().parse::<f64>().ok());
    from_body
        .or_else(from_header)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
}

/// A notifier: where to post, and in which format.
#[derive(Clone)]
pub struct Destination {
    /// `discord` or `webhook`, for logs and metrics. The URL is never
    /// logged: it holds credentials.
    pub name: &'static str,
    pub url: String,
    pub format: Format,
}

/// The sending end of a destination's outbox.
#[derive(Clone)]
pub struct Outbox {
    name: &'static str,
    tx: SyncSender<Arc<Notice>>,
    metrics: Arc<Metrics>,
}

impl Outbox {
    /// Queues `notice`, or drops it with a warning when the outbox is full
    /// (the destination has been failing for several periods).
    pub fn offer(&self, notice: Arc<Notice>) {
        match self.tx.try_send(notice) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    notifier = self.name,
                    capacity = OUTBOX_CAPACITY,
                    "outbox full, notification dropped"
                );
                self.metrics.notification(self.name, Delivery::Dropped);
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!(
                    notifier = self.name,
                    "notifier stopped, notification dropped"
                );
                self.metrics.notification(self.name, Delivery::Dropped);
            }
        }
    }
}

/// Starts the destination's thread; it ends when every [`Outbox`] is gone.
pub fn start(
    destination: Destination,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Outbox, JoinHandle<()>)> {
    let (tx, rx) = sync_channel(OUTBOX_CAPACITY);
    let outbox = Outbox {
        name: destination.name,
        tx,
        metrics: metrics.clone(),
    };
    let handle = std::thread::Builder::new()
        .name(format!("notify-{}", destination.name))
        .spawn(move || run(destination, rx, &metrics))?;
    Ok((outbox, handle))
}

fn run(destination: Destination, rx: Receiver<Arc<Notice>>, metrics: &Metrics) {
    let agent: Agent = Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .user_agent(concat!("couic-report/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let name = destination.name;
    for notice in rx {
        let body = destination.format.body(&notice);
        let (outcome, attempts) = deliver(
            || post(&agent, &destination.url, &body),
            |outcome, delay| {
                tracing::warn!(
                    notifier = name,
                    ?outcome,
                    ?delay,
                    "notification not delivered, retrying"
                );
                metrics.notification(name, Delivery::Retry);
                std::thread::sleep(delay);
            },
        );
        if outcome == Outcome::Delivered {
            tracing::info!(
                notifier = name,
                attempts,
                total = notice.summary.total,
                "notification sent"
            );
            metrics.notification(name, Delivery::Sent);
        } else {
            tracing::error!(
                notifier = name,
                attempts,
                ?outcome,
                "notification failed, giving up"
            );
            metrics.notification(name, Delivery::Failed);
        }
    }
}

fn post(agent: &Agent, url: &str, body: &Value) -> Outcome {
    let mut answer = match agent.post(url).send_json(body) {
        Ok(answer) => answer,
        Err(e) => return Outcome::Unreachable(e.to_string()),
    };
    let status = answer.status().as_u16();
    match status {
        200..=299 => Outcome::Delivered,
        429 => {
            let header = answer
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let text = answer
                .body_mut()
                .with_config()
                .limit(MAX_ANSWER_BYTES)
                .read_to_string()
                .unwrap_or_default();
            Outcome::RateLimited(retry_after(&text, header.as_deref()))
        }
        500..=599 => Outcome::ServerError(status),
        _ => Outcome::Refused(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(outcomes: Vec<Outcome>) -> impl FnMut() -> Outcome {
        let mut outcomes = outcomes.into_iter();
        move || outcomes.next().expect("no more attempts scripted")
    }

    #[test]
    fn a_429_waits_its_retry_after_then_delivers() {
        let mut waits = Vec::new();
        let post = script(vec![
            Outcome::RateLimited(Some(Duration::from_millis(1500))),
            Outcome::Delivered,
        ]);
        let result = deliver(post, |_, d| waits.push(d));
        assert_eq!(result, (Outcome::Delivered, 2));
        assert_eq!(waits, [Duration::from_millis(1500)]);
    }

    #[test]
    fn server_errors_back_off_then_give_up() {
        let mut waits = Vec::new();
        let post = script(vec![Outcome::ServerError(502); 5]);
        let result = deliver(post, |_, d| waits.push(d));
        assert_eq!(result, (Outcome::ServerError(502), MAX_ATTEMPTS));
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8]);
    }

    #[test]
    fn refusals_are_final() {
        let mut waits = Vec::new();
        let result = deliver(script(vec![Outcome::Refused(404)]), |_, d| waits.push(d));
        assert_eq!(result, (Outcome::Refused(404), 1));
        assert!(waits.is_empty());
    }

    #[test]
    fn delays_are_capped() {
        assert_eq!(
            retry_delay(&Outcome::RateLimited(Some(Duration::from_secs(9999))), 1),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            retry_delay(&Outcome::RateLimited(None), 1),
            Some(DEFAULT_RETRY_AFTER)
        );
        assert_eq!(
            retry_delay(&Outcome::Unreachable("x".into()), 4),
            Some(Duration::from_secs(8))
        );
        assert_eq!(retry_delay(&Outcome::ServerError(500), MAX_ATTEMPTS), None);
    }

    #[test]
    fn retry_after_from_body_or_header() {
        let body = r#"{"message":"You are being rate limited.","retry_after":0.25,"global":false}"#;
        assert_eq!(
            retry_after(body, Some("9")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after("", Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after("{}", Some(" 1.5 ")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after("not json", None), None);
        assert_eq!(retry_after(r#"{"retry_after":-1}"#, None), None);
    }
}
