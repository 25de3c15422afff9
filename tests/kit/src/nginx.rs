//! nginx in front of a daemon or a loopback server, with TLS from the test
//! PKI or in plain HTTP: how couic is reached remotely (couicctl, peers) and
//! how an https webhook is stood in for. nginx is required (`make deps` installs it): a
//! missing one fails the test instead of skipping it.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::daemon::STARTUP;
use crate::pki::Pki;
use crate::{free_port, Guard};

/// The nginx binary: on the PATH or in /usr/sbin (not always on root's
/// PATH in containers).
pub fn nginx_bin() -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .expect("nginx is not installed: these tests need it (`make deps` installs it)")
}

/// nginx in the foreground, one process, everything under a temporary
/// prefix; killed on drop.
pub struct Nginx {
    pub process: Guard,
    pub port: u16,
    pub error_log: PathBuf,
}

impl Nginx {
    /// TLS on 127.0.0.1 (a free port) with `pki`'s server certificate,
    /// `proxy_pass` to `upstream` over HTTP/1.1 keep-alive: the daemon's
    /// socket (`http://unix:/run/couic.sock:`) or a loopback server. As in
    /// `examples/nginx/couic.conf`, the TRACE nginx refuses itself is asked
    /// of the upstream, whose 405 carries `Allow`.
    pub fn start(dir: &Path, pki: &Pki, upstream: &str) -> Nginx {
        Nginx::start_with(dir, Some(pki), upstream)
    }

    /// As [`Nginx::start`], in plain HTTP.
    pub fn plain(dir: &Path, upstream: &str) -> Nginx {
        Nginx::start_with(dir, None, upstream)
    }

    /// The upstream of a daemon's Unix socket.
    pub fn socket_upstream(socket: &Path) -> String {
        format!("http://unix:{}:", socket.display())
    }

    /// TLS on `port` exactly, or `None` if it cannot listen there (a test
    /// that brings a peer's proxy back on the port its peers know).
    pub fn start_on(dir: &Path, pki: &Pki, upstream: &str, port: u16) -> Option<Nginx> {
        Nginx::launch(dir, Some(pki), upstream, port).ok()
    }

    fn start_with(dir: &Path, pki: Option<&Pki>, upstream: &str) -> Nginx {
        // A port picked free may be taken before nginx binds it: retry.
        let mut last_error = String::new();
        for _ in 0..3 {
            match Nginx::launch(dir, pki, upstream, free_port()) {
                Ok(nginx) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start:\n{last_error}");
    }

    fn launch(dir: &Path, pki: Option<&Pki>, upstream: &str, port: u16) -> Result<Nginx, String> {
        let bin = nginx_bin();
        let conf = dir.join("nginx.conf");
        let error_log = dir.join("error.log");
        let _ = fs::remove_file(&error_log);
        let d = dir.display();
        let (ssl, certificates) = match pki {
            Some(pki) => (
                " ssl",
                format!(
                    "ssl_certificate {};\nssl_certificate_key {};\n",
                    pki.cert.display(),
                    pki.key.display()
                ),
            ),
            None => ("", String::new()),
        };
        fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nuser root;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log info;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n\
                   access_log {d}/access.log;\n\
                   client_max_body_size 2m;\n\
                   client_body_temp_path {d}/body;\n\
                   proxy_temp_path {d}/proxy;\n\
                   fastcgi_temp_path {d}/fastcgi;\n\
                   uwsgi_temp_path {d}/uwsgi;\n\
                   scgi_temp_path {d}/scgi;\n\
                   server {{\n\
                     listen 127.0.0.1:{port}{ssl};\n\
                     server_name localhost;\n\
                     {certificates}\
                     error_page 405 = @upstream_405;\n\
                     location / {{\n\
                       proxy_pass {upstream};\n\
                       proxy_http_version 1.1;\n\
                       proxy_set_header Connection \"\";\n\
                       proxy_set_header Host localhost;\n\
                     }}\n\
                     location @upstream_405 {{\n\
                       proxy_method TRACE;\n\
                       proxy_pass {upstream};\n\
                       proxy_http_version 1.1;\n\
                       proxy_set_header Connection \"\";\n\
                       proxy_set_header Host localhost;\n\
                     }}\n\
                   }}\n\
                 }}\n",
            ),
        )
        .unwrap();
        let child = Command::new(&bin)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("nginx.stderr")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut process = Guard::new("nginx", child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        match process.wait_listening(addr, STARTUP) {
            Ok(()) => Ok(Nginx {
                process,
                port,
                error_log,
            }),
            // Dropped: killed.
            Err(e) => Err(format!(
                "{e:#}\n{}{}",
                fs::read_to_string(dir.join("nginx.stderr")).unwrap_or_default(),
                fs::read_to_string(&error_log).unwrap_or_default()
            )),
        }
    }
}
