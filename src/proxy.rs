//! One request, from a parsed head to a finished exchange: rate limit, body policy, backend choice,
//! connection, the forward/reverse pair, and the retry rules. Runs on the worker thread.
//!
//! Retry rules (what makes a second attempt safe):
//! - a failed connect is always retried: the backend never saw the request;
//! - a backend that closed or reset before any byte of a response is retried only for an
//!   idempotent method (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) whose body is replayable: none, or
//!   one of at most [`MAX_KEPT_BODY`] bytes read in full before the first attempt;
//! - a streamed body, a timeout, a malformed response or a response already under way is never
//!   retried.
//!
//! Each retry goes to a healthy backend not yet tried, after `retryDelay`, at most `maxRetries`
//! times. A failure caused by the backend is recorded on it; one caused by the client is not.

use std::mem::take;
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::http::buffer::{Inbound, Outbound};
use crate::http::framing::{CopyError, copy_body};
use crate::http::head::{BodyFraming, RequestHead};
use crate::http::is_idempotent;
use crate::http::reply::Reply;
use crate::http::rewrite::request_for_backend;
use crate::metrics::Outcome;
use crate::pipe::{ForwardError, ForwardJob, ReverseError, ReverseJob, run_pair};
use crate::ratelimit::Decision;
use crate::server::Shared;

/// Request bodies up to this size are read before the first attempt, so they can be replayed.
pub const MAX_KEPT_BODY: u64 = 64 * 1024;
/// Longest wait for a backend to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the next piece of a request body from the client.
pub const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

pub const ALL_BACKENDS_DOWN: &str = "Service Unavailable: all backends are down";

/// The buffers one request moves between the worker and its pair; owned by the worker and
/// reused from request to request.
#[derive(Debug, Default)]
pub struct RequestBuffers {
    pub client_inbound: Inbound,
    /// Response bytes for the client; the worker sends the last of them after counting.
    pub client_outbound: Outbound,
    backend_inbound: Inbound,
    backend_outbound: Outbound,
    request_head: Vec<u8>,
    response_head: Vec<u8>,
}

/// How one request ended, for the access log, the counters and the connection loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub status: u16,
    pub outcome: Outcome,
    /// The backend of the last attempt, if any was made.
    pub backend: Option<String>,
    pub attempts: u32,
    /// Whether the client connection may carry another request.
    pub keep_alive: bool,
    /// The load balancer's own answer, for the worker to send, when no backend response was relayed.
    pub reply: Option<Reply>,
}

/// Everything about the client a request needs.
pub struct Client<'a> {
    pub stream: &'a Arc<TcpStream>,
    pub ip: IpAddr,
    /// Set once any byte of the final response has been written.
    pub response_started: &'a Arc<AtomicBool>,
    /// Whether the connection may stay open after this request at all (not while shutting down,
    /// nor while other connections wait for a worker).
    pub keep_alive_allowed: bool,
}

/// Serves one request that is not for the load balancer itself.
pub fn handle(shared: &Shared, client: &Client<'_>, head: &RequestHead, buffers: &mut RequestBuffers) -> Exchange {
    let keep_alive_wanted = head.wants_keep_alive() && client.keep_alive_allowed;
    let no_body = head.framing == BodyFraming::Empty;
    let own = |reply: Reply, keep_alive: bool, backend: Option<&Backend>, attempts: u32, outcome: Outcome| Exchange {
        status: reply.status,
        outcome,
        backend: backend.map(|backend| backend.url.clone()),
        attempts,
        keep_alive,
        reply: Some(reply),
    };

    if let Some(limiter) = &shared.rate_limiter
        && let Decision::Limited { retry_after } = limiter.check(client.ip, Instant::now())
    {
        let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let reply = Reply::error(429, None).with_field("Retry-After", seconds.to_string());
        return own(reply, keep_alive_wanted && no_body, None, 0, Outcome::RateLimited);
    }

    // The head for the backend, and the body behind it when it is small enough to keep.
    buffers.request_head.clear();
    request_for_backend(head, client.ip, &mut buffers.request_head);
    let mut streamed_body = head.framing;
    if let BodyFraming::Length(length) = head.framing
        && length <= MAX_KEPT_BODY
        && !head.expects_continue()
    {
        let _ = client.stream.set_read_timeout(Some(CLIENT_BODY_TIMEOUT));
        let mut gather = Outbound::new();
        let stream: &TcpStream = client.stream;
        let kept = copy_body(head.framing, &mut buffers.client_inbound, stream, &mut gather, &mut buffers.request_head)
            .and_then(|_| gather.flush(&mut buffers.request_head).map_err(CopyError::Sink));
        if let Err(error) = kept {
            return own(client_fault_reply(&error), false, None, 0, Outcome::Failed);
        }
        streamed_body = BodyFraming::Empty;
    }
    let replayable = is_idempotent(&head.method) && streamed_body == BodyFraming::Empty;

    let pool = shared.pool();
    let config = &shared.config;
    let mut tried: Vec<usize> = Vec::with_capacity(config.max_retries as usize + 1);
    loop {
        let Some(index) = pool.balancer.pick(&pool.backends, client.ip, &tried) else {
            let last = tried.last().map(|&index| &*pool.backends[index]);
            let reply = if tried.is_empty() {
                Reply::error(503, Some(ALL_BACKENDS_DOWN))
            } else {
                Reply::error(502, Some("Bad Gateway: no backend could answer"))
            };
            let keep_alive = keep_alive_wanted && streamed_body == BodyFraming::Empty;
            return own(reply, keep_alive, last, tried.len() as u32, Outcome::Failed);
        };
        if !tried.is_empty() {
            shared.stats.record_retry();
            thread::sleep(config.retry_delay);
        }
        tried.push(index);
        let attempts = tried.len() as u32;
        let retries_left = tried.len() <= config.max_retries as usize;
        let backend = &*pool.backends[index];
        let _in_flight = backend.begin_request();

        let connection = match backend.take_idle() {
            Some(stream) => Ok(stream),
            None => backend.connect(CONNECT_TIMEOUT.min(config.request_timeout)),
        };
        let backend_stream = match connection {
            Ok(stream) => Arc::new(stream),
            Err(error) => {
                backend.record_failure();
                log::warn!("cannot connect to {}: {error}", backend.url);
                if retries_left {
                    continue;
                }
                let reply = Reply::error(502, Some("Bad Gateway: no backend could answer"));
                let keep_alive = keep_alive_wanted && streamed_body == BodyFraming::Empty;
                return own(reply, keep_alive, Some(backend), attempts, Outcome::Failed);
            }
        };
        let _ = backend_stream.set_write_timeout(Some(config.request_timeout));
        if streamed_body != BodyFraming::Empty {
            let _ = client.stream.set_read_timeout(Some(CLIENT_BODY_TIMEOUT));
        }

        buffers.backend_inbound.clear();
        let forward_job = ForwardJob {
            client: Arc::clone(client.stream),
            client_inbound: take(&mut buffers.client_inbound),
            backend: Arc::clone(&backend_stream),
            head: take(&mut buffers.request_head),
            body: streamed_body,
            outbound: take(&mut buffers.backend_outbound),
        };
        let reverse_job = ReverseJob {
            backend: Arc::clone(&backend_stream),
            backend_inbound: take(&mut buffers.backend_inbound),
            client: Arc::clone(client.stream),
            outbound: take(&mut buffers.client_outbound),
            request_is_head: head.method == "HEAD",
            client_minor_version: head.minor_version,
            client_keep_alive: keep_alive_wanted,
            response_timeout: config.request_timeout,
            body_streams_from_client: streamed_body != BodyFraming::Empty,
            response_started: Arc::clone(client.response_started),
            head_buffer: take(&mut buffers.response_head),
        };
        let (forward, reverse) = match run_pair(shared.next_request_id(), forward_job, reverse_job) {
            Ok(reports) => reports,
            Err(error) => {
                log::error!("cannot start the forward/reverse pair: {error}");
                let reply = Reply::error(503, Some("Service Unavailable: out of threads"));
                return own(reply, false, Some(backend), attempts, Outcome::Failed);
            }
        };
        buffers.client_inbound = forward.client_inbound;
        buffers.request_head = forward.head;
        buffers.backend_outbound = forward.outbound;
        buffers.backend_inbound = reverse.backend_inbound;
        buffers.client_outbound = reverse.outbound;
        buffers.response_head = reverse.head_buffer;
        let forward_ok = forward.result.is_ok();

        if let Err(ForwardError::Client(error)) = forward.result {
            log::debug!("client {} failed mid-request: {error}", client.ip);
            let status_sent =
                reverse.result.as_ref().map_or_else(ReverseError::status_sent, |relayed| Some(relayed.status));
            return match status_sent {
                Some(status) => broken(status, backend, attempts),
                None => own(client_fault_reply(&error), false, Some(backend), attempts, Outcome::Failed),
            };
        }
        let error = match reverse.result {
            Ok(relayed) => {
                if relayed.backend_reusable
                    && forward_ok
                    && let Ok(stream) = Arc::try_unwrap(backend_stream)
                {
                    backend.put_idle(stream);
                }
                return Exchange {
                    status: relayed.status,
                    outcome: Outcome::Success,
                    backend: Some(backend.url.clone()),
                    attempts,
                    keep_alive: relayed.client_keep_alive && forward_ok,
                    reply: None,
                };
            }
            Err(error) => error,
        };
        let keep_alive = keep_alive_wanted && forward_ok && streamed_body == BodyFraming::Empty;
        match error {
            ReverseError::NoResponse(cause) => {
                backend.record_failure();
                log::warn!(
                    "{} closed the connection without answering {} {}: {cause}",
                    backend.url,
                    head.method,
                    head.target
                );
                if replayable && retries_left {
                    continue;
                }
                let reply =
                    Reply::error(502, Some("Bad Gateway: the backend closed the connection without a response"));
                return own(reply, keep_alive, Some(backend), attempts, Outcome::Failed);
            }
            ReverseError::BadResponse(reason) => {
                backend.record_failure();
                log::warn!("{} sent a malformed response: {reason}", backend.url);
                let reply = Reply::error(502, Some("Bad Gateway: the backend sent a malformed response"));
                return own(reply, keep_alive, Some(backend), attempts, Outcome::Failed);
            }
            ReverseError::Timeout { status: None } => {
                backend.record_failure();
                log::warn!("{} did not answer within {} ms", backend.url, config.request_timeout.as_millis());
                let reply = Reply::error(504, Some("Gateway Timeout: the backend did not answer in time"));
                return own(reply, keep_alive, Some(backend), attempts, Outcome::Failed);
            }
            ReverseError::Client { status, cause } => {
                log::debug!("client {} stopped reading the response: {cause}", client.ip);
                let status = status.unwrap_or(502);
                return broken(status, backend, attempts);
            }
            error @ (ReverseError::Timeout { .. } | ReverseError::BrokenMidResponse { .. }) => {
                backend.record_failure();
                log::warn!("{} failed in the middle of a response: {error:?}", backend.url);
                let status = error.status_sent().unwrap_or(502);
                return broken(status, backend, attempts);
            }
        }
    }
}

/// An exchange that broke after its response had started (or whose client vanished): nothing more
/// can be said to the client, and its connection closes.
fn broken(status: u16, backend: &Backend, attempts: u32) -> Exchange {
    Exchange {
        status,
        outcome: Outcome::Failed,
        backend: Some(backend.url.clone()),
        attempts,
        keep_alive: false,
        reply: None,
    }
}

/// The answer for a client whose request body could not be read.
fn client_fault_reply(error: &CopyError) -> Reply {
    if error.is_timeout() {
        Reply::error(408, Some("Request Timeout: the request body stalled"))
    } else {
        Reply::error(400, Some("Bad Request: incomplete or malformed body"))
    }
}
