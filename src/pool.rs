//! A pool of backends and the balancer that picks among them, built from the config and replaced
//! whole on a reload. Read by every `worker-N` (to pick), the `health` thread (to probe) and the
//! `config-watcher` (to keep the records that stay); it holds no lock of its own.

use std::sync::Arc;

use crate::backend::Backend;
use crate::balance::tiers::TieredBalancer;
use crate::config::Config;

/// The backends and the balancer that picks among them, replaced together.
#[derive(Debug)]
pub struct Pool {
    pub backends: Vec<Arc<Backend>>,
    pub balancer: TieredBalancer,
}

impl Pool {
    pub fn new(config: &Config) -> Pool {
        let backends: Vec<Arc<Backend>> = config.servers.iter().map(|server| Arc::new(Backend::new(server))).collect();
        Pool::with_backends(config, backends)
    }

    /// A pool of existing backend records (a reload keeps those that stay).
    pub fn with_backends(config: &Config, backends: Vec<Arc<Backend>>) -> Pool {
        let balancer = TieredBalancer::new(config.algorithm, config.balancing.clone(), &backends, config.all_backups);
        Pool { backends, balancer }
    }
}
