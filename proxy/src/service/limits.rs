//! The door and the limits: the connection reader's refusals, head limits,
//! `Host` and path normalization (`normalize`), then a route's body limit,
//! a site peer's request recognized, and its rate limits.

use super::*;

impl EdgeProxy {
    /// The door: a refusal by the connection's reader, head limits, then
    /// `Host` and path normalization ([`normalize`]). True when edge answered.
    pub(super) async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let text = "text/plain; charset=utf-8";
        if let Some(r) = ctx.framing_refusal {
            ctx.close_unread(session);
            let body = Bytes::from(format!("{}\n", r.reason));
            respond(session, r.status, text, body, &[], Decor::NONE).await?;
            return Ok(true);
        }
        // A stream the HTTP/2 shortcut let through its door and then left
        // to this path (`lean_h2.rs`): the door ran on it as it came.
        // Again, over the normalized request, its limits would count the
        // `Host` it gained and its escaped bytes, and its default port would
        // be the listener's, not the `:scheme` the URI no longer holds.
        if let Some(door) = session
            .req_header_mut()
            .extensions_mut()
            .remove::<DoorPassed>()
        {
            ctx.host = door.host;
            ctx.authority = door.authority;
            return Ok(false);
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
    pub(super) async fn protect(
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

/// What the door made of a request it let through (`normalize::admit`'s
/// host and `Host` value), carried on a request the HTTP/2 shortcut
/// admitted and then left to pingora's path.
#[derive(Clone)]
pub(super) struct DoorPassed {
    pub(super) host: String,
    pub(super) authority: String,
}
