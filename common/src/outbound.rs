//! Outgoing HTTP, shared by couicctl (remote mode), the daemon's webhook
//! reports and peer sync: URLs with IPv6 literals bracketed, and `ureq`
//! agents that trust the system's roots or exactly the CAs of a PEM file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A `ca_file` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use ca_file {}: {reason}", path.display())]
pub struct CaFileError {
    pub path: PathBuf,
    pub reason: String,
}

/// `http(s)://host:port`, with IPv6 literals bracketed (the reference
/// forgot, §18.27).
pub fn base_url(host: &str, port: u16, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if host.contains(':') && !host.starts_with('[') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// The system's trusted roots on Debian (package ca-certificates).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An agent that answers every status (not as an error), follows no
/// redirect and gives up after `timeout` per request. With `ca_file`, only
/// its certificates are trusted; without, the system's roots
/// ([`SYSTEM_ROOTS`]), or the Mozilla roots built in where the system has
/// none.
pub fn agent(
    timeout: Duration,
    user_agent: &str,
    ca_file: Option<&Path>,
) -> Result<ureq::Agent, CaFileError> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .user_agent(user_agent)
        .max_redirects(0);
    let roots = match ca_file {
        Some(path) => Some(load_ca_file(path)?),
        None => load_ca_file(Path::new(SYSTEM_ROOTS)).ok(),
    };
    if let Some(roots) = roots {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
            .build();
        config = config.tls_config(tls);
    }
    Ok(config.build().new_agent())
}

/// Every certificate of a PEM bundle.
pub fn load_ca_file(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, CaFileError> {
    let bad = |reason: String| CaFileError {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(cert) = item.map_err(|e| bad(e.to_string()))? {
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        return Err(bad("no PEM certificate found".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(base_url("fw.example", 443, true), "https://fw.example:443");
        assert_eq!(base_url("127.0.0.1", 8080, false), "http://127.0.0.1:8080");
        assert_eq!(base_url("::1", 8080, false), "http://[::1]:8080");
        assert_eq!(base_url("[::1]", 8080, true), "https://[::1]:8080");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("couic-ca-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate\n").unwrap();
        let err = load_ca_file(&dir).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        assert!(load_ca_file(Path::new("/nonexistent/ca.pem")).is_err());
    }
}
