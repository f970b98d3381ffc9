//! The served certificates and the choice among them by the name a client asks for (SNI).
//!
//! [`CertStore`] is rustls's certificate resolver: rustls calls [`resolve`](CertStore::resolve)
//! during each handshake, on whichever thread is driving that handshake. The set is replaced whole
//! by [`replace`](CertStore::replace), from `config-watcher` on a reload or a renewed file: a
//! handshake that starts afterwards gets the new set, and one already past its ClientHello keeps
//! the `Arc<CertifiedKey>` it was given (rustls holds it), so no connection is cut.
//!
//! The choice, for a name normalised to lower case without a trailing dot:
//! 1. the first certificate with that exact name;
//! 2. else the first one with a wildcard `*.rest` where the name is one label followed by `.rest`
//!    (`*.example.com` covers `a.example.com`, not `example.com` nor `a.b.example.com`);
//! 3. else, and for a client that sent no name, the first certificate.
//!
//! The lock is held only to clone the `Arc` of the set, never across a handshake or any I/O.

use std::sync::Arc;

use parking_lot::RwLock;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::{LoadedCert, normalise};

/// The certificates being served, in config order; the first is the default.
#[derive(Debug)]
pub struct CertStore {
    certs: RwLock<Arc<Vec<LoadedCert>>>,
}

impl CertStore {
    /// A store serving `certs`. With none, every handshake is refused (the config requires one).
    pub fn new(certs: Vec<LoadedCert>) -> CertStore {
        CertStore { certs: RwLock::new(Arc::new(certs)) }
    }

    /// Serves `certs` to handshakes from now on; handshakes under way keep what they were given.
    pub fn replace(&self, certs: Vec<LoadedCert>) {
        *self.certs.write() = Arc::new(certs);
    }

    /// The set served now.
    pub fn current(&self) -> Arc<Vec<LoadedCert>> {
        Arc::clone(&self.certs.read())
    }

    /// The certificate for a client asking for `server_name` (`None`: it sent no SNI).
    pub fn choose(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let certs = self.current();
        let index = choose(certs.iter().map(|cert| cert.names.as_slice()), server_name)?;
        Some(Arc::clone(&certs[index].key))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(client_hello.server_name())
    }
}

/// Which of the certificates, given by their names, serves `server_name` (see the module doc);
/// `None` only when there are none.
pub fn choose<'a, S: AsRef<str> + 'a>(
    names: impl Iterator<Item = &'a [S]> + Clone,
    server_name: Option<&str>,
) -> Option<usize> {
    let first = names.clone().next().map(|_| 0);
    let Some(wanted) = server_name.map(normalise) else {
        return first;
    };
    if wanted.contains('*') {
        // Not a name (rustls refuses one in SNI anyway); never equal to a certificate's wildcard.
        return first;
    }
    let exact = names.clone().position(|names| names.iter().any(|name| name.as_ref() == wanted));
    let wildcard = || names.clone().position(|names| names.iter().any(|name| wildcard_covers(name.as_ref(), &wanted)));
    exact.or_else(wildcard).or(first)
}

/// Whether `pattern` is a wildcard `*.rest` covering `name`: one label, then `.rest`. Both are
/// already normalised.
fn wildcard_covers(pattern: &str, name: &str) -> bool {
    let Some(rest) = pattern.strip_prefix("*.") else {
        return false;
    };
    match name.split_once('.') {
        Some((label, name_rest)) => !label.is_empty() && !label.contains('*') && name_rest == rest,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERTS: &[&[&str]] = &[
        &["default.test"],
        &["*.example.com"],
        &["www.example.com", "example.com"],
        &["*.api.example.com", "api.example.org"],
    ];

    fn pick(server_name: Option<&str>) -> Option<usize> {
        choose(CERTS.iter().copied(), server_name)
    }

    #[test]
    fn the_choice_by_name() {
        let table: &[(Option<&str>, usize, &str)] = &[
            (None, 0, "no SNI gets the first"),
            (Some("unknown.test"), 0, "an unknown name gets the first"),
            (Some("default.test"), 0, "exact"),
            (Some("DEFAULT.Test"), 0, "case-insensitive"),
            (Some("default.test."), 0, "a trailing dot is ignored"),
            (Some("a.example.com"), 1, "a wildcard covers one label"),
            (Some("A.EXAMPLE.COM"), 1, "a wildcard, case-insensitive"),
            (Some("www.example.com"), 2, "an exact name beats an earlier wildcard"),
            (Some("example.com"), 2, "a wildcard does not cover its parent"),
            (Some("a.b.example.com"), 0, "a wildcard covers one label only"),
            (Some("x.api.example.com"), 3, "a deeper wildcard"),
            (Some("api.example.com"), 1, "covered by *.example.com, not by *.api.example.com"),
            (Some("api.example.org"), 3, "a second name in the same certificate"),
            (Some(".example.com"), 0, "an empty label is not covered"),
            (Some("*.example.com"), 0, "a wildcard is not a name a client can ask for"),
            (Some(""), 0, "an empty name gets the first"),
        ];
        for &(server_name, expected, why) in table {
            assert_eq!(pick(server_name), Some(expected), "{server_name:?}: {why}");
        }
    }

    #[test]
    fn an_empty_store_chooses_nothing() {
        let none: &[&[&str]] = &[];
        assert_eq!(choose(none.iter().copied(), None), None);
        assert_eq!(choose(none.iter().copied(), Some("a.test")), None);
        assert!(CertStore::new(Vec::new()).choose(Some("a.test")).is_none());
    }

    #[test]
    fn replacing_the_set_changes_the_choice_and_not_what_was_handed_out() {
        let provider = super::super::config::provider();
        let make = |name: &str| {
            let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
            let (cert, key) = (made.cert.pem(), made.signing_key.serialize_pem());
            let path = std::path::Path::new("test.pem");
            super::super::certs::from_pem(path, cert.as_bytes(), path, key.as_bytes(), &provider).unwrap()
        };
        let (old, new) = (make("a.test"), make("a.test"));
        let store = CertStore::new(vec![old.clone()]);
        let handed_out = store.choose(Some("a.test")).unwrap();
        store.replace(vec![new.clone()]);
        assert!(Arc::ptr_eq(&store.choose(Some("a.test")).unwrap(), &new.key));
        assert!(Arc::ptr_eq(&handed_out, &old.key), "what a handshake holds is its own");
    }
}
