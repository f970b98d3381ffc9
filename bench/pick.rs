//! How long each balancing algorithm takes to choose a backend, with 3, 100 and 1,000 backends.
//!
//! Every pick sees a different client address and URL (so the hashes do real work), on an
//! idle, all-healthy pool. Prints a Markdown table of nanoseconds per pick, the median of
//! several rounds. Run with `cargo bench --bench pick`. A measurement, not a test: it asserts
//! nothing.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadbalancer::backend::Backend;
use loadbalancer::balance::{Algorithm, BalanceSettings, Balancer, PickRequest};
use loadbalancer::config::ServerConfig;

const POOL_SIZES: [usize; 3] = [3, 100, 1_000];
const ROUNDS: usize = 7;
/// Picks per round: fewer for big pools, whose picks take longer.
fn picks_per_round(backends: usize) -> usize {
    (2_000_000 / backends.max(10)).clamp(2_000, 200_000)
}

fn pool(size: usize) -> Vec<Arc<Backend>> {
    (0..size)
        .map(|index| {
            let port = 10_000 + index as u16;
            Arc::new(Backend::new(&ServerConfig {
                url: format!("http://10.1.{}.{}:{port}", index / 250, index % 250),
                name: format!("backend-{index}"),
                host_header: format!("backend-{index}"),
                host: format!("10.1.{}.{}", index / 250, index % 250),
                port,
                addrs: vec![SocketAddr::from(([10, 1, (index / 250) as u8, (index % 250) as u8], port))],
                resolve_error: None,
                weight: 1 + (index % 3) as u32,
                backup: false,
                tls: None,
            }))
        })
        .collect()
}

fn nanos_per_pick(balancer: &Balancer, backends: &[Arc<Backend>]) -> f64 {
    let picks = picks_per_round(backends.len());
    let targets: Vec<String> = (0..1024).map(|key| format!("/item/{key}?page=2")).collect();
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for pick in 0..picks {
                let request = PickRequest {
                    target: &targets[pick % targets.len()],
                    ..PickRequest::from_client(IpAddr::from((0x0a00_0000u32 + pick as u32).to_be_bytes()))
                };
                black_box(balancer.pick(backends, black_box(&request), &[]));
            }
            started.elapsed()
        })
        .collect();
    rounds.sort();
    rounds[ROUNDS / 2].as_nanos() as f64 / picks as f64
}

fn main() {
    println!("| algorithm | {} |", POOL_SIZES.map(|size| format!("{size} backends")).join(" | "));
    println!("|---|{}", "---:|".repeat(POOL_SIZES.len()));
    for algorithm in Algorithm::ALL {
        let cells: Vec<String> = POOL_SIZES
            .iter()
            .map(|&size| {
                let backends = pool(size);
                let balancer = Balancer::new(algorithm, BalanceSettings::default(), &backends);
                format!("{:.0} ns", nanos_per_pick(&balancer, &backends))
            })
            .collect();
        println!("| `{}` | {} |", algorithm.name(), cells.join(" | "));
    }
}
