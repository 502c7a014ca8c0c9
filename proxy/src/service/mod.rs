//! The request path: one `ProxyHttp` implementation, a thin dispatcher
//! from pingora's phases to one file per concern. Each route is compiled
//! (`route/mod.rs`) into the steps of each phase it needs, in the order a
//! reader expects: listener → route → limits → gate → pool → cache →
//! upstream plan → upstream request → response.
//!
//! ```text
//! early_request_filter     request.rs   keep-alive timeout; a subrequest's task
//! request_filter           request.rs   the door (limits.rs), the route, then its
//!                                       RequestSteps: Limits (limits.rs), Gate
//!                                       (gate.rs), Pool, Cache (cache.rs), Plan
//!                                       (plan.rs), or Answer (answer.rs)
//! upstream_peer            upstream.rs  the plan's tier, the pool's limit, backoff,
//!                                       a usable backend not tried yet
//! upstream_request_filter  upstream_request.rs  UpstreamSteps (rewrite, header
//!                                       edits, encoding), then Host, X-Forwarded-*,
//!                                       CDN-Loop, CMCD, a slice's Range
//! upstream_response_filter response.rs  latency, load feedback, the attempt's
//!                                       outcome; a 5xx the policy retries
//! response_filter          response.rs  hop-by-hop, cache fields, ResponseSteps
//!                                       (invalidate, prefetch), decorate.rs, sticky
//! request_cache_filter …   here         the cache phases: see [`crate::caching`]
//! fail_to_connect, error_while_proxy, fail_to_proxy   failure.rs
//! logging                  log.rs       counters, access log, slots given back
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

mod answer;
mod cache;
mod ctx;
mod failure;
mod gate;
mod lean;
mod lean_h2;
mod lean_head;
mod lean_pass;
mod lean_request;
mod limits;
mod log;
mod request;
mod response;
#[cfg(target_os = "linux")]
mod splice;
mod steer;
mod upstream;
mod upstream_request;

use answer::*;
pub use ctx::RequestCtx;
use ctx::*;
pub use lean::{Candidate, Shortcut, ShortcutCut, ShortcutDone};
pub use lean_pass::{ClientConn, LeanPass};

/// The `ProxyHttp` of one listener.
pub struct EdgeProxy {
    proxy: Arc<Proxy>,
    listener: Arc<str>,
    tls: bool,
    keepalive_secs: u64,
    limits: edge_config::HttpLimits,
    paths: PathOptions,
    /// This listener's series of `edge_http_sessionless_requests_total`:
    /// RAM hits and pass-throughs (looked up once, not per request).
    sessionless: [prometheus::IntCounter; 3],
    /// This listener's `edge_http_spliced_bytes_total`.
    spliced: prometheus::IntCounter,
}

impl EdgeProxy {
    pub fn new(
        proxy: Arc<Proxy>,
        listener: &str,
        tls: bool,
        settings: &edge_config::HttpListener,
    ) -> Self {
        let sessionless = ["ram_hit", "pass", "h2_ram_hit"].map(|way| {
            proxy
                .metrics
                .sessionless
                .with_label_values(&[listener, way])
        });
        let spliced = proxy.metrics.spliced.with_label_values(&[listener]);
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
            sessionless,
            spliced,
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

// Not `async_trait`: the vendored trait's filters return `impl Future`
// (vendor/pingora-proxy/EDGE-PATCH.md, third), so these `async fn`s are not
// boxed per call.
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {
        // None. pingora's default adds a response-compression module, disabled, whose context
        // and two boxed filter calls every request paid for (three allocations); edge does not
        // compress responses (a cached object is served as the origin encoded it).
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        prev: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(conn) = prev.downcast::<Arc<Connection>>() {
            // A request the HTTP/1 shortcut began (`lean_pass.rs`): this
            // path goes on with what it decided, under its number.
            let carried = conn
                .take_carried()
                .and_then(|c| c.downcast::<lean_pass::Carried>().ok());
            let index = carried.as_ref().and_then(|c| c.index);
            if let Some(carried) = carried {
                let lean_pass::Carried {
                    ctx: c, failure, ..
                } = *carried;
                *ctx = c;
                // The client's request as it came: its ids go on it again.
                ctx.ids_stamped = false;
                ctx.carried_failure = failure;
            }
            let begun = match index {
                Some(index) => conn.resume(index),
                None => conn.begin(),
            };
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
        self.early_request(session, ctx).await
    }

    fn allow_spawning_subrequest(&self, _session: &Session, ctx: &RequestCtx) -> bool {
        // Slices and prefetches; a slice or prefetch spawns nothing itself.
        self.proxy.cache().is_some() && ctx.cache.sub.is_none()
    }

    fn h1_sequential(&self, _session: &Session, _ctx: &RequestCtx) -> bool {
        // One of the HTTP/1 fast paths (`server.fast_paths`): a body-less HTTP/1 exchange that
        // does not cache is proxied by one loop instead of the duplex pump
        // (vendor/pingora-proxy/EDGE-PATCH.md).
        self.proxy.fast_paths()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.request_phase(session, ctx).await
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
        self.upstream_allowed(session, ctx).await
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        self.cacheable(session, resp, ctx)
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _e: &Error) -> bool {
        // Upstream errors are counted and logged by `errlog` (one line per
        // kind per interval); the client's own are not the node's to log.
        true
    }

    /// pingora's warnings are edge's access log: a client write error
    /// set aside while the cache fills is kept for it (`error`), as the
    /// error of a request that ended on it would be.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
        e: &Error,
        context: pingora_proxy::ProxyWarnLogContext,
    ) -> bool {
        if matches!(context, pingora_proxy::ProxyWarnLogContext::DownstreamCache) {
            // The client's, as the log says of every client failure.
            let _ = ctx
                .client_gone
                .set(crate::to_client::describe_as_clients(e).into());
        }
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
        error.is_none_or(|e| !crate::to_client::clients(e))
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        self.pick_upstream(session, ctx).await
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.upstream_request(session, upstream, ctx).await
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.upstream_response(session, upstream, ctx).await
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
        self.response_phase(session, response, ctx).await
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        self.connect_failed(ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        self.proxy_failed(peer, session, e, ctx, client_reused)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        self.answer_failure(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.log_request(session, e, ctx).await
    }
}

#[cfg(test)]
mod head_spare_tests;
#[cfg(test)]
mod resp_head_tests;
#[cfg(test)]
mod wait_timer_tests;

#[cfg(test)]
mod tests {
    use super::upstream::backoff;
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
