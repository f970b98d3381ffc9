//! [`AtomicInstant`]: a moment, or none, that threads read and set without a lock.
//!
//! Backend records keep a few such moments (when a backend turned healthy, when its ejection
//! ends) and read them on every choice of backend. They are stored as milliseconds since one
//! process-wide start, plus one, in an `AtomicU64`; 0 means none.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// An `Option<Instant>` to millisecond precision, lock-free.
#[derive(Debug, Default)]
pub struct AtomicInstant(AtomicU64);

impl AtomicInstant {
    pub fn load(&self) -> Option<Instant> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            stored => Some(start() + Duration::from_millis(stored - 1)),
        }
    }

    pub fn store(&self, at: Option<Instant>) {
        let stored = at.map_or(0, |at| at.saturating_duration_since(start()).as_millis() as u64 + 1);
        self.0.store(stored, Ordering::Release);
    }
}

/// The moment all stored moments count from; before it, they count as it.
pub fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_a_moment_to_the_millisecond_or_none() {
        let moment = AtomicInstant::default();
        assert_eq!(moment.load(), None);
        let at = start() + Duration::from_millis(1500);
        moment.store(Some(at));
        assert_eq!(moment.load(), Some(at));
        moment.store(Some(at + Duration::from_micros(700)));
        assert_eq!(moment.load(), Some(at), "to the millisecond");
        moment.store(None);
        assert_eq!(moment.load(), None);
    }
}
