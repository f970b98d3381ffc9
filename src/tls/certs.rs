//! Loading one `certificates` entry: a PEM certificate chain and its private key, made into a
//! rustls [`CertifiedKey`] with the ring provider, with the DNS names the certificate covers.
//!
//! Runs on whichever thread reads the config: `main` at start-up, `config-watcher` on a reload.
//! Nothing here is shared; the result goes into a [`CertStore`](super::sni::CertStore).
//!
//! What is checked, so that a bad file is a config error naming the file rather than a handshake
//! that fails later: `certFile` holds at least one `CERTIFICATE` block (the end-entity
//! certificate first, then its intermediates); `keyFile` holds a PKCS#8, PKCS#1 (RSA) or SEC1
//! (EC) key that the ring provider can sign with; the key's public half is the certificate's; and
//! the certificate names at least one DNS name in its subjectAltName extension. The subject's
//! common name is not read: clients have ignored it for years, and so does the choice by SNI.
//! Neither validity dates nor the chain to a root are checked: that is the client's business.
//!
//! rustls has no X.509 parser of its own to list names with, and `rustls-webpki` only answers
//! "is this name covered?", so [`dns_names`] walks the DER of the certificate to its
//! subjectAltName extension itself; it reads only as far as it needs to.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate chain and key ready to serve, and the names it is chosen by.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// The subjectAltName DNS names, lower case, without a trailing dot; wildcards as `*.x.y`.
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
    /// Where it was read from, for the logs.
    pub cert_file: PathBuf,
}

/// Why a certificate entry cannot be used; its `Display` names the file and the problem.
#[derive(Debug)]
pub enum CertError {
    /// A file could not be read at all.
    Read { file: PathBuf, error: io::Error },
    /// The file is not well-formed PEM.
    Pem { file: PathBuf, error: pem::Error },
    /// `certFile` holds no `CERTIFICATE` block.
    NoCertificate { file: PathBuf },
    /// `keyFile` holds no private key block rustls knows.
    NoKey { file: PathBuf },
    /// The key is of a kind, or a size, the ring provider cannot sign with.
    UnusableKey { file: PathBuf, error: rustls::Error },
    /// The end-entity certificate cannot be parsed.
    BadCertificate { file: PathBuf, problem: String },
    /// The key is not the one the certificate was issued for.
    KeyMismatch { cert_file: PathBuf, key_file: PathBuf },
    /// The certificate has no subjectAltName DNS name to be chosen by.
    NoDnsName { file: PathBuf },
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Read { file, error } => write!(f, "{}: cannot be read: {error}", file.display()),
            CertError::Pem { file, error } => write!(f, "{}: not valid PEM: {error}", file.display()),
            CertError::NoCertificate { file } => write!(f, "{}: no certificate found", file.display()),
            CertError::NoKey { file } => {
                write!(f, "{}: not a private key (expected PKCS#8, PKCS#1 or SEC1 PEM, unencrypted)", file.display())
            }
            CertError::UnusableKey { file, error } => write!(f, "{}: the key cannot be used: {error}", file.display()),
            CertError::BadCertificate { file, problem } => {
                write!(f, "{}: the certificate cannot be read: {problem}", file.display())
            }
            CertError::KeyMismatch { cert_file, key_file } => {
                write!(f, "{} and {}: the key does not match the certificate", cert_file.display(), key_file.display())
            }
            CertError::NoDnsName { file } => write!(f, "{}: certificate covers no DNS name", file.display()),
        }
    }
}

impl std::error::Error for CertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CertError::Read { error, .. } => Some(error),
            CertError::Pem { error, .. } => Some(error),
            CertError::UnusableKey { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Reads `cert_file` and `key_file` and checks them (see the module doc).
pub fn load(cert_file: &Path, key_file: &Path, provider: &CryptoProvider) -> Result<LoadedCert, CertError> {
    let read = |file: &Path| std::fs::read(file).map_err(|error| CertError::Read { file: file.to_owned(), error });
    let (cert_pem, key_pem) = (read(cert_file)?, read(key_file)?);
    from_pem(cert_file, &cert_pem, key_file, &key_pem, provider)
}

/// [`load`] for PEM already in memory; `cert_file` and `key_file` only name it in errors.
pub fn from_pem(
    cert_file: &Path,
    cert_pem: &[u8],
    key_file: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<LoadedCert, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CertError::Pem { file: cert_file.to_owned(), error })?;
    let Some(end_entity) = chain.first() else {
        return Err(CertError::NoCertificate { file: cert_file.to_owned() });
    };
    let names = dns_names(end_entity)
        .map_err(|problem| CertError::BadCertificate { file: cert_file.to_owned(), problem: problem.to_owned() })?;
    if names.is_empty() {
        return Err(CertError::NoDnsName { file: cert_file.to_owned() });
    }

    let key = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => return Err(CertError::NoKey { file: key_file.to_owned() }),
        Err(error) => return Err(CertError::Pem { file: key_file.to_owned(), error }),
    };
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| CertError::UnusableKey { file: key_file.to_owned(), error })?;

    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // ring's keys always know their public half; should one not, there is nothing to compare.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(CertError::KeyMismatch { cert_file: cert_file.to_owned(), key_file: key_file.to_owned() });
        }
        Err(error) => return Err(CertError::BadCertificate { file: cert_file.to_owned(), problem: error.to_string() }),
    }
    Ok(LoadedCert { names, key: Arc::new(certified), cert_file: cert_file.to_owned() })
}

/// The DNS names in a certificate's subjectAltName extension, lower case and without a trailing
/// dot, in the certificate's order; empty if it has no such extension or no DNS name in it.
///
/// ```text
/// Certificate     ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
/// TBSCertificate  ::= SEQUENCE { [0] version, serial, signature, issuer, validity, subject,
///                                subjectPublicKeyInfo, [1] issuerUID, [2] subjectUID,
///                                [3] EXPLICIT Extensions }
/// Extension       ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }
/// subjectAltName  ::= SEQUENCE OF GeneralName   -- extnID 2.5.29.17
/// GeneralName     ::= ... dNSName [2] IMPLICIT IA5String ...
/// ```
pub fn dns_names(cert: &[u8]) -> Result<Vec<String>, &'static str> {
    const SEQUENCE: u8 = 0x30;
    const EXTENSIONS: u8 = 0xa3;
    const OID: u8 = 0x06;
    const BOOLEAN: u8 = 0x01;
    const OCTET_STRING: u8 = 0x04;
    const DNS_NAME: u8 = 0x82;
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

    let mut input = cert;
    let mut certificate = expect(&mut input, SEQUENCE)?;
    let mut tbs = expect(&mut certificate, SEQUENCE)?;
    // The fields before the extensions are all SEQUENCEs, INTEGERs or other context tags.
    let mut extensions = loop {
        if tbs.is_empty() {
            return Ok(Vec::new());
        }
        let (tag, content) = tlv(&mut tbs)?;
        if tag == EXTENSIONS {
            break content;
        }
    };
    let mut list = expect(&mut extensions, SEQUENCE)?;
    let mut names = Vec::new();
    while !list.is_empty() {
        let mut extension = expect(&mut list, SEQUENCE)?;
        let id = expect(&mut extension, OID)?;
        let (mut tag, mut value) = tlv(&mut extension)?;
        if tag == BOOLEAN {
            (tag, value) = tlv(&mut extension)?;
        }
        if tag != OCTET_STRING {
            return Err("an extension's value is not an OCTET STRING");
        }
        if id != SUBJECT_ALT_NAME {
            continue;
        }
        let mut general_names = expect(&mut value, SEQUENCE)?;
        while !general_names.is_empty() {
            let (tag, content) = tlv(&mut general_names)?;
            if tag != DNS_NAME {
                continue;
            }
            let name = std::str::from_utf8(content)
                .ok()
                .filter(|name| name.is_ascii())
                .ok_or("a subjectAltName DNS name is not ASCII")?;
            names.push(normalise(name));
        }
    }
    Ok(names)
}

/// A DNS name as names are compared: ASCII lower case, one trailing dot dropped.
pub fn normalise(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Takes one DER element with tag `tag` off the front of `input` and returns its content.
fn expect<'a>(input: &mut &'a [u8], tag: u8) -> Result<&'a [u8], &'static str> {
    match tlv(input)? {
        (found, content) if found == tag => Ok(content),
        _ => Err("unexpected DER element"),
    }
}

/// Takes one DER element off the front of `input`: its (single-byte) tag and its content.
fn tlv<'a>(input: &mut &'a [u8]) -> Result<(u8, &'a [u8]), &'static str> {
    const TRUNCATED: &str = "truncated DER";
    let (&tag, rest) = input.split_first().ok_or(TRUNCATED)?;
    if tag & 0x1f == 0x1f {
        return Err("multi-byte DER tag");
    }
    let (&first, mut rest) = rest.split_first().ok_or(TRUNCATED)?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err("bad DER length");
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |length, &byte| (length << 8) | usize::from(byte))
    };
    if rest.len() < length {
        return Err(TRUNCATED);
    }
    let (content, after) = rest.split_at(length);
    *input = after;
    Ok((tag, content))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        super::super::config::provider()
    }

    fn pair(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let made = rcgen::generate_simple_self_signed(names).unwrap();
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    fn parse(cert: &str, key: &str) -> Result<LoadedCert, CertError> {
        from_pem(Path::new("cert.pem"), cert.as_bytes(), Path::new("key.pem"), key.as_bytes(), &provider())
    }

    #[test]
    fn the_names_come_from_the_subject_alt_name_lower_cased() {
        let (cert, key) = pair(&["Example.COM", "*.example.com", "api.example.net.", "127.0.0.1"]);
        let loaded = parse(&cert, &key).unwrap();
        assert_eq!(
            loaded.names,
            ["example.com", "*.example.com", "api.example.net"],
            "the IP address is not a DNS name"
        );
    }

    #[test]
    fn each_kind_of_key_file_is_read() {
        let names = vec!["a.test".to_string()];
        for algorithm in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
            let cert = rcgen::CertificateParams::new(names.clone()).unwrap().self_signed(&key).unwrap();
            parse(&cert.pem(), &key.serialize_pem()).unwrap();
            // The same EC key as SEC1 ("EC PRIVATE KEY"), unwrapped from its PKCS#8.
            if algorithm == &rcgen::PKCS_ECDSA_P256_SHA256 {
                let sec1 = sec1_from_pkcs8(key.serialized_der());
                let pem = pem_block("EC PRIVATE KEY", &sec1);
                parse(&cert.pem(), &pem).unwrap();
            }
        }
    }

    #[test]
    fn a_pkcs1_rsa_key_block_is_read_as_a_key() {
        // ring cannot make RSA keys, so no real one: a block of the PKCS#1 kind with contents
        // that are not a key is recognised as a key, and refused by the provider.
        let (cert, _) = pair(&["a.test"]);
        let error = parse(&cert, &pem_block("RSA PRIVATE KEY", &[0x30, 0x03, 0x02, 0x01, 0x00])).unwrap_err();
        assert!(matches!(error, CertError::UnusableKey { .. }), "{error}");
        assert!(error.to_string().starts_with("key.pem: the key cannot be used: "), "{error}");
    }

    /// The SEC1 `ECPrivateKey` inside a PKCS#8 `PrivateKeyInfo`: its `privateKey` OCTET STRING.
    fn sec1_from_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
        let mut input = pkcs8;
        let mut info = expect(&mut input, 0x30).unwrap();
        expect(&mut info, 0x02).unwrap();
        expect(&mut info, 0x30).unwrap();
        expect(&mut info, 0x04).unwrap().to_vec()
    }

    fn pem_block(label: &str, der: &[u8]) -> String {
        // A minimal base64 encoder, to build PEM files no generator writes.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut encoded = String::new();
        for chunk in der.chunks(3) {
            let bytes = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let word = u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2]);
            for index in 0..4 {
                if index <= chunk.len() {
                    encoded.push(char::from(ALPHABET[(word >> (18 - 6 * index) & 0x3f) as usize]));
                } else {
                    encoded.push('=');
                }
            }
        }
        let lines: Vec<&str> = encoded.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).unwrap()).collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    #[test]
    fn a_bad_file_is_an_error_naming_the_file_and_the_problem() {
        let (cert, key) = pair(&["a.test"]);
        let (other_cert, other_key) = pair(&["a.test"]);
        let cases: [(&str, &str, &str); 6] = [
            ("", &key, "cert.pem: no certificate found"),
            (&key, &key, "cert.pem: no certificate found"),
            (&cert, &cert, "key.pem: not a private key (expected PKCS#8, PKCS#1 or SEC1 PEM, unencrypted)"),
            (&cert, &other_key, "cert.pem and key.pem: the key does not match the certificate"),
            (&other_cert, &key, "cert.pem and key.pem: the key does not match the certificate"),
            ("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", &key, "cert.pem: not valid PEM"),
        ];
        for (cert, key, expected) in cases {
            let error = parse(cert, key).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error:?} should start with {expected:?}");
        }
        let missing = load(Path::new("/nonexistent/cert.pem"), Path::new("key.pem"), &provider()).unwrap_err();
        assert!(missing.to_string().starts_with("/nonexistent/cert.pem: cannot be read: "), "{missing}");
    }

    #[test]
    fn a_certificate_without_a_dns_name_is_refused() {
        let (cert, key) = pair(&["192.0.2.1"]);
        assert_eq!(parse(&cert, &key).unwrap_err().to_string(), "cert.pem: certificate covers no DNS name");
        let key = rcgen::KeyPair::generate().unwrap();
        let no_san = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().self_signed(&key).unwrap();
        assert_eq!(
            parse(&no_san.pem(), &key.serialize_pem()).unwrap_err().to_string(),
            "cert.pem: certificate covers no DNS name"
        );
    }

    #[test]
    fn the_der_walk_refuses_what_is_not_a_certificate() {
        for (input, expected) in [
            (&[][..], "truncated DER"),
            (&[0x30, 0x05, 0x30][..], "truncated DER"),
            (&[0x30, 0x80][..], "bad DER length"),
            (&[0x02, 0x01, 0x00][..], "unexpected DER element"),
            (&[0x3f, 0x01, 0x00][..], "multi-byte DER tag"),
        ] {
            assert_eq!(dns_names(input), Err(expected), "{input:02x?}");
        }
        // A TBSCertificate with no extensions at all has no names, and that is not an error.
        assert_eq!(dns_names(&[0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x01]), Ok(Vec::new()));
    }

    #[test]
    fn a_long_form_length_is_read() {
        let mut content = vec![0x30, 0x82, 0x01, 0x00];
        content.extend(std::iter::repeat_n(0u8, 256));
        let mut input = &content[..];
        let (tag, inner) = tlv(&mut input).unwrap();
        assert_eq!((tag, inner.len(), input.len()), (0x30, 256, 0));
    }
}
