//! The running daemon holds no capability in any of its threads.
//!
//! Capabilities are per thread in Linux: dropping them on the main thread
//! does nothing for a thread started earlier (a log writer, a runtime
//! worker). This runs the real binary, with a log file so every writer
//! thread exists, and reads each thread's sets from /proc.

use std::fs;

use couic_testkit::{Daemon, Spec};

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
    // Ready once the API answers: every thread has started by then.
    let daemon = Daemon::start(Spec::new(env!("CARGO_BIN_EXE_couic")).log_dir()).unwrap();

    let tasks = format!("/proc/{}/task", daemon.pid());
    let mut names = Vec::new();
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
        names.push(name);
    }
    // The threads this is about ran: a writer for stdout and one for the
    // log file (tracing-appender names them), and the runtime's workers.
    let writers = names
        .iter()
        .filter(|n| n.starts_with("tracing-append"))
        .count();
    assert!(writers >= 2, "both log writers run: {names:?}");
    assert!(names.len() >= 3, "the workers run: {names:?}");
}
