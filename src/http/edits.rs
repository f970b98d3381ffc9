//! Edits a route makes to a message's header fields (`requestHeaders`, `responseHeaders`): what to
//! drop from the message and what to append. Data only; applied where heads are rewritten
//! ([`crate::http::rewrite`]) and to the load balancer's own answers, on the worker thread (for a
//! request) or the reverse thread (for a response).

/// Edits to one message's header fields, applied in order: `remove`, then `set` (replacing every
/// field of that name), then `add` (appending).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderEdits {
    /// Lower case.
    pub remove: Vec<String>,
    /// Names as configured; no two equal ignoring case.
    pub set: Vec<(String, String)>,
    /// Names as configured.
    pub add: Vec<(String, String)>,
}

impl HeaderEdits {
    /// No edits.
    pub const NONE: HeaderEdits = HeaderEdits { remove: Vec::new(), set: Vec::new(), add: Vec::new() };

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Whether a field of this name (any case) from the original message is dropped: named in
    /// remove or set.
    pub fn drops(&self, name: &[u8]) -> bool {
        self.remove.iter().any(|removed| name.eq_ignore_ascii_case(removed.as_bytes()))
            || self.set.iter().any(|(set, _)| name.eq_ignore_ascii_case(set.as_bytes()))
    }

    /// The fields to append after the kept ones: set's, then add's, with the names as configured.
    pub fn additions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.set.iter().chain(&self.add).map(|(name, value)| (name.as_str(), value.as_str()))
    }
}

/// No edits, for a message no route edits.
pub static NO_EDITS: HeaderEdits = HeaderEdits::NONE;
