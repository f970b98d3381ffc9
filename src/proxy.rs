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
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::balance::{Algorithm, PickRequest};
use crate::config::{Config, Limits};
use crate::connection::Scheme;
use crate::ejection::{EjectionEvent, PassiveHealthSettings, Standing};
use crate::http::buffer::{Inbound, Outbound};
use crate::http::cookie;
use crate::http::edits::HeaderEdits;
use crate::http::framing::{CopyError, copy_body, copy_chunked_prefix};
use crate::http::head::{BodyFraming, RequestHead};
use crate::http::is_idempotent;
use crate::http::reply::Reply;
use crate::http::rewrite::{Forwarded, request_for_backend};
use crate::metrics::{Defence, Outcome};
use crate::min_rate::{RateClock, is_below_floor};
use crate::pair::PairRunner;
use crate::pipe::{ForwardError, ForwardJob, ReverseError, ReverseJob};
use crate::ratelimit::Decision;
use crate::routing::{Decision as Route, RouteChanges};
use crate::shared::Shared;
use crate::stream::Stream;
use crate::tunnel::upgrade_pair;

pub use crate::http::complete::MAX_KEPT_BODY;

pub const ALL_BACKENDS_DOWN: &str = "Service Unavailable: all backends are down";
/// The answer when no route matches and there is no default pool; it names nothing inside.
pub const NO_ROUTE: &str = "Not Found";

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
    /// Size of `client_inbound`: the largest head accepted plus room for body bytes behind it.
    client_inbound_capacity: usize,
    /// How the response now being sent stands against `minResponseRate`; the worker's last write
    /// of it goes on counting.
    pub response_clock: RateClock,
}

/// Body bytes an inbound buffer has room for behind the largest head.
const READ_AHEAD: usize = 16 * 1024;

impl RequestBuffers {
    pub fn new(limits: &Limits) -> RequestBuffers {
        let client_inbound_capacity = limits.max_header_bytes + READ_AHEAD;
        RequestBuffers {
            client_inbound: Inbound::with_capacity(client_inbound_capacity),
            client_inbound_capacity,
            ..RequestBuffers::default()
        }
    }

    /// Resizes for `limits` if a config reload changed them, or if a large kept body grew the
    /// inbound buffer.
    pub fn fit(&mut self, limits: &Limits) {
        let capacity = limits.max_header_bytes + READ_AHEAD;
        if self.client_inbound_capacity != capacity || self.client_inbound.capacity() != capacity {
            *self = RequestBuffers::new(limits);
        }
    }

    /// Starts afresh, as after a panic that may have lost buffers mid-request.
    pub fn reset(&mut self) {
        let capacity = self.client_inbound_capacity;
        *self = RequestBuffers {
            client_inbound: Inbound::with_capacity(capacity),
            client_inbound_capacity: capacity,
            ..RequestBuffers::default()
        };
    }
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
    /// Request body bytes received from the client, as payload (chunk framing not counted); after
    /// an upgrade, with what the client sent through the tunnel. A body whose reading failed
    /// counts only what was read before the first attempt.
    pub bytes_in: u64,
    /// Response bytes relayed to the client, head and body as on the wire (the last of them still
    /// gathered for the worker to send); the worker adds its own `reply` when it sends one.
    pub bytes_out: u64,
    /// The pool that served the request, if one did.
    pub pool: Option<Arc<str>>,
    /// The route the request took, if one matched.
    pub route: Option<Arc<str>>,
}

/// Bytes that move outside the client's outbound buffer, counted while a request is handled.
#[derive(Debug, Default)]
struct Traffic {
    /// Request body bytes received from the client.
    bytes_in: u64,
    /// Bytes a tunnel carried from the backend straight to the client.
    tunnelled_out: u64,
    /// The pool the request was routed to.
    pool: Option<Arc<str>>,
    /// The route the request took.
    route: Option<Arc<str>>,
    /// The route's `responseHeaders`, which the load balancer's own answers get too.
    response_edits: Option<Arc<HeaderEdits>>,
}

/// Everything about the client a request needs.
pub struct Client<'a> {
    pub stream: &'a Arc<Stream>,
    /// The listener it came through: `https` once its TLS session is made.
    pub scheme: Scheme,
    /// The socket's peer address.
    pub ip: IpAddr,
    /// Who the request is for: `ip`, or the address a trusted proxy forwarded it for
    /// ([`crate::client_ip`]). Used for `ip_hash`, the rate limiter and `X-Real-IP`.
    pub address: IpAddr,
    /// Set once any byte of the final response has been written.
    pub response_started: &'a Arc<AtomicBool>,
    /// Whether the connection may stay open after this request at all (not while shutting down,
    /// nor while other connections wait for a worker).
    pub keep_alive_allowed: bool,
}

/// Feeds one attempt's outcome to the backend's passive health record, and logs what changes.
fn passive_outcome(backends: &[Arc<Backend>], backend: &Backend, ok: bool, settings: &PassiveHealthSettings) {
    let now = Instant::now();
    let event = if ok {
        backend.ejection.record_success(now)
    } else {
        backend.ejection.record_failure(now, settings, || {
            let ejected = backends.iter().filter(|other| other.ejection.standing(now) != Standing::InRotation).count();
            settings.may_eject(ejected, backends.len())
        })
    };
    match event {
        Some(EjectionEvent::Ejected { cooldown, again: false }) => log::warn!(
            "backend {} ejected for {}s after {} consecutive failed requests (passive health check)",
            backend.url,
            cooldown.as_secs(),
            settings.failures
        ),
        Some(EjectionEvent::Ejected { cooldown, again: true }) => {
            log::warn!("backend {} failed its trial request: ejected again for {}s", backend.url, cooldown.as_secs())
        }
        Some(EjectionEvent::Readmitted) => {
            log::info!("backend {} passed its trial request and is back in rotation", backend.url)
        }
        None => {}
    }
}

/// Serves one request that is not for the load balancer itself.
///
/// The worker calls it once the request can be acted on without waiting for the client
/// ([`crate::http::complete`]): a body that is kept is all in `buffers.client_inbound`, a chunked
/// one up to `chunked_budget` payload bytes.
pub fn handle(
    shared: &Shared,
    config: &Config,
    client: &Client<'_>,
    head: &RequestHead,
    chunked_budget: u64,
    buffers: &mut RequestBuffers,
    pair: &PairRunner,
) -> Exchange {
    let sent_before = buffers.client_outbound.sent();
    let mut traffic = Traffic::default();
    buffers.response_clock = RateClock::new(config.min_rates.response);
    let mut exchange = serve(shared, config, client, head, chunked_budget, buffers, pair, &mut traffic);
    // Everything relayed went through the client's outbound buffer (sent, or gathered for the
    // worker to send), except what a tunnel copied.
    let relayed =
        (buffers.client_outbound.sent() + buffers.client_outbound.pending() as u64).saturating_sub(sent_before);
    exchange.bytes_in = traffic.bytes_in;
    exchange.bytes_out = relayed + traffic.tunnelled_out;
    exchange.pool = traffic.pool;
    exchange.route = traffic.route;
    if let (Some(edits), Some(reply)) = (&traffic.response_edits, &mut exchange.reply) {
        reply.add_fields(edits);
    }
    exchange
}

/// Whether `head` announces a body longer than `maxBodyBytes`: such a request is answered `413`
/// before it is routed.
pub fn declares_too_large_a_body(head: &RequestHead, limits: &Limits) -> bool {
    let max_body = limits.max_body_bytes.unwrap_or(u64::MAX);
    matches!(head.framing, BodyFraming::Length(length) if length > max_body)
}

/// [`handle`], counting in `traffic` the bytes that bypass the client's outbound buffer.
#[allow(clippy::too_many_arguments)]
fn serve(
    shared: &Shared,
    config: &Config,
    client: &Client<'_>,
    head: &RequestHead,
    chunked_budget: u64,
    buffers: &mut RequestBuffers,
    pair: &PairRunner,
    traffic: &mut Traffic,
) -> Exchange {
    let keep_alive_wanted = head.wants_keep_alive() && client.keep_alive_allowed;
    let no_body = head.framing == BodyFraming::Empty;
    let own = |reply: Reply, keep_alive: bool, backend: Option<&Backend>, attempts: u32, outcome: Outcome| Exchange {
        status: reply.status,
        outcome,
        backend: backend.map(|backend| backend.url.clone()),
        attempts,
        keep_alive,
        reply: Some(reply),
        bytes_in: 0,
        bytes_out: 0,
        pool: None,
        route: None,
    };

    // `redirectToHttps`: every plain request goes to the same host and target over TLS (the
    // load balancer's own endpoints, answered before this, excepted).
    if config.redirect_to_https && client.scheme == Scheme::Http && config.tls.is_some() {
        let (reply, outcome) = match https_location(head, shared.https_port()) {
            Some(location) => (Reply::redirect(308, location), Outcome::Success),
            None => {
                (Reply::error(400, Some("Bad Request: the request names no host to go to over HTTPS")), Outcome::Failed)
            }
        };
        return own(reply, keep_alive_wanted && no_body, None, 0, outcome);
    }

    if let Some(limiter) = shared.rate_limiter()
        && let Decision::Limited { retry_after } = limiter.check(client.address, Instant::now())
    {
        let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let reply = Reply::error(429, None).with_field("Retry-After", seconds.to_string());
        return own(reply, keep_alive_wanted && no_body, None, 0, Outcome::RateLimited);
    }

    let max_body = config.limits.max_body_bytes.unwrap_or(u64::MAX);
    if declares_too_large_a_body(head, &config.limits) {
        return own(Reply::error(413, None), false, None, 0, Outcome::Failed);
    }

    // Head → route → pool: which pool serves this request, or the answer the route gives itself.
    // A request with a body that a route answers itself closes its connection: the body is not
    // read.
    let pools = shared.pools();
    let (pool, route) = match pools.router.decide(head) {
        Route::Pool { route, pool } => (&pools.list[pool], route),
        Route::Redirect { route, status, location } => {
            traffic.route = Some(Arc::clone(&route.name));
            let reply = Reply::redirect(status, location);
            return own(reply, keep_alive_wanted && no_body, None, 0, Outcome::Success);
        }
        Route::Respond { route, status, body, headers } => {
            traffic.route = Some(Arc::clone(&route.name));
            let reply = Reply::respond(status, body, headers);
            return own(reply, keep_alive_wanted && no_body, None, 0, Outcome::Success);
        }
        Route::NoRoute => {
            return own(Reply::error(404, Some(NO_ROUTE)), keep_alive_wanted && no_body, None, 0, Outcome::Failed);
        }
    };
    let settings = &pool.config;
    traffic.pool = Some(pool.shared_name());
    traffic.route = route.map(|route| Arc::clone(&route.name));
    let changes = RouteChanges::new(route, head);
    let rewrite = changes.rewrite();
    let response_edits = route.filter(|route| !route.response_headers.is_empty()).map(|route| &route.response_headers);
    traffic.response_edits = response_edits.cloned();

    // The head for the backend, then as much of the body as may be kept: all of it when it is
    // small (so the request can be replayed, and a malformed or oversized small body is refused
    // before anything reaches a backend), else what fits, with the rest streamed by forward.
    buffers.request_head.clear();
    let forwarded = Forwarded { peer: client.ip, client: client.address, tls: client.scheme == Scheme::Https };
    request_for_backend(head, forwarded, &rewrite, &mut buffers.request_head);
    let kept = keep_body(head, client.stream, buffers, config.timeouts.body_read, max_body, chunked_budget);
    let (kept_bytes, streamed_body) = match kept {
        Ok(kept) => kept,
        Err(error) => return own(client_fault_reply(&error), false, None, 0, Outcome::Failed),
    };
    traffic.bytes_in = kept_bytes;
    let replayable = is_idempotent(&head.method) && streamed_body == BodyFraming::Empty;
    #[cfg(debug_assertions)]
    let fault = crate::fault::requested(head);

    let balancing = pool.balancer.settings();
    let sticky_cookie = balancing.sticky_cookie.as_deref().filter(|_| pool.balancer.algorithm() == Algorithm::Sticky);
    let now = Instant::now();
    // Backups included: with one of them available, there is a backend to send the request to.
    let fail_open = settings.fail_open && !pool.backends.iter().any(|backend| backend.is_available(now));
    if fail_open {
        log::debug!("no backend available: failOpen tries them all");
    }
    let pick_request = PickRequest {
        client: client.address,
        target: &head.target,
        hash_header: balancing.hash_key.header().and_then(|name| head.fields.get(name)),
        sticky_backend: sticky_cookie.and_then(|name| cookie::find(&head.fields, name)),
        now,
        fail_open,
    };
    // Backends attempted, and those not to choose again: attempted, or on probation with their
    // one trial request taken by another request meanwhile.
    let mut tried: Vec<usize> = Vec::with_capacity(settings.max_retries as usize + 1);
    let mut excluded: Vec<usize> = Vec::with_capacity(settings.max_retries as usize + 1);
    loop {
        let Some(index) = pool.balancer.pick(&pool.backends, &pick_request, &excluded) else {
            let last = tried.last().map(|&index| &*pool.backends[index]);
            let reply = if tried.is_empty() {
                Reply::error(503, Some(ALL_BACKENDS_DOWN))
            } else {
                Reply::error(502, Some("Bad Gateway: no backend could answer"))
            };
            let keep_alive = keep_alive_wanted && streamed_body == BodyFraming::Empty;
            return own(reply, keep_alive, last, tried.len() as u32, Outcome::Failed);
        };
        excluded.push(index);
        let backend = &*pool.backends[index];
        if !fail_open && !backend.ejection.claim_trial(Instant::now()) {
            continue;
        }
        if !tried.is_empty() {
            shared.stats.record_retry();
            thread::sleep(settings.retry_delay);
        }
        tried.push(index);
        let attempts = tried.len() as u32;
        let retries_left = tried.len() <= settings.max_retries as usize;
        let _in_flight = backend.begin_request();
        let attempt_started = Instant::now();
        // A failure caused by the backend counts against it (for the passive health checks too),
        // and as a slow answer for least_time.
        let backend_failed = || {
            backend.record_failure();
            backend.record_response_time(attempt_started.elapsed(), false);
            passive_outcome(&pool.backends, backend, false, &settings.passive_health);
        };

        let connection = match backend.take_idle() {
            Some(stream) => Ok(stream),
            None => backend.connect(settings.connect_timeout, settings.request_timeout),
        };
        let backend_stream = match connection {
            Ok(stream) => Arc::new(stream),
            Err(error) => {
                backend_failed();
                log::warn!("cannot connect to {}: {error}", backend.url);
                if retries_left {
                    continue;
                }
                let reply = Reply::error(502, Some("Bad Gateway: no backend could answer"));
                let keep_alive = keep_alive_wanted && streamed_body == BodyFraming::Empty;
                return own(reply, keep_alive, Some(backend), attempts, Outcome::Failed);
            }
        };

        buffers.backend_inbound.clear();
        let (upgrade_wait, upgrade_signal) = match head.wants_upgrade() {
            true => {
                let (wait, signal) = upgrade_pair(config.timeouts.tunnel_idle);
                (Some(wait), Some(signal))
            }
            false => (None, None),
        };
        let request_done = Arc::new(AtomicBool::new(false));
        let forward_job = ForwardJob {
            client: Arc::clone(client.stream),
            client_inbound: take(&mut buffers.client_inbound),
            backend: Arc::clone(&backend_stream),
            head: take(&mut buffers.request_head),
            body: streamed_body,
            max_body_bytes: max_body.saturating_sub(kept_bytes),
            body_read_timeout: config.timeouts.body_read,
            body_rate: config.min_rates.request_body,
            upgrade: upgrade_wait,
            request_done: Arc::clone(&request_done),
            outbound: take(&mut buffers.backend_outbound),
            #[cfg(debug_assertions)]
            fault,
        };
        let reverse_job = ReverseJob {
            backend: Arc::clone(&backend_stream),
            backend_inbound: take(&mut buffers.backend_inbound),
            client: Arc::clone(client.stream),
            outbound: take(&mut buffers.client_outbound),
            request_is_head: head.method == "HEAD",
            client_minor_version: head.minor_version,
            client_keep_alive: keep_alive_wanted,
            response_timeout: settings.request_timeout,
            write_timeout: config.timeouts.write,
            response_clock: buffers.response_clock,
            body_streams_from_client: streamed_body != BodyFraming::Empty,
            response_started: Arc::clone(client.response_started),
            head_buffer: take(&mut buffers.response_head),
            added_fields: sticky_cookie
                .filter(|_| pick_request.sticky_backend != Some(backend.name.as_str()))
                .map(|name| cookie::set_cookie_field(name, &backend.name)),
            response_edits: response_edits.cloned(),
            upgrade: upgrade_signal,
            request_done,
            #[cfg(debug_assertions)]
            fault,
        };
        let (forward, reverse) = match pair.run(shared.next_request_id(), forward_job, reverse_job) {
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
        buffers.response_clock = reverse.response_clock;
        traffic.bytes_in = kept_bytes + forward.body_bytes;
        let forward_ok = forward.result.is_ok();
        if let Err(ForwardError::Client(CopyError::Source(error))) = &forward.result
            && is_below_floor(error)
        {
            shared.stats.record_slow_client(Defence::SlowUpload);
        }
        if let Err(ReverseError::Client { cause, .. }) = &reverse.result
            && is_below_floor(cause)
        {
            shared.stats.record_slow_client(Defence::SlowReader);
        }

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
                backend.record_response_time(attempt_started.elapsed(), true);
                // A 502, 503 or 504 relayed from the backend is its failure, even though the
                // exchange itself worked.
                let backend_ok = !matches!(relayed.status, 502..=504);
                passive_outcome(&pool.backends, backend, backend_ok, &settings.passive_health);
                if relayed.status == 101 {
                    traffic.tunnelled_out = relayed.body_bytes;
                }
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
                    bytes_in: 0,
                    bytes_out: 0,
                    pool: None,
                    route: None,
                };
            }
            Err(error) => error,
        };
        let keep_alive = keep_alive_wanted && forward_ok && streamed_body == BodyFraming::Empty;
        match error {
            ReverseError::NoResponse(cause) => {
                backend_failed();
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
                backend_failed();
                log::warn!("{} sent a malformed response: {reason}", backend.url);
                let reply = Reply::error(502, Some("Bad Gateway: the backend sent a malformed response"));
                return own(reply, keep_alive, Some(backend), attempts, Outcome::Failed);
            }
            ReverseError::Timeout { status: None } => {
                backend_failed();
                log::warn!("{} did not answer within {} ms", backend.url, settings.request_timeout.as_millis());
                let reply = Reply::error(504, Some("Gateway Timeout: the backend did not answer in time"));
                return own(reply, keep_alive, Some(backend), attempts, Outcome::Failed);
            }
            ReverseError::Client { status, cause } => {
                log::debug!("client {} stopped reading the response: {cause}", client.ip);
                let status = status.unwrap_or(502);
                return broken(status, backend, attempts);
            }
            error @ (ReverseError::Timeout { .. } | ReverseError::BrokenMidResponse { .. }) => {
                backend_failed();
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
        bytes_in: 0,
        bytes_out: 0,
        pool: None,
        route: None,
    }
}

/// The `https://` URL of the same host and target, with the TLS port unless it is 443; `None` for
/// a request that names no host.
fn https_location(head: &RequestHead, tls_port: u16) -> Option<String> {
    if head.host.is_empty() {
        return None;
    }
    let port = if tls_port == 443 { String::new() } else { format!(":{tls_port}") };
    Some(crate::routing::redirect_location(&format!("https://{{host}}{port}{{path}}{{query}}"), head))
}

/// Reads the body, or its start, behind the head in `buffers.request_head`, re-framed for the
/// backend. Returns the payload bytes kept and the framing of what is left to stream (`Empty` when
/// the whole body was kept). A body that waits for `100 Continue` is not read ahead: the client
/// sends it only once the backend has agreed.
///
/// Every byte kept is already buffered (the worker gathered the request first), so this never
/// waits for the client: a chunked body is kept up to `chunked_budget`, whole chunks only.
fn keep_body(
    head: &RequestHead,
    stream: &Stream,
    buffers: &mut RequestBuffers,
    timeout: Duration,
    max_body: u64,
    chunked_budget: u64,
) -> Result<(u64, BodyFraming), CopyError> {
    if head.framing == BodyFraming::Empty {
        return Ok((0, BodyFraming::Empty));
    }
    let _ = stream.socket().set_read_timeout(Some(timeout));
    if head.expects_continue() {
        return Ok((0, head.framing));
    }
    let mut gather = Outbound::new();
    let inbound = &mut buffers.client_inbound;
    let kept = match head.framing {
        BodyFraming::Length(length) if length <= MAX_KEPT_BODY => {
            let length = copy_body(head.framing, inbound, stream, &mut gather, &mut buffers.request_head, max_body)?;
            (length, BodyFraming::Empty)
        }
        BodyFraming::Chunked => {
            let budget = chunked_budget.min(MAX_KEPT_BODY);
            match copy_chunked_prefix(inbound, stream, &mut gather, &mut buffers.request_head, budget, max_body)? {
                (length, true) => (length, BodyFraming::Empty),
                (length, false) => (length, BodyFraming::Chunked),
            }
        }
        other => (0, other),
    };
    gather.flush(&mut buffers.request_head).map_err(CopyError::Sink)?;
    Ok(kept)
}

/// The answer for a client whose request body could not be read.
fn client_fault_reply(error: &CopyError) -> Reply {
    if matches!(error, CopyError::TooLarge) {
        return Reply::error(413, Some("Content Too Large: the request body is over the limit"));
    }
    if error.is_timeout() {
        Reply::error(408, Some("Request Timeout: the request body stalled"))
    } else {
        Reply::error(400, Some("Bad Request: incomplete or malformed body"))
    }
}
