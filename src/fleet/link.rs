//! The connection to the fleet's NATS servers and its bucket: connect with
//! the configured login, open (or make) the bucket, write a key, watch the
//! bucket, purge an expired key on condition, read a revision, send and
//! receive notices.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_nats::{ConnectOptions, Event, HeaderMap};

use super::outbox::Op;
use super::value::Value;
use crate::config::Fleet;

/// How long a server has to answer a request (a write's acknowledgement,
/// opening the bucket).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages a subscription buffers (the client's default is 65,536).
pub const SUBSCRIPTION_CAPACITY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot read {what} {path}: {source}")]
    Credentials {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {servers}: {message}")]
    Connect { servers: String, message: String },
    #[error("bucket {bucket}: {message}")]
    Bucket { bucket: String, message: String },
    #[error("write to the bucket: {0}")]
    Write(String),
    #[error("watch of the bucket: {0}")]
    Watch(String),
    /// The bucket's stream is gone, or made anew (a server that lost its
    /// store): the session starts over, to catch up and write again.
    #[error("the bucket is gone or was made anew")]
    Gone,
}

/// A connection and its bucket.
pub struct Link {
    js: jetstream::Context,
    kv: kv::Store,
    /// The bucket's stream, for sweeping old delete markers.
    stream: jetstream::stream::Stream,
    /// `$KV.<bucket>.`: keys are written there.
    prefix: String,
    /// Where notices go (see [`super::notice`]).
    notices: String,
}

/// A message of the bucket read by its revision.
#[derive(Debug)]
pub struct Read {
    pub key: String,
    /// A delete or purge marker.
    pub marker: bool,
    pub payload: Vec<u8>,
}

/// The connection options `fleet` asks for (its login, its CA), reporting
/// connection events to `on_event`.
pub async fn options(
    fleet: &Fleet,
    on_event: impl Fn(Event) + Send + Sync + 'static,
) -> Result<ConnectOptions, LinkError> {
    let mut options = ConnectOptions::new();
    if let Some(path) = &fleet.creds_file {
        options = ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| LinkError::Credentials {
                what: "creds_file",
                path: path.display().to_string(),
                source,
            })?;
    }
    if let Some(path) = &fleet.nkey_file {
        let seed = std::fs::read_to_string(path).map_err(|source| LinkError::Credentials {
            what: "nkey_file",
            path: path.display().to_string(),
            source,
        })?;
        options = options.nkey(seed.trim().to_string());
    }
    if let Some(token) = &fleet.token {
        options = options.token(token.0.clone());
    }
    if let (Some(user), Some(password)) = (&fleet.user, &fleet.password) {
        options = options.user_and_password(user.clone(), password.0.clone());
    }
    if let Some(ca) = &fleet.ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let on_event = std::sync::Arc::new(on_event);
    Ok(options
        .name(format!("couic {}", fleet.node_name()))
        .connection_timeout(REQUEST_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .max_reconnects(None)
        // A catch-up delivers the whole bucket at once: messages past the
        // buffer would be dropped, then fetched again after a stall.
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .event_callback(move |event| {
            let on_event = on_event.clone();
            async move { on_event(event) }
        }))
}

/// The stream behind a key-value bucket named `bucket`: one message kept
/// per key (history 1), keys under `$KV.<bucket>.`, purges by rollup,
/// reads by direct get, values of [`super::value::MAX_VALUE`] at most, on
/// disk, `replicas` copies.
fn bucket_stream(bucket: &str, replicas: usize) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("couic fleet rules: <policy>.<address>.<prefix>".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_message_size: super::value::MAX_VALUE as i32,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    }
}

impl Link {
    /// Connects to the first server of `servers` that answers and opens
    /// `bucket`, making it (history 1, on disk) when missing.
    pub async fn open(
        options: ConnectOptions,
        servers: &[String],
        bucket: &str,
        replicas: usize,
    ) -> Result<Link, LinkError> {
        let client = options
            .connect(servers)
            .await
            .map_err(|e| LinkError::Connect {
                servers: servers.join(", "),
                message: e.to_string(),
            })?;
        let mut js = jetstream::new(client);
        js.set_timeout(REQUEST_TIMEOUT);
        let bucket_error = |e: &dyn std::fmt::Display| LinkError::Bucket {
            bucket: bucket.into(),
            message: e.to_string(),
        };
        let kv = match js.get_key_value(bucket).await {
            Ok(kv) => kv,
            Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => {
                // Made as a stream with the key-value conventions (ADR-8):
                // the client's own `create_key_value` first reads account
                // fields that servers before 2.10 do not send.
                let made = js.create_stream(bucket_stream(bucket, replicas)).await;
                match js.get_key_value(bucket).await {
                    Ok(kv) => kv,
                    // Another node made it meanwhile, or the server refused.
                    Err(e) => match made {
                        Err(made) => return Err(bucket_error(&made)),
                        Ok(_) => return Err(bucket_error(&e)),
                    },
                }
            }
            Err(e) => return Err(bucket_error(&e)),
        };
        let stream = js
            .get_stream(format!("KV_{bucket}"))
            .await
            .map_err(|e| bucket_error(&e))?;
        Ok(Link {
            js,
            kv,
            stream,
            prefix: format!("$KV.{bucket}."),
            notices: super::notice::subject(bucket),
        })
    }

    /// When the server made the bucket's stream, in nanoseconds since
    /// 1970: a bucket deleted and made again under its name is another.
    pub fn stream_made(&self) -> i128 {
        self.stream.cached_info().created.unix_timestamp_nanos()
    }

    /// Sends `op` of `key` (a put or a delete); the future resolves to the
    /// revision the bucket gave it, once the server acknowledged it.
    pub async fn send(
        &self,
        key: &str,
        op: &Op,
    ) -> Result<impl Future<Output = Result<u64, LinkError>>, LinkError> {
        let subject = format!("{}{key}", self.prefix);
        let (headers, payload) = match op {
            Op::Put(value) => (HeaderMap::new(), value.to_bytes()),
            Op::Delete => {
                let mut headers = HeaderMap::new();
                headers.insert("KV-Operation", "DEL");
                (headers, Vec::new())
            }
            Op::Expired { .. } => unreachable!("expired keys are purged with purge_expired"),
        };
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(|e| LinkError::Write(e.to_string()))?;
        Ok(async move {
            ack.await
                .map(|a| a.sequence)
                .map_err(|e| LinkError::Write(e.to_string()))
        })
    }

    /// Purges `key` if it still holds an entry expiring at `expiration`
    /// (expired by `now`), on condition that nobody wrote it since: the
    /// purge marker's revision.
    pub async fn purge_expired(
        &self,
        key: &str,
        expiration: u64,
        now: u64,
    ) -> Result<Option<u64>, LinkError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| LinkError::Write(e.to_string()))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        match Value::parse(&entry.value) {
            Ok(v) if v.expiration == expiration && v.expired(now) => {}
            _ => return Ok(None),
        }
        self.purge_at(key, entry.revision).await
    }

    /// Purges `key` if its last revision is `revision`: the purge marker's
    /// revision, or none when the key was written since. (What the
    /// client's own conditional purge sends, whose answer leaves out the
    /// revision.)
    pub async fn purge_at(&self, key: &str, revision: u64) -> Result<Option<u64>, LinkError> {
        self.mark_at(key, revision, true).await
    }

    /// Deletes `key` if its last revision is `revision`: the delete
    /// marker's revision, or none when the key was written since.
    pub async fn delete_at(&self, key: &str, revision: u64) -> Result<Option<u64>, LinkError> {
        self.mark_at(key, revision, false).await
    }

    /// A purge (or a delete) marker for `key` on condition that its last
    /// revision is `revision`.
    async fn mark_at(
        &self,
        key: &str,
        revision: u64,
        purge: bool,
    ) -> Result<Option<u64>, LinkError> {
        let mut headers = HeaderMap::new();
        if purge {
            headers.insert("KV-Operation", "PURGE");
            headers.insert("Nats-Rollup", "sub");
        } else {
            headers.insert("KV-Operation", "DEL");
        }
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            revision.to_string().as_str(),
        );
        let subject = format!("{}{key}", self.prefix);
        let sent = self
            .js
            .publish_with_headers(subject, headers, Vec::new().into())
            .await
            .map_err(|e| LinkError::Write(e.to_string()))?;
        match sent.await {
            Ok(ack) => Ok(Some(ack.sequence)),
            // A newer word is there.
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                Ok(None)
            }
            Err(e) => Err(LinkError::Write(e.to_string())),
        }
    }

    /// Removes the delete marker of `key` at `revision` for good, unless
    /// the key was written since: true when removed. (A stream purge of
    /// the key's subject below `revision + 1`: a newer word stays.)
    pub async fn sweep(&self, key: &str, revision: u64) -> Result<bool, LinkError> {
        if revision == 0 {
            // A purge below 1 would be read as no bound at all.
            return Ok(false);
        }
        let purged = self
            .stream
            .purge()
            .filter(format!("{}{key}", self.prefix))
            .sequence(revision + 1)
            .await
            .map_err(|e| LinkError::Write(e.to_string()))?;
        Ok(purged.purged > 0)
    }

    /// What the bucket holds now: its messages (words and markers) and
    /// its last revision, asked of the server (the client's bucket status
    /// is what it was when opened).
    pub async fn state(&self) -> Result<(u64, u64), LinkError> {
        let mut stream = self.stream.clone();
        let info = stream.info().await.map_err(|e| {
            let missing = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<jetstream::Error>())
                .is_some_and(|j| j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND);
            if missing {
                LinkError::Gone
            } else {
                LinkError::Watch(e.to_string())
            }
        })?;
        if info.created.unix_timestamp_nanos() != self.stream_made() {
            return Err(LinkError::Gone);
        }
        Ok((info.state.messages, info.state.last_sequence))
    }

    /// The last word of every key, then every new word.
    pub async fn watch(&self) -> Result<kv::Watch, LinkError> {
        self.kv
            .watch_with_history(">")
            .await
            .map_err(|e| LinkError::Watch(e.to_string()))
    }

    /// The bucket's message at `revision`, or none when it is gone
    /// (replaced by a later word of its key, or swept).
    pub async fn read(&self, revision: u64) -> Result<Option<Read>, LinkError> {
        use jetstream::stream::RawMessageErrorKind;
        match self.stream.get_raw_message(revision).await {
            Ok(m) => {
                let key = m.subject.strip_prefix(&self.prefix).unwrap_or_default();
                let marker = m
                    .headers
                    .get("KV-Operation")
                    .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
                Ok(Some(Read {
                    key: key.to_string(),
                    marker,
                    payload: m.payload.to_vec(),
                }))
            }
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(LinkError::Watch(format!(
                "read of revision {revision}: {e}"
            ))),
        }
    }

    /// The notices of every node, this one's included, from now on.
    pub async fn notices(&self) -> Result<async_nats::Subscriber, LinkError> {
        self.js
            .client()
            .subscribe(self.notices.clone())
            .await
            .map_err(|e| LinkError::Watch(e.to_string()))
    }

    /// Sends a notice (at most once: a lost one is read from the bucket).
    pub async fn announce(&self, notice: Vec<u8>) -> Result<(), LinkError> {
        self.js
            .client()
            .publish(self.notices.clone(), notice.into())
            .await
            .map_err(|e| LinkError::Write(e.to_string()))
    }

    /// The largest notice the server takes.
    pub fn notice_limit(&self) -> usize {
        let max = self.js.client().server_info().max_payload;
        // What the server says, or its default; the subject and framing
        // take a little.
        if max == 0 { 1 << 20 } else { max }.saturating_sub(1024)
    }
}
