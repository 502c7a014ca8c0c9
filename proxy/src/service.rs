//! The request path: one `ProxyHttp` implementation whose phases stay thin
//! and call into routes, pools and metrics.
//!
//! ```text
//! request_filter         route match; direct responses and redirects end here
//! upstream_peer          pick a backend of the route's pool (a retry picks another)
//! upstream_request_filter path rewrite, header edits, Host, X-Forwarded-*
//! upstream_response_filter upstream latency
//! response_filter        response header edits
//! fail_to_connect        count, decide whether to retry elsewhere
//! logging                per-route counters and histograms, access log
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use edge_config::Timeouts;
use http::Uri;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};

use crate::metrics::class_index;
use crate::pool::{BackendStats, Pool};
use crate::route::{
    matcher::parse_cookies, rewrite_path, Action, CompiledHeaderOps, CompiledRoute, RequestView,
};
use crate::state::{Proxy, ProxyState};

/// The `ProxyHttp` of one listener.
pub struct EdgeProxy {
    proxy: Arc<Proxy>,
    listener: Arc<str>,
    tls: bool,
    keepalive_secs: u64,
}

impl EdgeProxy {
    pub fn new(
        proxy: Arc<Proxy>,
        listener: &str,
        tls: bool,
        limits: &edge_config::HttpLimits,
    ) -> Self {
        Self {
            proxy,
            listener: Arc::from(listener),
            tls,
            keepalive_secs: limits.keepalive_timeout.as_secs().max(1),
        }
    }
}

/// Per-request state.
pub struct RequestCtx {
    start: Instant,
    state: Option<Arc<ProxyState>>,
    route: Option<Arc<CompiledRoute>>,
    pool: Option<Arc<Pool>>,
    /// Backends tried for this request, by index in the pool; the last is current.
    tried: Vec<usize>,
    in_flight: Option<Arc<BackendStats>>,
    upstream_sent: Option<Instant>,
    upstream_seconds: Option<f64>,
}

impl RequestCtx {
    fn backend_label(&self) -> &str {
        match (&self.pool, self.tried.last()) {
            (Some(p), Some(i)) => p.backends.get(*i).map_or("-", |b| b.label.as_str()),
            _ => "-",
        }
    }

    fn set_in_flight(&mut self, stats: Option<Arc<BackendStats>>) {
        if let Some(old) = self.in_flight.take() {
            old.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(new) = &stats {
            new.in_flight.fetch_add(1, Ordering::Relaxed);
            new.requests.fetch_add(1, Ordering::Relaxed);
        }
        self.in_flight = stats;
    }

    fn timeouts<'a>(&'a self, pool: &'a Pool) -> &'a Timeouts {
        self.route
            .as_ref()
            .and_then(|r| r.config.timeouts.as_ref())
            .unwrap_or(&pool.config.timeouts)
    }

    fn retry_attempts(&self, pool: &Pool) -> u32 {
        self.route
            .as_ref()
            .and_then(|r| r.config.retry.as_ref())
            .unwrap_or(&pool.config.retry)
            .attempts
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        self.set_in_flight(None);
    }
}

/// The request's host: lower-case, without port (`:authority` for HTTP/2).
fn request_host(req: &RequestHeader) -> String {
    let raw = req
        .uri
        .host()
        .map(str::to_string)
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    strip_port(&raw).to_ascii_lowercase()
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
    ops: Option<&CompiledHeaderOps>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    for (name, value) in extra {
        resp.insert_header(*name, value.as_str())?;
    }
    if let Some(ops) = ops {
        apply_response_ops(&mut resp, ops)?;
    }
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

fn apply_response_ops(resp: &mut ResponseHeader, ops: &CompiledHeaderOps) -> Result<()> {
    for name in &ops.remove {
        resp.remove_header(name);
    }
    for (name, value) in &ops.set {
        resp.insert_header(name.clone(), value.clone())?;
    }
    for (name, value) in &ops.add {
        resp.append_header(name.clone(), value.clone())?;
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

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            state: None,
            route: None,
            pool: None,
            tried: Vec::new(),
            in_flight: None,
            upstream_sent: None,
            upstream_seconds: None,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        session.set_keepalive(Some(self.keepalive_secs));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let state = self.proxy.state();
        let route = {
            let req = session.req_header();
            let host = request_host(req);
            let cookies = if state.routes.needs_cookies {
                parse_cookies(&req.headers)
            } else {
                Vec::new()
            };
            let view = RequestView {
                host: &host,
                path: req.uri.path(),
                query: req.uri.query(),
                method: &req.method,
                headers: &req.headers,
                cookies: &cookies,
            };
            state.routes.find(&view).cloned()
        };
        let Some(route) = route else {
            ctx.state = Some(state);
            respond(
                session,
                404,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"no route matches this request\n"),
                &[],
                None,
            )
            .await?;
            return Ok(true);
        };
        ctx.route = Some(route.clone());
        match &route.action {
            Action::Proxy { pool } => {
                ctx.pool = state.pools.get(*pool).cloned();
                ctx.state = Some(state);
                Ok(false)
            }
            Action::Respond {
                status,
                body,
                content_type,
            } => {
                ctx.state = Some(state);
                respond(
                    session,
                    *status,
                    content_type,
                    body.clone(),
                    &[],
                    Some(&route.response_headers),
                )
                .await?;
                Ok(true)
            }
            Action::Redirect { to, scheme, status } => {
                ctx.state = Some(state);
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
                    Some(&route.response_headers),
                )
                .await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .pool
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no pool for this route"))?;
        let Some(index) = pool.select(&ctx.tried) else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                format!("pool {}: no backend left to try", pool.name),
            ));
        };
        ctx.tried.push(index);
        let backend = &pool.backends[index];
        ctx.set_in_flight(Some(backend.stats.clone()));
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
        let t = ctx.timeouts(&pool);
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect + Duration::from_secs(1));
        peer.options.read_timeout = Some(t.first_byte.max(t.idle));
        peer.options.write_timeout = Some(t.idle);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        if let Some(tls) = &pool.config.tls {
            peer.options.verify_cert = tls.verify;
            peer.options.verify_hostname = tls.verify;
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(route) = &ctx.route {
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
        }
        if let Some(host) = ctx.pool.as_ref().and_then(|p| p.config.host.clone()) {
            upstream.insert_header(http::header::HOST, host)?;
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
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(sent) = ctx.upstream_sent {
            let secs = sent.elapsed().as_secs_f64();
            ctx.upstream_seconds = Some(secs);
            if let (Some(pool), Some(i)) = (&ctx.pool, ctx.tried.last()) {
                if let Some(b) = pool.backends.get(*i) {
                    b.metrics.upstream_seconds.observe(secs);
                }
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(route) = &ctx.route {
            if !route.response_headers.is_empty() {
                apply_response_ops(response, &route.response_headers)?;
            }
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
        if let (Some(pool), Some(i)) = (&ctx.pool, ctx.tried.last()) {
            if let Some(b) = pool.backends.get(*i) {
                b.metrics.connect_errors.inc();
                b.stats.failures.fetch_add(1, Ordering::Relaxed);
            }
            // A connect failure never reached the backend: safe to try another.
            let retries_used = ctx.tried.len().saturating_sub(1) as u32;
            e.set_retry(
                retries_used < ctx.retry_attempts(pool) && ctx.tried.len() < pool.backends.len(),
            );
        }
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
        if let (Some(pool), Some(i)) = (&ctx.pool, ctx.tried.last()) {
            if let Some(b) = pool.backends.get(*i) {
                b.metrics.proxy_errors.inc();
                b.stats.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut e = e.more_context(format!("peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let bytes = session.body_bytes_sent() as u64;
        let total = ctx.start.elapsed();
        let route_name = ctx.route.as_ref().map_or("-", |r| r.name.as_str());
        match &ctx.route {
            Some(route) => {
                route.metrics.by_class[class_index(status)].inc();
                route.metrics.seconds.observe(total.as_secs_f64());
                route.metrics.bytes.inc_by(bytes);
            }
            None => {
                let unmatched = &self.proxy.unmatched;
                unmatched.by_class[class_index(status)].inc();
                unmatched.seconds.observe(total.as_secs_f64());
                unmatched.bytes.inc_by(bytes);
            }
        }
        if self.proxy.access_log() {
            let req = session.req_header();
            tracing::info!(
                target: "access",
                listener = %self.listener,
                client = %client_ip(session).map_or_else(|| "-".to_string(), |ip| ip.to_string()),
                method = %req.method,
                path = %req.uri.path(),
                status,
                bytes,
                route = route_name,
                pool = ctx.pool.as_ref().map_or("-", |p| p.name.as_str()),
                backend = ctx.backend_label(),
                attempts = ctx.tried.len(),
                upstream_ms = ctx.upstream_seconds.map_or(-1.0, |s| (s * 1e6).round() / 1e3),
                total_ms = (total.as_secs_f64() * 1e6).round() / 1e3,
                error = e.map(|e| e.to_string()).unwrap_or_default(),
            );
        }
        ctx.set_in_flight(None);
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
}
