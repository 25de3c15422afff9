//! A private CA and a server certificate it signed, for `localhost` and
//! 127.0.0.1, plus a second CA that signed nothing; made with the openssl
//! command. `make deps` (and CI) install openssl: a missing one fails the
//! test with a message saying so, it never skips it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `tool args` in `dir`; panics with its output when it fails, and
/// with an installation hint when it is missing.
pub fn run_tool(tool: &str, args: &[&str], dir: &Path) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {tool} ({e}): this test needs it; `make deps` installs it")
        });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The files of the test PKI, all in one directory.
pub struct Pki {
    /// The CA that signed the server certificate.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Another CA, which did not sign the server certificate.
    pub other_ca: PathBuf,
}

impl Pki {
    /// Makes the two CAs (EC P-256, valid two days) and the server
    /// certificate in `dir`.
    pub fn make(dir: &Path) -> Pki {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for (name, cn) in [("ca", "couic test CA"), ("other-ca", "another CA")] {
            let (key, pem, subj) = (
                format!("{name}.key"),
                format!("{name}.pem"),
                format!("/CN={cn}"),
            );
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend([
                "-keyout",
                &key,
                "-out",
                &pem,
                "-days",
                "2",
                "-subj",
                &subj,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            run_tool("openssl", &args, dir);
        }
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        run_tool("openssl", &args, dir);
        fs::write(
            dir.join("server.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("write server.ext");
        run_tool(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "2",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
            dir,
        );
        Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            other_ca: dir.join("other-ca.pem"),
        }
    }
}
