//! Shared test harness: real `echo-backend` and `loadbalancer` processes on free loopback ports,
//! a raw HTTP/1.1 client, scripted in-process backends, and deadline-bounded waiting.
//!
//! Every process is killed when its handle drops, every socket has a timeout, and every wait has
//! a deadline, so a failing test fails instead of hanging.

#![allow(dead_code)]

pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`Client::is_closed`] waits for the server to close the connection. The load
/// balancer closes at once after its last byte, so this only bounds how long a wrong answer takes.
pub const CLOSE_DEADLINE: Duration = Duration::from_secs(3);

/// Whether a read failed because its timeout passed (Linux says `WouldBlock`).
pub fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// Polls `condition` every 20 ms until it holds or `limit` passes; panics with `what` on timeout.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A scratch directory for one test, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("lb-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lines a child process writes, collected by a background thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn collect(reader: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                sink.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn count_containing(&self, needle: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|line| line.contains(needle)).count()
    }

    /// Waits for a line containing `needle` and returns it.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> String {
        let mut found = None;
        wait_until(limit, &format!("a line containing {needle:?} (have: {:?})", self.all()), || {
            found = self.0.lock().unwrap().iter().find(|line| line.contains(needle)).cloned();
            found.is_some()
        });
        found.unwrap()
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends a signal by name (`TERM`, `INT`, `STOP`, ...) to a process.
pub fn signal(pid: u32, name: &str) {
    // The shell's built-in `kill`, so no procps package is needed.
    let status = Command::new("sh").arg("-c").arg(format!("kill -{name} {pid}")).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// A running `echo-backend` process.
pub struct EchoBackend {
    child: Child,
    pub port: u16,
    pub name: String,
}

impl EchoBackend {
    pub fn start(extra: &[&str]) -> EchoBackend {
        EchoBackend::start_on(0, extra)
    }

    /// Starts one on `port` (0 for any free port), waiting until it listens.
    pub fn start_on(port: u16, extra: &[&str]) -> EchoBackend {
        let mut child = Command::new(env!("CARGO_BIN_EXE_echo-backend"))
            .args(["--port", &port.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Lines::collect(stdout);
        let line = lines.wait_for("listening on", Duration::from_secs(10));
        // "echo-backend NAME listening on HOST:PORT"
        let name = line.split(' ').nth(1).unwrap().to_string();
        let port = line.rsplit(':').next().unwrap().trim().parse().unwrap();
        EchoBackend { child, port, name }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        kill(&mut self.child);
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A running `loadbalancer` process with its log lines.
pub struct LoadBalancer {
    child: Child,
    pub port: u16,
    pub log: Lines,
    _dir: TempDir,
}

impl LoadBalancer {
    /// Starts one with `config` (JSON text), listening on a free loopback port.
    pub fn start(config: &str) -> LoadBalancer {
        LoadBalancer::start_with(config, &[], &[])
    }

    /// `LB_TEST_PAIR_THREADS=pooled` runs every test's load balancer with `"pairThreads": "pooled"`
    /// (unless the test sets it), so CI can run the whole suite in both modes.
    pub fn start_with(config: &str, args: &[&str], env: &[(&str, &str)]) -> LoadBalancer {
        LoadBalancer::launch(config, args, env, None)
    }

    /// Starts one whose open-file limit (soft and hard) is `open_files` from the start.
    pub fn start_with_open_file_limit(config: &str, open_files: u64) -> LoadBalancer {
        LoadBalancer::launch(config, &[], &[], Some(open_files))
    }

    fn launch(config: &str, args: &[&str], env: &[(&str, &str)], open_files: Option<u64>) -> LoadBalancer {
        let dir = TempDir::new();
        let config = with_test_pair_threads(config);
        let path = dir.write("config.json", &config);
        let binary = env!("CARGO_BIN_EXE_loadbalancer");
        let mut command = match open_files {
            // The shell lowers its limit, then becomes the load balancer (same pid), which inherits it.
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\""), binary]);
                shell
            }
            None => Command::new(binary),
        };
        command
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("LB_CONFIG")
            .env_remove("LB_ALGORITHM")
            .env_remove("LB_DEBUG")
            .env("RUST_LOG", "info");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let log = Lines::collect(child.stderr.take().unwrap());
        let line = log.wait_for("listening on 127.0.0.1:", Duration::from_secs(10));
        let port = line.split("listening on 127.0.0.1:").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
        LoadBalancer { child, port, log, _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file it was started with.
    pub fn config_path(&self) -> PathBuf {
        self._dir.0.join("config.json")
    }

    /// Replaces the config file whole (written aside, then renamed over it), as a careful
    /// deployment tool would.
    pub fn rewrite_config(&self, text: &str) {
        let text = with_test_pair_threads(text);
        let aside = self._dir.0.join("config.json.new");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, self.config_path()).unwrap();
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The HTTPS listener's address, for a config with `"tlsListen": "127.0.0.1:0"`.
    pub fn https_addr(&self) -> SocketAddr {
        let line = self.log.wait_for("HTTPS on 127.0.0.1:", Duration::from_secs(5));
        let rest = line.split("HTTPS on 127.0.0.1:").nth(1).unwrap();
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        SocketAddr::from(([127, 0, 0, 1], digits.parse().unwrap()))
    }

    pub fn get(&self, target: &str) -> Response {
        request(self.addr(), &format!("GET {target} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"))
    }

    pub fn metrics(&self) -> serde_json::Value {
        let response = self.get("/lb-metrics");
        assert_eq!(response.status, 200, "{}", response.text());
        serde_json::from_slice(&response.body).unwrap()
    }

    /// Waits for the process to exit by itself within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "loadbalancer did not exit within {limit:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory now and at its peak, in KiB, from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| -> u64 {
            let line = status.lines().find(|line| line.starts_with(name)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// `config` with `"pairThreads"` set from `LB_TEST_PAIR_THREADS`, unless it sets it itself.
fn with_test_pair_threads(config: &str) -> String {
    match std::env::var("LB_TEST_PAIR_THREADS") {
        Ok(mode) if !config.contains("\"pairThreads\"") && config.trim_start().starts_with('{') => {
            config.replacen('{', &format!("{{\"pairThreads\": \"{mode}\", "), 1)
        }
        _ => config.to_string(),
    }
}

/// A config with `servers` and extra top-level keys (a JSON fragment, may be empty), with fast
/// health checks so tests need not wait long.
pub fn config(servers: &[String], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|url| format!("\"{url}\"")).collect();
    let extra = if extra.is_empty() { String::new() } else { format!("{extra},") };
    format!(
        "{{{extra} \"healthCheckInterval\": \"200ms\", \"healthCheckTimeout\": \"500ms\", \"servers\": [{}]}}",
        list.join(", ")
    )
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(field, _)| field.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| panic!("{error}: {}", self.text()))
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Runs the load balancer on `config` (written to `dir` as `config.json`) with extra flags, to
/// its exit: (exit code, stderr with the config's path written as `config.json`).
pub fn run_to_exit(dir: &TempDir, config: &str, args: &[&str]) -> (Option<i32>, String) {
    let path = dir.write("config.json", config);
    let output = Command::new(env!("CARGO_BIN_EXE_loadbalancer"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .env_remove("LB_ALGORITHM")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "config.json");
    (output.status.code(), stderr)
}

/// Sends `head` and then `body` from a second thread while this one reads the response, so a
/// server that answers as the body arrives (echo-backend's `/echo`) cannot deadlock the test.
pub fn exchange_concurrently(client: &mut Client, head: String, body: &[u8]) -> Response {
    let mut writer = client.stream.try_clone().unwrap();
    let body = body.to_vec();
    let upload = thread::spawn(move || {
        writer.write_all(head.as_bytes()).unwrap();
        writer.write_all(&body).unwrap();
    });
    let response = client.response(false);
    upload.join().unwrap();
    response
}

/// Sends `raw` on a new connection and reads one response. A response marked
/// `Connection: close` is followed to the close: the load balancer counts a request before it
/// closes the connection (but the pair may deliver the last byte earlier), so metrics read after
/// this call always include the request.
pub fn request(addr: SocketAddr, raw: &str) -> Response {
    let mut client = Client::connect(addr);
    client.send(raw.as_bytes());
    let response = client.response(false);
    if response.header("connection").is_some_and(|value| value.eq_ignore_ascii_case("close")) {
        client.is_closed();
    }
    response
}

/// A byte stream a [`Client`] speaks HTTP over: a TCP socket, or a TLS session over one
/// ([`tls::TlsStream`]); its socket is where the timeouts are set.
pub trait Transport: Read + Write {
    fn socket(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

/// A raw HTTP/1.1 client on one connection (plain, or TLS), reading responses exactly as framed.
pub struct Client<S: Transport = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client { stream: connect(addr), buf: Vec::new() }
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client { stream, buf: Vec::new() }
    }

    /// The bytes read past the last response, as a reader that continues with the socket: for
    /// protocols that take over the connection (after a `101`).
    pub fn into_reader(self) -> impl Read {
        std::io::Cursor::new(self.buf).chain(self.stream)
    }
}

impl<S: Transport> Client<S> {
    /// A client over an established transport (its socket's timeouts already set).
    pub fn over(stream: S) -> Client<S> {
        Client { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads what is there into the buffer; 0 at the end of the connection (or a reset, which
    /// is how a server that closes with unread bytes in its socket ends it). A read that times
    /// out fails the test: a server that keeps a connection open and silent is never taken for
    /// one that closed it.
    fn more(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        match self.read_some(&mut chunk) {
            Ok(count) => count,
            Err(error) if is_timeout(&error) => {
                panic!("no byte and no close within the read timeout; have {:?}", String::from_utf8_lossy(&self.buf))
            }
            Err(error) => panic!("read failed: {error}; have {:?}", String::from_utf8_lossy(&self.buf)),
        }
    }

    /// One read into the buffer: `Ok(0)` at the end of the connection or a reset.
    fn read_some(&mut self, chunk: &mut [u8]) -> std::io::Result<usize> {
        match self.stream.read(chunk) {
            Ok(count) => {
                self.buf.extend_from_slice(&chunk[..count]);
                Ok(count)
            }
            Err(error)
                if matches!(error.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof) =>
            {
                Ok(0)
            }
            Err(error) => Err(error),
        }
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(2).position(|pair| pair == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return line;
            }
            assert!(self.more() > 0, "connection closed mid-line; have {:?}", String::from_utf8_lossy(&self.buf));
        }
    }

    /// The next `count` bytes, waiting for them (a body read by hand, a WebSocket frame).
    pub fn exactly(&mut self, count: usize) -> Vec<u8> {
        self.take(count)
    }

    fn take(&mut self, count: usize) -> Vec<u8> {
        while self.buf.len() < count {
            assert!(self.more() > 0, "connection closed with {} of {count} body bytes", self.buf.len());
        }
        self.buf.drain(..count).collect()
    }

    /// Whether the server closes the connection within [`CLOSE_DEADLINE`] with nothing more
    /// sent: true at the end of the stream (or a reset); false if bytes arrive or the deadline
    /// passes with the connection still open.
    pub fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let usual = self.stream.socket().read_timeout().unwrap();
        self.stream.socket().set_read_timeout(Some(CLOSE_DEADLINE)).unwrap();
        let mut chunk = [0u8; 4096];
        let outcome = self.read_some(&mut chunk);
        self.stream.socket().set_read_timeout(usual).unwrap();
        match outcome {
            Ok(count) => count == 0,
            Err(error) if is_timeout(&error) => false,
            Err(error) => panic!("read failed: {error}"),
        }
    }

    /// Reads one response; `head_only` for the answer to a HEAD request.
    pub fn response(&mut self, head_only: bool) -> Response {
        let status_line = self.line();
        let status = status_line.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| {
            panic!("not a status line: {status_line:?}");
        });
        let mut headers = Vec::new();
        let mut head = format!("{status_line}\r\n");
        loop {
            let line = self.line();
            head.push_str(&line);
            head.push_str("\r\n");
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let mut response = Response { status, head, headers, body: Vec::new() };
        if head_only || (100..200).contains(&status) || status == 204 || status == 304 {
            return response;
        }
        if response.header("transfer-encoding").is_some_and(|value| value.eq_ignore_ascii_case("chunked")) {
            loop {
                let size_line = self.line();
                let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap();
                if size == 0 {
                    while !self.line().is_empty() {}
                    break;
                }
                let chunk = self.take(size);
                response.body.extend_from_slice(&chunk);
                assert_eq!(self.take(2), b"\r\n");
            }
        } else if let Some(length) = response.header("content-length") {
            response.body = self.take(length.parse().unwrap());
        } else {
            while self.more() > 0 {}
            response.body = std::mem::take(&mut self.buf);
        }
        response
    }
}

/// A refusal by the load balancer: one response with `status` and exactly `body`, marked
/// `Connection: close`, and then the connection really closed (within [`CLOSE_DEADLINE`]).
pub fn assert_refused<S: Transport>(client: &mut Client<S>, status: u16, body: &str) {
    let response = client.response(false);
    assert_eq!((response.status, response.text().as_str()), (status, body), "{}", response.head);
    assert_eq!(response.header("connection"), Some("close"), "{}", response.head);
    assert!(client.is_closed(), "the connection is closed after the {status}");
}

/// Checks that something bounded by a configured `timeout` took at least that long and less than
/// four times it: the upper bound is what shows the configured value (not a longer default) was
/// used, with room for a loaded machine.
pub fn assert_took(elapsed: Duration, timeout: Duration, what: &str) {
    assert!(elapsed >= timeout, "{what} after {elapsed:?}, before its timeout of {timeout:?}");
    assert!(elapsed < timeout * 4, "{what} after {elapsed:?}, not within 4 × its timeout of {timeout:?}");
}

/// A port nothing listens on (bound and released at once).
pub fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A connection from a chosen loopback source address (127.0.0.x), to look like another client.
pub fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect_timeout(&addr.into(), IO_TIMEOUT).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// What a scripted backend does with each connection it accepts.
pub type Script = dyn Fn(TcpStream, usize) + Send + Sync;

/// An in-process backend listening on a free port that hands each accepted connection (and
/// its sequence number) to `script`, recording nothing itself. Answers `/health` probes with 200
/// when `script` leaves them alone is up to the script.
pub struct ScriptedBackend {
    pub port: u16,
    pub accepted: Arc<AtomicUsize>,
}

impl ScriptedBackend {
    pub fn start(script: impl Fn(TcpStream, usize) + Send + Sync + 'static) -> ScriptedBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let script = Arc::new(script);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let number = counter.fetch_add(1, Ordering::SeqCst);
                let script = Arc::clone(&script);
                thread::spawn(move || {
                    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    script(stream, number)
                });
            }
        });
        ScriptedBackend { port, accepted }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Reads one request head (through the blank line) from a scripted backend's connection.
pub fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// The `Content-Length` of a head read by [`read_head`], if it has a valid one.
pub fn content_length(head: &str) -> Option<usize> {
    head.lines()
        .find_map(|line| {
            line.to_ascii_lowercase().strip_prefix("content-length:").map(|value| value.trim().to_string())
        })
        .and_then(|value| value.parse().ok())
}

/// Reads one request (head and `Content-Length` body) on a scripted backend's connection,
/// answering health probes; `None` at the end of the connection or after a probe.
pub fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let head = read_head(stream)?;
    if answer_health(stream, &head) {
        return None;
    }
    let mut body = vec![0u8; content_length(&head).unwrap_or(0)];
    stream.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// Whether a head is a health probe (scripted backends answer those 200 and close).
pub fn answer_health(stream: &mut TcpStream, head: &str) -> bool {
    if head.starts_with("GET /health ") {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        return true;
    }
    false
}

/// A field of `/proc/PID/status` (`Threads:`, `State:`, ...), its first word after the name.
fn proc_status_field(pid: u32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(name))?;
    line.split_whitespace().nth(1).map(str::to_string)
}

/// How many threads a process has now (`Threads:` in /proc/PID/status).
pub fn thread_count(pid: u32) -> usize {
    proc_status_field(pid, "Threads:").and_then(|count| count.parse().ok()).expect("Threads: in /proc/PID/status")
}

/// How many file descriptors a process has open now (entries in /proc/PID/fd).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/PID/fd").count()
}

/// Whether a process is still running: /proc/PID exists and it is not a zombie waiting to be reaped.
pub fn process_running(pid: u32) -> bool {
    proc_status_field(pid, "State:").is_some_and(|state| state != "Z" && state != "X")
}

/// The lowest value `sample` takes over `period`, sampled every 10 ms: a count at rest (threads,
/// file descriptors), not one caught while something short-lived such as a health probe runs.
pub fn lowest_over(period: Duration, mut sample: impl FnMut() -> usize) -> usize {
    let until = Instant::now() + period;
    let mut lowest = sample();
    while Instant::now() < until {
        thread::sleep(Duration::from_millis(10));
        lowest = lowest.min(sample());
    }
    lowest
}

/// Waits (up to 20 s) until a process's thread and file-descriptor counts are back to the given
/// values, as they must be once everything a load used has been released; returns the last counts.
pub fn wait_for_rest(pid: u32, threads: usize, fds: usize) -> (usize, usize) {
    let mut now = (0, 0);
    wait_until(Duration::from_secs(20), "threads and file descriptors back to their start values", || {
        now = (thread_count(pid), fd_count(pid));
        now == (threads, fds)
    });
    now
}

/// Everything a backend received on connections other than health probes.
pub type Received = Arc<Mutex<Vec<u8>>>;

/// Reads one request's body as the load balancer re-frames it: `Content-Length`, or chunked
/// ending in the canonical `0\r\n\r\n`.
pub fn read_body(stream: &mut TcpStream, head: &str) -> Option<Vec<u8>> {
    let lower = head.to_ascii_lowercase();
    if let Some(length) = content_length(head) {
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).ok()?;
        return Some(body);
    }
    let mut body = Vec::new();
    if lower.contains("transfer-encoding: chunked") {
        let mut byte = [0u8; 1];
        while !body.ends_with(b"0\r\n\r\n") {
            stream.read_exact(&mut byte).ok()?;
            body.push(byte[0]);
        }
    }
    Some(body)
}

/// A backend that records every byte of every request (health probes aside) and answers each
/// with 200 `ok`.
pub fn recording_backend() -> (ScriptedBackend, Received) {
    let received: Received = Arc::default();
    let record = Arc::clone(&received);
    let backend = ScriptedBackend::start(move |mut stream, _| {
        while let Some(head) = read_head(&mut stream) {
            if answer_health(&mut stream, &head) {
                return;
            }
            record.lock().unwrap().extend_from_slice(head.as_bytes());
            let Some(body) = read_body(&mut stream, &head) else { return };
            record.lock().unwrap().extend_from_slice(&body);
            if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                return;
            }
        }
    });
    (backend, received)
}
