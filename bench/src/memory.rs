//! The machine's own memory latency, for reading the test-run figures: a
//! rotating hit reads one cache line of a table far larger than the cache,
//! so its cost over the empty program is about one read from memory.

use std::hint::black_box;
use std::time::Instant;

use crate::rules::Rng;

const LINE: usize = 64;
const STEPS: usize = 2_000_000;

/// Nanoseconds per read when each read's address comes from the previous
/// one (a pointer chase), over `bytes` of memory in a random cycle of its
/// cache lines: nothing can overlap or prefetch the reads.
pub fn chase_ns(bytes: usize) -> f64 {
    let lines = bytes / LINE;
    let words = LINE / size_of::<usize>();
    // A random cyclic order of the lines (Sattolo's shuffle).
    let mut order: Vec<usize> = (0..lines).collect();
    let mut rng = Rng::new(0xc4a5e);
    for i in (1..lines).rev() {
        let j = rng.below(i as u64) as usize;
        order.swap(i, j);
    }
    let mut next = vec![0usize; lines * words];
    for (k, &line) in order.iter().enumerate() {
        next[line * words] = order[(k + 1) % lines] * words;
    }
    let mut at = 0;
    let start = Instant::now();
    for _ in 0..STEPS {
        at = next[at];
    }
    black_box(at);
    start.elapsed().as_nanos() as f64 / STEPS as f64
}
