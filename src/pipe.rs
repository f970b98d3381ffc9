//! Threads `req-N-fwd` and `req-N-rev` (forward and reverse): the pair that carries one request attempt.
//!
//! *forward* (`req-N-fwd`) writes the rewritten request head to the backend and streams the rest of
//! the request body from the client; *reverse* (`req-N-rev`) reads the backend's response head,
//! relays any `1xx` interim answers, writes the final head to the client and streams the response
//! body. The worker waits for both ([`crate::pair`] says where the threads come from), counts the request, and only
//! then sends the last bytes the reverse thread gathered, so a client that has its whole response
//! always finds it counted in the metrics.
//!
//! Each job owns what it uses (shared streams as `Arc<Stream>`, its buffers) and hands it back
//! in its report, so the worker can reuse the buffers and decide what happens to each connection.
//!
//! When one side fails, it unblocks the other instead of leaving it to a timeout: forward failing on
//! the client shuts the backend socket (reverse then sees the end), and reverse failing shuts the
//! backend socket (forward's writes fail) and, while forward may still be reading a streamed body,
//! the client's read side. A panic in either thread does the same on its way out.

use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::http::buffer::{Inbound, Outbound};
use crate::http::edits::{HeaderEdits, NO_EDITS};
use crate::http::framing::{CopyError, copy_body, is_timeout};
use crate::http::head::{BodyFraming, ResponseHead, parse_response};
use crate::http::rewrite::response_for_client;
use crate::min_rate::{Direction, Floored, MinRate, RateClock};
use crate::stream::Stream;
use crate::tunnel::{self, UpgradeSignal, UpgradeWait};

/// What the forward thread needs: the head to send and the body still to stream.
pub struct ForwardJob {
    pub client: Arc<Stream>,
    pub client_inbound: Inbound,
    pub backend: Arc<Stream>,
    /// The rewritten head, followed by the body when it was read in advance.
    pub head: Vec<u8>,
    /// The part of the body still to copy from the client (`Empty` if none or already in `head`).
    pub body: BodyFraming,
    /// How many more body bytes the client may send (`maxBodyBytes` less what was read already).
    pub max_body_bytes: u64,
    /// The longest the client may pause in the body (`bodyReadTimeout`).
    pub body_read_timeout: Duration,
    /// The floor under the client's upload rate (`minRequestBodyRate`).
    pub body_rate: Option<MinRate>,
    /// For an upgrade request: where to learn whether the backend switched protocols.
    pub upgrade: Option<UpgradeWait>,
    pub outbound: Outbound,
    /// Set once the whole request has been sent (or sending it failed).
    pub request_done: Arc<AtomicBool>,
    /// A panic the request asked for ([`crate::fault`]).
    #[cfg(debug_assertions)]
    pub fault: Option<crate::fault::Fault>,
}

pub struct ForwardReport {
    pub client_inbound: Inbound,
    pub head: Vec<u8>,
    pub outbound: Outbound,
    /// Body bytes streamed from the client (not counting any read in advance into `head`), and
    /// after an upgrade, the bytes the client sent through the tunnel. 0 if the body copy failed.
    pub body_bytes: u64,
    pub result: Result<(), ForwardError>,
}

#[derive(Debug)]
pub enum ForwardError {
    /// The client sent a broken body, stalled or vanished: its fault, not the backend's.
    Client(CopyError),
    /// The backend stopped taking the request.
    Backend(io::Error),
}

/// What the reverse thread needs to relay the response.
pub struct ReverseJob {
    pub backend: Arc<Stream>,
    pub backend_inbound: Inbound,
    pub client: Arc<Stream>,
    pub outbound: Outbound,
    pub request_is_head: bool,
    pub client_minor_version: u8,
    /// Whether the client connection may stay open after this response, as far as the request goes.
    pub client_keep_alive: bool,
    /// How long the backend may take to start its response, and to send each later piece.
    pub response_timeout: Duration,
    /// The longest a write to the client may block (`writeTimeout`).
    pub write_timeout: Duration,
    /// The response's standing against `minResponseRate`.
    pub response_clock: RateClock,
    /// Whether forward may be blocked reading a streamed request body from the client.
    pub body_streams_from_client: bool,
    /// Set just before the first byte is written to the client.
    pub response_started: Arc<AtomicBool>,
    pub head_buffer: Vec<u8>,
    /// Field lines the load balancer adds to the final response head (a sticky `Set-Cookie`).
    pub added_fields: Option<String>,
    /// The route's `responseHeaders`, applied to the final response head.
    pub response_edits: Option<Arc<HeaderEdits>>,
    /// For an upgrade request: how to tell forward whether the backend switched protocols.
    pub upgrade: Option<UpgradeSignal>,
    /// Set by forward once the whole request has been sent. A response that is complete while
    /// the client is still sending its body goes out at once rather than waiting for the worker.
    pub request_done: Arc<AtomicBool>,
    /// A panic the request asked for ([`crate::fault`]).
    #[cfg(debug_assertions)]
    pub fault: Option<crate::fault::Fault>,
}

pub struct ReverseReport {
    pub backend_inbound: Inbound,
    pub response_clock: RateClock,
    pub outbound: Outbound,
    pub head_buffer: Vec<u8>,
    pub result: Result<Relayed, ReverseError>,
}

/// A response relayed in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    pub status: u16,
    /// Whether the client connection may carry another request.
    pub client_keep_alive: bool,
    /// Whether the backend connection ended cleanly and may carry another request.
    pub backend_reusable: bool,
    /// Response body bytes (payload, without chunk framing); after a `101`, the bytes the
    /// backend sent through the tunnel.
    pub body_bytes: u64,
}

#[derive(Debug)]
pub enum ReverseError {
    /// The backend closed or reset the connection before sending any byte of a response: the
    /// request may be replayed elsewhere if it is idempotent.
    NoResponse(io::Error),
    /// The backend did not answer within the response timeout. `status` is set if the response
    /// had already started reaching the client.
    Timeout { status: Option<u16> },
    /// The backend's response head was malformed: the client gets 502.
    BadResponse(&'static str),
    /// The backend failed after the response head reached the client: the client connection must
    /// close so the client sees a truncated message rather than a wrong one.
    BrokenMidResponse { status: u16, cause: CopyError },
    /// The client stopped taking the response.
    Client { status: Option<u16>, cause: io::Error },
}

impl ReverseError {
    /// The status already sent to the client, if the response had started.
    pub fn status_sent(&self) -> Option<u16> {
        match self {
            ReverseError::Timeout { status } | ReverseError::Client { status, .. } => *status,
            ReverseError::BrokenMidResponse { status, .. } => Some(*status),
            ReverseError::NoResponse(_) | ReverseError::BadResponse(_) => None,
        }
    }
}

/// Shuts the sockets a pair thread may be blocked on, so that it ends promptly.
pub fn abort_both(client: &Stream, backend: &Stream) {
    let _ = backend.socket().shutdown(Shutdown::Both);
    let _ = client.socket().shutdown(Shutdown::Read);
}

/// Unblocks the other thread of the pair if this one unwinds.
struct AbortOnPanic {
    client: Arc<Stream>,
    backend: Arc<Stream>,
}

impl AbortOnPanic {
    fn new(client: &Arc<Stream>, backend: &Arc<Stream>) -> AbortOnPanic {
        AbortOnPanic { client: Arc::clone(client), backend: Arc::clone(backend) }
    }
}

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if thread::panicking() {
            abort_both(&self.client, &self.backend);
        }
    }
}

/// The forward thread: head (and any body read in advance), then the streamed body.
pub fn forward(mut job: ForwardJob) -> ForwardReport {
    let guard = AbortOnPanic::new(&job.client, &job.backend);
    #[cfg(debug_assertions)]
    crate::fault::strike(job.fault, crate::fault::Fault::PanicForward);
    let backend: &Stream = &job.backend;
    let mut body_bytes = 0;
    let mut upload_clock = RateClock::new(job.body_rate);
    let client = Floored::new(&job.client, &mut upload_clock, Direction::Reading, job.body_read_timeout);
    let result = job.outbound.send(backend, &job.head).map_err(ForwardError::Backend).and_then(|()| {
        copy_body(job.body, &mut job.client_inbound, client, &mut job.outbound, backend, job.max_body_bytes)
            .map_err(|error| match error {
                CopyError::Sink(cause) => ForwardError::Backend(cause),
                client_side => ForwardError::Client(client_side),
            })
            .and_then(|copied| {
                body_bytes = copied;
                job.outbound.flush(backend).map_err(ForwardError::Backend)
            })
    });
    job.request_done.store(true, Ordering::Release);
    if let (Ok(()), Some(upgrade)) = (&result, &job.upgrade)
        && upgrade.switched.recv() == Ok(true)
    {
        body_bytes +=
            tunnel::relay(&job.client, &mut job.client_inbound, backend, upgrade.idle_timeout, &upgrade.activity);
    }
    match &result {
        // The backend would wait for the rest of the body forever: end the attempt.
        Err(ForwardError::Client(_)) => {
            let _ = backend.socket().shutdown(Shutdown::Both);
        }
        // Any unsent bytes are useless now; the reverse side still reads what the backend says.
        Err(ForwardError::Backend(_)) => job.outbound = Outbound::new(),
        Ok(()) => {}
    }
    drop(guard);
    ForwardReport { client_inbound: job.client_inbound, head: job.head, outbound: job.outbound, body_bytes, result }
}

/// The reverse thread: response head (after any interim `1xx`), then the response body.
pub fn reverse(mut job: ReverseJob) -> ReverseReport {
    let guard = AbortOnPanic::new(&job.client, &job.backend);
    let result = relay_response(&mut job);
    if result.is_err() {
        let _ = job.backend.socket().shutdown(Shutdown::Both);
        if job.body_streams_from_client {
            let _ = job.client.socket().shutdown(Shutdown::Read);
        }
    }
    drop(guard);
    ReverseReport {
        backend_inbound: job.backend_inbound,
        response_clock: job.response_clock,
        outbound: job.outbound,
        head_buffer: job.head_buffer,
        result,
    }
}

fn relay_response(job: &mut ReverseJob) -> Result<Relayed, ReverseError> {
    let (backend, client) = (Arc::clone(&job.backend), Arc::clone(&job.client));
    let backend: &Stream = &backend;
    // Every write to the client keeps up with `minResponseRate`.
    let mut clock = job.response_clock;
    let mut client = Floored::new(&client, &mut clock, Direction::Writing, job.write_timeout);
    let result = relay_response_to(job, backend, &mut client);
    drop(client);
    job.response_clock = clock;
    result
}

fn relay_response_to(
    job: &mut ReverseJob,
    backend: &Stream,
    mut client: &mut Floored<'_>,
) -> Result<Relayed, ReverseError> {
    let deadline = Instant::now() + job.response_timeout;
    let head = loop {
        let head = read_response_head(job, deadline)?;
        job.head_buffer.clear();
        if head.status == 101 {
            return switch_protocols(job, &head, client);
        }
        if head.is_informational() {
            // Interim answers (100 Continue for a client that sent Expect) go on at once; a final
            // answer, even an error of the load balancer's own, may still follow them.
            response_for_client(&head, job.client_minor_version, true, b"", &NO_EDITS, &mut job.head_buffer);
            job.outbound
                .send(&mut client, &job.head_buffer)
                .and_then(|()| job.outbound.flush(&mut client))
                .map_err(|cause| ReverseError::Client { status: None, cause })?;
            continue;
        }
        break head;
    };
    #[cfg(debug_assertions)]
    crate::fault::strike(job.fault, crate::fault::Fault::PanicReverse);
    if let Some(upgrade) = &job.upgrade {
        let _ = upgrade.switched.send(false);
    }
    let status = head.status;
    let client_keep_alive = job.client_keep_alive && head.framing != BodyFraming::UntilClose;
    let added_fields = job.added_fields.as_deref().unwrap_or_default().as_bytes();
    let edits = job.response_edits.as_deref().unwrap_or(&NO_EDITS);
    response_for_client(&head, job.client_minor_version, client_keep_alive, added_fields, edits, &mut job.head_buffer);
    job.response_started.store(true, Ordering::Release);
    job.outbound
        .send(&mut client, &job.head_buffer)
        .map_err(|cause| ReverseError::Client { status: Some(status), cause })?;
    let body_bytes =
        copy_body(head.framing, &mut job.backend_inbound, backend, &mut job.outbound, &mut client, u64::MAX).map_err(
            |error| match error {
                CopyError::Sink(cause) => ReverseError::Client { status: Some(status), cause },
                cause if cause.is_timeout() => ReverseError::Timeout { status: Some(status) },
                cause => ReverseError::BrokenMidResponse { status, cause },
            },
        )?;
    if !job.request_done.load(Ordering::Acquire) {
        // The backend answered before the request body was all sent (an early error, say): the
        // client must have the answer now, not when its upload ends or times out.
        job.outbound.flush(&mut client).map_err(|cause| ReverseError::Client { status: Some(status), cause })?;
    }
    let backend_reusable = head.backend_keeps_alive() && job.backend_inbound.is_empty();
    Ok(Relayed { status, client_keep_alive, backend_reusable, body_bytes })
}

/// Relays a `101 Switching Protocols` and turns the exchange into a tunnel, if the client asked
/// for an upgrade; otherwise a `101` is a malformed answer.
fn switch_protocols(
    job: &mut ReverseJob,
    head: &ResponseHead,
    mut floored: &mut Floored<'_>,
) -> Result<Relayed, ReverseError> {
    let Some(upgrade) = &job.upgrade else {
        return Err(ReverseError::BadResponse("101 Switching Protocols to a request without Upgrade"));
    };
    let client: &Stream = &job.client;
    response_for_client(head, job.client_minor_version, false, b"", &NO_EDITS, &mut job.head_buffer);
    job.response_started.store(true, Ordering::Release);
    job.outbound
        .send(&mut floored, &job.head_buffer)
        .and_then(|()| job.outbound.flush(&mut floored))
        .map_err(|cause| ReverseError::Client { status: Some(101), cause })?;
    let _ = upgrade.switched.send(true);
    let body_bytes =
        tunnel::relay(&job.backend, &mut job.backend_inbound, client, upgrade.idle_timeout, &upgrade.activity);
    Ok(Relayed { status: 101, client_keep_alive: false, backend_reusable: false, body_bytes })
}

/// Reads and parses one response head from the backend, within `deadline`.
fn read_response_head(job: &mut ReverseJob, deadline: Instant) -> Result<ResponseHead, ReverseError> {
    let backend = Arc::clone(&job.backend);
    let backend: &Stream = &backend;
    loop {
        if !job.backend_inbound.is_empty() {
            match parse_response(job.backend_inbound.buffered(), job.request_is_head) {
                Ok(Some((head, used))) => {
                    job.backend_inbound.consume(used);
                    return Ok(head);
                }
                Ok(None) => {}
                Err(bad) => return Err(ReverseError::BadResponse(bad.0)),
            }
        }
        // Each read waits at most `requestTimeout` (the connection's read timeout, set once at
        // connect); the deadline bounds the whole head.
        if Instant::now() >= deadline {
            return Err(ReverseError::Timeout { status: None });
        }
        let nothing_yet = job.backend_inbound.received() == 0;
        match job.backend_inbound.fill(backend) {
            Ok(0) if nothing_yet => {
                return Err(ReverseError::NoResponse(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed without a response",
                )));
            }
            Ok(0) => return Err(ReverseError::BadResponse("connection closed inside the response head")),
            Ok(_) => {}
            Err(error) if is_timeout(&error) => {}
            Err(error) if nothing_yet => return Err(ReverseError::NoResponse(error)),
            Err(_) => return Err(ReverseError::BadResponse("connection failed inside the response head")),
        }
    }
}
