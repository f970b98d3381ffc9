//! Property tests for the request-head parser, the head rewriter and the chunked decoder: the
//! bounded, in-`cargo test` form of a fuzz target.
//!
//! Each property runs a fixed number of generated cases. Every case draws from its own xorshift64*
//! generator, seeded from the property's fixed seed plus the case number, so a failure names its
//! seed and case and reruns identically; `PROPERTY_CASE=N cargo test --test properties NAME`
//! runs case N alone. No case reads past its (finite) input, and every property
//! runs under a watchdog, so an endless loop in the code under test fails the test instead of
//! hanging it.
//!
//! What is checked:
//! - the parsers never panic on random bytes, mutated heads or oversized lines, and what they
//!   return is consistent (bounded by the input and the limits, statuses 400/414/431/501);
//! - every head the parser accepts, rewritten for a backend, parses back to the same message
//!   (method, target, version, framing, the same end-to-end fields in the same order), and
//!   rewriting that again changes nothing but `X-Forwarded-For`;
//! - the chunked decoder turns any valid encoding, read in arbitrary pieces, into the canonical
//!   encoding of the same chunks, which is a fixed point, leaving bytes past the body unread;
//! - on garbage it returns (an error or a canonical body), reads nothing after end of stream, and
//!   never holds more than its buffers' capacity;
//! - a chunked body over `max_payload` is refused without passing more than `max_payload` bytes.

use std::any::Any;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use loadbalancer::config::MAX_HEADERS_LIMIT;
use loadbalancer::http::buffer::{INBOUND_CAPACITY, Inbound, OUTBOUND_CAPACITY, Outbound};
use loadbalancer::http::framing::{CopyError, MAX_CHUNK_LINE, MAX_TRAILER_BYTES, copy_body, copy_chunked_prefix};
use loadbalancer::http::head::{BodyFraming, HeadLimits, RequestHead, parse_request, parse_response};
use loadbalancer::http::rewrite::{RouteRewrite, request_for_backend};

/// How long one property may run before it is declared stuck (debug builds, a loaded machine).
const WATCHDOG: Duration = Duration::from_secs(120);

/// The smallest inbound buffer the proxy gives a client: `maxHeaderBytes` at its minimum of 1 KiB
/// plus 16 KiB read-ahead. Chunked framing limits must fit in it.
const SMALLEST_CLIENT_INBOUND: usize = 1024 + 16 * 1024;

// ---------------------------------------------------------------------------------------------
// Deterministic generation
// ---------------------------------------------------------------------------------------------

/// xorshift64*, seeded through splitmix64 so neighbouring seeds give unrelated streams.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        assert!(n > 0);
        ((self.next_u64() >> 8) % n as u64) as usize
    }

    /// In `low..=high`.
    fn range(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    fn bytes(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.byte()).collect()
    }

    /// `count` bytes drawn from `alphabet`.
    fn bytes_from(&mut self, alphabet: &[u8], count: usize) -> Vec<u8> {
        (0..count).map(|_| self.pick(alphabet)).collect()
    }

    /// Letters in `text` in random case.
    fn random_case(&mut self, text: &str) -> Vec<u8> {
        text.bytes()
            .map(|byte| if self.one_in(2) { byte.to_ascii_uppercase() } else { byte.to_ascii_lowercase() })
            .collect()
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for index in (1..items.len()).rev() {
            let other = self.below(index + 1);
            items.swap(index, other);
        }
    }

    /// A size biased towards small values but reaching `max`.
    fn size(&mut self, max: usize) -> usize {
        match self.below(4) {
            0 => self.range(0, max.min(8)),
            1 => self.range(0, max.min(64)),
            2 => self.range(0, max.min(1024)),
            _ => self.range(0, max),
        }
    }
}

/// One generated case: which property, its seed, its number.
#[derive(Debug, Clone, Copy)]
struct Case {
    property: &'static str,
    seed: u64,
    index: u64,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} seed {:#018x} case {}", self.property, self.seed, self.index)
    }
}

/// The one case to run, from `PROPERTY_CASE`, when reproducing a failure.
fn only_case() -> Option<u64> {
    std::env::var("PROPERTY_CASE").ok().and_then(|value| value.trim().parse().ok())
}

/// Runs `cases` cases of `check` on a thread watched by [`WATCHDOG`]. A panic in a case is
/// re-raised naming the seed and case number.
fn run_cases(property: &'static str, seed: u64, cases: u64, check: impl Fn(Case, &mut Rng) + Send + 'static) {
    let indices = only_case().map_or(0..cases, |index| index..index + 1);
    let progress = Arc::new(AtomicU64::new(0));
    let (done, finished) = mpsc::channel();
    let worker = {
        let progress = Arc::clone(&progress);
        thread::Builder::new()
            .name(property.to_string())
            .spawn(move || {
                for index in indices {
                    progress.store(index, Ordering::Relaxed);
                    let case = Case { property, seed, index };
                    let mut rng = Rng::new(seed.wrapping_add(index));
                    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| check(case, &mut rng))) {
                        let message = panic_message(&*payload);
                        let first_line = message.lines().next().unwrap_or_default();
                        panic!("{case} failed: {}", first_line.chars().take(300).collect::<String>());
                    }
                }
                let _ = done.send(());
            })
            .expect("spawn property thread")
    };
    match finished.recv_timeout(WATCHDOG) {
        Ok(()) => worker.join().expect("property thread"),
        Err(RecvTimeoutError::Disconnected) => {
            if let Err(payload) = worker.join() {
                panic::resume_unwind(payload);
            }
        }
        Err(RecvTimeoutError::Timeout) => panic!(
            "{property} seed {seed:#018x}: case {} still running after {WATCHDOG:?}: an endless loop?",
            progress.load(Ordering::Relaxed)
        ),
    }
}

/// Fails unless `count` of `cases` reached `at_least_percent`: a guard against generators that
/// drift into testing nothing (every input refused, say).
fn assert_covered(property: &str, what: &str, count: &AtomicU64, cases: u64, at_least_percent: u64) {
    if only_case().is_some() {
        return;
    }
    let count = count.load(Ordering::Relaxed);
    assert!(
        count * 100 >= cases * at_least_percent,
        "{property}: only {count} of {cases} cases {what} (want {at_least_percent}%): the generator no longer covers it"
    );
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(non-string panic)".to_string()
    }
}

/// Bytes as an escaped string, shortened in the middle if long, for assertion messages.
fn show(bytes: &[u8]) -> String {
    const KEEP: usize = 600;
    let escape = |part: &[u8]| part.escape_ascii().to_string();
    if bytes.len() <= 2 * KEEP {
        format!("b\"{}\" ({} bytes)", escape(bytes), bytes.len())
    } else {
        format!(
            "b\"{}\" ... b\"{}\" ({} bytes)",
            escape(&bytes[..KEEP]),
            escape(&bytes[bytes.len() - KEEP..]),
            bytes.len()
        )
    }
}

const TCHAR: &[u8] = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// `tchar` without `#`, which would start a fragment (refused in any target).
const QUERY_NAME: &[u8] = b"!$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const HOST_NAME: &[u8] = b"-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// Bytes that break framing in interesting ways when inserted.
const SPECIAL: &[u8] = b"\r\n\0 :\t\x7f\x80\xa0\xff;=\",/?";

fn token(rng: &mut Rng, max: usize) -> Vec<u8> {
    let length = rng.range(1, max);
    rng.bytes_from(TCHAR, length)
}

/// A field value: visible ASCII with inner spaces and tabs, never starting or ending in either.
fn field_value(rng: &mut Rng, max: usize) -> Vec<u8> {
    let length = rng.size(max);
    let mut value: Vec<u8> = (0..length)
        .map(|_| match rng.below(10) {
            0 => b' ',
            1 if rng.one_in(4) => b'\t',
            _ => rng.range(0x21, 0x7e) as u8,
        })
        .collect();
    while value.first().is_some_and(|byte| byte.is_ascii_whitespace()) {
        value.remove(0);
    }
    while value.last().is_some_and(|byte| byte.is_ascii_whitespace()) {
        value.pop();
    }
    value
}

/// Applies 1 to 4 random mutations: bit flips, special bytes, insertions, deletions,
/// truncation, duplicated lines, line-ending damage.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..rng.range(1, 4) {
        let at = rng.below(input.len() + 1);
        match rng.below(9) {
            0 if at < input.len() => input[at] ^= 1 << rng.below(8),
            1 if at < input.len() => input[at] = rng.pick(SPECIAL),
            2 => input.insert(at, rng.pick(SPECIAL)),
            3 if at < input.len() => {
                let end = (at + rng.range(1, 8)).min(input.len());
                input.drain(at..end);
            }
            4 => input.truncate(at),
            5 => {
                // Duplicate the line around `at`.
                let start = input[..at].iter().rposition(|&byte| byte == b'\n').map_or(0, |position| position + 1);
                let end = input[at..]
                    .iter()
                    .position(|&byte| byte == b'\n')
                    .map_or(input.len(), |position| at + position + 1);
                let line = input[start..end].to_vec();
                input.splice(end..end, line);
            }
            6 => {
                let count = rng.range(1, 16);
                let random = rng.bytes(count);
                input.splice(at..at, random);
            }
            7 => {
                // Damage a line ending: CRLF to LF, CR or LFCR.
                if let Some(position) = input.windows(2).skip(at).position(|pair| pair == b"\r\n") {
                    let position = at + position;
                    match rng.below(3) {
                        0 => drop(input.remove(position)),
                        1 => drop(input.remove(position + 1)),
                        _ => input.swap(position, position + 1),
                    }
                }
            }
            _ => {
                if at < input.len() {
                    let other = rng.below(input.len());
                    input.swap(at, other);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request heads
// ---------------------------------------------------------------------------------------------

/// Fields the rewriter never forwards whatever `Connection` says.
const HOP_BY_HOP: [&str; 6] = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];
/// Fields `Connection` cannot remove: dropping them would change the message.
const NEVER_NOMINATED: [&str; 3] = ["host", "content-length", "transfer-encoding"];
/// Fields the load balancer sets itself.
const SET_BY_PROXY: [&str; 2] = ["x-real-ip", "x-forwarded-proto"];
/// Names random extra fields must not take: they would change validity or framing, or (Upgrade)
/// depend on the WebSocket work in progress.
const RESERVED_NAMES: [&str; 6] =
    ["host", "content-length", "transfer-encoding", "x-forwarded-for", "upgrade", "connection"];

/// Limits large enough that a rewritten head is never refused for its size.
const GENEROUS: HeadLimits =
    HeadLimits { max_bytes: 1 << 20, max_target_bytes: 1 << 20, max_fields: MAX_HEADERS_LIMIT };

type FieldList = Vec<(Vec<u8>, Vec<u8>)>;

fn fields_of(head: &RequestHead) -> FieldList {
    head.fields.iter().map(|(name, value)| (name.to_vec(), value.to_vec())).collect()
}

/// A valid request head as generated, with what it should parse to.
struct GeneratedRequest {
    head: Vec<u8>,
    method: String,
    target: String,
    minor_version: u8,
    fields: FieldList,
    framing: BodyFraming,
}

fn generate_request(rng: &mut Rng) -> GeneratedRequest {
    let method = rng.pick(&["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]).to_string();
    let target = if method == "OPTIONS" && rng.one_in(4) {
        "*".to_string()
    } else {
        let mut target = String::new();
        for _ in 0..rng.range(0, 5) {
            target.push('/');
            // Non-empty segments: the path is then already in the one normal form (`//` would be
            // merged), and the parse must give it back unchanged.
            let length = rng.range(1, 12);
            let segment = rng.bytes_from(ALNUM, length);
            target.push_str(std::str::from_utf8(&segment).unwrap());
            if rng.one_in(8) {
                target.push_str("%20");
            }
        }
        if target.is_empty() {
            target.push('/');
        }
        if rng.one_in(2) {
            target.push('?');
            for index in 0..rng.range(1, 4) {
                if index > 0 {
                    target.push('&');
                }
                let length = rng.range(1, 8);
                target.push_str(std::str::from_utf8(&rng.bytes_from(QUERY_NAME, length)).unwrap());
                target.push('=');
                let length = rng.size(10);
                target.push_str(std::str::from_utf8(&rng.bytes_from(ALNUM, length)).unwrap());
            }
        }
        target
    };
    let minor_version = if rng.one_in(4) { 0 } else { 1 };

    let mut fields: FieldList = Vec::new();
    let mut extra_names = Vec::new();
    for _ in 0..rng.range(0, 20) {
        let name = loop {
            let name = token(rng, 16);
            if !RESERVED_NAMES.iter().any(|reserved| name.eq_ignore_ascii_case(reserved.as_bytes())) {
                break name;
            }
        };
        extra_names.push(name.clone());
        fields.push((name, field_value(rng, 60)));
    }
    if minor_version == 1 || rng.one_in(2) {
        // A host name the one reading of hosts accepts (letters, digits, `-`); hosts it refuses
        // are its own module's table of cases.
        let length = rng.range(1, 10);
        let name = rng.bytes_from(HOST_NAME, length);
        let host = [name, if rng.one_in(3) { b":8080".to_vec() } else { Vec::new() }].concat();
        fields.push((rng.random_case("host"), host));
    }

    let length = match rng.below(4) {
        0 => 0,
        1 => rng.below(100) as u64,
        2 => rng.next_u64() % 1_000_000_000,
        _ => rng.next_u64() >> rng.range(1, 63),
    };
    let framing = match rng.below(if minor_version == 1 { 4 } else { 2 }) {
        0 => BodyFraming::Empty,
        1 => {
            let value = if rng.one_in(4) { format!("{length}, {length}") } else { length.to_string() };
            fields.push((rng.random_case("content-length"), value.into_bytes()));
            if rng.one_in(4) {
                fields.push((rng.random_case("content-length"), length.to_string().into_bytes()));
            }
            BodyFraming::Length(length)
        }
        _ => {
            let value = rng.pick(&["chunked", "Chunked", "CHUNKED", ",chunked", "chunked ,", "chunked;q=1"]);
            fields.push((rng.random_case("transfer-encoding"), value.as_bytes().to_vec()));
            BodyFraming::Chunked
        }
    };

    for _ in 0..rng.pick(&[0, 0, 1, 1, 2, 3]) {
        let value = match rng.below(3) {
            0 => format!("{}.{}.{}.{}", rng.byte(), rng.byte(), rng.byte(), rng.byte()).into_bytes(),
            1 => format!("{}.{}.{}.{}, 2001:db8::{:x}", rng.byte(), rng.byte(), rng.byte(), rng.byte(), rng.byte())
                .into_bytes(),
            _ => field_value(rng, 30),
        };
        fields.push((rng.random_case("x-forwarded-for"), value));
    }

    // Hop-by-hop fields and the proxy's own, which must not reach the backend. Never `Upgrade`
    // or `Connection: upgrade`, whose handling is changing.
    if rng.one_in(3) {
        let mut tokens: Vec<Vec<u8>> = Vec::new();
        for _ in 0..rng.range(1, 4) {
            let named = match rng.below(8) {
                0 => b"close".to_vec(),
                1 => b"keep-alive".to_vec(),
                2 | 3 if !extra_names.is_empty() => extra_names[rng.below(extra_names.len())].clone(),
                4 => {
                    let name = rng.pick(&NEVER_NOMINATED);
                    rng.random_case(name)
                }
                5 => {
                    let name = rng.pick(&SET_BY_PROXY);
                    rng.random_case(name)
                }
                6 => rng.random_case("x-forwarded-for"),
                _ => rng.random_case("te"),
            };
            tokens.push(named);
        }
        let separator: &[u8] = rng.pick(&[b", ".as_slice(), b",", b" , "]);
        fields.push((rng.random_case("connection"), tokens.join(separator)));
    }
    let extras: [(&str, &str); 6] = [
        ("keep-alive", "timeout=5, max=100"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
        ("trailer", "X-Checksum"),
        ("x-real-ip", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
    ];
    for (name, value) in extras {
        if rng.one_in(6) {
            fields.push((rng.random_case(name), value.as_bytes().to_vec()));
        }
    }
    rng.shuffle(&mut fields);

    let mut head = format!("{method} {target} HTTP/1.{minor_version}\r\n").into_bytes();
    for (name, value) in &fields {
        head.extend_from_slice(name);
        head.extend_from_slice(rng.pick(&[b": ".as_slice(), b":", b":  ", b":\t"]));
        head.extend_from_slice(value);
        if rng.one_in(8) {
            head.push(rng.pick(b" \t"));
        }
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    GeneratedRequest { head, method, target, minor_version, fields, framing }
}

fn client_ip(rng: &mut Rng) -> IpAddr {
    if rng.one_in(3) {
        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, rng.byte() as u16, rng.next_u64() as u16])
    } else {
        IpAddr::from([10, rng.byte(), rng.byte(), rng.byte()])
    }
}

fn is_named(name: &[u8], names: &[&str]) -> bool {
    names.iter().any(|candidate| name.eq_ignore_ascii_case(candidate.as_bytes()))
}

/// The fields a backend should receive for `head` from a client at `ip`, independently of the
/// rewriter: end-to-end fields in order, the framing stated once where it first was, the client
/// appended to the last `X-Forwarded-For` (or a new one), then the proxy's own fields.
fn expected_backend_fields(head: &RequestHead, ip: IpAddr) -> FieldList {
    let nominated: Vec<Vec<u8>> = head
        .fields
        .values("connection")
        .flat_map(|value| value.split(|&byte| byte == b','))
        .map(|item| item.trim_ascii().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect();
    let forwarded = |name: &[u8]| {
        !is_named(name, &HOP_BY_HOP)
            && !is_named(name, &SET_BY_PROXY)
            && (is_named(name, &NEVER_NOMINATED) || !nominated.contains(&name.to_ascii_lowercase()))
    };
    let forwarded_for =
        head.fields.iter().filter(|(name, _)| forwarded(name) && name.eq_ignore_ascii_case(b"x-forwarded-for")).count();
    let mut expected = FieldList::new();
    let mut forwarded_for_seen = 0;
    let mut framing_stated = false;
    for (name, value) in head.fields.iter().filter(|(name, _)| forwarded(name)) {
        if is_named(name, &["content-length", "transfer-encoding"]) {
            if !framing_stated {
                framing_stated = true;
                match head.framing {
                    BodyFraming::Length(length) => expected.push((name.to_vec(), length.to_string().into_bytes())),
                    BodyFraming::Chunked => expected.push((name.to_vec(), b"chunked".to_vec())),
                    BodyFraming::Empty | BodyFraming::UntilClose => {}
                }
            }
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            forwarded_for_seen += 1;
            let mut value = value.to_vec();
            if forwarded_for_seen == forwarded_for {
                value.extend_from_slice(format!(", {ip}").as_bytes());
            }
            expected.push((name.to_vec(), value));
        } else {
            expected.push((name.to_vec(), value.to_vec()));
        }
    }
    if forwarded_for == 0 {
        expected.push((b"X-Forwarded-For".to_vec(), ip.to_string().into_bytes()));
    }
    expected.push((b"X-Real-IP".to_vec(), ip.to_string().into_bytes()));
    expected.push((b"X-Forwarded-Proto".to_vec(), b"http".to_vec()));
    if head.minor_version == 0 {
        expected.push((b"Connection".to_vec(), b"keep-alive".to_vec()));
    }
    expected
}

fn show_fields(fields: &FieldList) -> String {
    fields.iter().map(|(name, value)| format!("\n    {}: {}", name.escape_ascii(), value.escape_ascii())).collect()
}

/// Rewrites `head` for a backend and parses the result back: returns the output and its parse.
fn forward(head: &RequestHead, ip: IpAddr, case: Case) -> (Vec<u8>, RequestHead) {
    let mut out = Vec::new();
    request_for_backend(head, ip, &RouteRewrite::NONE, &mut out);
    let parsed = parse_request(&out, &GENEROUS);
    let Ok(Some((again, used))) = parsed else {
        panic!("{case}: rewritten head does not parse back: {parsed:?}\nrewritten: {}", show(&out));
    };
    assert_eq!(used, out.len(), "{case}: rewritten head is not one complete head: {}", show(&out));
    assert_eq!(
        (again.method.as_str(), again.target.as_str(), again.minor_version, again.framing),
        (head.method.as_str(), head.target.as_str(), head.minor_version, head.framing),
        "{case}: request line or framing changed: {}",
        show(&out)
    );
    (out, again)
}

/// The round trip for any head the parser accepted: the rewritten head parses back to the same
/// message, and rewriting it again only appends the client to `X-Forwarded-For`.
fn check_forwarding(head: &RequestHead, ip: IpAddr, case: Case) {
    let (out, again) = forward(head, ip, case);
    let expected = expected_backend_fields(head, ip);
    let got = fields_of(&again);
    assert!(
        got == expected,
        "{case}: fields sent to the backend differ\nexpected:{}\ngot:{}\noriginal:{}",
        show_fields(&expected),
        show_fields(&got),
        show_fields(&fields_of(head))
    );

    let (out_twice, twice) = forward(&again, ip, case);
    let mut expected_twice = got.clone();
    let last = expected_twice
        .iter_mut()
        .rev()
        .find(|(name, _)| name.eq_ignore_ascii_case(b"x-forwarded-for"))
        .expect("an X-Forwarded-For was sent");
    last.1.extend_from_slice(format!(", {ip}").as_bytes());
    let got_twice = fields_of(&twice);
    assert!(
        got_twice == expected_twice,
        "{case}: rewriting a rewritten head is not idempotent apart from X-Forwarded-For\nexpected:{}\ngot:{}",
        show_fields(&expected_twice),
        show_fields(&got_twice)
    );
    assert_eq!(out_twice.len(), out.len() + format!(", {ip}").len(), "{case}: {}", show(&out_twice));
}

/// Parses `input` and checks that the answer is consistent with the input and the limits;
/// returns an accepted head. Every accepted head is also checked through [`check_forwarding`].
fn check_parse(input: &[u8], limits: &HeadLimits, case: Case, rng: &mut Rng) -> Option<(RequestHead, usize)> {
    match parse_request(input, limits) {
        Ok(Some((head, used))) => {
            assert!(used > 0 && used <= input.len(), "{case}: used {used} of {}", show(input));
            assert!(used <= limits.max_bytes, "{case}: head of {used} bytes over {limits:?}");
            assert!(head.target.len() <= limits.max_target_bytes, "{case}: target over {limits:?}");
            assert!(head.fields.iter().count() <= limits.max_fields, "{case}: too many fields for {limits:?}");
            assert!(head.minor_version <= 1, "{case}: HTTP/1.{}", head.minor_version);
            assert!(!head.method.is_empty() && !head.target.is_empty(), "{case}: {head:?}");
            let hosts = head.fields.values("host").count();
            assert!(hosts <= 1 && (hosts == 1 || head.minor_version == 0), "{case}: {hosts} Host fields accepted");
            let has_length = head.fields.get("content-length").is_some();
            let has_coding = head.fields.get("transfer-encoding").is_some();
            assert!(!(has_length && has_coding), "{case}: both Content-Length and Transfer-Encoding accepted");
            assert_ne!(head.framing, BodyFraming::UntilClose, "{case}: a request cannot be read until close");
            if head.framing == BodyFraming::Chunked {
                assert_eq!(head.minor_version, 1, "{case}: chunked HTTP/1.0 request accepted");
            }
            // The head alone is complete and parses the same.
            let alone = parse_request(&input[..used], limits);
            let Ok(Some((same, same_used))) = alone else {
                panic!("{case}: the head's own {used} bytes give {alone:?}: {}", show(input));
            };
            assert_eq!(same_used, used, "{case}");
            assert!(
                fields_of(&same) == fields_of(&head) && same.framing == head.framing && same.target == head.target,
                "{case}: the head parses differently on its own"
            );
            check_forwarding(&head, client_ip(rng), case);
            Some((head, used))
        }
        Ok(None) => {
            assert!(input.len() < limits.max_bytes, "{case}: {} bytes still incomplete over {limits:?}", input.len());
            assert!(
                input.contains(&b'\n') || input.len() <= limits.max_target_bytes + 64,
                "{case}: a request line of {} bytes without its end is not refused",
                input.len()
            );
            None
        }
        Err(error) => {
            assert!(matches!(error.status(), 400 | 414 | 431 | 501), "{case}: {error:?} has status {}", error.status());
            assert!(!error.reason().is_empty(), "{case}: {error:?} has no reason");
            None
        }
    }
}

fn random_limits(rng: &mut Rng) -> HeadLimits {
    if rng.one_in(4) {
        HeadLimits { max_bytes: rng.range(1, 3000), max_target_bytes: rng.range(0, 300), max_fields: rng.range(0, 30) }
    } else {
        HeadLimits::default()
    }
}

#[test]
fn parser_survives_random_bytes() {
    run_cases("parser_survives_random_bytes", 0x5EED_0001, 20_000, |case, rng| {
        let length = rng.size(2000);
        let input = match case.index % 3 {
            0 => rng.bytes(length),
            // Mostly the bytes of a request head, to get past the request line now and then.
            1 => rng.bytes_from(b"GET / HTTP/1.1\r\nHost: a\r\nX-Y: z\t\r\n:", length),
            _ => {
                let mut input = b"GET / HTTP/1.1\r\n".to_vec();
                let rest = rng.bytes_from(b"abcHOST-:;, \t\r\n\r\n0123456789\x80\x00", length);
                input.extend_from_slice(&rest);
                input
            }
        };
        let limits = random_limits(rng);
        check_parse(&input, &limits, case, rng);
    });
}

#[test]
fn parser_survives_mutated_heads() {
    const CASES: u64 = 15_000;
    static ACCEPTED: AtomicU64 = AtomicU64::new(0);
    run_cases("parser_survives_mutated_heads", 0x5EED_0002, CASES, |case, rng| {
        let request = generate_request(rng);
        let mut input = request.head;
        if rng.one_in(2) {
            let length = rng.size(100);
            let body = rng.bytes(length);
            input.extend_from_slice(&body);
        }
        mutate(rng, &mut input);
        let limits = random_limits(rng);
        if check_parse(&input, &limits, case, rng).is_some() {
            ACCEPTED.fetch_add(1, Ordering::Relaxed);
        }
    });
    // Mutants that still parse are rewritten and parsed back too (see `check_parse`).
    assert_covered("parser_survives_mutated_heads", "still parsed", &ACCEPTED, CASES, 10);
}

/// Heads with a very long target, a very long value, very many fields, or a line that never
/// ends, around each limit: refused with the documented status, never read past.
#[test]
fn parser_enforces_its_limits_on_long_lines() {
    run_cases("parser_enforces_its_limits_on_long_lines", 0x5EED_0003, 400, |case, rng| {
        let limits = if rng.one_in(2) {
            HeadLimits::default()
        } else {
            let max_bytes = rng.range(1024, 70_000);
            HeadLimits { max_bytes, max_target_bytes: rng.range(16, max_bytes), max_fields: rng.range(1, 256) }
        };
        let near = |rng: &mut Rng, limit: usize| limit.saturating_sub(40) + rng.below(80);
        let (input, expected): (Vec<u8>, Result<bool, u16>) = match rng.below(4) {
            0 => {
                let target_length = near(rng, limits.max_target_bytes).max(1);
                let target = [b"/".as_slice(), &rng.bytes_from(ALNUM, target_length - 1)].concat();
                let input = [b"GET ".as_slice(), &target, b" HTTP/1.1\r\nHost: a\r\n\r\n"].concat();
                let expected = if target_length > limits.max_target_bytes {
                    Err(414)
                } else if input.len() > limits.max_bytes {
                    Err(431)
                } else {
                    Ok(true)
                };
                (input, expected)
            }
            1 => {
                let prefix = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ";
                let value_length = near(rng, limits.max_bytes.saturating_sub(prefix.len() + 4)).max(1);
                let value = rng.bytes_from(ALNUM, value_length);
                let input = [prefix.as_slice(), &value, b"\r\n\r\n"].concat();
                let too_large = limits.max_fields < 2 || input.len() > limits.max_bytes;
                let expected = if too_large { Err(431) } else { Ok(true) };
                (input, expected)
            }
            2 => {
                let count = near(rng, limits.max_fields).max(1);
                let mut input = b"GET / HTTP/1.1\r\n".to_vec();
                for index in 0..count {
                    let name = if index == 0 { "Host".to_string() } else { format!("X-{index}") };
                    input.extend_from_slice(format!("{name}: v\r\n").as_bytes());
                }
                input.extend_from_slice(b"\r\n");
                let expected =
                    if count > limits.max_fields || input.len() > limits.max_bytes { Err(431) } else { Ok(true) };
                (input, expected)
            }
            _ => {
                // A request line that never ends: refused once it cannot fit, never buffered beyond.
                let length = near(rng, limits.max_target_bytes + 64).max(5);
                let input = [b"GET /".as_slice(), &rng.bytes_from(ALNUM, length - 5)].concat();
                let expected = if length > limits.max_target_bytes + 64 {
                    Err(414)
                } else if length >= limits.max_bytes {
                    Err(431)
                } else {
                    Ok(false)
                };
                (input, expected)
            }
        };
        let got = match parse_request(&input, &limits) {
            Ok(parsed) => Ok(parsed.is_some()),
            Err(error) => Err(error.status()),
        };
        assert_eq!(got, expected, "{case}: {limits:?} {}", show(&input));
        check_parse(&input, &limits, case, rng);
    });
}

#[test]
fn response_parser_survives_garbage_and_mutations() {
    run_cases("response_parser_survives_garbage_and_mutations", 0x5EED_0004, 10_000, |case, rng| {
        let mut input = if rng.one_in(3) {
            let length = rng.size(1500);
            rng.bytes(length)
        } else {
            let status = rng.pick(&[100, 101, 200, 204, 206, 301, 304, 404, 500, 503]);
            let mut head =
                format!("HTTP/1.{} {status} {}\r\n", rng.below(2), if rng.one_in(2) { "OK" } else { "" }).into_bytes();
            for _ in 0..rng.range(0, 10) {
                let (name, value) = match rng.below(4) {
                    0 => (rng.random_case("content-length"), rng.below(1000).to_string().into_bytes()),
                    1 => (rng.random_case("transfer-encoding"), b"chunked".to_vec()),
                    2 => (rng.random_case("connection"), b"close".to_vec()),
                    _ => (token(rng, 12), field_value(rng, 40)),
                };
                head.extend_from_slice(&[name.as_slice(), b": ", &value, b"\r\n"].concat());
            }
            head.extend_from_slice(b"\r\n");
            mutate(rng, &mut head);
            head
        };
        if rng.one_in(4) {
            input.truncate(rng.below(input.len() + 1));
        }
        let request_is_head = rng.one_in(4);
        match parse_response(&input, request_is_head) {
            Ok(Some((head, used))) => {
                assert!(used > 0 && used <= input.len(), "{case}: used {used} of {}", show(&input));
                assert!(head.status <= 999 && head.minor_version <= 1, "{case}: {head:?}");
                assert!(input.starts_with(&head.status_line), "{case}: status line not from the input");
                assert!(!head.status_line.contains(&b'\n') && !head.status_line.contains(&b'\r'), "{case}");
                if request_is_head || head.is_informational() || head.status == 204 || head.status == 304 {
                    assert_eq!(head.framing, BodyFraming::Empty, "{case}: {}", show(&input));
                }
            }
            Ok(None) => assert!(input.len() < INBOUND_CAPACITY, "{case}: {} bytes still incomplete", input.len()),
            Err(error) => assert!(!error.0.is_empty(), "{case}"),
        }
    });
}

/// Generated valid requests: parsed exactly as generated, every strict prefix incomplete, and
/// the rewritten head parses back to the same message (see [`check_forwarding`]).
#[test]
fn rewritten_requests_parse_back_to_the_same_message() {
    run_cases("rewritten_requests_parse_back_to_the_same_message", 0x5EED_0005, 10_000, |case, rng| {
        let request = generate_request(rng);
        let length = rng.size(64);
        let body = rng.bytes(length);
        let input = [request.head.as_slice(), &body].concat();
        let limits = HeadLimits::default();
        let parsed = parse_request(&input, &limits);
        let Ok(Some((head, used))) = parsed else {
            panic!("{case}: a valid request gives {parsed:?}: {}", show(&input));
        };
        assert_eq!(used, request.head.len(), "{case}: head length: {}", show(&input));
        assert_eq!(
            (head.method.as_str(), head.target.as_str(), head.minor_version, head.framing),
            (request.method.as_str(), request.target.as_str(), request.minor_version, request.framing),
            "{case}: {}",
            show(&input)
        );
        let fields = fields_of(&head);
        assert!(
            fields == request.fields,
            "{case}: fields not parsed as sent\nsent:{}\nparsed:{}",
            show_fields(&request.fields),
            show_fields(&fields)
        );
        for cut in [used - 1, rng.below(used), rng.below(used), rng.below(used)] {
            let prefix = parse_request(&input[..cut], &limits);
            assert!(matches!(prefix, Ok(None)), "{case}: the first {cut} bytes give {prefix:?}: {}", show(&input));
        }
        check_forwarding(&head, client_ip(rng), case);
    });
}

// ---------------------------------------------------------------------------------------------
// Chunked bodies
// ---------------------------------------------------------------------------------------------

/// A reader handing out its bytes in random pieces. It records the largest buffer it was offered
/// and refuses to be read again after reporting the end of the stream.
struct Pieces<'a> {
    data: &'a [u8],
    position: usize,
    rng: Rng,
    max_piece: usize,
    largest_buffer: usize,
    ends_reported: usize,
}

impl<'a> Pieces<'a> {
    fn new(data: &'a [u8], rng: &mut Rng) -> Pieces<'a> {
        // Byte-by-byte reads only for small inputs, to keep the time budget.
        let max_piece = if data.len() > 30_000 {
            rng.pick(&[64, 1000, 4096, 100_000])
        } else {
            rng.pick(&[1, 2, 3, 7, 64, 1000, 4096, 100_000])
        };
        Pieces { data, position: 0, rng: Rng::new(rng.next_u64()), max_piece, largest_buffer: 0, ends_reported: 0 }
    }

    fn unread(&self) -> &'a [u8] {
        &self.data[self.position..]
    }
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.largest_buffer = self.largest_buffer.max(buf.len());
        if self.position == self.data.len() {
            self.ends_reported += 1;
            if self.ends_reported > 1 {
                return Err(io::Error::other("read again after the end of the stream"));
            }
            return Ok(0);
        }
        let take = self.rng.range(1, self.max_piece).min(buf.len()).min(self.data.len() - self.position);
        buf[..take].copy_from_slice(&self.data[self.position..self.position + take]);
        self.position += take;
        Ok(take)
    }
}

/// A sink recording what it was given and its largest single write.
#[derive(Default)]
struct Recorder {
    written: Vec<u8>,
    largest_write: usize,
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.largest_write = self.largest_write.max(buf.len());
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One decoding session: an inbound buffer, a piecewise source, an outbound buffer and a sink,
/// with the memory bounds checked after every call.
struct Session<'a> {
    inbound: Inbound,
    capacity: usize,
    source: Pieces<'a>,
    outbound: Outbound,
    sink: Recorder,
    case: Case,
}

impl<'a> Session<'a> {
    fn new(input: &'a [u8], capacity: usize, rng: &mut Rng, case: Case) -> Session<'a> {
        Session {
            inbound: Inbound::with_capacity(capacity),
            capacity,
            source: Pieces::new(input, rng),
            outbound: Outbound::new(),
            sink: Recorder::default(),
            case,
        }
    }

    fn copy_body(&mut self, max_payload: u64) -> Result<u64, CopyError> {
        let result = copy_body(
            BodyFraming::Chunked,
            &mut self.inbound,
            &mut self.source,
            &mut self.outbound,
            &mut self.sink,
            max_payload,
        );
        self.check_bounds(result.is_ok());
        result
    }

    fn copy_prefix(&mut self, budget: u64, max_payload: u64) -> Result<(u64, bool), CopyError> {
        let result = copy_chunked_prefix(
            &mut self.inbound,
            &mut self.source,
            &mut self.outbound,
            &mut self.sink,
            budget,
            max_payload,
        );
        self.check_bounds(result.is_ok());
        result
    }

    /// What the buffers guarantee: the inbound never holds more than its capacity (nor offers
    /// more room to a read); the outbound holds at most its capacity, except that a body's last
    /// piece (at most one inbound buffer) is held whole, and a chunked body always ends with a
    /// small send, so a complete chunked copy leaves at most the outbound capacity pending.
    fn check_bounds(&self, ok: bool) {
        let case = self.case;
        let held_piece_bound = OUTBOUND_CAPACITY.max(self.capacity);
        assert!(self.inbound.buffered().len() <= self.capacity, "{case}: inbound over capacity");
        assert!(self.source.largest_buffer <= self.capacity, "{case}: read into {} bytes", self.source.largest_buffer);
        let pending_bound = if ok { OUTBOUND_CAPACITY } else { held_piece_bound };
        assert!(self.outbound.pending() <= pending_bound, "{case}: {} bytes pending", self.outbound.pending());
        assert!(self.sink.largest_write <= held_piece_bound, "{case}: a write of {} bytes", self.sink.largest_write);
    }

    fn flush(&mut self) {
        self.outbound.flush(&mut self.sink).expect("flush to memory");
    }

    /// Bytes not consumed: still buffered, then never read.
    fn rest(&self) -> Vec<u8> {
        [self.inbound.buffered(), self.source.unread()].concat()
    }
}

/// The canonical chunked encoding of `payload` cut into `sizes`: lowercase hex sizes without
/// leading zeros or extensions, no trailers.
fn canonical(payload: &[u8], sizes: &[usize], terminated: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = 0;
    for &size in sizes {
        out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        out.extend_from_slice(&payload[offset..offset + size]);
        out.extend_from_slice(b"\r\n");
        offset += size;
    }
    if terminated {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    out
}

/// Reads a canonical chunked encoding, strictly. Returns the chunk sizes, the payload and whether
/// the last chunk was reached; a truncated encoding is accepted only if `truncated_ok`.
fn parse_canonical(bytes: &[u8], truncated_ok: bool) -> Result<(Vec<usize>, Vec<u8>, bool), String> {
    let mut sizes = Vec::new();
    let mut payload = Vec::new();
    let mut at = 0;
    loop {
        if at == bytes.len() && truncated_ok {
            return Ok((sizes, payload, false));
        }
        let Some(line_end) = bytes[at..].windows(2).position(|pair| pair == b"\r\n") else {
            let rest = &bytes[at..];
            let partial_line = rest.iter().all(|byte| b"0123456789abcdef\r".contains(byte));
            return if truncated_ok && partial_line {
                Ok((sizes, payload, false))
            } else {
                Err(format!("no size line at {at}"))
            };
        };
        let digits = &bytes[at..at + line_end];
        let canonical_digits = !digits.is_empty()
            && digits.iter().all(|byte| b"0123456789abcdef".contains(byte))
            && (digits == b"0" || digits[0] != b'0');
        if !canonical_digits {
            return Err(format!("size line {} at {at} is not canonical", digits.escape_ascii()));
        }
        let size =
            usize::from_str_radix(std::str::from_utf8(digits).unwrap(), 16).map_err(|error| error.to_string())?;
        at += line_end + 2;
        if size == 0 {
            let end = &bytes[at..];
            return if end == b"\r\n" {
                Ok((sizes, payload, true))
            } else if truncated_ok && b"\r\n".starts_with(end) {
                Ok((sizes, payload, false))
            } else {
                Err(format!("last chunk followed by {}", end.escape_ascii()))
            };
        }
        let available = bytes.len() - at;
        if available < size.saturating_add(2) {
            let data_and_end = &bytes[at..];
            let partial_end = data_and_end.len() <= size || b"\r\n".starts_with(&data_and_end[size..]);
            return if truncated_ok && partial_end {
                payload.extend_from_slice(&data_and_end[..size.min(data_and_end.len())]);
                Ok((sizes, payload, false))
            } else {
                Err(format!("chunk of {size} truncated at {at}"))
            };
        }
        if &bytes[at + size..at + size + 2] != b"\r\n" {
            return Err(format!("chunk of {size} at {at} not followed by CRLF"));
        }
        payload.extend_from_slice(&bytes[at..at + size]);
        sizes.push(size);
        at += size + 2;
    }
}

/// Random chunk sizes (each at least 1) adding up to `total`.
fn split_sizes(rng: &mut Rng, total: usize) -> Vec<usize> {
    // At most about 1,000 chunks, to keep the case count high within the time budget.
    let max_chunk = rng.pick(&[1, 3, 16, 300, 5000, 20_000, 70_000, 200_000]).max(total / 500);
    let mut sizes = Vec::new();
    let mut left = total;
    while left > 0 {
        let size = rng.range(1, max_chunk.min(left));
        sizes.push(size);
        left -= size;
    }
    sizes
}

fn chunk_extensions(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.one_in(2) {
        return out;
    }
    if rng.one_in(4) {
        out.extend_from_slice(rng.pick(&[b" ".as_slice(), b"\t", b"  \t"]));
    }
    for _ in 0..rng.range(1, 3) {
        out.push(b';');
        out.extend_from_slice(&token(rng, 10));
        match rng.below(3) {
            0 => {}
            1 => {
                out.push(b'=');
                out.extend_from_slice(&token(rng, 10));
            }
            _ => {
                out.extend_from_slice(b"=\"");
                out.extend_from_slice(
                    &field_value(rng, 20).iter().map(|&b| if b == b'"' { b'\'' } else { b }).collect::<Vec<_>>(),
                );
                out.extend_from_slice(b" \\\" q\"");
            }
        }
    }
    out
}

/// A hex size line's digits in random case, sometimes with leading zeros (16 digits at most).
fn size_digits(rng: &mut Rng, size: usize) -> Vec<u8> {
    let digits = format!("{size:x}");
    let zeros = if rng.one_in(5) { rng.range(0, 16 - digits.len()) } else { 0 };
    let mut out = vec![b'0'; zeros];
    out.extend_from_slice(&rng.random_case(&digits));
    out
}

/// A valid, non-canonical chunked encoding of `payload` cut into `sizes`.
fn encode_chunked(rng: &mut Rng, payload: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = 0;
    for &size in sizes {
        out.extend_from_slice(&size_digits(rng, size));
        out.extend_from_slice(&chunk_extensions(rng));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&payload[offset..offset + size]);
        out.extend_from_slice(b"\r\n");
        offset += size;
    }
    out.extend_from_slice(&size_digits(rng, 0));
    out.extend_from_slice(&chunk_extensions(rng));
    out.extend_from_slice(b"\r\n");
    for _ in 0..rng.pick(&[0, 0, 1, 2, 5]) {
        out.extend_from_slice(&token(rng, 12));
        out.extend_from_slice(rng.pick(&[b": ".as_slice(), b":"]));
        out.extend_from_slice(&field_value(rng, 40));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

struct ChunkedCase {
    payload: Vec<u8>,
    sizes: Vec<usize>,
    body: Vec<u8>,
    trailing: Vec<u8>,
}

fn generate_chunked(rng: &mut Rng, large: bool) -> ChunkedCase {
    let total = if large { rng.range(60_000, 300_000) } else { rng.size(20_000) };
    let payload = rng.bytes(total);
    let sizes = split_sizes(rng, total);
    let body = encode_chunked(rng, &payload, &sizes);
    let trailing = if rng.one_in(2) {
        let length = rng.size(60);
        rng.bytes(length)
    } else {
        b"GET /next HTTP/1.1\r\n".to_vec()
    };
    ChunkedCase { payload, sizes, body, trailing }
}

fn inbound_capacity(rng: &mut Rng) -> usize {
    if rng.one_in(4) { SMALLEST_CLIENT_INBOUND } else { INBOUND_CAPACITY }
}

/// Valid encodings, read in random pieces, come out canonical with the same payload; the
/// canonical form is a fixed point; bytes past the body stay unread; stopping at a budget with
/// `copy_chunked_prefix` and resuming with `copy_body` gives the same output as one `copy_body`.
#[test]
fn chunked_bodies_are_reencoded_canonically() {
    const CASES: u64 = 3_000;
    static STOPPED_AT_BUDGET: AtomicU64 = AtomicU64::new(0);
    run_cases("chunked_bodies_are_reencoded_canonically", 0x5EED_0006, CASES, |case, rng| {
        let ChunkedCase { payload, sizes, body, trailing } = generate_chunked(rng, case.index % 20 == 0);
        let input = [body.as_slice(), &trailing].concat();
        let expected = canonical(&payload, &sizes, true);
        let capacity = inbound_capacity(rng);

        let mut session = Session::new(&input, capacity, rng, case);
        let copied = session.copy_body(u64::MAX);
        assert!(
            matches!(copied, Ok(n) if n == payload.len() as u64),
            "{case}: {copied:?} for {} payload bytes in {}",
            payload.len(),
            show(&body)
        );
        session.flush();
        assert!(
            session.sink.written == expected,
            "{case}: output {}\nexpected {}",
            show(&session.sink.written),
            show(&expected)
        );
        assert_eq!(session.rest(), trailing, "{case}: bytes after the body were not left alone");
        assert_eq!(session.source.ends_reported, 0, "{case}: read to the end of the stream for a complete body");

        // The canonical form decodes to itself.
        let mut again = Session::new(&expected, capacity, rng, case);
        let copied = again.copy_body(u64::MAX);
        assert!(matches!(copied, Ok(n) if n == payload.len() as u64), "{case}: {copied:?} re-decoding");
        again.flush();
        assert!(again.sink.written == expected, "{case}: canonical output is not a fixed point");
        assert!(again.rest().is_empty(), "{case}");
        let (parsed_sizes, parsed_payload, complete) = parse_canonical(&expected, false).expect("canonical");
        assert!(complete && parsed_sizes == sizes && parsed_payload == payload, "{case}: reference decoder disagrees");

        // A prefix within a budget, then the rest.
        let total = payload.len() as u64;
        let budget = match rng.below(3) {
            0 => sizes.iter().take(rng.below(sizes.len() + 1)).sum::<usize>() as u64,
            1 => rng.below(payload.len() + 2) as u64,
            _ => total + rng.below(3) as u64,
        };
        let mut fitting = 0u64;
        for &size in &sizes {
            if fitting + size as u64 > budget {
                break;
            }
            fitting += size as u64;
        }
        let mut split = Session::new(&input, capacity, rng, case);
        let prefix = split.copy_prefix(budget, u64::MAX);
        assert!(
            matches!(prefix, Ok((copied, done)) if copied == fitting && done == (total <= budget)),
            "{case}: prefix with budget {budget} gave {prefix:?}, expected ({fitting}, {})",
            total <= budget
        );
        if let Ok((_, false)) = prefix {
            STOPPED_AT_BUDGET.fetch_add(1, Ordering::Relaxed);
            split.flush();
            let rest = split.copy_body(u64::MAX);
            assert!(matches!(rest, Ok(n) if n == total - fitting), "{case}: rest gave {rest:?}");
        }
        split.flush();
        assert!(split.sink.written == expected, "{case}: prefix + rest differs: {}", show(&split.sink.written));
        assert_eq!(split.rest(), trailing, "{case}");
    });
    let property = "chunked_bodies_are_reencoded_canonically";
    assert_covered(property, "stopped at the budget and resumed", &STOPPED_AT_BUDGET, CASES, 20);
}

/// Garbage of the kinds that break chunked decoders.
fn chunked_garbage(rng: &mut Rng, kind: usize) -> Vec<u8> {
    match kind {
        0 => {
            let length = rng.size(2000);
            rng.bytes(length)
        }
        1 => {
            let length = rng.size(2000);
            rng.bytes_from(b"0123456789abcdefABCDEF;=\" \t\r\n:xX-", length)
        }
        2 | 3 => {
            let mut body = generate_chunked(rng, false).body;
            mutate(rng, &mut body);
            if kind == 3 {
                mutate(rng, &mut body);
            }
            body
        }
        4 => {
            // Huge sizes, with some data behind them.
            let digits = rng.pick(&[
                "ffffffffffffffff",
                "FFFFFFFFFFFFFFFF",
                "10000000000000000",
                "7fffffffffffffff",
                "8000000000000000",
            ]);
            let length = rng.size(3000);
            let data = rng.bytes(length);
            [digits.as_bytes(), b"\r\n", &data, b"\r\n0\r\n\r\n"].concat()
        }
        5 => {
            // Random hex sizes of 1 to 20 digits; the data is usually too short.
            let count = rng.range(1, 20);
            let digits = rng.bytes_from(b"0123456789abcdefABCDEF", count);
            let length = rng.size(300);
            let data = rng.bytes(length);
            [digits.as_slice(), b"\r\n", &data, b"\r\n0\r\n\r\n"].concat()
        }
        6 => {
            // Size lines around and far over the limit: digits or extensions.
            let length = if rng.one_in(3) { 10_000 } else { MAX_CHUNK_LINE - 20 + rng.below(40) };
            let line = if rng.one_in(2) {
                rng.bytes_from(b"0", length)
            } else {
                [b"1;".as_slice(), &rng.bytes_from(ALNUM, length.saturating_sub(2))].concat()
            };
            [line.as_slice(), b"\r\nx\r\n0\r\n\r\n"].concat()
        }
        7 => {
            // Trailer sections around and over the limit, sometimes never ending.
            let mut out = b"3\r\nabc\r\n0\r\n".to_vec();
            let spread = if rng.one_in(4) { 6000 } else { 400 };
            let target = MAX_TRAILER_BYTES - 200 + rng.below(spread);
            let mut section = 0;
            while section < target {
                let line_length = rng.range(3, 3000).min(target - section + 2).max(3);
                out.extend_from_slice(b"X:");
                out.extend_from_slice(&rng.bytes_from(ALNUM, line_length - 2));
                out.extend_from_slice(b"\r\n");
                section += line_length + 2;
            }
            if !rng.one_in(4) {
                out.extend_from_slice(b"\r\n");
            }
            out
        }
        _ => {
            // A valid body with bare CRs and LFs sprinkled in.
            let mut body = generate_chunked(rng, false).body;
            for _ in 0..rng.range(1, 3) {
                let at = rng.below(body.len() + 1);
                body.insert(at, rng.pick(b"\r\n"));
            }
            body
        }
    }
}

/// Garbage never panics, never reads after the end of the stream, never holds more than the
/// buffers allow; what it returns is either an error, with a canonical prefix passed on, or the
/// payload length of a canonical body passed on.
#[test]
fn chunked_decoder_survives_garbage() {
    const CASES: u64 = 12_000;
    static ACCEPTED: AtomicU64 = AtomicU64::new(0);
    static MALFORMED: AtomicU64 = AtomicU64::new(0);
    static CLOSED: AtomicU64 = AtomicU64::new(0);
    run_cases("chunked_decoder_survives_garbage", 0x5EED_0007, CASES, |case, rng| {
        let kind = case.index as usize % 9;
        let input = chunked_garbage(rng, kind);
        let capacity = inbound_capacity(rng);
        let mut session = Session::new(&input, capacity, rng, case);
        let result = if rng.one_in(4) {
            let budget = rng.below(5000) as u64;
            match session.copy_prefix(budget, u64::MAX) {
                Ok((first, false)) => {
                    session.flush();
                    session.copy_body(u64::MAX).map(|rest| first + rest)
                }
                other => other.map(|(copied, _)| copied),
            }
        } else {
            session.copy_body(u64::MAX)
        };
        session.flush();
        let output = &session.sink.written;
        assert!(!matches!(result, Err(CopyError::Source(_))), "{case}: {result:?} for {}", show(&input));
        assert!(!matches!(result, Err(CopyError::Sink(_) | CopyError::TooLarge)), "{case}: {result:?}");
        let rest = session.rest();
        assert!(input.ends_with(&rest), "{case}: the unread bytes are not the end of the input");
        let outcome = match result {
            Ok(_) => &ACCEPTED,
            Err(CopyError::Malformed(_)) => &MALFORMED,
            Err(_) => &CLOSED,
        };
        outcome.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(copied) => {
                let decoded = parse_canonical(output, false);
                let summary =
                    decoded.as_ref().map(|(sizes, payload, complete)| (sizes.len(), payload.len(), *complete));
                assert!(
                    matches!(summary, Ok((_, length, true)) if length as u64 == copied),
                    "{case}: accepted {copied} bytes but passed on (chunks, bytes, complete) {summary:?}: {}\ninput {}",
                    show(output),
                    show(&input)
                );
                let mut again = Session::new(output, INBOUND_CAPACITY, rng, case);
                let recopied = again.copy_body(u64::MAX);
                again.flush();
                assert!(
                    matches!(recopied, Ok(n) if n == copied) && again.sink.written == *output,
                    "{case}: accepted output is not a fixed point"
                );
            }
            Err(_) => {
                let summary = parse_canonical(output, true)
                    .map(|(sizes, payload, complete)| (sizes.len(), payload.len(), complete));
                assert!(
                    matches!(summary, Ok((_, _, false))),
                    "{case}: {result:?} after passing on (chunks, bytes, complete) {summary:?}: {}\ninput {}",
                    show(output),
                    show(&input)
                );
            }
        }
    });
    let property = "chunked_decoder_survives_garbage";
    assert_covered(property, "accepted", &ACCEPTED, CASES, 2);
    assert_covered(property, "refused as malformed", &MALFORMED, CASES, 20);
    assert_covered(property, "ran out of input", &CLOSED, CASES, 2);
}

/// A chunked body over `max_payload` is refused as soon as a chunk would cross the limit; only
/// the whole chunks before it are passed on. A body within the limit passes whole.
#[test]
fn chunked_bodies_over_max_payload_are_refused() {
    const CASES: u64 = 3_000;
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    run_cases("chunked_bodies_over_max_payload_are_refused", 0x5EED_0008, CASES, |case, rng| {
        let ChunkedCase { payload, sizes, body, trailing } = generate_chunked(rng, case.index % 25 == 0);
        let input = [body.as_slice(), &trailing].concat();
        let total = payload.len() as u64;
        let max_payload = match rng.below(4) {
            0 => sizes.iter().take(rng.below(sizes.len() + 1)).sum::<usize>() as u64,
            1 => total.saturating_sub(1),
            2 => total + rng.below(2) as u64,
            _ => rng.below(payload.len() + 1) as u64,
        };
        let mut session = Session::new(&input, inbound_capacity(rng), rng, case);
        let result = session.copy_body(max_payload);
        session.flush();
        let (passed_sizes, passed, complete) =
            parse_canonical(&session.sink.written, true).unwrap_or_else(|error| panic!("{case}: {error}"));
        assert!(
            passed.len() as u64 <= max_payload,
            "{case}: {} payload bytes passed with max_payload {max_payload}",
            passed.len()
        );
        if total <= max_payload {
            assert!(matches!(result, Ok(n) if n == total), "{case}: {result:?} within the limit");
            assert!(complete && passed == payload, "{case}");
            assert_eq!(session.rest(), trailing, "{case}");
        } else {
            assert!(matches!(result, Err(CopyError::TooLarge)), "{case}: {result:?} for {total} > {max_payload}");
            REFUSED.fetch_add(1, Ordering::Relaxed);
            let mut fitting = 0;
            let mut sum = 0u64;
            while fitting < sizes.len() && sum + sizes[fitting] as u64 <= max_payload {
                sum += sizes[fitting] as u64;
                fitting += 1;
            }
            assert!(!complete, "{case}: the last chunk was passed on");
            assert_eq!(passed_sizes, sizes[..fitting], "{case}: chunks passed before refusing");
            assert_eq!(passed, payload[..passed.len()], "{case}");
        }
    });
    assert_covered("chunked_bodies_over_max_payload_are_refused", "refused", &REFUSED, CASES, 30);
}

// ---------------------------------------------------------------------------------------------
// Bugs these properties found, each kept as its smallest reproduction.
// ---------------------------------------------------------------------------------------------

/// `Connection` may nominate `X-Forwarded-For`, and the client's copies are then dropped as
/// hop-by-hop; but the load balancer must still tell the backend who the client is. (Once, no
/// `X-Forwarded-For` was sent at all: the dropped fields were counted as present.)
#[test]
fn x_forwarded_for_nominated_by_connection_still_names_the_client() {
    let input = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Forwarded-For\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n";
    let (head, _) = parse_request(input, &HeadLimits::default()).unwrap().unwrap();
    let mut out = Vec::new();
    request_for_backend(&head, IpAddr::from([10, 1, 2, 3]), &RouteRewrite::NONE, &mut out);
    let (sent, _) = parse_request(&out, &GENEROUS).unwrap().unwrap();
    let last = sent.fields.values("x-forwarded-for").last().map(|value| value.to_vec());
    assert!(
        last.as_ref().is_some_and(|value| value.ends_with(b"10.1.2.3")),
        "the backend gets no X-Forwarded-For ending in the client address; it got {last:?} in:\n{}",
        String::from_utf8_lossy(&out)
    );
}

/// A trailer section whose last line ends exactly at `MAX_TRAILER_BYTES` (or one byte before)
/// leaves the running total past the limit. (Once, the next `MAX_TRAILER_BYTES - trailer_bytes`
/// underflowed: a panic in debug builds, an unlimited budget in release.)
#[test]
fn a_trailer_section_ending_at_the_limit_is_still_bounded() {
    // One trailer line of exactly MAX_TRAILER_BYTES bytes, then more trailers than allowed.
    let line = [b"X:".as_slice(), &vec![b'a'; MAX_TRAILER_BYTES - 2]].concat();
    let input = [b"0\r\n".as_slice(), &line, b"\r\n", &b"Y: b\r\n".repeat(4096), b"\r\n"].concat();
    let result = panic::catch_unwind(|| {
        let mut outbound = Outbound::new();
        let mut output = Vec::new();
        copy_body(BodyFraming::Chunked, &mut Inbound::new(), &input[..], &mut outbound, &mut output, u64::MAX)
            .map_err(|error| error.to_string())
    });
    match result {
        Ok(Err(error)) => assert!(error.contains("trailer section too large"), "{error}"),
        Ok(Ok(copied)) => panic!("{} trailer bytes accepted (copied {copied})", input.len() - 3),
        Err(payload) => panic!("the decoder panicked: {}", panic_message(&*payload)),
    }
}
