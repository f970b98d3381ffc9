//! The config file a running load balancer came from: its path, the flags and environment that
//! override it, and a hash of what was last read from it. Held in the shared state and read by
//! the `config-watcher` thread (and `POST /lb-reload` on `admin`, and SIGHUP on `main`) to decide
//! whether a reread is a change.

use parking_lot::Mutex;

use crate::balance::hash::fnv1a;
use crate::config::Overrides;

/// The config file a running load balancer came from, and what overrode it.
#[derive(Debug)]
pub struct ConfigFile {
    pub path: String,
    pub overrides: Overrides,
    /// A hash of the contents last read; the lock also makes reloads one at a time.
    pub last_read: Mutex<Option<u64>>,
}

impl ConfigFile {
    /// The file at `path`, as it is now (the config just loaded from it).
    pub fn new(path: String, overrides: Overrides) -> ConfigFile {
        let contents_hash = std::fs::read(&path).ok().map(|contents| fnv1a(&contents));
        ConfigFile { path, overrides, last_read: Mutex::new(contents_hash) }
    }
}
