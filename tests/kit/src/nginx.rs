//! nginx in front of a daemon's Unix socket, as in production: one
//! foreground process under a temporary prefix, plain HTTP or TLS with a
//! [`Pki`] certificate, `proxy_pass` over HTTP/1.1; killed on drop.
//!
//! nginx is required (CI installs it): a missing binary fails the test
//! with a message instead of skipping it.

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

pub struct Nginx {
    pub process: Guard,
    pub port: u16,
    pub error_log: PathBuf,
}

impl Nginx {
    /// Serves `socket` on 127.0.0.1, with TLS when `pki` is given; `dir`
    /// holds its files.
    pub fn start(dir: &Path, pki: Option<&Pki>, socket: &Path) -> Nginx {
        let bin = nginx_bin();
        // A port picked free may be taken before nginx binds it: retry.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
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
                       client_max_body_size 4m;\n\
                       client_body_temp_path {d}/body;\n\
                       proxy_temp_path {d}/proxy;\n\
                       fastcgi_temp_path {d}/fastcgi;\n\
                       uwsgi_temp_path {d}/uwsgi;\n\
                       scgi_temp_path {d}/scgi;\n\
                       server {{\n\
                         listen 127.0.0.1:{port}{ssl};\n\
                         server_name localhost;\n\
                         {certificates}\
                         location / {{\n\
                           proxy_pass http://unix:{socket}:;\n\
                           proxy_http_version 1.1;\n\
                           proxy_set_header Connection \"\";\n\
                           proxy_set_header Host localhost;\n\
                         }}\n\
                       }}\n\
                     }}\n",
                    socket = socket.display(),
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
                Ok(()) => {
                    return Nginx {
                        process,
                        port,
                        error_log,
                    }
                }
                // Dropped: killed.
                Err(e) => {
                    last_error = format!(
                        "{e:#}\n{}{}",
                        fs::read_to_string(dir.join("nginx.stderr")).unwrap_or_default(),
                        fs::read_to_string(&error_log).unwrap_or_default()
                    )
                }
            }
        }
        panic!("nginx did not start:\n{last_error}");
    }
}
