//! Sending one batch to the webhook (§11.2), blocking: the Reporter runs it
//! on the blocking pool. The outcome says whether to retry.

use std::time::Duration;

use couic_common::outbound::{self, CaFileError};
use couic_common::{REPORT_BATCH_HEADER, REPORT_NODE_HEADER};

use super::{body_of, Batch};
use crate::config::Reporting;

/// Per request, as the reference.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx.
    Delivered,
    /// A transport error, 408, 429 or 5xx: try the same batch again later,
    /// no sooner than `retry_after` when the webhook said so.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Any other status (401 bad secret, 413, 422, ...): retrying would get
    /// the same answer, so the batch is dropped.
    Refused { status: u16 },
}

/// The webhook, ready to post to.
pub struct Webhook {
    url: String,
    /// Scheme, host and port only: the path holds the secret.
    shown: String,
    node: String,
    agent: ureq::Agent,
}

impl Webhook {
    pub fn new(config: &Reporting) -> Result<Webhook, CaFileError> {
        let user_agent = format!("couic/{}", crate::VERSION);
        let agent = outbound::agent(TIMEOUT, &user_agent, config.ca_file.as_deref())?;
        let node = config.node.clone().unwrap_or_else(host_name);
        Ok(Webhook {
            url: config.webhook.clone(),
            shown: redacted(&config.webhook),
            node,
            agent,
        })
    }

    /// The URL without its path and query, for logs.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Posts the batch once.
    pub fn post(&self, batch: &Batch) -> Outcome {
        let body = match body_of(batch) {
            Ok(body) => body,
            // Reports are plain data: this would be a bug, not the webhook's;
            // retrying would fail the same way.
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise a report batch");
                return Outcome::Refused { status: 0 };
            }
        };
        let sent = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .header(REPORT_BATCH_HEADER, &batch.id)
            .header(REPORT_NODE_HEADER, &self.node)
            .send(&body[..]);
        match sent {
            Ok(resp) => classify(resp.status().as_u16(), retry_after(&resp)),
            Err(e) => Outcome::Retry {
                reason: e.to_string(),
                retry_after: None,
            },
        }
    }
}

/// What a status means for the batch.
pub fn classify(status: u16, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry {
            reason: format!("HTTP {status}"),
            retry_after,
        },
        _ => Outcome::Refused { status },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured: the
/// backoff applies).
fn retry_after(resp: &ureq::http::Response<ureq::Body>) -> Option<Duration> {
    let value = resp.headers().get("retry-after")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `scheme://host:port` of a URL: what may be logged of a webhook.
pub fn redacted(url: &str) -> String {
    match url.parse::<ureq::http::Uri>() {
        Ok(uri) => {
            let scheme = uri.scheme_str().unwrap_or("http");
            let host = uri.host().unwrap_or("?");
            match uri.port_u16() {
                Some(port) => format!("{scheme}://{host}:{port}"),
                None => format!("{scheme}://{host}"),
            }
        }
        Err(_) => "<webhook>".into(),
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes and we stop at the first NUL or the end.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if ok && !name.is_empty() => name.to_string(),
        _ => "couic".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decide_between_done_retry_and_drop() {
        assert_eq!(classify(204, None), Outcome::Delivered);
        for status in [408, 429, 500, 502, 503] {
            assert!(
                matches!(classify(status, None), Outcome::Retry { .. }),
                "{status}"
            );
        }
        for status in [301, 400, 401, 404, 413, 422] {
            assert_eq!(classify(status, None), Outcome::Refused { status });
        }
    }

    #[test]
    fn the_secret_is_never_shown() {
        assert_eq!(
            redacted("https://hooks.example:8443/v1/reports/6f1c-secret?k=v"),
            "https://hooks.example:8443"
        );
        assert_eq!(
            redacted("http://127.0.0.1/v1/reports/secret"),
            "http://127.0.0.1"
        );
        assert_eq!(redacted("::not a url::"), "<webhook>");
    }
}
