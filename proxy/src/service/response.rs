//! The response phases: the upstream's answer (latency, load feedback,
//! the attempt's outcome, a 5xx turned into a retry), then what the client
//! gets: hop-by-hop fields and framing, cache fields, the route's compiled
//! steps ([`ResponseStep`]: invalidation, prefetch), the decoration every
//! response of edge gets (`decorate.rs`), the sticky cookie.

use super::*;
use crate::route::ResponseStep;

/// The error that turns a backend's 5xx into a retry, the retry counted in
/// the budget.
pub(super) fn retrying(ctx: &mut RequestCtx, status: u16) -> Box<Error> {
    ctx.reserve_retry();
    ctx.retrying_response = true;
    Error::explain(
        ErrorType::HTTPStatus(status),
        format!(
            "{} answered {status}; retrying on another backend",
            ctx.backend_label()
        ),
    )
}

impl EdgeProxy {
    pub(super) async fn upstream_response(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream.status.as_u16();
        if status == 101 && !session.is_upgrade_req() {
            // RFC 9110 §7.8: a server switches protocols only for a
            // request that asked to; forwarded, the client would wait on
            // a tunnel no one feeds. A bad answer from the backend: 502.
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "the backend switched protocols for a request that asked for no upgrade",
            )
            .into_up());
        }
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
        let Some(kind) = self.upstream_answered(upstream, ctx) else {
            return Ok(());
        };
        // Only when a retry will happen: otherwise the backend's own
        // answer goes to the client.
        if self.may_retry(session, ctx, kind) {
            return Err(retrying(ctx, status));
        }
        Ok(())
    }

    /// What a final answer of the current attempt's backend tells: its
    /// latency, its load feedback, the attempt's outcome (outlier
    /// detection, the breaker); for a 5xx, how a retry would count it
    /// (`None`: not a 5xx, or no attempt).
    pub(super) fn upstream_answered(
        &self,
        upstream: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Option<RetryOn> {
        self.upstream_answered_with(
            upstream.status.as_u16(),
            |name| upstream.headers.get(name).map(|v| v.as_bytes()),
            ctx,
        )
    }

    /// [`Self::upstream_answered`] of a head given by its status and a
    /// field's first value by name (a head read raw, `lean_head.rs`).
    pub(super) fn upstream_answered_with<'a>(
        &self,
        status: u16,
        field: impl FnOnce(&str) -> Option<&'a [u8]>,
        ctx: &mut RequestCtx,
    ) -> Option<RetryOn> {
        let (Some(pool), Some(attempt)) = (ctx.pool.clone(), ctx.attempt.as_ref()) else {
            return None;
        };
        let backend = &pool.backends[attempt.index];
        // One clock read for the latency, its EWMA and the outcome.
        let now = Instant::now();
        if let Some(sent) = ctx.upstream_sent {
            let elapsed = now.saturating_duration_since(sent);
            ctx.upstream_seconds = Some(elapsed.as_secs_f64());
            backend
                .metrics
                .upstream_seconds
                .observe(elapsed.as_secs_f64());
            backend.state.observe_latency(elapsed, now);
        }
        if let Some(header) = pool
            .config
            .load_feedback
            .as_ref()
            .and_then(|l| l.header.as_deref())
        {
            // Visible ASCII and tabs, as `HeaderValue::to_str` takes.
            let visible = |v: &&[u8]| v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
            let load = field(header)
                .filter(visible)
                .and_then(|v| std::str::from_utf8(v).ok())
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
        ctx.record_at(outcome, now);
        (status >= 500).then_some(if outcome == Outcome::GatewayError {
            RetryOn::GatewayError
        } else {
            RetryOn::ServerError
        })
    }

    pub(super) async fn response_phase(
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
        if let (Some(rt), Some(route)) = (self.proxy.cache(), ctx.route.clone()) {
            for step in &route.response_steps {
                match step {
                    ResponseStep::Invalidate => {
                        let req = session.req_header();
                        if caching::invalidate::applies(req, response) {
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
                    ResponseStep::Prefetch => {
                        let segment = ctx.cache.sub.is_none()
                            && ctx.cache.way == Some(Way::Whole)
                            && matches!(response.status.as_u16(), 200 | 206)
                            && caching::kind_of(session.req_header(), response)
                                == edge_cache::video::Kind::Segment
                            && ctx.prefetches(session.req_header());
                        if let Some(pool) = ctx.pool.as_ref().filter(|_| segment) {
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
                }
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
}
