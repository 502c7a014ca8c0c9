//! The request phase: the listener's door (or a subrequest's copy of its
//! parent), the route, then the route's compiled steps in order
//! ([`RequestStep`]): limits → gate → pool → cache → upstream plan, or a
//! direct answer. A step that answers ends the phase.

use super::*;
use crate::route::RequestStep;

impl EdgeProxy {
    pub(super) async fn early_request(
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
        // HTTP/2: a body write waiting for the client's flow-control window
        // never reaches the socket, whose send timeout (`listen/buffered.rs`)
        // would not see it. HTTP/1's writes all do: no timer per write.
        if session.is_http2() {
            session.set_write_timeout(Some(self.limits.send_timeout));
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

    pub(super) async fn request_phase(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
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
        // A request the HTTP/1 shortcut handed over keeps the ids and the
        // trace (sampled once) it decided.
        if ctx.trace.is_none() {
            (ctx.request_id, ctx.request_id_new) = crate::request_id::choose(session.req_header());
            let sample_new = self.proxy.tracing().map(|t| t.sample_ratio);
            ctx.trace = Some(crate::trace_context::continue_or_start(
                session.req_header(),
                sample_new,
            ));
        }
        if !self.tls && ctx.cache.sub.is_none() {
            let path = session.req_header().uri.path();
            if path.starts_with(crate::listen::acme::HTTP01_PREFIX) {
                if let Some(answer) = self.proxy.acme_http01.answer(path) {
                    // RFC 8555 §8.3: the key authorization, before any route
                    // (a redirect to https must not hide it).
                    respond(
                        session,
                        200,
                        "application/octet-stream",
                        Bytes::from(answer),
                        &[],
                        Decor::NONE,
                    )
                    .await?;
                    return Ok(true);
                }
            }
        }
        // A request the HTTP/1 shortcut tried first stays with the state its
        // attempt was made in (its backend's index is into that pool).
        let state = match (&ctx.carried_failure, &ctx.state) {
            (Some(_), Some(state)) => state.clone(),
            _ => self.proxy.state(),
        };
        ctx.state = Some(state.clone());
        let Some(route) = self.route(session, ctx, &state) else {
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
        // Edge's own subrequests were let in with their parent.
        let client = ctx.cache.sub.is_none();
        for step in &route.request_steps {
            let answered = match step {
                RequestStep::Limits => client && self.protect(session, ctx, &state, &route).await?,
                RequestStep::Gate => client && self.gate(session, ctx, &state, &route).await?,
                RequestStep::Pool => {
                    let pool = match route.action {
                        Action::Proxy { pool } => state.pools.get(pool).cloned(),
                        _ => None,
                    };
                    if let Some(pool) = &pool {
                        ctx.deadline = ctx.timeouts(pool).total.map(|t| ctx.start + t);
                    }
                    ctx.pool = pool;
                    false
                }
                RequestStep::Cache => self.serve_cached(session, ctx, &state, &route).await?,
                RequestStep::Plan => {
                    let cached = matches!(ctx.cache.way, Some(Way::Whole | Way::Sliced));
                    ctx.plan
                        .choose_shield(&mut ctx.pool, &state, session.req_header(), cached);
                    false
                }
                RequestStep::Answer => {
                    self.answer(session, ctx, &route).await?;
                    true
                }
            };
            if answered {
                return Ok(true);
            }
        }
        // On toward the cache phases and the upstream.
        ctx.stamp_ids(session.req_header_mut());
        Ok(false)
    }

    /// The first route that matches, in priority order.
    fn route(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        state: &ProxyState,
    ) -> Option<Arc<CompiledRoute>> {
        self.route_of(session.req_header(), &ctx.host, state)
    }

    /// The first route in `state` that matches `req` (normalized by the
    /// door) for `host` (the door's host, without a port), in priority order.
    pub(super) fn route_of(
        &self,
        req: &RequestHeader,
        host: &str,
        state: &ProxyState,
    ) -> Option<Arc<CompiledRoute>> {
        let cookies = if state.routes.needs_cookies {
            parse_cookies(&req.headers)
        } else {
            Vec::new()
        };
        let view = RequestView {
            listener: &self.listener,
            host,
            path: req.uri.path(),
            query: req.uri.query(),
            method: &req.method,
            headers: &req.headers,
            cookies: &cookies,
        };
        state.routes.find(&view).cloned()
    }
}
