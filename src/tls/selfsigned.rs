//! The `--demo` mode's certificate: a self-signed one for `localhost`, made in memory at start-up
//! so that the demo can serve HTTPS with nothing on disk. It is for the demo only, never for
//! production: no client trusts it unless told to, and it is never renewed.
//!
//! Runs once, on `main`, at the start-up of `--demo`; nothing here is shared or kept.
//!
//! There is no certificate crate behind it: the certificate is one fixed template, so a few DER
//! helpers write it, and ring, already compiled in as rustls's provider, makes the key and signs.
//!
//! ```text
//! Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature BIT STRING }
//! TBSCertificate ::= SEQUENCE { [0] EXPLICIT version (v3 = 2), serialNumber INTEGER, signature,
//!                               issuer Name, validity, subject Name, subjectPublicKeyInfo,
//!                               [3] EXPLICIT extensions }
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

use crate::timestamp::civil_from_days;

/// A certificate and its key, both PEM.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const UTC_TIME: u8 = 0x17;
const VERSION: u8 = 0xa0;
const EXTENSIONS: u8 = 0xa3;
const DNS_NAME: u8 = 0x82;
const IP_ADDRESS: u8 = 0x87;

const ID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]; // 1.2.840.10045.2.1
const PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]; // 1.2.840.10045.3.1.7
const ECDSA_WITH_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]; // 1.2.840.10045.4.3.2
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03]; // 2.5.4.3
const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f]; // 2.5.29.15
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11]; // 2.5.29.17
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13]; // 2.5.29.19
const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25]; // 2.5.29.37
const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01]; // 1.3.6.1.5.5.7.3.1

const NAME: &str = "localhost";
const BACKDATED: Duration = Duration::from_secs(3600);
const LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// A self-signed ECDSA P-256 / SHA-256 certificate for `localhost`, valid from an hour before
/// `now` for 30 days: subject and issuer CN=localhost, subjectAltName DNS:localhost,
/// IP:127.0.0.1, IP:::1; basicConstraints CA:FALSE; keyUsage digitalSignature; extendedKeyUsage
/// serverAuth; a random positive 16-byte serial. The key is PKCS#8 (`PRIVATE KEY`).
pub fn localhost_certificate(now: SystemTime) -> Result<SelfSigned, String> {
    let random = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &random)
        .map_err(|_| "cannot generate a P-256 key".to_string())?;
    let key_pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &random)
        .map_err(|error| format!("cannot load the generated key: {error}"))?;

    let mut serial = [0u8; 16];
    random.fill(&mut serial).map_err(|_| "cannot draw a random serial number".to_string())?;
    // Positive (top bit clear) and minimal in DER (first byte non-zero): exactly 16 bytes.
    serial[0] = (serial[0] & 0x3f) | 0x40;

    let not_before = now.checked_sub(BACKDATED).ok_or("the time is out of range")?;
    let not_after = not_before.checked_add(LIFETIME).ok_or("the time is out of range")?;
    let signature_algorithm = sequence(&[&tlv(OID, ECDSA_WITH_SHA256)]);
    let name = sequence(&[&tlv(SET, &sequence(&[&tlv(OID, COMMON_NAME), &tlv(UTF8_STRING, NAME.as_bytes())]))]);
    let public_key = sequence(&[
        &sequence(&[&tlv(OID, ID_EC_PUBLIC_KEY), &tlv(OID, PRIME256V1)]),
        &bit_string(key_pair.public_key().as_ref()),
    ]);
    let localhost_v6 = std::net::Ipv6Addr::LOCALHOST.octets();
    let alt_names = sequence(&[
        &tlv(DNS_NAME, NAME.as_bytes()),
        &tlv(IP_ADDRESS, &[127, 0, 0, 1]),
        &tlv(IP_ADDRESS, &localhost_v6),
    ]);
    let extensions = sequence(&[
        &extension(BASIC_CONSTRAINTS, true, &sequence(&[])), // CA:FALSE is the default, so left out
        &extension(KEY_USAGE, true, &tlv(BIT_STRING, &[0x07, 0x80])), // digitalSignature, bit 0
        &extension(EXT_KEY_USAGE, false, &sequence(&[&tlv(OID, SERVER_AUTH)])),
        &extension(SUBJECT_ALT_NAME, false, &alt_names),
    ]);
    let tbs_certificate = sequence(&[
        &tlv(VERSION, &tlv(INTEGER, &[2])),
        &tlv(INTEGER, &serial),
        &signature_algorithm,
        &name,
        &sequence(&[&utc_time(not_before)?, &utc_time(not_after)?]),
        &name,
        &public_key,
        &tlv(EXTENSIONS, &extensions),
    ]);
    let signature = key_pair.sign(&random, &tbs_certificate).map_err(|_| "cannot sign the certificate".to_string())?;
    let certificate = sequence(&[&tbs_certificate, &signature_algorithm, &bit_string(signature.as_ref())]);
    Ok(SelfSigned { cert_pem: pem("CERTIFICATE", &certificate), key_pem: pem("PRIVATE KEY", pkcs8.as_ref()) })
}

/// One DER element: tag, definite length (short or long form), content.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match u8::try_from(content.len()) {
        Ok(length) if length < 0x80 => out.push(length),
        _ => {
            let length = content.len().to_be_bytes();
            let significant = &length[length.iter().take_while(|&&byte| byte == 0).count()..];
            out.push(0x80 | significant.len() as u8);
            out.extend_from_slice(significant);
        }
    }
    out.extend_from_slice(content);
    out
}

fn sequence(elements: &[&[u8]]) -> Vec<u8> {
    tlv(SEQUENCE, &elements.concat())
}

/// A BIT STRING of whole bytes (no unused bits).
fn bit_string(bytes: &[u8]) -> Vec<u8> {
    tlv(BIT_STRING, &[&[0u8][..], bytes].concat())
}

/// `Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }`.
fn extension(id: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    let critical = if critical { tlv(BOOLEAN, &[0xff]) } else { Vec::new() };
    sequence(&[&tlv(OID, id), &critical, &tlv(OCTET_STRING, value)])
}

/// `YYMMDDHHMMSSZ`, to the second; UTCTime covers the years 1950 to 2049 only.
fn utc_time(time: SystemTime) -> Result<Vec<u8>, String> {
    let seconds = time.duration_since(UNIX_EPOCH).map_err(|_| "a time before 1970".to_string())?.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    if !(1950..2050).contains(&year) {
        return Err(format!("the year {year} cannot be written as a UTCTime"));
    }
    let of_day = seconds % 86_400;
    let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    let text = format!("{:02}{month:02}{day:02}{hour:02}{minute:02}{second:02}Z", year % 100);
    Ok(tlv(UTC_TIME, text.as_bytes()))
}

/// A PEM block: base64 with padding, in lines of 64 characters.
fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut base64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let word =
            chunk.iter().enumerate().fold(0u32, |word, (index, &byte)| word | u32::from(byte) << (16 - 8 * index));
        for index in 0..4 {
            base64.push(if index <= chunk.len() { ALPHABET[(word >> (18 - 6 * index) & 0x3f) as usize] } else { b'=' });
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in base64.chunks(64) {
        out.extend(line.iter().map(|&byte| char::from(byte)));
        out.push('\n');
    }
    out + &format!("-----END {label}-----\n")
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::path::Path;
    use std::process::Command;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};

    use super::*;
    use crate::tls::certs::{self, LoadedCert};
    use crate::tls::config::{self, Resumption};
    use crate::tls::sni::CertStore;

    /// 2026-11-22T02:43:57Z.
    const NOW: u64 = 1_795_315_437;

    fn load(made: &SelfSigned) -> LoadedCert {
        let (cert, key) = (made.cert_pem.as_bytes(), made.key_pem.as_bytes());
        certs::from_pem(Path::new("cert.pem"), cert, Path::new("key.pem"), key, &config::provider()).unwrap()
    }

    /// The content of each element of a DER SEQUENCE, with its tag.
    fn elements(mut der: &[u8]) -> Vec<(u8, &[u8])> {
        let mut out = Vec::new();
        while let [tag, length, rest @ ..] = der {
            let (length, rest) = match *length {
                0x81 => (usize::from(rest[0]), &rest[1..]),
                0x82 => (usize::from(rest[0]) << 8 | usize::from(rest[1]), &rest[2..]),
                short => (usize::from(short), rest),
            };
            out.push((*tag, &rest[..length]));
            der = &rest[length..];
        }
        out
    }

    /// The serial number and the two validity times of a certificate.
    fn serial_and_validity(made: &SelfSigned) -> (Vec<u8>, String, String) {
        let der = CertificateDer::from_pem_slice(made.cert_pem.as_bytes()).unwrap();
        let certificate = elements(&der)[0].1;
        let tbs = elements(elements(certificate)[0].1);
        let validity = elements(tbs[4].1);
        let text = |index: usize| String::from_utf8(validity[index].1.to_vec()).unwrap();
        (tbs[1].1.to_vec(), text(0), text(1))
    }

    #[test]
    fn it_loads_as_a_certificate_for_localhost_with_its_key() {
        let loaded = load(&localhost_certificate(SystemTime::now()).unwrap());
        assert_eq!(loaded.names, ["localhost"]);
        assert!(loaded.key.keys_match().is_ok());
        assert!(localhost_certificate(SystemTime::now()).unwrap().key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    }

    #[test]
    fn a_client_trusting_only_it_completes_a_handshake_by_name_and_by_address() {
        let made = localhost_certificate(SystemTime::now()).unwrap();
        let store = Arc::new(CertStore::new(vec![load(&made)]));
        let server_config = config::server_config(store, &Resumption::new().unwrap()).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(made.cert_pem.as_bytes()).unwrap()).unwrap();
        let client_config = Arc::new(
            ClientConfig::builder_with_provider(config::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        for name in ["localhost", "127.0.0.1"] {
            let mut server = ServerConnection::new(Arc::clone(&server_config)).unwrap();
            let server_name = ServerName::try_from(name).unwrap();
            let mut client = ClientConnection::new(Arc::clone(&client_config), server_name).unwrap();
            let mut rounds = 0;
            while client.is_handshaking() || server.is_handshaking() {
                rounds += 1;
                assert!(rounds < 10, "{name}: the handshake does not finish");
                let mut bytes = Vec::new();
                client.write_tls(&mut bytes).unwrap();
                server.read_tls(&mut &bytes[..]).unwrap();
                server.process_new_packets().unwrap_or_else(|error| panic!("{name}: server: {error}"));
                bytes.clear();
                server.write_tls(&mut bytes).unwrap();
                client.read_tls(&mut &bytes[..]).unwrap();
                client.process_new_packets().unwrap_or_else(|error| panic!("{name}: client: {error}"));
            }
            client.writer().write_all(b"hello").unwrap();
            let mut bytes = Vec::new();
            client.write_tls(&mut bytes).unwrap();
            server.read_tls(&mut &bytes[..]).unwrap();
            server.process_new_packets().unwrap();
            let mut received = [0u8; 5];
            server.reader().read_exact(&mut received).unwrap();
            assert_eq!(&received, b"hello", "{name}");
        }
    }

    #[test]
    fn openssl_reads_it_with_its_names_and_dates() {
        let made = localhost_certificate(UNIX_EPOCH + Duration::from_secs(NOW)).unwrap();
        let file = std::env::temp_dir().join(format!("selfsigned-{}.pem", std::process::id()));
        std::fs::write(&file, &made.cert_pem).unwrap();
        let output =
            Command::new("openssl").arg("x509").arg("-noout").arg("-text").arg("-dates").arg("-in").arg(&file).output();
        std::fs::remove_file(&file).unwrap();
        let output = match output {
            Ok(output) => output,
            Err(_) if std::env::var("CI").as_deref() != Ok("true") => return,
            Err(error) => panic!("openssl cannot be run: {error}"),
        };
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        for expected in [
            "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1",
            "Issuer: CN = localhost",
            "Subject: CN = localhost",
            "CA:FALSE",
            "Digital Signature",
            "TLS Web Server Authentication",
            "ecdsa-with-SHA256",
            "notBefore=Nov 22 01:43:57 2026 GMT",
            "notAfter=Dec 22 01:43:57 2026 GMT",
        ] {
            assert!(text.contains(expected), "{expected:?} is not in:\n{text}");
        }
    }

    #[test]
    fn each_has_its_own_serial_and_is_valid_from_an_hour_before_for_30_days() {
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let (first_serial, not_before, not_after) = serial_and_validity(&localhost_certificate(now).unwrap());
        let (second_serial, ..) = serial_and_validity(&localhost_certificate(now).unwrap());
        assert_ne!(first_serial, second_serial);
        for serial in [&first_serial, &second_serial] {
            assert_eq!((serial.len(), serial[0] & 0xc0), (16, 0x40), "{serial:02x?}: positive, 16 bytes");
        }
        assert_eq!((not_before.as_str(), not_after.as_str()), ("261122014357Z", "261222014357Z"));
        assert_eq!(
            localhost_certificate(UNIX_EPOCH + Duration::from_secs(2_524_608_000 + 3600)).err().as_deref(),
            Some("the year 2050 cannot be written as a UTCTime")
        );
    }
}
