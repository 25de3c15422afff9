//! One keep-alive connection to the daemon's API on its Unix socket, with a
//! bearer token or none.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use couic_common::uds::UdsClient;
use serde_json::Value;

pub struct Api {
    client: UdsClient,
    auth: Option<String>,
}

impl Api {
    /// A connection to `socket` (opened at the first request); `timeout`
    /// bounds each read and write.
    pub fn new(socket: &Path, token: Option<&str>, timeout: Duration) -> Api {
        Api {
            client: UdsClient::new(socket, timeout),
            auth: token.map(|t| format!("Bearer {t}")),
        }
    }

    /// One request; a body is sent as JSON. Status and body.
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut headers = Vec::new();
        if let Some(auth) = &self.auth {
            headers.push(("Authorization", auth.as_str()));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let resp = self
            .client
            .request(method, path, &headers, body)
            .with_context(|| format!("{method} {path}"))?;
        Ok((resp.status, resp.body))
    }

    /// A request that must answer `status`; its body parsed as JSON (null
    /// when empty).
    pub fn expect(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        status: u16,
    ) -> anyhow::Result<Value> {
        let (got, bytes) = self.call(method, path, body)?;
        if got != status {
            bail!(
                "{method} {path}: {got} (wanted {status}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
            );
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{method} {path}: not JSON"))
    }

    /// For tests: status and body of one request, the body as JSON
    /// (`Value::Null` when empty, a string when not JSON). Panics when the
    /// request cannot be made.
    pub fn json(&mut self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(|b| serde_json::to_vec(b).expect("a JSON body"));
        let (status, bytes) = self
            .call(method, path, body.as_deref())
            .unwrap_or_else(|e| panic!("{e:#}"));
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
    }
}
