//! The request path: one `ProxyHttp` implementation whose phases stay thin
//! and call into routes, pools and metrics.
//!
//! ```text
//! early_request_filter     keep-alive timeout of the listener
//! request_filter           route match; direct responses and redirects end here
//! upstream_peer            first try: the pool's request limit; a retry: backoff.
//!                          Then pick a usable backend not tried yet
//! upstream_request_filter  path rewrite, header edits, Host, X-Forwarded-*
//! upstream_response_filter latency, load feedback, the attempt's outcome;
//!                          a 5xx the policy retries becomes a retryable error
//! response_filter          response header edits, sticky cookie, X-Cache,
//!                          segment prefetch
//! request_cache_filter …   the cache phases: see [`crate::caching`]
//! fail_to_connect          outcome; retry elsewhere if the policy allows
//! error_while_proxy        outcome; retry elsewhere if the policy allows
//! fail_to_proxy            edge's own 502/503/504 (with Retry-After)
//! logging                  counters, histograms, access log; release slots
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use edge_config::{Algorithm, HashKey, Retry, RetryOn, Timeouts};
use http::Uri;
use pingora_cache::key::HashBinary;
use pingora_cache::storage::HitHandler;
use pingora_cache::{CacheKey, CacheMeta, ForcedFreshness, RespCacheable};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use tokio::sync::OwnedSemaphorePermit;

use crate::caching::{self, CacheCtx, Sub, SubTask, Way};
use crate::decorate::Decor;
use crate::guard;
use crate::listen::Connection;
use crate::metrics::class_index;
use crate::normalize::{self, PathOptions};
use crate::plan::{Plan, Tier};
use crate::pool::{Outcome, Overflow, Pick, Pool, Unavailable};
use crate::route::matcher::{parse_cookies, query_value};
use crate::route::{rewrite_path, Action, CompiledHeaderOps, CompiledRoute, RequestView};
use crate::state::{Proxy, ProxyState};

/// The `ProxyHttp` of one listener.
pub struct EdgeProxy {
    proxy: Arc<Proxy>,
    listener: Arc<str>,
    tls: bool,
    keepalive_secs: u64,
    limits: edge_config::HttpLimits,
    paths: PathOptions,
}

impl EdgeProxy {
    pub fn new(
        proxy: Arc<Proxy>,
        listener: &str,
        tls: bool,
        settings: &edge_config::HttpListener,
    ) -> Self {
        Self {
            proxy,
            listener: Arc::from(listener),
            tls,
            keepalive_secs: settings.limits.keepalive_timeout.as_secs().max(1),
            limits: settings.limits.clone(),
            paths: PathOptions {
                merge_slashes: settings.merge_slashes,
                escaped_slashes: settings.escaped_slashes,
            },
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

impl EdgeProxy {
    /// The door: a refusal by the connection's reader, head limits, then
    /// `Host` and path normalization ([`normalize`]). True when edge answered.
    async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let text = "text/plain; charset=utf-8";
        if let Some(r) = ctx.framing_refusal {
            ctx.close_unread(session);
            let body = Bytes::from(format!("{}\n", r.reason));
            respond(session, r.status, text, body, &[], Decor::NONE).await?;
            return Ok(true);
        }
        if let Some(refusal) = guard::check_head(session.req_header(), &self.limits) {
            ctx.close_unread(session);
            let body = Bytes::from(format!("{}\n", refusal.reason));
            respond(session, refusal.status, text, body, &[], Decor::NONE).await?;
            return Ok(true);
        }
        match normalize::admit(session.req_header_mut(), self.tls, &self.paths) {
            Ok(admitted) => {
                ctx.host = admitted.authority.map(|a| a.host).unwrap_or_default();
                ctx.authority = admitted.header;
                Ok(false)
            }
            Err(r) => {
                if r.status >= 400 {
                    ctx.close_unread(session);
                }
                let extra: Vec<(&'static str, String)> = r
                    .location
                    .map(|l| vec![("location", l)])
                    .unwrap_or_default();
                let body = Bytes::from(format!("{}\n", r.reason));
                respond(session, r.status, text, body, &extra, Decor::NONE).await?;
                Ok(true)
            }
        }
    }

    /// The route's body limit and rate limits. True when edge answered.
    async fn protect(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        state: &ProxyState,
        route: &CompiledRoute,
    ) -> Result<bool> {
        ctx.body_limit = route.config.max_body.unwrap_or(self.limits.max_body);
        if let Some(len) = guard::declared_body_over(session.req_header(), ctx.body_limit) {
            ctx.close_unread(session);
            let body = Bytes::from(format!(
                "request body of {len} bytes is larger than the limit of {} bytes\n",
                ctx.body_limit
            ));
            respond(
                session,
                413,
                "text/plain; charset=utf-8",
                body,
                &[],
                Decor::NONE,
            )
            .await?;
            return Ok(true);
        }
        // A node of the site asks for what this node owns on behalf of a
        // client it has counted against the limits already.
        if let Some(site) = state.site.as_ref() {
            if site.is_peer_request(session.req_header(), client_ip(session), &state.pools) {
                self.proxy.metrics.site.served_to_peers.inc();
                ctx.from_peer = true;
                return Ok(false);
            }
        }
        if route.config.rate_limits.is_empty() {
            return Ok(false);
        }
        let decision = guard::rate_limit(
            &state.limits,
            &route.config.rate_limits,
            client_ip(session),
            &route.config.name,
            session.req_header(),
        )
        .await;
        match decision {
            Some(d) if !d.allowed => {
                let body = Bytes::from_static(b"too many requests\n");
                respond(
                    session,
                    429,
                    "text/plain; charset=utf-8",
                    body,
                    &d.headers(),
                    Decor::NONE,
                )
                .await?;
                Ok(true)
            }
            other => {
                ctx.rate_limit = other;
                Ok(false)
            }
        }
    }
}

impl EdgeProxy {
    /// A video route's country rule and signed-URL check, and the players'
    /// data ([`crate::video::gate`]). True when edge answered.
    async fn gate(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        state: &ProxyState,
        route: &CompiledRoute,
    ) -> Result<bool> {
        let client = client_ip(session);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let gate = crate::video::gate::check(
            route,
            state,
            &self.proxy.metrics.video,
            &self.proxy.qoe,
            session.req_header_mut(),
            client,
            ctx.from_peer,
            now,
        );
        ctx.cmcd = gate.cmcd;
        ctx.cmcd_query = gate.cmcd_query;
        match gate.verdict {
            crate::video::gate::Verdict::Pass => Ok(false),
            crate::video::gate::Verdict::Refuse { status, body, log } => {
                ctx.denied = Some(log);
                ctx.close_unread(session);
                respond(
                    session,
                    status,
                    "text/plain; charset=utf-8",
                    body,
                    &[],
                    ctx.decor(),
                )
                .await?;
                Ok(true)
            }
        }
    }
}

/// Why edge answered instead of a backend.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    Unavailable(Unavailable),
    Overflow(Overflow),
    Deadline,
    BodyTooLarge(u64),
    /// A prefill request (`edge-prefill`) for an object another node of
    /// the site owns: that node fills it.
    NotOwned(String),
}

/// One try against one backend.
struct Attempt {
    index: usize,
    probe: bool,
    retry: bool,
    recorded: bool,
}

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    state: Option<Arc<ProxyState>>,
    route: Option<Arc<CompiledRoute>>,
    pool: Option<Arc<Pool>>,
    /// The upstream plan (`plan.rs`): the tier `pool` belongs to now, and
    /// the tiers left to try when none of its backends can be reached.
    plan: Plan,
    /// Backends tried, by index in the pool; the last is current.
    tried: Vec<usize>,
    attempt: Option<Attempt>,
    retries: u32,
    permit: Option<OwnedSemaphorePermit>,
    counted_active: bool,
    deadline: Option<Instant>,
    hash_key: Option<Vec<u8>>,
    sticky: Option<String>,
    set_sticky: Option<String>,
    upstream_sent: Option<Instant>,
    upstream_seconds: Option<f64>,
    /// The current error is a response turned into a retry (see `upstream_response_filter`).
    retrying_response: bool,
    /// A retry was decided and counted in the budget; its attempt has not started.
    retry_reserved: bool,
    /// The next attempt is a failover after a failed connection: no
    /// backoff, not counted in the retry budget.
    free_retry: bool,
    /// The attempt failed on a pooled connection the backend had closed:
    /// it is tried once more on a new connection to the same backend.
    stale_retry: bool,
    stale_retried: bool,
    /// A response head arrived for the current attempt.
    response_started: bool,
    /// `upstream_peer` ran: the request went for the upstream, whether or
    /// not a backend was picked.
    went_upstream: bool,
    failure: Option<Failure>,
    /// The HTTP/1 connection this request came on, and its number there.
    conn: Option<Arc<Connection>>,
    conn_index: u64,
    /// The connection's reader refused this request's head, and its line.
    framing_refusal: Option<crate::listen::framing::Refusal>,
    refused_line: Option<String>,
    /// The request's host (normalized, no port): what routes match.
    host: String,
    /// `host[:port]` (normalized, no default port): what the cache keys.
    authority: String,
    cache: CacheCtx,
    /// Request body bytes allowed (the route's or the listener's limit).
    body_limit: u64,
    body_seen: u64,
    /// The rate-limit state reported in `RateLimit-*` response headers.
    rate_limit: Option<crate::ratelimit::Decision>,
    /// A node of this site asked on behalf of its client (`site.rs`).
    from_peer: bool,
    /// The players' data (CTA-5004) and the `CMCD` parameter as sent.
    cmcd: Option<Box<crate::video::cmcd::Cmcd>>,
    cmcd_query: Option<String>,
    /// Why edge refused the request itself (access log `denied`).
    denied: Option<String>,
}

impl RequestCtx {
    /// Whether serving a segment to this request prefetches the next ones.
    fn prefetches(&self, req: &RequestHeader) -> bool {
        crate::plan::prefetches(self.state.as_deref(), req)
    }

    /// The node name of the owner this request went to (`-` if none).
    fn owner_name(&self) -> &str {
        match (&self.state, &self.pool) {
            (Some(state), Some(pool)) => self.plan.owner_name(state, pool),
            _ => "-",
        }
    }

    /// What this request adds to every response it gets (see [`Decor`]).
    /// Nothing for edge's own subrequests: a slice's answer goes to its
    /// parent, which decorates what the client gets (`slice.rs`), so the
    /// route's `add` edits would appear twice.
    fn decor(&self) -> Decor<'_> {
        if self.cache.sub.is_some() {
            return Decor::NONE;
        }
        Decor {
            ops: self.route.as_ref().map(|r| &r.response_headers),
            rate_limit: self.rate_limit.as_ref(),
        }
    }

    /// edge answers without reading the rest of the request and closes.
    fn close_unread(&self, session: &mut Session) {
        session.set_keepalive(None);
        if let Some(conn) = &self.conn {
            conn.linger();
        }
    }

    fn backend_label(&self) -> &str {
        match (&self.pool, &self.attempt) {
            (Some(p), Some(a)) => p.backends.get(a.index).map_or("-", |b| b.label.as_str()),
            _ => "-",
        }
    }

    fn timeouts<'a>(&'a self, pool: &'a Pool) -> &'a Timeouts {
        // Toward a peer: `[site.timeouts]` (a short connect: a dead peer
        // sends the miss on to the next tier quickly).
        if self.plan.tier == Tier::Owner {
            return &pool.config.timeouts;
        }
        self.route
            .as_ref()
            .and_then(|r| r.config.timeouts.as_ref())
            .unwrap_or(&pool.config.timeouts)
    }

    fn retry_policy<'a>(&'a self, pool: &'a Pool) -> &'a Retry {
        self.route
            .as_ref()
            .and_then(|r| r.config.retry.as_ref())
            .unwrap_or(&pool.config.retry)
    }

    /// Counts a decided retry in the budget from now until its attempt ends,
    /// backoff included.
    fn reserve_retry(&mut self) {
        if let Some(pool) = &self.pool {
            if !self.retry_reserved {
                pool.counters.retries.fetch_add(1, Ordering::Relaxed);
                self.retry_reserved = true;
            }
        }
    }

    fn start_attempt(&mut self, pool: &Pool, pick: Pick, retry: bool) {
        let b = &pool.backends[pick.index];
        b.state.in_flight.fetch_add(1, Ordering::Relaxed);
        b.state.requests.fetch_add(1, Ordering::Relaxed);
        if retry && !std::mem::take(&mut self.retry_reserved) {
            pool.counters.retries.fetch_add(1, Ordering::Relaxed);
        }
        self.attempt = Some(Attempt {
            index: pick.index,
            probe: pick.probe,
            retry,
            recorded: false,
        });
    }

    /// Records how the current attempt ended (once), for outlier detection,
    /// the breaker and selection.
    fn record(&mut self, outcome: Outcome) {
        let (Some(pool), Some(attempt)) = (&self.pool, &mut self.attempt) else {
            return;
        };
        if attempt.recorded {
            return;
        }
        attempt.recorded = true;
        pool.record_outcome(attempt.index, outcome, attempt.probe);
    }

    /// Ends the current attempt: its in-flight slot, its retry slot, and a
    /// half-open probe slot it never used.
    fn finish_attempt(&mut self) {
        let (Some(pool), Some(attempt)) = (&self.pool, self.attempt.take()) else {
            return;
        };
        let b = &pool.backends[attempt.index];
        b.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        if attempt.retry {
            pool.counters.retries.fetch_sub(1, Ordering::Relaxed);
        }
        if attempt.probe && !attempt.recorded {
            b.state.breaker_release_probe();
        }
    }

    fn release(&mut self) {
        self.finish_attempt();
        if std::mem::take(&mut self.retry_reserved) {
            if let Some(pool) = &self.pool {
                pool.counters.retries.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if self.counted_active {
            if let Some(pool) = &self.pool {
                pool.counters.active.fetch_sub(1, Ordering::Relaxed);
            }
            self.counted_active = false;
        }
        self.permit = None;
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        self.release();
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(SocketAddr::ip)
}

/// Writes a complete response from edge itself.
async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    extra: &[(&'static str, String)],
    decor: Decor<'_>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    for (name, value) in extra {
        resp.insert_header(*name, value.as_str())?;
    }
    decor.apply(&mut resp)?;
    let head_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

fn apply_request_ops(req: &mut RequestHeader, ops: &CompiledHeaderOps) -> Result<()> {
    for name in &ops.remove {
        req.remove_header(name);
    }
    for (name, value) in &ops.set {
        req.insert_header(name.clone(), value.clone())?;
    }
    for (name, value) in &ops.add {
        req.append_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// Fills a redirect target template.
fn redirect_location(
    to: Option<&str>,
    scheme: Option<&str>,
    tls: bool,
    req: &RequestHeader,
) -> String {
    let current_scheme = if tls { "https" } else { "http" };
    let scheme = scheme.unwrap_or(current_scheme);
    let raw_host = req
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let path = req.uri.path();
    let query = req.uri.query().unwrap_or("");
    let path_and_query = req
        .uri
        .path_and_query()
        .map_or_else(|| path.to_string(), |pq| pq.as_str().to_string());
    match to {
        Some(template) => template
            .replace("{scheme}", scheme)
            .replace("{host}", &raw_host)
            .replace("{path_and_query}", &path_and_query)
            .replace("{path}", path)
            .replace("{query}", query),
        // Only the scheme changes; the default port goes with it.
        None => format!("{scheme}://{}{path_and_query}", strip_port(&raw_host)),
    }
}

/// The hash input of ring algorithms; a missing key spreads at random.
fn hash_key(pool: &Pool, session: &Session) -> Option<Vec<u8>> {
    let req = session.req_header();
    let key = match &pool.config.algorithm {
        Algorithm::SourceIpHash => client_ip(session).map(|ip| ip.to_string().into_bytes()),
        Algorithm::ConsistentHash { key } => match key {
            HashKey::Uri => Some(
                req.uri
                    .path_and_query()
                    .map_or(req.uri.path(), |pq| pq.as_str())
                    .as_bytes()
                    .to_vec(),
            ),
            HashKey::Path => Some(req.uri.path().as_bytes().to_vec()),
            HashKey::ClientIp => client_ip(session).map(|ip| ip.to_string().into_bytes()),
            HashKey::Header(name) => req
                .headers
                .get(name.as_str())
                .map(|v| v.as_bytes().to_vec()),
            HashKey::Cookie(name) => parse_cookies(&req.headers)
                .into_iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_bytes()),
            HashKey::Query(name) => query_value(req.uri.query(), name).map(String::into_bytes),
        },
        _ => return None,
    };
    Some(key.unwrap_or_else(|| fastrand::u64(..).to_le_bytes().to_vec()))
}

/// Exponential backoff with full jitter before retry number `n` (1-based).
fn backoff(policy: &Retry, n: u32) -> Duration {
    let exp = policy
        .backoff
        .saturating_mul(1u32 << n.saturating_sub(1).min(16));
    exp.min(policy.max_backoff).mul_f64(fastrand::f64())
}

/// The peer for an attempt on backend `index` of `pool`, with the timeouts
/// left before the request's deadline.
fn peer_for(ctx: &RequestCtx, pool: &Pool, index: usize, remaining: Option<Duration>) -> HttpPeer {
    let backend = &pool.backends[index];
    let (tls, sni) = match &pool.config.tls {
        Some(t) => (
            true,
            t.sni
                .clone()
                .unwrap_or_else(|| backend.address.host.clone()),
        ),
        None => (false, String::new()),
    };
    let mut peer = HttpPeer::new(backend.addr, tls, sni);
    if ctx.plan.tier == Tier::Owner {
        // From this node's own address: the owner knows a peer by it.
        if let Some(ip) = ctx.state.as_ref().and_then(|s| s.site.as_ref()?.bind) {
            let mut bind = pingora_core::connectors::l4::BindTo::default();
            bind.addr = Some(SocketAddr::new(ip, 0));
            peer.options.bind_to = Some(bind);
        }
    }
    let t = ctx.timeouts(pool);
    let cap = |d: Duration| remaining.map_or(d, |r| d.min(r));
    peer.options.connection_timeout = Some(cap(t.connect));
    peer.options.total_connection_timeout = Some(cap(t.connect + t.connect));
    // `first_byte` bounds the whole response head (from the first read for
    // it), `idle` each body read: independent, as Envoy's per-try and idle
    // timeouts (the vendored pingora-core's `response_header_timeout`).
    peer.options.response_header_timeout = Some(cap(t.first_byte));
    peer.options.read_timeout = Some(cap(t.idle));
    peer.options.write_timeout = Some(cap(t.idle));
    peer.options.idle_timeout = Some(Duration::from_secs(60));
    if let Some(tls) = &pool.config.tls {
        peer.options.verify_cert = tls.verify;
        peer.options.verify_hostname = tls.verify;
        peer.options.ca = pool.ca.clone();
    }
    peer
}

/// The kind of an upstream error, as logs and metrics name it.
fn error_kind(e: &Error) -> String {
    let mut kind = String::new();
    for (i, c) in format!("{:?}", e.etype()).chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            kind.push('_');
        }
        if c.is_ascii_alphanumeric() {
            kind.push(c.to_ascii_lowercase());
        } else {
            break;
        }
    }
    kind
}

/// Whether an error on a reused connection before any response byte looks
/// like a connection the backend had closed while it sat in the pool. For a
/// non-idempotent request only a failed write qualifies: the backend may
/// have acted on a request it read.
fn stale_connection(e: &Error, idempotent: bool) -> bool {
    use ErrorType::*;
    match e.etype() {
        WriteError => true,
        ConnectionClosed | ReadError | H1Error | InvalidHTTPHeader => idempotent,
        _ => false,
    }
}

/// How a failed attempt maps onto `retry.on`.
fn retry_kind(e: &Error) -> RetryOn {
    use ErrorType::*;
    match e.etype() {
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure
        | TLSHandshakeFailure | TLSHandshakeTimedout | SocketError | BindError => {
            RetryOn::ConnectFailure
        }
        ReadTimedout | WriteTimedout => RetryOn::Timeout,
        _ => RetryOn::Reset,
    }
}

impl EdgeProxy {
    /// Forwards a 1xx interim response (103 Early Hints) to the client
    /// when the cache holds the response back (RFC 9110 §15.2: a proxy
    /// forwards 1xx; RFC 9111 §3: they are never stored). Without the
    /// cache pingora forwards them itself. Not to HTTP/1.0 clients, not for
    /// a subrequest, not 101; an HTTP/2 client gets none (pingora's h2
    /// server writes one response head per stream).
    async fn forward_interim(
        &self,
        session: &mut Session,
        interim: &ResponseHeader,
        ctx: &RequestCtx,
    ) -> Result<()> {
        let cached = session.cache.enabled();
        let status = interim.status.as_u16();
        if !cached
            || ctx.cache.sub.is_some()
            || status == 101
            || session.req_header().version != http::Version::HTTP_11
        {
            return Ok(());
        }
        let mut head = interim.clone();
        crate::hop::strip_response(&mut head, false);
        session.write_response_header(Box::new(head), false).await
    }

    /// Whether this non-owner keeps a copy of what the owner sent, counted.
    fn keep_copy(&self, ctx: &RequestCtx) -> bool {
        let Some(state) = ctx.state.as_ref() else {
            return true;
        };
        let kept = ctx.plan.keeps_copy(state, &self.proxy.hot);
        self.proxy
            .metrics
            .site
            .copies
            .with_label_values(&[if kept { "true" } else { "false" }])
            .inc();
        kept
    }

    /// Whether a request whose connection failed may go to another backend:
    /// one it has not tried is left (or panic mode), and there is time.
    fn may_fail_over(&self, ctx: &RequestCtx) -> bool {
        let Some(pool) = &ctx.pool else { return false };
        // The tier's last backend failed: the next tier comes.
        if ctx.plan.has_next() && ctx.deadline.is_none_or(|d| Instant::now() < d) {
            return true;
        }
        (ctx.tried.len() < pool.backends.len() || pool.config.panic_mode)
            && ctx.tried.len() < 2 * pool.backends.len()
            && ctx.deadline.is_none_or(|d| Instant::now() < d)
    }

    /// Whether the current attempt may be retried on another backend.
    fn may_retry(&self, session: &Session, ctx: &RequestCtx, kind: RetryOn) -> bool {
        let Some(pool) = &ctx.pool else { return false };
        // The owner's answer is the site's: it asked the shield or origin.
        if ctx.plan.tier == Tier::Owner {
            return false;
        }
        // Once the client has a response head, another backend's answer
        // cannot follow it.
        if session.response_written().is_some() {
            return false;
        }
        let policy = ctx.retry_policy(pool);
        if ctx.retries >= policy.attempts {
            return false;
        }
        let wanted = policy.on.contains(&kind)
            || (kind == RetryOn::GatewayError && policy.on.contains(&RetryOn::ServerError));
        if !wanted {
            return false;
        }
        // A refused connection never reached the backend: any method is safe.
        let safe = kind == RetryOn::ConnectFailure
            || session.req_header().method.is_idempotent()
            || policy.non_idempotent;
        if !safe || session.as_ref().retry_buffer_truncated() {
            return false;
        }
        if ctx.tried.len() >= pool.backends.len() && !pool.config.panic_mode {
            return false;
        }
        if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        if !pool.retry_budget_allows(policy) {
            pool.metrics.budget_exhausted.inc();
            return false;
        }
        true
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            state: None,
            route: None,
            pool: None,
            plan: Plan::default(),
            tried: Vec::new(),
            attempt: None,
            retries: 0,
            permit: None,
            counted_active: false,
            deadline: None,
            hash_key: None,
            sticky: None,
            set_sticky: None,
            upstream_sent: None,
            upstream_seconds: None,
            retrying_response: false,
            retry_reserved: false,
            free_retry: false,
            stale_retry: false,
            stale_retried: false,
            response_started: false,
            went_upstream: false,
            failure: None,
            conn: None,
            conn_index: 0,
            framing_refusal: None,
            refused_line: None,
            host: String::new(),
            authority: String::new(),
            cache: CacheCtx::default(),
            body_limit: u64::MAX,
            body_seen: 0,
            rate_limit: None,
            from_peer: false,
            cmcd: None,
            cmcd_query: None,
            denied: None,
        }
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(conn) = prev.downcast::<Arc<Connection>>() {
            let begun = conn.begin();
            ctx.conn_index = begun.index;
            ctx.framing_refusal = begun.refusal;
            ctx.refused_line = begun.refused_line;
            ctx.conn = Some(*conn);
        }
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        ctx.conn
            .clone()
            .map(|c| Box::new(c) as Box<dyn std::any::Any + Send + Sync>)
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // pingora has read the client's wish (HTTP/1.0, `Connection: close`):
        // only a connection that stays open gets the listener's idle timeout.
        if self.proxy.closing() {
            session.set_keepalive(None);
        } else if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.keepalive_secs));
        }
        let task = session
            .subrequest_ctx
            .as_ref()
            .and_then(|c| c.user_ctx())
            .and_then(|u| u.downcast_ref::<SubTask>())
            .map(|t| match t {
                SubTask::Slice { index, size } => (
                    Sub::Slice {
                        index: *index,
                        size: *size,
                    },
                    None,
                ),
                SubTask::Prefetch { path_and_query, .. } => {
                    (Sub::Prefetch, Some(path_and_query.clone()))
                }
                SubTask::Fetch { path_and_query } => (Sub::Fetch, path_and_query.clone()),
            });
        if let Some((sub, path)) = task {
            // A subrequest starts as a copy of its parent's request: it
            // fetches a whole slice or object, unconditionally.
            ctx.cache.sub = Some(sub);
            let req = session.req_header_mut();
            for h in [
                http::header::RANGE,
                http::header::IF_RANGE,
                http::header::IF_NONE_MATCH,
                http::header::IF_MODIFIED_SINCE,
                http::header::IF_MATCH,
                http::header::IF_UNMODIFIED_SINCE,
            ] {
                req.remove_header(&h);
            }
            // A prefill's object is this node's (its owner was checked on
            // the parent): each slice goes to whichever node owns it, not
            // refused with 421 in the middle of the object.
            req.remove_header(crate::site::PREFILL);
            if let Some(p) = path {
                let uri: Uri = p
                    .parse()
                    .map_err(|e| Error::because(ErrorType::InternalError, "prefetch path", e))?;
                req.set_uri(uri);
                req.set_method(http::Method::GET);
            }
        }
        Ok(())
    }

    fn allow_spawning_subrequest(&self, _session: &Session, ctx: &RequestCtx) -> bool {
        // Slices and prefetches; a slice or prefetch spawns nothing itself.
        self.proxy.cache().is_some() && ctx.cache.sub.is_none()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if ctx.cache.sub.is_none() {
            if self.admit(session, ctx).await? {
                return Ok(true);
            }
        } else {
            // A subrequest is a copy of its parent's request, already normalized.
            let authority = session
                .req_header()
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            ctx.host = strip_port(authority).to_string();
            ctx.authority = authority.to_string();
        }
        let state = self.proxy.state();
        let host = ctx.host.clone();
        let route = {
            let req = session.req_header();
            let cookies = if state.routes.needs_cookies {
                parse_cookies(&req.headers)
            } else {
                Vec::new()
            };
            let view = RequestView {
                listener: &self.listener,
                host: &host,
                path: req.uri.path(),
                query: req.uri.query(),
                method: &req.method,
                headers: &req.headers,
                cookies: &cookies,
            };
            state.routes.find(&view).cloned()
        };
        let pool = route.as_ref().and_then(|r| match r.action {
            Action::Proxy { pool } => state.pools.get(pool).cloned(),
            _ => None,
        });
        ctx.state = Some(state.clone());
        let Some(route) = route else {
            respond(
                session,
                404,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"no route matches this request\n"),
                &[],
                Decor::NONE,
            )
            .await?;
            return Ok(true);
        };
        ctx.route = Some(route.clone());
        if ctx.cache.sub.is_none() && self.protect(session, ctx, &state, &route).await? {
            return Ok(true);
        }
        if ctx.cache.sub.is_none() && self.gate(session, ctx, &state, &route).await? {
            return Ok(true);
        }
        match &route.action {
            Action::Proxy { .. } => {
                if let Some(pool) = &pool {
                    ctx.deadline = ctx.timeouts(pool).total.map(|t| ctx.start + t);
                }
                ctx.pool = pool;
                if let Some(rt) = self.proxy.cache() {
                    ctx.cache.scheme = self.scheme();
                    let (way, url) = caching::plan(
                        rt,
                        &route.cache,
                        session.req_header(),
                        &ctx.authority,
                        ctx.cache.scheme,
                        ctx.cache.sub.as_ref(),
                        session.subrequest_spawner.is_some(),
                    );
                    ctx.cache.way = Some(way);
                    ctx.cache.url = url;
                    if way != Way::Bypass && ctx.cache.sub.is_none() {
                        ctx.cache.directives = caching::directives::RequestDirectives::of(
                            session.req_header(),
                            &route.cache,
                            client_ip(session),
                        );
                    }
                    match way {
                        Way::Sliced => {
                            let prefill_owner = (ctx.cache.sub.is_none())
                                .then(|| {
                                    let req = session.req_header();
                                    let key = caching::cache_key(&ctx.cache, &route.cache, req);
                                    let primary =
                                        pingora_cache::key::CacheHashKey::primary_bin(&key);
                                    crate::plan::prefill_owner(&state, req, primary)
                                })
                                .flatten();
                            if let Some(owner) = prefill_owner {
                                respond(
                                    session,
                                    421,
                                    "text/plain; charset=utf-8",
                                    Bytes::from(format!("owned by {owner}\n")),
                                    &[],
                                    Decor::NONE,
                                )
                                .await?;
                                return Ok(true);
                            }
                            caching::slice::serve(
                                rt,
                                session,
                                &mut ctx.cache,
                                &route,
                                Decor {
                                    ops: Some(&route.response_headers),
                                    rate_limit: ctx.rate_limit.as_ref(),
                                },
                            )
                            .await?;
                            return Ok(true);
                        }
                        Way::Whole
                            if ctx.cache.sub.is_none()
                                && !ctx.cache.directives.may_force_revalidation() =>
                        {
                            if let Some(kind) = caching::fast::try_serve(
                                rt,
                                session,
                                &mut ctx.cache,
                                &route,
                                Decor {
                                    ops: Some(&route.response_headers),
                                    rate_limit: ctx.rate_limit.as_ref(),
                                },
                            )
                            .await?
                            {
                                if kind == edge_cache::video::Kind::Segment
                                    && ctx.prefetches(session.req_header())
                                {
                                    if let Some(pool) = &ctx.pool {
                                        caching::prefetch::after_segment(
                                            rt,
                                            session,
                                            &route.cache,
                                            pool,
                                            &ctx.authority,
                                            ctx.cache.scheme,
                                        );
                                    }
                                }
                                return Ok(true);
                            }
                        }
                        _ => {}
                    }
                    // A blocking LL-HLS reload not answered from RAM: held
                    // at most the hold, then the current playlist.
                    if way == Way::Whole
                        && ctx.cache.sub.is_none()
                        && session.subrequest_spawner.is_some()
                        && caching::blocking::is_blocking(session.req_header())
                    {
                        let hold = caching::blocking::hold(
                            rt,
                            &ctx.authority,
                            session.req_header().uri.path(),
                            rt.storage.settings().video.blocking_hold,
                        );
                        caching::blocking::serve(
                            session,
                            &mut ctx.cache,
                            hold,
                            Decor {
                                ops: Some(&route.response_headers),
                                rate_limit: ctx.rate_limit.as_ref(),
                            },
                        )
                        .await?;
                        return Ok(true);
                    }
                }
                let cached = matches!(ctx.cache.way, Some(Way::Whole | Way::Sliced));
                ctx.plan
                    .choose_shield(&mut ctx.pool, &state, session.req_header(), cached);
                Ok(false)
            }
            Action::Respond {
                status,
                body,
                content_type,
            } => {
                respond(
                    session,
                    *status,
                    content_type,
                    body.clone(),
                    &[],
                    Decor {
                        ops: Some(&route.response_headers),
                        rate_limit: ctx.rate_limit.as_ref(),
                    },
                )
                .await?;
                Ok(true)
            }
            Action::Redirect { to, scheme, status } => {
                let location = redirect_location(
                    to.as_deref(),
                    scheme.as_deref(),
                    self.tls,
                    session.req_header(),
                );
                let body = Bytes::from(format!("redirecting to {location}\n"));
                respond(
                    session,
                    *status,
                    "text/plain; charset=utf-8",
                    body,
                    &[("location", location)],
                    Decor {
                        ops: Some(&route.response_headers),
                        rate_limit: ctx.rate_limit.as_ref(),
                    },
                )
                .await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(b) = body {
            ctx.body_seen += b.len() as u64;
            if ctx.body_seen > ctx.body_limit {
                ctx.failure = Some(Failure::BodyTooLarge(ctx.body_limit));
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    format!("request body over {} bytes", ctx.body_limit),
                );
            }
        }
        Ok(())
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if ctx.cache.way == Some(Way::Whole) {
            if let Some(rt) = self.proxy.cache() {
                rt.enable(session);
            }
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "cache key without a route"))?;
        let key = caching::cache_key(&ctx.cache, &route.cache, session.req_header());
        ctx.plan.primary = Some(pingora_cache::key::CacheHashKey::primary_bin(&key));
        Ok(key)
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        meta: &CacheMeta,
        hit: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        let Some(rt) = self.proxy.cache() else {
            return Ok(None);
        };
        Ok(caching::on_hit(rt, &mut ctx.cache, meta, hit, is_fresh))
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        if ctx.cache.directives.only_if_cached && ctx.cache.way != Some(Way::Bypass) {
            // RFC 9111 §5.2.1.7: nothing stored will do, and the origin is
            // not to be asked.
            ctx.cache.status = Some(edge_cache::Status::Miss);
            let route_caches = ctx.route.as_ref().is_some_and(|r| r.cache.enabled);
            let mut resp = ResponseHeader::build(504, Some(4))?;
            resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
            caching::client_fields(
                self.proxy.cache().map(|c| &**c),
                session,
                &mut ctx.cache,
                route_caches,
                &mut resp,
            )?;
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(false);
        }
        Ok(true)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let (Some(rt), Some(route)) = (self.proxy.cache(), ctx.route.clone()) else {
            return Ok(RespCacheable::Uncacheable(
                pingora_cache::NoCacheReason::NeverEnabled,
            ));
        };
        // A copy this node holds already (it was kept once) is refreshed.
        let held = matches!(
            session.cache.phase(),
            pingora_cache::CachePhase::Stale
                | pingora_cache::CachePhase::StaleUpdating
                | pingora_cache::CachePhase::Expired
        );
        if ctx.plan.tier == Tier::Owner && !held && !self.keep_copy(ctx) {
            return Ok(RespCacheable::Uncacheable(
                pingora_cache::NoCacheReason::Custom("the site's owner keeps it"),
            ));
        }
        Ok(caching::response_cacheable(
            rt,
            &mut ctx.cache,
            &route.cache,
            session.req_header(),
            resp,
            session.cache.maybe_cache_meta(),
        ))
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _e: &Error) -> bool {
        // Upstream errors are counted and logged by `errlog` (one line per
        // kind per interval); the client's own are not the node's to log.
        true
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _e: &Error,
        _context: pingora_proxy::ProxyWarnLogContext,
    ) -> bool {
        true
    }

    fn range_header_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> pingora_proxy::RangeType {
        caching::range::filter(session.req_header(), resp, caching::range::MAX_RANGES)
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        let route = ctx.route.as_ref()?;
        caching::vary::variance(meta, req, &route.cache)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        // The stored response's stale-while-revalidate / stale-if-error
        // windows decide; any failure that is not the client's qualifies.
        error.is_none_or(|e| *e.esource() != ErrorSource::Downstream)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.went_upstream = true;
        if let Some(state) = ctx.state.clone() {
            let cached = matches!(ctx.cache.way, Some(Way::Whole | Way::Sliced));
            let chosen = ctx
                .plan
                .choose_owner(&mut ctx.pool, &state, session.req_header(), cached);
            if let Err(crate::plan::NotOwned(owner)) = chosen {
                let why = format!("prefill: {owner} owns this object");
                ctx.failure = Some(Failure::NotOwned(owner));
                return Err(Error::explain(ErrorType::HTTPStatus(421), why));
            }
        }
        let pool = ctx
            .pool
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no pool for this route"))?;
        ctx.response_started = false;
        if std::mem::take(&mut ctx.stale_retry) {
            if let Some(index) = ctx.attempt.as_ref().map(|a| a.index) {
                let remaining = ctx
                    .deadline
                    .map(|d| d.saturating_duration_since(Instant::now()));
                let mut peer = peer_for(ctx, &pool, index, remaining);
                // Another reuse key: a new connection, not a second pooled
                // one the backend may have closed as well.
                peer.group_key = fastrand::u64(1..);
                return Ok(Box::new(peer));
            }
        }
        let retry = !ctx.tried.is_empty();
        let free = std::mem::take(&mut ctx.free_retry);
        if retry {
            ctx.finish_attempt();
            ctx.retries += 1;
            pool.metrics.retries.inc();
            if !free {
                let pause = backoff(ctx.retry_policy(&pool), ctx.retries);
                let pause = match ctx.deadline {
                    Some(d) => pause.min(d.saturating_duration_since(Instant::now())),
                    None => pause,
                };
                tokio::time::sleep(pause).await;
            }
        } else {
            let wait = ctx.timeouts(&pool).connect;
            match pool.admit(wait).await {
                Ok(permit) => ctx.permit = permit,
                Err(o) => {
                    pool.metrics.overflow.inc();
                    ctx.failure = Some(Failure::Overflow(o));
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(503),
                        format!("pool {}: request limit reached", pool.name),
                    ));
                }
            }
            pool.counters.active.fetch_add(1, Ordering::Relaxed);
            ctx.counted_active = true;
            ctx.hash_key = hash_key(&pool, session);
            if let Some(cookie) = pool.uses_cookie() {
                ctx.sticky = parse_cookies(&session.req_header().headers)
                    .into_iter()
                    .find(|(k, _)| *k == cookie.name)
                    .map(|(_, v)| v);
            }
        }
        let remaining = ctx
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        if remaining.is_some_and(|r| r.is_zero()) {
            ctx.failure = Some(Failure::Deadline);
            return Err(Error::explain(
                ErrorType::HTTPStatus(504),
                "total timeout passed",
            ));
        }
        let mut pool = pool;
        let mut retry = retry;
        let pick = loop {
            let picked = match (ctx.plan.tier, ctx.plan.owner) {
                // The owner, or nobody: another peer is not the owner.
                (Tier::Owner, Some(owner)) if !ctx.tried.contains(&owner) => Ok(Pick {
                    index: owner,
                    probe: false,
                    panic: false,
                }),
                (Tier::Owner, _) => Err(Unavailable::AllTried),
                _ => pool.select(&ctx.tried, ctx.sticky.as_deref(), ctx.hash_key.as_deref()),
            };
            let u = match picked {
                Ok(p) => break p,
                Err(u) => u,
            };
            // No node of this tier can be reached: the next tier, as if
            // the request had started there (its limit, its backends).
            if ctx.plan.has_next() {
                if ctx.plan.tier == Tier::Owner {
                    self.proxy.metrics.site.fallbacks.inc();
                } else {
                    pool.metrics.no_backend.inc();
                }
                ctx.release();
                let Some((_, next)) = ctx.plan.advance() else {
                    continue;
                };
                ctx.pool = Some(next.clone());
                ctx.tried.clear();
                // Its retry policy, budget and sticky cookie start afresh:
                // the failed tier's attempts are not this one's.
                ctx.retries = 0;
                retry = false;
                ctx.set_sticky = None;
                ctx.sticky = next.uses_cookie().and_then(|cookie| {
                    parse_cookies(&session.req_header().headers)
                        .into_iter()
                        .find(|(k, _)| *k == cookie.name)
                        .map(|(_, v)| v)
                });
                ctx.hash_key = hash_key(&next, session);
                let wait = ctx.timeouts(&next).connect;
                match next.admit(wait).await {
                    Ok(permit) => ctx.permit = permit,
                    Err(o) => {
                        next.metrics.overflow.inc();
                        ctx.failure = Some(Failure::Overflow(o));
                        return Err(Error::explain(
                            ErrorType::HTTPStatus(503),
                            format!("pool {}: request limit reached", next.name),
                        ));
                    }
                }
                next.counters.active.fetch_add(1, Ordering::Relaxed);
                ctx.counted_active = true;
                pool = next;
                continue;
            }
            match u {
                Unavailable::BreakersOpen { .. } => pool.metrics.breaker_open.inc(),
                _ => pool.metrics.no_backend.inc(),
            }
            ctx.failure = Some(Failure::Unavailable(u));
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                format!("pool {}: no backend available", pool.name),
            ));
        };
        ctx.tried.push(pick.index);
        // A failover is not a retry for the budget.
        ctx.start_attempt(&pool, pick, retry && !free);
        let backend = &pool.backends[pick.index];
        if pool.uses_cookie().is_some() && ctx.sticky.as_deref() != Some(backend.sticky_id.as_str())
        {
            ctx.set_sticky = Some(backend.sticky_id.clone());
        }

        Ok(Box::new(peer_for(ctx, &pool, pick.index, remaining)))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Toward the shield (another edge with the same routes) the request
        // goes as the client sent it: the shield rewrites for the origin.
        if let Some(route) = ctx.route.as_ref().filter(|_| !ctx.plan.tier.is_edge()) {
            if let Some(rewrite) = &route.rewrite {
                let path = rewrite_path(rewrite, upstream.uri.path());
                let path_and_query = match upstream.uri.query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path,
                };
                let uri: Uri = path_and_query
                    .parse()
                    .map_err(|e| Error::because(ErrorType::InternalError, "rewritten path", e))?;
                upstream.set_uri(uri);
            }
            apply_request_ops(upstream, &route.request_headers)?;
            if !route.cache.accept_encoding.is_empty()
                && matches!(ctx.cache.way, Some(Way::Whole | Way::Sliced))
            {
                // What the Vary key said is what the origin is asked for.
                let accept = upstream
                    .headers
                    .get(http::header::ACCEPT_ENCODING)
                    .and_then(|v| v.to_str().ok());
                let chosen = caching::vary::pick_encoding(accept, &route.cache.accept_encoding);
                upstream.insert_header(http::header::ACCEPT_ENCODING, chosen.to_string())?;
            }
        }
        // Not toward the shield or a peer either: it routes and keys its cache
        // by the client's Host, and one Host for every site would mix their objects.
        if let Some(host) = ctx
            .pool
            .as_ref()
            .filter(|_| !ctx.plan.tier.is_edge())
            .and_then(|p| p.config.host.clone())
        {
            upstream.insert_header(http::header::HOST, host)?;
        } else if !upstream.headers.contains_key(http::header::HOST) {
            // An HTTP/1.0 client may send none; HTTP/1.1 to the backend needs one.
            if let (Some(pool), Some(a)) = (&ctx.pool, &ctx.attempt) {
                if let Some(b) = pool.backends.get(a.index) {
                    upstream.insert_header(http::header::HOST, b.address.to_string())?;
                }
            }
        }
        if let Some(ip) = client_ip(session) {
            let forwarded = match upstream
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip.to_string(),
            };
            upstream.insert_header("x-forwarded-for", forwarded)?;
        }
        upstream.insert_header("x-forwarded-proto", if self.tls { "https" } else { "http" })?;
        // A prefill is this site's business: the shield or origin sees a GET.
        upstream.remove_header(crate::site::PREFILL);
        // The players' data goes to the origin only if the route says so,
        // and never to another edge (which would count it again).
        let forward_cmcd =
            !ctx.plan.tier.is_edge() && ctx.route.as_ref().is_some_and(|r| r.config.cmcd.forward);
        if !forward_cmcd {
            for h in crate::video::cmcd::HEADERS {
                upstream.remove_header(h);
            }
        } else if let Some(raw) = &ctx.cmcd_query {
            let target = match upstream.uri.query() {
                Some(q) => format!("{}?{q}&CMCD={raw}", upstream.uri.path()),
                None => format!("{}?CMCD={raw}", upstream.uri.path()),
            };
            let uri: Uri = target
                .parse()
                .map_err(|e| Error::because(ErrorType::InternalError, "cmcd target", e))?;
            upstream.set_uri(uri);
        }
        if let Some(site) = ctx.state.as_ref().and_then(|s| s.site.as_ref()) {
            // RFC 8586: this site's name added to what the request carried;
            // toward the owner, marked as a hop inside the site.
            let peer_of = (ctx.plan.tier == Tier::Owner).then_some(site.node.as_str());
            let value = crate::site::cdn_loop(upstream, &site.name, peer_of);
            let value = http::HeaderValue::from_bytes(&value)
                .map_err(|e| Error::because(ErrorType::InternalError, "cdn-loop", e))?;
            upstream.insert_header("cdn-loop", value)?;
        }
        if let Some(Sub::Slice { index, size }) = ctx.cache.sub {
            // The index comes from a client's range: no arithmetic may wrap.
            let first = index.saturating_mul(size);
            let last = first.saturating_add(size.saturating_sub(1));
            upstream.insert_header(http::header::RANGE, format!("bytes={first}-{last}"))?;
        }
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream.status.as_u16();
        ctx.response_started = true;
        if status < 200 {
            self.forward_interim(session, upstream, ctx).await?;
            return Ok(());
        }
        // RFC 9111 §4.2.3 counts the wait for a response into its age. A
        // blocking LL-HLS reload waits because the origin holds it until
        // the playlist changes: the answer is new when it comes, and
        // counting the hold would make it stale on arrival.
        if let Some(sent) = ctx.upstream_sent {
            if !caching::blocking::is_blocking(session.req_header()) {
                ctx.cache.response_delay = sent.elapsed();
            }
        }
        ctx.cache.upstream_status = Some(status);
        if ctx.plan.tier.is_edge() {
            if let Some(route) = &ctx.route {
                // Before the cache keeps it: this node adds them itself.
                crate::decorate::undo_shield_adds(upstream, &route.response_headers)?;
            }
        }
        if status == 304 && session.cache.phase() == pingora_cache::CachePhase::Stale {
            ctx.cache.not_modified = Some(Box::new(upstream.clone()));
        }
        let (Some(pool), Some(attempt)) = (ctx.pool.clone(), ctx.attempt.as_ref()) else {
            return Ok(());
        };
        let backend = &pool.backends[attempt.index];
        if let Some(sent) = ctx.upstream_sent {
            let elapsed = sent.elapsed();
            ctx.upstream_seconds = Some(elapsed.as_secs_f64());
            backend
                .metrics
                .upstream_seconds
                .observe(elapsed.as_secs_f64());
            backend.state.observe_latency(elapsed);
        }
        if let Some(header) = pool
            .config
            .load_feedback
            .as_ref()
            .and_then(|l| l.header.as_deref())
        {
            let load = upstream
                .headers
                .get(header)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().trim_end_matches('%').parse::<u8>().ok());
            if let Some(load) = load {
                backend.state.report_load(load);
            }
        }
        let outcome = match status {
            // The owner answered: whatever its upstream said, the peer is up.
            _ if ctx.plan.tier == Tier::Owner => Outcome::Success,
            502..=504 => Outcome::GatewayError,
            500..=599 => Outcome::ServerError,
            _ => Outcome::Success,
        };
        if ctx.plan.tier == Tier::Owner {
            self.proxy
                .metrics
                .site
                .fills
                .with_label_values(&[ctx.owner_name()])
                .inc();
        }
        ctx.record(outcome);
        if status >= 500 {
            let kind = if outcome == Outcome::GatewayError {
                RetryOn::GatewayError
            } else {
                RetryOn::ServerError
            };
            // Only when a retry will happen: otherwise the backend's own
            // answer goes to the client.
            if self.may_retry(session, ctx, kind) {
                ctx.reserve_retry();
                ctx.retrying_response = true;
                return Err(Error::explain(
                    ErrorType::HTTPStatus(status),
                    format!(
                        "{} answered {status}; retrying on another backend",
                        backend.label
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `total` bounds the body too (Envoy's route timeout): a response still
    /// streaming when it passes is cut off, the connection closed, and not
    /// stored. A body that stalls ends at `idle` (each read's timeout).
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let (Tier::Owner, Some(b)) = (ctx.plan.tier, body.as_ref()) {
            self.proxy
                .metrics
                .site
                .fill_bytes
                .with_label_values(&[ctx.owner_name()])
                .inc_by(b.len() as u64);
        }
        if !end_of_stream && ctx.deadline.is_some_and(|d| Instant::now() >= d) {
            ctx.failure = Some(Failure::Deadline);
            return Err(Error::explain(
                ErrorType::ReadTimedout,
                "total timeout passed while the body was streaming",
            ));
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let version = session.req_header().version;
        let http10 = version == http::Version::HTTP_10;
        crate::hop::strip_response(response, http10);
        if matches!(version, http::Version::HTTP_10 | http::Version::HTTP_11)
            && crate::hop::delimited_by_close(response, &session.req_header().method)
        {
            if http10 {
                // Its end is the connection's: say so.
                session.set_keepalive(None);
            } else {
                // Chunked to an HTTP/1.1 client keeps the connection.
                response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            }
        }
        // A stale answer for an upstream that failed (stale-if-error):
        // pingora drops the client's connection after it whatever the
        // answer says, so the answer says so (a client reusing it would
        // send its next request into a closed connection). No backend
        // tried counts too: every one down, the pool full, the deadline.
        if ctx.went_upstream && session.cache.phase() == pingora_cache::CachePhase::Stale {
            session.set_keepalive(None);
        }
        if let Some(conn) = &ctx.conn {
            conn.answered(ctx.conn_index, response.status.as_u16());
        }
        let route_caches = ctx.route.as_ref().is_some_and(|r| r.cache.enabled);
        caching::client_fields(
            self.proxy.cache().map(|c| &**c),
            session,
            &mut ctx.cache,
            route_caches,
            response,
        )?;
        if let (Some(rt), Some(route)) = (self.proxy.cache(), ctx.route.as_ref()) {
            let req = session.req_header();
            if route_caches && caching::invalidate::applies(req, response) {
                let target = edge_cache::key::url(
                    &ctx.authority,
                    req.uri.path(),
                    req.uri.query(),
                    &route.cache.ignore_query,
                );
                let urls = caching::invalidate::urls(
                    target.to_string(),
                    req,
                    response,
                    &ctx.authority,
                    self.tls,
                    &route.cache,
                    &self.paths,
                );
                caching::invalidate::purge(rt.storage, urls).await;
            }
        }
        if ctx.cache.sub.is_none()
            && ctx.cache.way == Some(Way::Whole)
            && matches!(response.status.as_u16(), 200 | 206)
            && caching::kind_of(session.req_header(), response) == edge_cache::video::Kind::Segment
            && ctx.prefetches(session.req_header())
        {
            if let (Some(rt), Some(route), Some(pool)) = (self.proxy.cache(), &ctx.route, &ctx.pool)
            {
                caching::prefetch::after_segment(
                    rt,
                    session,
                    &route.cache,
                    pool,
                    &ctx.authority,
                    ctx.cache.scheme,
                );
            }
        }
        ctx.decor().apply(response)?;
        if let (Some(id), Some(cookie)) = (
            &ctx.set_sticky,
            ctx.pool.as_ref().and_then(|p| p.uses_cookie()),
        ) {
            let mut value = format!("{}={id}; Path=/; HttpOnly", cookie.name);
            if let Some(ttl) = cookie.ttl {
                value.push_str(&format!("; Max-Age={}", ttl.as_secs()));
            }
            if self.tls {
                value.push_str("; Secure");
            }
            response.append_header(http::header::SET_COOKIE, value)?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(pool), Some(a)) = (&ctx.pool, &ctx.attempt) {
            pool.backends[a.index].metrics.connect_errors.inc();
            self.proxy.errors.upstream(
                &pool.name,
                ctx.backend_label(),
                &error_kind(&e),
                &e.to_string(),
            );
        }
        ctx.record(Outcome::ConnectFailure);
        // The backend never saw the request: the next one gets it, whatever
        // the method, outside the retry policy and budget (nginx's
        // `proxy_next_upstream error`, HAProxy's redispatch).
        let retry = self.may_fail_over(ctx);
        if retry {
            ctx.free_retry = true;
        }
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if std::mem::take(&mut ctx.retrying_response) {
            e.set_retry(true);
            return e;
        }
        if *e.esource() == ErrorSource::Upstream {
            if let Some(pool) = &ctx.pool {
                self.proxy.errors.upstream(
                    &pool.name,
                    ctx.backend_label(),
                    &error_kind(&e),
                    &e.to_string(),
                );
            }
        }
        if *e.esource() == ErrorSource::Upstream
            && client_reused
            && stale_connection(&e, session.req_header().method.is_idempotent())
            && !ctx.response_started
            && !ctx.stale_retried
            && !session.as_ref().retry_buffer_truncated()
        {
            // The backend closed the pooled connection before it saw the
            // request (nginx and pingora retry this too): once, on a new
            // connection to the same backend, outside the retry policy and
            // budget, and not held against the backend.
            ctx.stale_retry = true;
            ctx.stale_retried = true;
            e.set_retry(true);
            return e;
        }
        // Reset before the request was written, or a peer gone before its
        // answer began: the next one (or the next tier) gets it.
        if *e.esource() == ErrorSource::Upstream
            && (*e.etype() == ErrorType::WriteError || ctx.plan.tier == Tier::Owner)
            && !ctx.response_started
            && !session.as_ref().retry_buffer_truncated()
        {
            // Reset before the request was written: the backend never had
            // it; the next one gets it, as after a failed connection.
            if let (Some(pool), Some(a)) = (&ctx.pool, &ctx.attempt) {
                pool.backends[a.index].metrics.proxy_errors.inc();
            }
            ctx.record(Outcome::GatewayError);
            let retry = self.may_fail_over(ctx);
            ctx.free_retry = retry;
            e.set_retry(retry);
            return e;
        }
        if *e.esource() == ErrorSource::Upstream {
            if let (Some(pool), Some(a)) = (&ctx.pool, &ctx.attempt) {
                pool.backends[a.index].metrics.proxy_errors.inc();
            }
            ctx.record(Outcome::GatewayError);
            let retry = self.may_retry(session, ctx, retry_kind(&e));
            if retry {
                ctx.reserve_retry();
            }
            e.set_retry(retry);
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let pool = ctx
            .pool
            .as_ref()
            .map_or("-", |p| p.name.as_str())
            .to_string();
        let (code, body, retry_after) = match &ctx.failure {
            Some(Failure::Unavailable(Unavailable::BreakersOpen { retry_after })) => (
                503,
                format!("pool {pool}: every usable backend's circuit breaker is open\n"),
                Some(retry_after.as_secs().max(1)),
            ),
            Some(Failure::Unavailable(Unavailable::NoneUp)) => (
                503,
                format!("pool {pool}: no backend is up (all down, ejected, drained or disabled)\n"),
                Some(1),
            ),
            Some(Failure::Unavailable(Unavailable::AllTried)) => (
                503,
                format!("pool {pool}: every backend failed this request\n"),
                None,
            ),
            Some(Failure::Overflow(_)) => (
                503,
                format!("pool {pool}: too many requests in flight\n"),
                Some(1),
            ),
            Some(Failure::Deadline) => (504, format!("pool {pool}: total timeout passed\n"), None),
            Some(Failure::NotOwned(owner)) => (421, format!("owned by {owner}\n"), None),
            Some(Failure::BodyTooLarge(max)) => (
                413,
                format!("request body larger than the limit of {max} bytes\n"),
                None,
            ),
            None => {
                use ErrorType::*;
                match e.etype() {
                    HTTPStatus(code) => (*code, format!("pool {pool}: upstream error\n"), None),
                    ConnectTimedout | ReadTimedout | WriteTimedout => (
                        504,
                        format!("pool {pool}: the backend did not answer in time\n"),
                        None,
                    ),
                    _ => match e.esource() {
                        ErrorSource::Upstream => (
                            502,
                            format!("pool {pool}: bad answer from the backend\n"),
                            None,
                        ),
                        ErrorSource::Downstream => match e.etype() {
                            WriteError | ReadError | ConnectionClosed => (0, String::new(), None),
                            _ => (400, "bad request\n".to_string(), None),
                        },
                        ErrorSource::Internal | ErrorSource::Unset => {
                            (500, "internal error\n".to_string(), None)
                        }
                    },
                }
            }
        };
        // pingora drops the client connection after an error on the proxy
        // path (it does not reuse it), so the answer says so.
        session.set_keepalive(None);
        if code > 0 && session.response_written().is_none() {
            let extra: Vec<(&'static str, String)> = retry_after
                .map(|s| vec![("retry-after", s.to_string())])
                .unwrap_or_default();
            if let Err(write) = respond(
                session,
                code,
                "text/plain; charset=utf-8",
                Bytes::from(body),
                &extra,
                ctx.decor(),
            )
            .await
            {
                tracing::debug!(error = %write, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(e) = e {
            match e.esource() {
                // Upstream errors were counted by `errlog` as they happened.
                ErrorSource::Upstream => {}
                ErrorSource::Downstream => {
                    tracing::debug!(listener = %self.listener, error = %e, "client error")
                }
                ErrorSource::Internal | ErrorSource::Unset => {
                    tracing::error!(listener = %self.listener, error = %e, "request failed inside edge")
                }
            }
        }
        if let Some(conn) = &ctx.conn {
            if let Some(resp) = session.response_written() {
                conn.answered(ctx.conn_index, resp.status.as_u16());
            } else {
                conn.answered(ctx.conn_index, 0);
            }
            conn.end();
        }
        if ctx.cache.sub.is_some() {
            // Edge's own subrequests: their parent is what clients see.
            ctx.release();
            return;
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let bytes = session.body_bytes_sent() as u64;
        if let (Some(rt), Some(cache_status)) = (self.proxy.cache(), ctx.cache.status) {
            let m = rt.storage.metrics();
            m.request(cache_status, caching::tier_index(ctx.cache.tier));
            if !ctx.cache.counted {
                if caching::from_cache(cache_status) {
                    m.bytes_from_cache.inc_by(bytes);
                } else {
                    m.bytes_from_origin.inc_by(bytes);
                }
            }
            let waited = session.cache.lock_duration().is_some();
            if cache_status == edge_cache::Status::Hit
                && (ctx.cache.tier == Some(edge_cache::Tier::Fill) || waited)
            {
                m.coalesced.inc();
            }
        }
        // An LL-HLS playlist went out whole (its preload hint is learned
        // once its body is): the part it hints at is fetched ahead.
        if status == 200
            && ctx.cache.way == Some(Way::Whole)
            && e.is_none()
            && edge_cache::video::classify(session.req_header().uri.path(), None)
                == edge_cache::video::Kind::HlsPlaylist
            && ctx.prefetches(session.req_header())
        {
            if let (Some(rt), Some(route), Some(pool)) = (self.proxy.cache(), &ctx.route, &ctx.pool)
            {
                caching::prefetch::after_playlist(
                    rt,
                    session,
                    &route.cache,
                    pool,
                    &ctx.authority,
                    ctx.cache.scheme,
                );
            }
        }
        let total = ctx.start.elapsed();
        let route_name = ctx.route.as_ref().map_or("-", |r| r.name.as_str());
        let metrics = ctx
            .route
            .as_ref()
            .map_or(&self.proxy.unmatched, |r| &r.metrics);
        metrics.by_class[class_index(status)].inc();
        metrics.seconds.observe(total.as_secs_f64());
        metrics.bytes.inc_by(bytes);
        if self.proxy.access_log() {
            let req = session.req_header();
            // A refused request is logged as it came, not as its stand-in.
            let (method, path) = match &ctx.refused_line {
                Some(line) => ("-", line.as_str()),
                None => (req.method.as_str(), req.uri.path()),
            };
            tracing::info!(
                target: "access",
                listener = %self.listener,
                client = %client_ip(session).map_or_else(|| "-".to_string(), |ip| ip.to_string()),
                method = %method,
                path = %path,
                status,
                bytes,
                route = route_name,
                pool = ctx.pool.as_ref().map_or("-", |p| p.name.as_str()),
                backend = ctx.backend_label(),
                retries = ctx.retries,
                cache = ctx.cache.status.map_or("-", |s| s.as_header()),
                upstream_ms = ctx.upstream_seconds.map_or(-1.0, |s| (s * 1e6).round() / 1e3),
                total_ms = (total.as_secs_f64() * 1e6).round() / 1e3,
                error = e.map(|e| e.to_string()).unwrap_or_default(),
                denied = ctx.denied.as_deref(),
                cmcd_sid = ctx.cmcd.as_ref().and_then(|c| c.sid.as_deref()),
                cmcd_cid = ctx.cmcd.as_ref().and_then(|c| c.cid.as_deref()),
                cmcd_ot = ctx.cmcd.as_ref().and_then(|c| c.ot.as_deref()),
                cmcd_br = ctx.cmcd.as_ref().and_then(|c| c.br),
                cmcd_bl = ctx.cmcd.as_ref().and_then(|c| c.bl),
                cmcd_bs = ctx.cmcd.as_ref().and_then(|c| c.bs.then_some(true)),
                cmcd_mtp = ctx.cmcd.as_ref().and_then(|c| c.mtp),
                cmcd_dl = ctx.cmcd.as_ref().and_then(|c| c.dl),
            );
        }
        ctx.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:443"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn redirect_templates_fill_in_the_request() {
        let mut req = RequestHeader::build("GET", b"/a/b?x=1", None).unwrap();
        req.insert_header("host", "old.example.com:8080").unwrap();
        assert_eq!(
            redirect_location(
                Some("https://new.example.com{path_and_query}"),
                None,
                false,
                &req
            ),
            "https://new.example.com/a/b?x=1"
        );
        assert_eq!(
            redirect_location(None, Some("https"), false, &req),
            "https://old.example.com/a/b?x=1"
        );
        assert_eq!(
            redirect_location(Some("{scheme}://{host}{path}"), None, true, &req),
            "https://old.example.com:8080/a/b"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = Retry {
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            ..Retry::default()
        };
        for _ in 0..100 {
            assert!(backoff(&p, 1) <= Duration::from_millis(10));
            assert!(backoff(&p, 5) <= Duration::from_millis(50));
        }
    }
}
