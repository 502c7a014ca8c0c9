//! Picking the upstream: the upstream plan's tier (owner, shield, the
//! route's pool), the pool's request limit, backoff between retries, the
//! backend (sticky cookie, ring key, algorithm), the peer's timeouts and
//! TLS; whether a failure may go to another backend.

use super::*;
use crate::to_client::ToClient;

/// The hash input of ring algorithms; a missing key spreads at random.
pub(super) fn hash_key(pool: &Pool, session: &Session) -> Option<Vec<u8>> {
    hash_key_of(pool, session.req_header(), client_ip(session))
}

/// [`hash_key`] of a request and its client's address.
pub(super) fn hash_key_of(
    pool: &Pool,
    req: &RequestHeader,
    client: Option<IpAddr>,
) -> Option<Vec<u8>> {
    let key = match &pool.config.algorithm {
        Algorithm::SourceIpHash => client.map(|ip| ip.to_string().into_bytes()),
        Algorithm::ConsistentHash { key } => match key {
            HashKey::Uri => Some(
                req.uri
                    .path_and_query()
                    .map_or(req.uri.path(), |pq| pq.as_str())
                    .as_bytes()
                    .to_vec(),
            ),
            HashKey::Path => Some(req.uri.path().as_bytes().to_vec()),
            HashKey::ClientIp => client.map(|ip| ip.to_string().into_bytes()),
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

/// What a retry decision needs of the exchange with the client.
#[derive(Clone, Copy)]
pub(super) struct Exchange {
    /// The client has a response head.
    pub(super) answered: bool,
    /// The request's method is idempotent.
    pub(super) idempotent: bool,
    /// The request body outgrew what is kept for a retry.
    pub(super) truncated: bool,
}

/// Exponential backoff with full jitter before retry number `n` (1-based).
pub(super) fn backoff(policy: &Retry, n: u32) -> Duration {
    let exp = policy
        .backoff
        .saturating_mul(1u32 << n.saturating_sub(1).min(16));
    exp.min(policy.max_backoff).mul_f64(fastrand::f64())
}

/// An attempt's timeouts: the route's or pool's (`[site.timeouts]` toward
/// a peer), each capped by what is left of the request's `total`.
#[derive(Clone, Copy, Debug)]
pub(super) struct AttemptTimeouts {
    /// To connect (TCP, and TLS: twice it for both).
    pub(super) connect: Duration,
    pub(super) total_connect: Duration,
    /// The whole response head, from the first read for it: Envoy's
    /// per-try timeout, the vendored pingora-core's
    /// `response_header_timeout`.
    pub(super) first_byte: Duration,
    /// Each body read and write (Envoy's idle timeout), independent of
    /// `first_byte`.
    pub(super) idle: Duration,
}

impl AttemptTimeouts {
    pub(super) fn of(ctx: &RequestCtx, pool: &Pool, remaining: Option<Duration>) -> Self {
        let t = ctx.timeouts(pool);
        let cap = |d: Duration| remaining.map_or(d, |r| d.min(r));
        AttemptTimeouts {
            connect: cap(t.connect),
            total_connect: cap(t.connect + t.connect),
            first_byte: cap(t.first_byte),
            idle: cap(t.idle),
        }
    }
}

/// The peer for an attempt on backend `index` of `pool`, with the timeouts
/// left before the request's deadline.
pub(super) fn peer_for(
    ctx: &RequestCtx,
    req: &RequestHeader,
    pool: &Pool,
    index: usize,
    remaining: Option<Duration>,
) -> HttpPeer {
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
    let mut peer = crate::pool::peer::base_peer(backend.addr, tls, sni);
    if ctx.plan.tier == Tier::Owner {
        // From this node's own address: the owner knows a peer by it.
        if let Some(ip) = ctx.state.as_ref().and_then(|s| s.site.as_ref()?.bind) {
            let mut bind = pingora_core::connectors::l4::BindTo::default();
            bind.addr = Some(SocketAddr::new(ip, 0));
            peer.options.bind_to = Some(bind);
        }
    }
    let t = AttemptTimeouts::of(ctx, pool, remaining);
    peer.options.connection_timeout = Some(t.connect);
    peer.options.total_connection_timeout = Some(t.total_connect);
    peer.options.response_header_timeout = Some(t.first_byte);
    peer.options.read_timeout = Some(t.idle);
    peer.options.write_timeout = Some(t.idle);
    peer.options.http_upstream_request_policy = crate::hop::upstream_request_policy(req);
    if let Some(tls) = &pool.config.tls {
        peer.options.verify_cert = tls.verify;
        peer.options.verify_hostname = tls.verify;
        peer.options.ca = pool.ca.clone();
    }
    peer
}

impl EdgeProxy {
    /// Forwards a 1xx interim response (103 Early Hints) to the client
    /// when the cache holds the response back (RFC 9110 §15.2: a proxy
    /// forwards 1xx; RFC 9111 §3: they are never stored). Without the
    /// cache pingora forwards them itself. Not to HTTP/1.0 clients, not for
    /// a subrequest, not 101; an HTTP/2 client gets none (pingora's h2
    /// server writes one response head per stream).
    pub(super) async fn forward_interim(
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
        session
            .write_response_header(Box::new(head), false)
            .await
            .to_client()
    }

    /// Whether this non-owner keeps a copy of what the owner sent, counted.
    pub(super) fn keep_copy(&self, ctx: &RequestCtx) -> bool {
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
    pub(super) fn may_fail_over(&self, ctx: &RequestCtx) -> bool {
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
    pub(super) fn may_retry(&self, session: &Session, ctx: &RequestCtx, kind: RetryOn) -> bool {
        let exchange = Exchange {
            answered: session.response_written().is_some(),
            idempotent: session.req_header().method.is_idempotent(),
            truncated: session.as_ref().retry_buffer_truncated(),
        };
        self.may_retry_exchange(exchange, ctx, kind)
    }

    /// [`Self::may_retry`] of an exchange described by `exchange`.
    pub(super) fn may_retry_exchange(
        &self,
        exchange: Exchange,
        ctx: &RequestCtx,
        kind: RetryOn,
    ) -> bool {
        let Some(pool) = &ctx.pool else { return false };
        // The owner's answer is the site's: it asked the shield or origin.
        if ctx.plan.tier == Tier::Owner {
            return false;
        }
        // Once the client has a response head, another backend's answer
        // cannot follow it.
        if exchange.answered {
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
        let safe = kind == RetryOn::ConnectFailure || exchange.idempotent || policy.non_idempotent;
        if !safe || exchange.truncated {
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

impl EdgeProxy {
    pub(super) async fn pick_upstream(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.went_upstream = true;
        // The HTTP/1 shortcut's attempt failed (`lean_pass.rs`): answered
        // as that failure, or retried as after pingora's own attempt.
        if let Some((e, retry)) = ctx.carried_failure.take() {
            if !retry {
                return Err(e);
            }
        }
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
                let mut peer = peer_for(ctx, session.req_header(), &pool, index, remaining);
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

        Ok(Box::new(peer_for(
            ctx,
            session.req_header(),
            &pool,
            pick.index,
            remaining,
        )))
    }
}
