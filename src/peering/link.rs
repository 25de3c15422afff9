//! Talking to one peer, blocking: the PeerBroadcaster runs these calls on
//! the blocking pool. Batches as the reference sender (§10.2); the digest
//! and shard routes of catch-up, which a reference peer does not have.

use std::time::Duration;

use couic_common::outbound::{self, CaFileError};
use couic_common::{PeerAction, PeerDigest, PeerEntry, PeerJob, Policy};

use super::Job;
use crate::config::Peer;

/// Per request, as the reference.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The reference sender's, which receivers may check.
pub const USER_AGENT: &str = "CouicClient/1.0.0";

/// Why an attempt failed. The attempt is retried after a backoff, except
/// a batch the peer `refused`, which would get the same answer again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub retry_after: Option<Duration>,
    /// A 4xx other than 408 and 429: a bad token, a set entry to remove,
    /// a full map.
    pub refused: bool,
}

impl Failure {
    pub fn new(reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            retry_after: None,
            refused: false,
        }
    }

    /// What an answer with this status means.
    pub fn of_status(status: u16, retry_after: Option<Duration>) -> Failure {
        Failure {
            reason: format!("HTTP {status}"),
            retry_after,
            refused: (400..500).contains(&status) && !matches!(status, 408 | 429),
        }
    }
}

/// What a catch-up route answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Done(T),
    /// 404 or 405: a peer without catch-up (the reference).
    Unsupported,
}

/// A peer, or a stand-in in tests.
pub trait Link: Send + Sync + 'static {
    /// POSTs jobs to `/v1/{policy}/peer`.
    fn post(&self, policy: Policy, jobs: &[Job]) -> Result<(), Failure>;
    /// `GET /v1/{policy}/peer/digest`: what the peer holds from us.
    fn digest(&self, policy: Policy) -> Result<Answer<PeerDigest>, Failure>;
    /// `PUT /v1/{policy}/peer/shard/{shard}`: what it holds from us in
    /// that shard is exactly `entries`.
    fn put_shard(
        &self,
        policy: Policy,
        shard: usize,
        entries: &[PeerEntry],
    ) -> Result<Answer<()>, Failure>;
    /// The peer's name and URL, for logs (never the token).
    fn shown(&self) -> &str;
}

/// A peer reached over HTTP(S).
pub struct HttpPeer {
    base: String,
    shown: String,
    authorization: String,
    agent: ureq::Agent,
}

impl HttpPeer {
    pub fn new(peer: &Peer) -> Result<HttpPeer, CaFileError> {
        let base = outbound::base_url(&peer.host, peer.port, peer.tls);
        let agent = outbound::agent(TIMEOUT, USER_AGENT, peer.ca_file.as_deref())?;
        Ok(HttpPeer {
            shown: format!("{} ({base})", peer.display_name()),
            base,
            authorization: format!("Bearer {}", peer.token),
            agent,
        })
    }

    /// `http(s)://host:port`, as the status shows it.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), Failure> {
        let url = format!("{}{path}", self.base);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Authorization", &self.authorization)
            .header("Accept", "application/json");
        let sent = match body {
            Some(body) => {
                // RFC 7240: a couic receiver then answers a batch with `[]`
                // instead of echoing every job; others ignore it and echo.
                let request = request
                    .header("Content-Type", "application/json")
                    .header("Prefer", "return=minimal")
                    .body(body)
                    .map_err(|e| Failure::new(e.to_string()))?;
                self.agent.run(request)
            }
            None => {
                let request = request.body(()).map_err(|e| Failure::new(e.to_string()))?;
                self.agent.run(request)
            }
        };
        let mut resp = sent.map_err(|e| Failure::new(e.to_string()))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp
            .body_mut()
            .read_to_vec()
            .map_err(|e| Failure::new(e.to_string()))?;
        if !(200..300).contains(&status) && !matches!(status, 404 | 405) {
            return Err(Failure::of_status(status, retry_after));
        }
        Ok((status, body))
    }
}

/// A job of a peer's answer, as far as the sender looks at it.
#[derive(serde::Deserialize)]
struct AnswerJob {
    #[serde(rename = "action")]
    _action: PeerAction,
    #[serde(rename = "entry")]
    _entry: serde::de::IgnoredAny,
}

fn json_body<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec(value).map_err(|e| Failure::new(e.to_string()))
}

impl Link for HttpPeer {
    fn post(&self, policy: Policy, jobs: &[Job]) -> Result<(), Failure> {
        let wire: Vec<PeerJob> = jobs.iter().map(Job::to_wire).collect();
        let (status, body) = self.send(
            "POST",
            &format!("/v1/{policy}/peer"),
            Some(json_body(&wire)?),
        )?;
        if !(200..300).contains(&status) {
            return Err(Failure::of_status(status, None));
        }
        // As the reference sender: a 2xx must carry an array of jobs. Each
        // is checked for its action and an entry, not built: nothing is
        // done with them, and building thousands a batch cost the sender.
        serde_json::from_slice::<Vec<AnswerJob>>(&body)
            .map(drop)
            .map_err(|e| Failure::new(format!("the answer is not an array of jobs: {e}")))
    }

    fn digest(&self, policy: Policy) -> Result<Answer<PeerDigest>, Failure> {
        let (status, body) = self.send("GET", &format!("/v1/{policy}/peer/digest"), None)?;
        if matches!(status, 404 | 405) {
            return Ok(Answer::Unsupported);
        }
        serde_json::from_slice(&body)
            .map(Answer::Done)
            .map_err(|e| Failure::new(format!("the digest is not one: {e}")))
    }

    fn put_shard(
        &self,
        policy: Policy,
        shard: usize,
        entries: &[PeerEntry],
    ) -> Result<Answer<()>, Failure> {
        let path = format!("/v1/{policy}/peer/shard/{shard}");
        let (status, _) = self.send("PUT", &path, Some(json_body(entries)?))?;
        Ok(if matches!(status, 404 | 405) {
            Answer::Unsupported
        } else {
            Answer::Done(())
        })
    }

    fn shown(&self) -> &str {
        &self.shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_definite_refusal_drops_a_batch() {
        for status in [400, 401, 404, 409, 413, 422] {
            assert!(Failure::of_status(status, None).refused, "{status}");
        }
        for status in [408, 429, 500, 502, 503] {
            assert!(!Failure::of_status(status, None).refused, "{status}");
        }
        assert!(!Failure::new("connection refused").refused);
    }
}
