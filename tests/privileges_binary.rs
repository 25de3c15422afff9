//! The running daemon holds no capability in any of its threads.
//!
//! Capabilities are per thread in Linux: dropping them on the main thread
//! does nothing for a thread started earlier (a log writer, a runtime
//! worker). This runs the real binary, with a log file so every writer
//! thread exists, and reads each thread's sets from /proc.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use couic_common::uds::UdsClient;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `Name:\tvalue` of a /proc status file.
fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in status"))
}

#[test]
fn no_thread_keeps_a_capability() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let logs = dir.path().join("logs");
    fs::create_dir(&work).unwrap();
    fs::create_dir(&logs).unwrap();
    let socket = dir.path().join("couic.sock");
    let config = dir.path().join("couic.toml");
    fs::write(
        &config,
        format!(
            "ifaces = []\nworking_dir = \"{}\"\nuser = \"root\"\ngroup = \"root\"\n\
             [logging]\ndir = \"{}\"\n[server]\nsocket = \"{}\"\n",
            work.display(),
            logs.display(),
            socket.display()
        ),
    )
    .unwrap();
    let mut daemon = Kill(
        Command::new(env!("CARGO_BIN_EXE_couic"))
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Ready once the API answers: every thread has started by then.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut client = UdsClient::new(&socket, Duration::from_secs(5));
        if client.request("GET", "/v1/stats", &[], None).is_ok() {
            break;
        }
        assert!(
            daemon.0.try_wait().unwrap().is_none(),
            "couic exited during startup"
        );
        assert!(Instant::now() < deadline, "couic did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let tasks = format!("/proc/{}/task", daemon.0.id());
    let mut threads = 0;
    for task in fs::read_dir(&tasks).unwrap() {
        let path = task.unwrap().path();
        let status = fs::read_to_string(path.join("status")).unwrap();
        let name = field(&status, "Name").to_string();
        for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
            assert_eq!(
                field(&status, set),
                "0000000000000000",
                "{set} of thread {name} ({})",
                path.display()
            );
        }
        assert_eq!(
            field(&status, "NoNewPrivs"),
            "1",
            "no_new_privs of thread {name}"
        );
        threads += 1;
    }
    assert!(
        threads >= 3,
        "the log writers and workers run: {threads} threads"
    );
}
