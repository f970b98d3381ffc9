//! The running pools: for each pool of the config, its backends and the balancer that picks among
//! them, built from the config and replaced whole on a reload. Read by every `worker-N` (to route
//! and pick), the `health` thread (to probe) and the `config-watcher` (to keep the records that
//! stay); it holds no lock of its own.

use std::sync::Arc;

use crate::backend::Backend;
use crate::balance::tiers::TieredBalancer;
use crate::config::Config;
use crate::config::pool::PoolConfig;
use crate::routing::Router;

/// One pool's backends and the balancer that picks among them, replaced together, with the pool's
/// own settings (retries, timeouts, health checks).
#[derive(Debug)]
pub struct Pool {
    /// The pool's name, shared with the access lines of the requests it serves.
    name: Arc<str>,
    pub config: PoolConfig,
    pub backends: Vec<Arc<Backend>>,
    pub balancer: TieredBalancer,
}

impl Pool {
    pub fn new(config: &PoolConfig) -> Pool {
        let backends: Vec<Arc<Backend>> = config.servers.iter().map(|server| Arc::new(Backend::new(server))).collect();
        Pool::with_backends(config, backends)
    }

    /// A pool of existing backend records (a reload keeps those that stay).
    pub fn with_backends(config: &PoolConfig, backends: Vec<Arc<Backend>>) -> Pool {
        let balancer = TieredBalancer::new(config.algorithm, config.balancing.clone(), &backends, config.all_backups);
        Pool { name: Arc::from(config.name.as_str()), config: config.clone(), backends, balancer }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name, to keep beyond the life of the pool (a reload may replace it).
    pub fn shared_name(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }
}

/// Every pool of the running config, in the config's order, and the router that sends requests
/// to them: replaced together, so a route's pool index always points into this list.
#[derive(Debug)]
pub struct Pools {
    pub list: Vec<Arc<Pool>>,
    pub router: Router,
}

impl Pools {
    pub fn new(config: &Config) -> Pools {
        Pools::with_pools(config, config.pools.iter().map(|pool| Arc::new(Pool::new(pool))).collect())
    }

    /// Pools built already, one for each of `config.pools`, in that order.
    pub fn with_pools(config: &Config, list: Vec<Arc<Pool>>) -> Pools {
        debug_assert_eq!(list.len(), config.pools.len());
        let router = Router::new(
            config.routes.clone(),
            |name| list.iter().position(|pool| pool.name() == name),
            config.default_pool,
        );
        Pools { list, router }
    }

    /// The pool that takes requests no route matches.
    pub fn default_pool(&self) -> Option<&Arc<Pool>> {
        self.router.default_pool().and_then(|index| self.list.get(index))
    }

    /// No pools and no routes: every request is answered 404.
    pub fn empty() -> Pools {
        Pools { list: Vec::new(), router: Router::new(Vec::new(), |_| None, None) }
    }

    /// The pool called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.list.iter().find(|pool| pool.name() == name)
    }

    /// Every backend of every pool, pool by pool.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.list.iter().flat_map(|pool| &pool.backends)
    }
}
