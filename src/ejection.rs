//! Passive health checks: taking a backend out of rotation on the evidence of real requests.
//!
//! Active checks ([`crate::health`]) ask `/health`; a backend can pass them and still fail the
//! requests that matter. Each backend carries an [`Ejection`] record that the proxy feeds with
//! the outcome of every attempt: `passiveHealth.failures` consecutive failures (a refused or
//! reset connection, no or a malformed response, a timeout, or a 502, 503 or 504 from the
//! backend) eject it for `passiveHealth.cooldown`. When the cooldown is over the backend is on
//! probation: exactly one request (the trial) is let through. If it succeeds the backend is back
//! in rotation; if it fails the backend is ejected again for twice as long, up to
//! [`MAX_COOLDOWN`] (or the cooldown itself, if longer). Ejecting never takes out more than
//! `passiveHealth.maxEjectedPercent` of the pool. A backend that the active checks mark down and
//! then up again starts afresh (its ejection is forgotten); passing `/health` while ejected does
//! not end an ejection, since that is exactly the backend passive checks are for.
//!
//! This is what Envoy calls outlier detection and a circuit breaker elsewhere. The state is a
//! few atomics, read on every choice of backend without a lock.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::atomic_instant::AtomicInstant;

/// The longest an ejection lasts, however often the backend fails its trial (unless the
/// configured cooldown is longer still).
pub const MAX_COOLDOWN: Duration = Duration::from_secs(300);

/// `passiveHealth` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealthSettings {
    /// Consecutive failed attempts that eject a backend.
    pub failures: u32,
    /// How long the first ejection lasts; each failed trial doubles it.
    pub cooldown: Duration,
    /// The most of the pool that may be ejected at once, in per cent; 0 turns ejection off.
    pub max_ejected_percent: u32,
}

impl Default for PassiveHealthSettings {
    fn default() -> Self {
        PassiveHealthSettings { failures: 5, cooldown: Duration::from_secs(30), max_ejected_percent: 50 }
    }
}

impl PassiveHealthSettings {
    /// Whether one more backend may be ejected from a pool of `total` with `ejected` out already.
    pub fn may_eject(&self, ejected: usize, total: usize) -> bool {
        (ejected + 1) * 100 <= self.max_ejected_percent as usize * total
    }
}

/// Where a backend stands with the passive checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    InRotation,
    /// Out until its cooldown ends.
    Ejected,
    /// Cooldown over: one trial request decides.
    OnProbation {
        trial_taken: bool,
    },
}

/// A change worth logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectionEvent {
    Ejected { cooldown: Duration, again: bool },
    Readmitted,
}

/// One backend's passive-health record.
#[derive(Debug, Default)]
pub struct Ejection {
    consecutive_failures: AtomicU32,
    /// The end of the cooldown; none while in rotation.
    until: AtomicInstant,
    trial_taken: AtomicBool,
    /// Ejections in a row without a successful trial, for the doubling.
    strikes: AtomicU32,
}

impl Ejection {
    pub fn standing(&self, now: Instant) -> Standing {
        match self.until.load() {
            None => Standing::InRotation,
            Some(until) if now < until => Standing::Ejected,
            Some(_) => Standing::OnProbation { trial_taken: self.trial_taken.load(Ordering::Acquire) },
        }
    }

    /// Whether a request may be sent now: in rotation, or on probation with the trial not taken.
    pub fn admits(&self, now: Instant) -> bool {
        matches!(self.standing(now), Standing::InRotation | Standing::OnProbation { trial_taken: false })
    }

    /// Claims the trial request for a backend on probation. `false` if another request took it
    /// first (the caller then chooses another backend); `true` otherwise, also when no trial is due.
    pub fn claim_trial(&self, now: Instant) -> bool {
        match self.standing(now) {
            Standing::OnProbation { .. } => {
                self.trial_taken.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok()
            }
            Standing::InRotation | Standing::Ejected => true,
        }
    }

    /// Forgets everything: the backend was down by the active checks and has come back up, so it
    /// starts afresh rather than serving out an ejection earned before it went down.
    pub fn reset(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        self.strikes.store(0, Ordering::Release);
        self.trial_taken.store(false, Ordering::Release);
        self.until.store(None);
    }

    /// An attempt succeeded: the failure count starts over, and a passed trial readmits.
    pub fn record_success(&self, now: Instant) -> Option<EjectionEvent> {
        // Read before writing: on the common path nothing changes, and a write would bounce the
        // cache line between the CPUs of every worker using this backend.
        if self.consecutive_failures.load(Ordering::Acquire) != 0 {
            self.consecutive_failures.store(0, Ordering::Release);
        }
        if let Standing::OnProbation { .. } = self.standing(now) {
            self.strikes.store(0, Ordering::Release);
            self.trial_taken.store(false, Ordering::Release);
            self.until.store(None);
            return Some(EjectionEvent::Readmitted);
        }
        None
    }

    /// An attempt failed because of the backend. Ejects it when the failures reach the
    /// threshold (if `may_eject` agrees), or again when it was on probation.
    pub fn record_failure(
        &self,
        now: Instant,
        settings: &PassiveHealthSettings,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<EjectionEvent> {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        match self.standing(now) {
            Standing::Ejected => None,
            Standing::OnProbation { .. } => {
                let strikes = self.strikes.fetch_add(1, Ordering::AcqRel) + 1;
                Some(self.eject(now, settings, strikes, true))
            }
            Standing::InRotation if failures >= settings.failures && may_eject() => {
                self.strikes.store(1, Ordering::Release);
                Some(self.eject(now, settings, 1, false))
            }
            Standing::InRotation => None,
        }
    }

    fn eject(&self, now: Instant, settings: &PassiveHealthSettings, strikes: u32, again: bool) -> EjectionEvent {
        let doubled = settings.cooldown.saturating_mul(1 << (strikes - 1).min(16));
        let cooldown = doubled.min(MAX_COOLDOWN.max(settings.cooldown));
        self.consecutive_failures.store(0, Ordering::Release);
        self.trial_taken.store(false, Ordering::Release);
        self.until.store(Some(now + cooldown));
        EjectionEvent::Ejected { cooldown, again }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: PassiveHealthSettings =
        PassiveHealthSettings { failures: 3, cooldown: Duration::from_secs(10), max_ejected_percent: 50 };

    fn fail(ejection: &Ejection, now: Instant) -> Option<EjectionEvent> {
        ejection.record_failure(now, &SETTINGS, || true)
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_in_between_resets_the_count() {
        let ejection = Ejection::default();
        let now = Instant::now();
        assert_eq!(fail(&ejection, now), None);
        assert_eq!(fail(&ejection, now), None);
        assert_eq!(ejection.record_success(now), None);
        assert_eq!(fail(&ejection, now), None);
        assert_eq!(fail(&ejection, now), None);
        assert_eq!(
            fail(&ejection, now),
            Some(EjectionEvent::Ejected { cooldown: Duration::from_secs(10), again: false })
        );
        assert_eq!(ejection.standing(now), Standing::Ejected);
        assert!(!ejection.admits(now + Duration::from_secs(9)));
        assert_eq!(fail(&ejection, now), None, "late failures of requests already in flight change nothing");
    }

    #[test]
    fn after_the_cooldown_exactly_one_trial_goes_through() {
        let ejection = Ejection::default();
        let now = Instant::now();
        (0..3).for_each(|_| {
            fail(&ejection, now);
        });
        let later = now + Duration::from_secs(11);
        assert_eq!(ejection.standing(later), Standing::OnProbation { trial_taken: false });
        assert!(ejection.admits(later));
        assert!(ejection.claim_trial(later));
        assert!(!ejection.claim_trial(later), "only one trial");
        assert!(!ejection.admits(later));
        assert_eq!(ejection.record_success(later), Some(EjectionEvent::Readmitted));
        assert_eq!(ejection.standing(later), Standing::InRotation);
        assert!(ejection.claim_trial(later), "no trial needed in rotation");
    }

    #[test]
    fn a_failed_trial_doubles_the_cooldown_up_to_the_cap() {
        let ejection = Ejection::default();
        let mut now = Instant::now();
        (0..3).for_each(|_| {
            fail(&ejection, now);
        });
        let mut expected = Duration::from_secs(10);
        for _ in 0..8 {
            now += expected + Duration::from_secs(1);
            assert!(ejection.claim_trial(now));
            expected = (expected * 2).min(MAX_COOLDOWN);
            assert_eq!(fail(&ejection, now), Some(EjectionEvent::Ejected { cooldown: expected, again: true }));
        }
        assert_eq!(expected, MAX_COOLDOWN);
        now += expected + Duration::from_secs(1);
        assert_eq!(ejection.record_success(now), Some(EjectionEvent::Readmitted));
        (0..3).for_each(|_| {
            fail(&ejection, now);
        });
        assert_eq!(ejection.standing(now + Duration::from_secs(11)), Standing::OnProbation { trial_taken: false });
    }

    #[test]
    fn the_ejected_share_of_the_pool_is_capped() {
        let settings = PassiveHealthSettings::default();
        assert!(settings.may_eject(0, 2) && !settings.may_eject(1, 2));
        assert!(!settings.may_eject(0, 1), "the only backend is never ejected at 50%");
        assert!(settings.may_eject(4, 10) && !settings.may_eject(5, 10));
        let off = PassiveHealthSettings { max_ejected_percent: 0, ..settings };
        assert!(!off.may_eject(0, 10));
        let ejection = Ejection::default();
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(ejection.record_failure(now, &SETTINGS, || false), None);
        }
        assert_eq!(ejection.standing(now), Standing::InRotation);
    }
}
