//! A quick loopback load for couic-report: POSTs batches of reports from a
//! few threads, then waits until /metrics has counted them all, and prints
//! reports per second. Not a test: a figure to look at.
//!
//! ```text
//! couic-report -c couic-report.toml &
//! cargo run --release -p couic-report --example load -- PORT SECRET [POSTS] [BATCH] [THREADS]
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: load PORT SECRET [POSTS=200] [BATCH=5000] [THREADS=4]");
        std::process::exit(2);
    }
    let port: u16 = args[0].parse().expect("PORT");
    let secret = args[1].clone();
    let number = |i: usize, default: usize| args.get(i).map_or(default, |a| a.parse().unwrap());
    let (posts, batch, threads) = (number(2, 200), number(3, 5000), number(4, 4));
    let base = format!("http://127.0.0.1:{port}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let before = counted(&agent, &base);

    eprintln!("building {posts} bodies of {batch} reports");
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..posts).map(|p| body(p, batch)).collect());
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let url = format!("{base}/v1/reports/{secret}");

    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (agent, bodies, next, url) =
                (agent.clone(), bodies.clone(), next.clone(), url.clone());
            let refused = refused.clone();
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { return };
                // A full queue answers 503: wait a little and send again,
                // as a daemon would.
                loop {
                    let status = agent
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .header("X-Couic-Node", "load")
                        .send(&body[..])
                        .expect("POST")
                        .status();
                    match status.as_u16() {
                        200 => break,
                        503 => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        other => panic!("POST answered {other}"),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let posted = start.elapsed();
    let expected = before + (posts * batch) as u64;
    while counted(&agent, &base) < expected {
        std::thread::sleep(Duration::from_millis(5));
    }
    let done = start.elapsed();
    let total = (posts * batch) as f64;
    println!(
        "{} reports in {posts} POSTs of {batch} ({:.1} MiB) from {threads} threads",
        posts * batch,
        bytes as f64 / 1048576.0
    );
    println!(
        "503 answers (queue full, sent again): {}",
        refused.load(Ordering::Relaxed)
    );
    println!(
        "all answered after {posted:.2?}: {:.0} reports/s",
        total / posted.as_secs_f64()
    );
    println!(
        "all counted after {done:.2?}: {:.0} reports/s",
        total / done.as_secs_f64()
    );
}

/// POST number `p`: distinct CIDRs, 20 tags, the reference's shape.
fn body(p: usize, batch: usize) -> Vec<u8> {
    let reports: Vec<Value> = (0..batch)
        .map(|i| {
            let n = p * batch + i;
            json!({
                "action": "add",
                "policy": "drop",
                "entry": {
                    "creation": 1_765_000_000u64,
                    "cidr": format!("{}.{}.{}.{}/32", 10 + n / 16_777_216 % 200, n / 65536 % 256, n / 256 % 256, n % 256),
                    "tag": format!("tag-{}", n % 20),
                    "expiration": 0
                },
                "metadata": null
            })
        })
        .collect();
    serde_json::to_vec(&reports).unwrap()
}

fn counted(agent: &ureq::Agent, base: &str) -> u64 {
    let text = agent
        .get(&format!("{base}/metrics"))
        .call()
        .expect("GET /metrics")
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("couic_report_reports_received_total "))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}
