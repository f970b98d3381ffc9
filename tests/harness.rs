//! Tests of the test harness itself: its "the connection closed" checks must fail against a
//! server that keeps the connection open, and a body delimited by the close must not "end" when a
//! read times out. Every other test file's close assertions rest on these.
//!
//! The servers here are in-process scripts on loopback; nothing else is started.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{CLOSE_DEADLINE, Client, ScriptedBackend, assert_refused};

const REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad";

/// What a script does after its answer.
#[derive(Clone, Copy)]
enum Then {
    /// Closes the connection.
    Close,
    /// Keeps it open, silent, until the client goes (bounded by the backend's read timeout).
    KeepOpen,
}

/// A server that writes `answer` on each connection, then closes or holds it; it signals on
/// `done` when it lets the connection go, so a test can see that it really was held.
fn server(answer: &'static [u8], then: Then) -> (ScriptedBackend, mpsc::Receiver<()>) {
    let (done, finished) = mpsc::channel();
    let done = std::sync::Mutex::new(done);
    let backend = ScriptedBackend::start(move |mut stream: TcpStream, _| {
        stream.write_all(answer).unwrap();
        if let Then::KeepOpen = then {
            // Holds the connection until the client closes its end (read returns 0) or the
            // scripted backend's read timeout passes.
            let mut byte = [0u8; 1];
            let _ = std::io::Read::read(&mut stream, &mut byte);
        } else {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let _ = done.lock().unwrap().send(());
    });
    (backend, finished)
}

fn client_of(backend: &ScriptedBackend) -> Client {
    Client::connect(std::net::SocketAddr::from(([127, 0, 0, 1], backend.port)))
}

/// Whether `check` panics (an assertion failing), with the panic message hidden from the output.
fn fails(check: impl FnOnce()) -> bool {
    catch_unwind(AssertUnwindSafe(check)).is_err()
}

#[test]
fn is_closed_is_true_only_when_the_server_closes() {
    let (closing, _) = server(REFUSAL, Then::Close);
    let mut client = client_of(&closing);
    assert_eq!(client.response(false).status, 400);
    assert!(client.is_closed(), "the server closed after its answer");

    let (holding, released) = server(REFUSAL, Then::KeepOpen);
    let mut client = client_of(&holding);
    assert_eq!(client.response(false).status, 400);
    let started = Instant::now();
    assert!(!client.is_closed(), "an open, silent connection is not a closed one");
    let waited = started.elapsed();
    assert!(waited >= CLOSE_DEADLINE, "is_closed gave up after {waited:?}");
    assert!(waited < CLOSE_DEADLINE * 2, "is_closed waited {waited:?}, not its own deadline");
    assert!(released.try_recv().is_err(), "the server was still holding the connection");
}

#[test]
fn is_closed_is_false_when_more_bytes_come() {
    let (chatty, _) = server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", Then::Close);
    let mut client = client_of(&chatty);
    assert_eq!(client.response(false).text(), "ok");
    assert!(!client.is_closed(), "bytes after the response are not a close");
}

#[test]
fn assert_refused_passes_on_a_close_and_fails_on_an_open_connection() {
    let (closing, _) = server(REFUSAL, Then::Close);
    assert_refused(&mut client_of(&closing), 400, "bad");

    let (holding, _) = server(REFUSAL, Then::KeepOpen);
    let mut client = client_of(&holding);
    assert!(fails(|| assert_refused(&mut client, 400, "bad")), "a refusal that leaves the connection open fails");

    let (silent, _) = server(b"", Then::KeepOpen);
    let mut client = client_of(&silent);
    client.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(fails(|| assert_refused(&mut client, 400, "bad")), "no answer at all fails (a read timeout)");
}

#[test]
fn a_body_delimited_by_the_close_ends_only_at_the_close() {
    const UNDELIMITED: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nuntil the close";
    let (closing, _) = server(UNDELIMITED, Then::Close);
    assert_eq!(client_of(&closing).response(false).text(), "until the close");

    let (holding, _) = server(UNDELIMITED, Then::KeepOpen);
    let mut client = client_of(&holding);
    client.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(fails(|| drop(client.response(false))), "a read timeout is not the end of the body");
}

#[test]
fn a_read_timeout_mid_response_fails_instead_of_reading_as_a_close() {
    let (partial, _) = server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", Then::KeepOpen);
    let mut client = client_of(&partial);
    client.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(fails(|| drop(client.response(false))), "a stalled body fails the read");
}
