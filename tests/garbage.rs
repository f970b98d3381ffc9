//! A garbage barrage: random bytes, truncated heads, huge heads and request lines, control bytes,
//! broken chunked bodies, bodies cut short, junk pipelined behind a good request, and connections
//! opened and dropped or reset by the hundred, from several threads at once. Every case whose
//! answer is documented gets exactly that answer; afterwards the load balancer has not panicked,
//! still runs, still serves a normal request, holds nothing open and stays small.
//!
//! Deterministic: each thread draws its cases from a xorshift generator with a fixed seed, so a
//! failure names the seed and the connection that reproduce it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    EchoBackend, LoadBalancer, config, fd_count, lowest_over, process_running, thread_count, wait_for_rest, wait_until,
};

/// Threads sending one case per connection, and how many connections each makes.
const BARRAGE_THREADS: usize = 8;
const CONNECTIONS_PER_THREAD: usize = 40;
/// Threads opening batches of connections at once and dropping (or resetting) them.
const FLOOD_THREADS: usize = 4;
const FLOOD_BATCHES: usize = 12;
const FLOOD_BATCH_MAX: usize = 32;
/// Seed of barrage thread `t` is `SEED + t`, of flood thread `f` is `SEED + 1000 + f`.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// `headerReadTimeout`, `idleTimeout` and `bodyReadTimeout` for this load balancer.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a case waits for the load balancer to answer and close: the client timeout above
/// plus ample slack for a loaded machine.
const ANSWER_LIMIT: Duration = Duration::from_secs(5);

/// Bound on the load balancer's peak resident memory (VmHWM), debug build. Measured at
/// 8.9–9.4 MiB over six runs: its 64 workers whose 80 KiB inbound buffers fill with garbage (5 MiB),
/// the occasional pair thread and the allocator's arenas. 48 MiB leaves room for a slower
/// machine, while a buffer kept per connection (hundreds of them, many near 100 KiB) would show.
const PEAK_RSS_BOUND_KIB: u64 = 48 * 1024;

/// xorshift64*: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    /// Seeds through one splitmix64 step, so neighbouring seeds give unrelated streams.
    fn new(seed: u64) -> Rng {
        let mut mixed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((mixed ^ (mixed >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..bound` (bound > 0; the modulo bias does not matter here).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }

    fn bytes(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.next() as u8).collect()
    }

    /// `low..=high` letters and digits, as in a valid field value or path.
    fn alphanumeric(&mut self, low: usize, high: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let count = self.between(low, high);
        (0..count).map(|_| ALPHABET[self.below(ALPHABET.len())] as char).collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// How reading until the end of a connection stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The load balancer closed the connection.
    Closed,
    /// It reset the connection (it closed with bytes of ours unread).
    Reset,
    /// Nothing ended it within [`ANSWER_LIMIT`].
    StillOpen,
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, ANSWER_LIMIT).unwrap();
    stream.set_write_timeout(Some(ANSWER_LIMIT)).unwrap();
    stream
}

/// Writes `bytes`, ignoring failure: the load balancer may refuse and close while they still flow.
fn send(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}

/// Reads everything until the load balancer ends the connection or [`ANSWER_LIMIT`] passes.
fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, Ending) {
    let deadline = Instant::now() + ANSWER_LIMIT;
    let mut received = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (received, Ending::StillOpen);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return (received, Ending::Closed),
            Ok(count) => received.extend_from_slice(&chunk[..count]),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (received, Ending::StillOpen);
            }
            Err(_) => return (received, Ending::Reset),
        }
    }
}

/// One response split off the front of `bytes`: (status, head, body, rest). Bodies must be framed
/// by `Content-Length`, as every answer here is.
fn next_response(bytes: &[u8]) -> Result<(u16, String, Vec<u8>, Vec<u8>), String> {
    let show = || String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    let end = bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| format!("no whole head in {:?}", show()))?;
    let head = String::from_utf8_lossy(&bytes[..end + 4]).into_owned();
    if !head.starts_with("HTTP/1.1 ") {
        return Err(format!("not a status line: {:?}", show()));
    }
    let status = head[9..]
        .split(' ')
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let length = common::content_length(&head).ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    let rest = &bytes[end + 4..];
    if rest.len() < length {
        return Err(format!("body cut short ({} of {length} bytes) in {:?}", rest.len(), show()));
    }
    Ok((status, head, rest[..length].to_vec(), rest[length..].to_vec()))
}

/// Checks that what came back is exactly one of the load balancer's refusals, with a status in
/// `allowed`, `Connection: close`, and the connection ended.
fn expect_refusal(received: &[u8], ending: Ending, allowed: &[u16]) -> Result<u16, String> {
    if ending == Ending::StillOpen {
        return Err(format!(
            "the connection was still open after {ANSWER_LIMIT:?}; received {:?}",
            String::from_utf8_lossy(received)
        ));
    }
    let (status, head, _, rest) = next_response(received)?;
    if !allowed.contains(&status) {
        return Err(format!("expected one of {allowed:?}, got {head:?}"));
    }
    if !head.to_ascii_lowercase().contains("\r\nconnection: close\r\n") {
        return Err(format!("a refusal without Connection: close: {head:?}"));
    }
    if !rest.is_empty() {
        return Err(format!("bytes after the refusal: {:?}", String::from_utf8_lossy(&rest)));
    }
    Ok(status)
}

/// Checks that the load balancer closed the connection without sending a byte.
fn expect_silent_close(received: &[u8], ending: Ending) -> Result<(), String> {
    match (received.is_empty(), ending) {
        (true, Ending::Closed | Ending::Reset) => Ok(()),
        _ => Err(format!("expected a silent close, got {ending:?} after {:?}", String::from_utf8_lossy(received))),
    }
}

/// A valid GET head with a few fields of random sizes.
fn valid_head(rng: &mut Rng) -> Vec<u8> {
    let path = rng.alphanumeric(1, 40);
    let padding = rng.alphanumeric(0, 200);
    format!(
        "GET /garbage/{path} HTTP/1.1\r\nHost: lb\r\nUser-Agent: garbage\r\nAccept: */*\r\nX-Pad: {padding}\r\n\r\n"
    )
    .into_bytes()
}

/// The cases, each on a fresh connection.
#[derive(Debug, Clone, Copy)]
enum Case {
    /// 0..100 KiB of random bytes, then close, or half-close and read: nothing, or a 400 (414,
    /// 431 if the bytes happen to look like a long line or head), and the connection closed.
    RandomBytes,
    /// A valid head cut short, then close, or half-close and read: closed without a word.
    TruncatedThenClosed,
    /// A valid head cut short, then the connection held: dropped after a random pause, or held
    /// until the load balancer answers 408 once `headerReadTimeout` has passed.
    TruncatedThenHeld,
    /// Over 64 KiB of header fields: 431.
    HugeHead,
    /// Over 100 header fields: 431.
    TooManyFields,
    /// A request target over 8 KiB (in a head under 64 KiB): 414.
    HugeRequestLine,
    /// A NUL, a bare CR or another control byte in a field name, value or the target: 400.
    ControlBytes,
    /// A chunked POST whose chunk-size line is broken: 400, before anything reaches a backend.
    BrokenChunkSize,
    /// A Content-Length POST whose body stops short, then close, or half-close and read: 400.
    ShortBody,
    /// A valid GET with junk right behind it in the same write: its 200 first, then a 400.
    PipelinedJunk,
    /// Connect and close at once, or reset (SO_LINGER 0) after a few bytes.
    ConnectAndDrop,
    /// Connect and send nothing: closed without a word once `headerReadTimeout` passes.
    Silent,
}

const CASES: [Case; 12] = [
    Case::RandomBytes,
    Case::TruncatedThenClosed,
    Case::TruncatedThenHeld,
    Case::HugeHead,
    Case::TooManyFields,
    Case::HugeRequestLine,
    Case::ControlBytes,
    Case::BrokenChunkSize,
    Case::ShortBody,
    Case::PipelinedJunk,
    Case::ConnectAndDrop,
    Case::Silent,
];

/// Chunk-size lines (and what follows) that no chunked body may contain.
const BROKEN_CHUNK_LINES: [&[u8]; 9] = [
    b"zz\r\n",
    b"\r\n",
    b"-1\r\n",
    b"0x10\r\n",
    b"11111111111111111\r\n",
    b"5 \r\nhello\r\n",
    b"5\nhello\r\n",
    b"5\rhello\r\n",
    b"5;a\x00b\r\nhello\r\n",
];

/// Runs one case on a new connection; `Err` describes what went wrong.
fn run_case(addr: SocketAddr, case: Case, rng: &mut Rng) -> Result<(), String> {
    let mut stream = connect(addr);
    match case {
        Case::RandomBytes => {
            let length = rng.below(100 * 1024 + 1);
            let bytes = rng.bytes(length);
            send(&mut stream, &bytes);
            if rng.coin() {
                return Ok(());
            }
            let _ = stream.shutdown(Shutdown::Write);
            let (received, ending) = read_to_end(&mut stream);
            if received.is_empty() && ending != Ending::StillOpen {
                return Ok(());
            }
            expect_refusal(&received, ending, &[400, 414, 431]).map(drop).map_err(|error| {
                format!("{} random bytes starting {:?}: {error}", bytes.len(), &bytes[..bytes.len().min(16)])
            })
        }
        Case::TruncatedThenClosed => {
            let head = valid_head(rng);
            let cut = rng.between(1, head.len() - 1);
            send(&mut stream, &head[..cut]);
            if rng.coin() {
                return Ok(());
            }
            let _ = stream.shutdown(Shutdown::Write);
            let (received, ending) = read_to_end(&mut stream);
            expect_silent_close(&received, ending)
                .map_err(|error| format!("head cut at {cut}: {:?}: {error}", String::from_utf8_lossy(&head[..cut])))
        }
        Case::TruncatedThenHeld => {
            let head = valid_head(rng);
            let cut = rng.between(1, head.len() - 1);
            send(&mut stream, &head[..cut]);
            if rng.coin() {
                thread::sleep(Duration::from_millis(rng.below(300) as u64));
                return Ok(());
            }
            let (received, ending) = read_to_end(&mut stream);
            expect_refusal(&received, ending, &[408])
                .map(drop)
                .map_err(|error| format!("head cut at {cut}: {:?}: {error}", String::from_utf8_lossy(&head[..cut])))
        }
        Case::HugeHead => {
            // 26..=60 fields of 2.5–3 KiB: 65–180 KiB, never more than 100 fields.
            let mut head = b"GET /huge HTTP/1.1\r\nHost: lb\r\n".to_vec();
            let fields = rng.between(26, 60);
            for index in 0..fields {
                let value = rng.alphanumeric(2560, 3072);
                head.extend_from_slice(format!("X-Fill-{index}: {value}\r\n").as_bytes());
            }
            head.extend_from_slice(b"\r\n");
            send(&mut stream, &head);
            let (received, ending) = read_to_end(&mut stream);
            expect_refusal(&received, ending, &[431])
                .map(drop)
                .map_err(|error| format!("a {}-byte head of {fields} fields: {error}", head.len()))
        }
        Case::TooManyFields => {
            let fields = rng.between(101, 200);
            let mut head = b"GET /many HTTP/1.1\r\nHost: lb\r\n".to_vec();
            for index in 0..fields {
                head.extend_from_slice(format!("X-F{index}: v\r\n").as_bytes());
            }
            head.extend_from_slice(b"\r\n");
            send(&mut stream, &head);
            let (received, ending) = read_to_end(&mut stream);
            expect_refusal(&received, ending, &[431])
                .map(drop)
                .map_err(|error| format!("{} fields: {error}", fields + 1))
        }
        Case::HugeRequestLine => {
            // Heads under 64 KiB, where only the target limit applies; a longer line is the
            // subject of `a_request_line_over_64_kib_gets_414_however_its_bytes_arrive`.
            let length = rng.between(8 * 1024 + 1, 60_000);
            let target = format!("/{}", rng.alphanumeric(length - 1, length - 1));
            let head = format!("GET {target} HTTP/1.1\r\nHost: lb\r\n\r\n");
            send(&mut stream, head.as_bytes());
            let (received, ending) = read_to_end(&mut stream);
            expect_refusal(&received, ending, &[414])
                .map(drop)
                .map_err(|error| format!("a {length}-byte target: {error}"))
        }
        Case::ControlBytes => {
            let control = *rng.pick(&[0x00u8, 0x01, 0x07, 0x08, 0x0b, 0x0c, 0x0d, 0x0e, 0x1b, 0x1f, 0x7f]);
            let value = rng.alphanumeric(1, 30);
            let (before, after) = value.split_at(rng.below(value.len() + 1));
            let c = control as char;
            let head = match rng.below(3) {
                0 => format!("GET / HTTP/1.1\r\nHost: lb\r\nX-Bad: {before}{c}{after}\r\n\r\n"),
                1 => format!("GET / HTTP/1.1\r\nHost: lb\r\nX-B{c}ad: {value}\r\n\r\n"),
                _ => format!("GET /{before}{c}{after} HTTP/1.1\r\nHost: lb\r\n\r\n"),
            };
            send(&mut stream, head.as_bytes());
            let (received, ending) = read_to_end(&mut stream);
            expect_refusal(&received, ending, &[400]).map(drop).map_err(|error| format!("{head:?}: {error}"))
        }
        Case::BrokenChunkSize => {
            let mut request = b"POST /upload HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            // A few good chunks first, well within the 64 KiB read before any backend is asked.
            for _ in 0..rng.below(4) {
                let data = rng.alphanumeric(1, 4000);
                request.extend_from_slice(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes());
            }
            let broken = *rng.pick(&BROKEN_CHUNK_LINES);
            request.extend_from_slice(broken);
            send(&mut stream, &request);
            let (received, ending) = read_to_end(&mut stream);
            expect_refusal(&received, ending, &[400])
                .map(drop)
                .map_err(|error| format!("chunk size line {:?}: {error}", String::from_utf8_lossy(broken)))
        }
        Case::ShortBody => {
            let length = rng.between(1, 200 * 1024);
            let sent = rng.below(length);
            let mut request =
                format!("POST /upload HTTP/1.1\r\nHost: lb\r\nContent-Length: {length}\r\n\r\n").into_bytes();
            request.extend_from_slice(rng.alphanumeric(sent, sent).as_bytes());
            send(&mut stream, &request);
            if rng.coin() {
                return Ok(());
            }
            let _ = stream.shutdown(Shutdown::Write);
            let (received, ending) = read_to_end(&mut stream);
            expect_refusal(&received, ending, &[400])
                .map(drop)
                .map_err(|error| format!("{sent} of {length} body bytes: {error}"))
        }
        Case::PipelinedJunk => {
            let mut bytes = b"GET /ping HTTP/1.1\r\nHost: lb\r\n\r\n".to_vec();
            // Junk that cannot start a request: a control byte, then anything.
            let junk_length = rng.between(1, 4096);
            let mut junk = rng.bytes(junk_length);
            junk[0] = *rng.pick(&[0x00u8, 0x01, 0x7f, b'\t', b'@', b'(']);
            bytes.extend_from_slice(&junk);
            send(&mut stream, &bytes);
            let (received, ending) = read_to_end(&mut stream);
            let describe = |error: String| {
                format!("GET /ping then {junk_length} junk bytes {:?}: {error}", &junk[..junk.len().min(16)])
            };
            let (status, head, body, rest) = next_response(&received).map_err(describe)?;
            if status != 200 || !body.starts_with(b"pong from backend :") {
                return Err(describe(format!("the valid request got {head:?} {:?}", String::from_utf8_lossy(&body))));
            }
            if head.to_ascii_lowercase().contains("\r\nconnection: close\r\n") {
                // Other connections were waiting, so keep-alive was given up: the junk goes unread.
                return expect_silent_close(&rest, ending).map_err(describe);
            }
            expect_refusal(&rest, ending, &[400]).map(drop).map_err(describe)
        }
        Case::ConnectAndDrop => {
            if rng.coin() {
                let head = valid_head(rng);
                let cut = rng.below(head.len());
                send(&mut stream, &head[..cut]);
                socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
            }
            Ok(())
        }
        Case::Silent => {
            let (received, ending) = read_to_end(&mut stream);
            expect_silent_close(&received, ending)
        }
    }
}

/// One barrage thread: `CONNECTIONS_PER_THREAD` cases drawn from its own seed.
fn barrage(addr: SocketAddr, thread_index: usize, failures: &Mutex<Vec<String>>) {
    let seed = SEED + thread_index as u64;
    let mut rng = Rng::new(seed);
    for connection in 0..CONNECTIONS_PER_THREAD {
        let case = *rng.pick(&CASES);
        if let Err(error) = run_case(addr, case, &mut rng) {
            failures.lock().unwrap().push(format!("seed {seed:#x} connection {connection} {case:?}: {error}"));
        }
    }
}

/// One flood thread: batches of connections opened together, then all dropped, some reset.
fn flood(addr: SocketAddr, flood_index: usize) -> usize {
    let mut rng = Rng::new(SEED + 1000 + flood_index as u64);
    let mut opened = 0;
    for _ in 0..FLOOD_BATCHES {
        let size = rng.between(1, FLOOD_BATCH_MAX);
        let batch: Vec<TcpStream> = (0..size).map(|_| connect(addr)).collect();
        opened += batch.len();
        for mut stream in batch {
            match rng.below(3) {
                0 => {}
                1 => send(&mut stream, b"GE"),
                _ => socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap(),
            }
        }
    }
    opened
}

#[test]
fn a_garbage_barrage_leaves_the_load_balancer_serving_and_small() {
    let started = Instant::now();
    let first = EchoBackend::start(&["--name", "garbage-0"]);
    let second = EchoBackend::start(&["--name", "garbage-1"]);
    let timeout = format!("\"{}ms\"", CLIENT_TIMEOUT.as_millis());
    let lb = LoadBalancer::start(&config(
        &[first.url(), second.url()],
        &format!(
            "\"workers\": 64, \"headerReadTimeout\": {timeout}, \"idleTimeout\": {timeout}, \
             \"bodyReadTimeout\": {timeout}"
        ),
    ));
    let pid = lb.pid();
    let addr = lb.addr();
    wait_until(Duration::from_secs(5), "the start-up health probes", || {
        lb.metrics()["backends"].as_array().unwrap().iter().all(|backend| backend["last_checked"].is_string())
    });
    let start_threads = lowest_over(Duration::from_millis(500), || thread_count(pid));
    let start_fds = lowest_over(Duration::from_millis(500), || fd_count(pid));

    let failures = Arc::new(Mutex::new(Vec::new()));
    let barrage_threads: Vec<_> = (0..BARRAGE_THREADS)
        .map(|index| {
            let failures = Arc::clone(&failures);
            thread::spawn(move || barrage(addr, index, &failures))
        })
        .collect();
    let flood_threads: Vec<_> = (0..FLOOD_THREADS).map(|index| thread::spawn(move || flood(addr, index))).collect();
    let flooded: usize = flood_threads.into_iter().map(|handle| handle.join().unwrap()).sum();
    for handle in barrage_threads {
        handle.join().unwrap();
    }
    let barrage_time = started.elapsed();
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{} cases went wrong: {failures:#?}\nlog: {:#?}", failures.len(), lb.log.all());

    // Still serving, never panicked, still running.
    let mut client = common::Client::connect(addr);
    client.send(b"GET /ping HTTP/1.1\r\nHost: lb\r\n\r\n");
    let response = client.response(false);
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.text().starts_with("pong from backend :"), "{}", response.text());
    drop(client);
    let panics: Vec<String> =
        lb.log.all().into_iter().filter(|line| line.contains("panicked") || line.contains("panic while")).collect();
    assert!(panics.is_empty(), "the load balancer panicked: {panics:#?}");
    assert!(process_running(pid), "the load balancer is still running");

    // Nothing held: connections closed, nothing in flight, threads and descriptors back where
    // they started (pooled backend connections are pruned after 4 s idle).
    wait_until(Duration::from_secs(10), "no connection open but the metrics request's own", || {
        let metrics = lb.metrics();
        metrics["open_connections"] == 1
            && metrics["backends"].as_array().unwrap().iter().all(|backend| backend["active_connections"] == 0)
    });
    let (threads_now, fds_now) = wait_for_rest(pid, start_threads, start_fds);
    let (rss, peak_rss) = lb.memory_kib();
    let metrics = lb.metrics();
    eprintln!(
        "garbage: {} barrage connections and {flooded} flood connections in {barrage_time:?}; the load balancer \
         counted {} requests ({} failed); threads {start_threads} → {threads_now}, fds {start_fds} → {fds_now}; \
         RSS {rss} KiB now, {peak_rss} KiB peak; test time {:?}",
        BARRAGE_THREADS * CONNECTIONS_PER_THREAD,
        metrics["total_requests"],
        metrics["failed_requests"],
        started.elapsed(),
    );
    assert!(peak_rss < PEAK_RSS_BOUND_KIB, "peak RSS {peak_rss} KiB is over the bound of {PEAK_RSS_BOUND_KIB} KiB");
}

/// A request line over 64 KiB breaks both documented limits, a target over 8 KiB (414) and a head
/// over 64 KiB (431). The parser means 414 ("refused with 414 as soon as that is clear") and
/// gives it when the line arrives in pieces; the same bytes must get the same answer when they
/// arrive all at once.
#[test]
fn a_request_line_over_64_kib_gets_414_however_its_bytes_arrive() {
    let backend = EchoBackend::start(&[]);
    let lb = LoadBalancer::start(&config(&[backend.url()], "\"workers\": 1, \"headerReadTimeout\": \"2s\""));
    let addr = lb.addr();
    let request = format!("GET /{} HTTP/1.1\r\nHost: lb\r\n\r\n", "a".repeat(67_000)).into_bytes();

    // In pieces: the first 9 KiB of the line, a pause, then the rest.
    let mut stream = connect(addr);
    send(&mut stream, &request[..9 * 1024]);
    thread::sleep(Duration::from_millis(200));
    send(&mut stream, &request[9 * 1024..]);
    let (received, ending) = read_to_end(&mut stream);
    assert_eq!(expect_refusal(&received, ending, &[414, 431]), Ok(414), "the line in pieces");

    // All at once: the only worker is held by a connection with half a head while the whole
    // request waits in the second connection's socket; letting the first go, the worker reads the
    // second's 67 KB in one read.
    let mut holder = connect(addr);
    send(&mut holder, b"GET /hold HTTP/1.1\r\n");
    thread::sleep(Duration::from_millis(100));
    let mut stream = connect(addr);
    send(&mut stream, &request);
    thread::sleep(Duration::from_millis(200));
    drop(holder);
    let (received, ending) = read_to_end(&mut stream);
    assert_eq!(expect_refusal(&received, ending, &[414, 431]), Ok(414), "the line all at once");
}
