//! What a request's pair of threads costs on this machine, in the two `pairThreads` modes:
//!
//! - spawn: start two named threads and join both (what `"spawn"` does for every request);
//! - pooled: hand two jobs to two resident threads over channels and wait for both replies (what
//!   `"pooled"` does).
//!
//! The jobs do nothing, so the figures are the pure cost of where the threads come from.
//! Run with `cargo bench --bench spawn_join`. A measurement, not a test: it asserts nothing.

use std::thread;
use std::time::{Duration, Instant};

const ROUNDS: usize = 15;
const PAIRS_PER_ROUND: usize = 2_000;

fn main() {
    let spawn = median_micros(|| {
        let forward = thread::Builder::new().name("req-fwd".into()).spawn(|| 1u64).expect("spawn");
        let reverse = thread::Builder::new().name("req-rev".into()).spawn(|| 2u64).expect("spawn");
        std::hint::black_box(forward.join().expect("join") + reverse.join().expect("join"));
    });

    let (forward_jobs, forward_queue) = crossbeam_channel::bounded::<u64>(1);
    let (reverse_jobs, reverse_queue) = crossbeam_channel::bounded::<u64>(1);
    let (forward_done, forward_reports) = crossbeam_channel::bounded::<u64>(1);
    let (reverse_done, reverse_reports) = crossbeam_channel::bounded::<u64>(1);
    let resident = |queue: crossbeam_channel::Receiver<u64>, done: crossbeam_channel::Sender<u64>| {
        thread::spawn(move || {
            for job in queue {
                if done.send(job + 1).is_err() {
                    break;
                }
            }
        })
    };
    let forward = resident(forward_queue, forward_done);
    let reverse = resident(reverse_queue, reverse_done);
    let pooled = median_micros(|| {
        forward_jobs.send(1).expect("send");
        reverse_jobs.send(2).expect("send");
        std::hint::black_box(forward_reports.recv().expect("recv") + reverse_reports.recv().expect("recv"));
    });
    drop((forward_jobs, reverse_jobs));
    forward.join().expect("join");
    reverse.join().expect("join");

    println!("spawn+join of a thread pair: {spawn:.1} µs (median of {ROUNDS} rounds of {PAIRS_PER_ROUND})");
    println!("hand-off to a resident pair: {pooled:.1} µs (median of {ROUNDS} rounds of {PAIRS_PER_ROUND})");
}

/// Runs `pair` PAIRS_PER_ROUND times per round and returns the median per-call time in µs.
fn median_micros(mut pair: impl FnMut()) -> f64 {
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..PAIRS_PER_ROUND {
                pair();
            }
            started.elapsed() / PAIRS_PER_ROUND as u32
        })
        .collect();
    rounds.sort();
    rounds[ROUNDS / 2].as_secs_f64() * 1e6
}
