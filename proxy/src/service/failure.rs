//! Failures: a connection that failed (the next backend, outside policy
//! and budget), an error while proxying (a stale pooled connection tried
//! once more; else the retry policy), and edge's own 502/503/504 answers.

use super::*;

/// The kind of an upstream error, as logs and metrics name it.
pub(super) fn error_kind(e: &Error) -> String {
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
pub(super) fn stale_connection(e: &Error, idempotent: bool) -> bool {
    use ErrorType::*;
    match e.etype() {
        WriteError => true,
        ConnectionClosed | ReadError | H1Error | InvalidHTTPHeader => idempotent,
        _ => false,
    }
}

/// How a failed attempt maps onto `retry.on`.
pub(super) fn retry_kind(e: &Error) -> RetryOn {
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
    pub(super) fn connect_failed(&self, ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
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

    pub(super) fn proxy_failed(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let exchange = super::upstream::Exchange {
            answered: session.response_written().is_some(),
            idempotent: session.req_header().method.is_idempotent(),
            truncated: session.as_ref().retry_buffer_truncated(),
        };
        self.proxy_failed_exchange(peer, exchange, e, ctx, client_reused)
    }

    /// [`Self::proxy_failed`] of an exchange described by `exchange`.
    pub(super) fn proxy_failed_exchange(
        &self,
        peer: &HttpPeer,
        exchange: super::upstream::Exchange,
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
            && stale_connection(&e, exchange.idempotent)
            && !ctx.response_started
            && !ctx.stale_retried
            && !exchange.truncated
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
            && !exchange.truncated
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
            let retry = self.may_retry_exchange(exchange, ctx, retry_kind(&e));
            if retry {
                ctx.reserve_retry();
            }
            e.set_retry(retry);
        } else {
            e.set_retry(false);
        }
        e
    }

    pub(super) async fn answer_failure(
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
                        // The client gone (a closed connection, a failed
                        // write, pingora left it unmarked): nobody to answer.
                        ErrorSource::Unset if crate::to_client::clients(e) => {
                            (0, String::new(), None)
                        }
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
}
