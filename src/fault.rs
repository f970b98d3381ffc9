//! Fault injection: panics on purpose inside a request's forward or reverse job, so that tests
//! can drive the panic boundary through the real pair of the real binary. Debug builds only: this
//! module and every call into it are compiled out of release builds (`cfg(debug_assertions)`).
//!
//! It is off unless `LB_FAULT_INJECTION=1` is in the environment at start-up, read once by
//! [`enable_from_env`] on the `main` thread. When on, the worker ([`crate::proxy`]) reads a
//! request's `X-Lb-Fault` field with [`requested`] and hands the answer to both jobs, and the pair
//! threads ([`crate::pipe`]) call [`strike`] at a fixed point:
//!
//! - `X-Lb-Fault: panic-forward`: the forward job panics as it starts, before any byte of the
//!   request reaches the backend;
//! - `X-Lb-Fault: panic-reverse`: the reverse job panics once it has read the backend's response
//!   head, before any byte of the response reaches the client.
//!
//! Either way nothing of a response has been sent, so the client gets the worker's `500` and the
//! connection closes. Any other value, or the field without the variable, is an ordinary field,
//! forwarded like any other.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::http::head::RequestHead;

/// The environment variable that turns fault injection on (`1`).
pub const ENV: &str = "LB_FAULT_INJECTION";
/// The request field that names the fault.
pub const FIELD: &str = "X-Lb-Fault";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Where a request asked to panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    PanicForward,
    PanicReverse,
}

/// Reads [`ENV`] once, at start-up; returns whether fault injection is now on.
pub fn enable_from_env() -> bool {
    let enabled = std::env::var(ENV).is_ok_and(|value| value == "1");
    ENABLED.store(enabled, Ordering::Relaxed);
    enabled
}

/// The fault `head` asks for, if fault injection is on.
pub fn requested(head: &RequestHead) -> Option<Fault> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    match head.fields.get(FIELD)? {
        b"panic-forward" => Some(Fault::PanicForward),
        b"panic-reverse" => Some(Fault::PanicReverse),
        _ => None,
    }
}

/// Panics if the request asked for the fault at `here`.
pub fn strike(requested: Option<Fault>, here: Fault) {
    if requested == Some(here) {
        panic!("fault injected on purpose: {here:?} ({FIELD})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{HeadLimits, parse_request};

    #[test]
    fn strikes_only_where_asked() {
        strike(None, Fault::PanicForward);
        strike(Some(Fault::PanicReverse), Fault::PanicForward);
        let panic = std::panic::catch_unwind(|| strike(Some(Fault::PanicForward), Fault::PanicForward));
        assert!(panic.is_err());
    }

    #[test]
    fn the_field_is_read_only_when_enabled() {
        let head =
            parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nX-Lb-Fault: panic-reverse\r\n\r\n", &HeadLimits::default())
                .unwrap()
                .unwrap()
                .0;
        // Off by default (the variable is read only by enable_from_env).
        assert_eq!(requested(&head), None);
        ENABLED.store(true, Ordering::Relaxed);
        assert_eq!(requested(&head), Some(Fault::PanicReverse));
        ENABLED.store(false, Ordering::Relaxed);
    }
}
