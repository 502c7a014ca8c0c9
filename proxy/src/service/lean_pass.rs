//! The HTTP/1 shortcut's pass-through (issue 17): a keep-alive `GET`/`HEAD`
//! without a body, on a route that proxies and does not cache, is sent to
//! its backend by the connection's own loop (`listen/http.rs`) without a
//! pingora session, over pingora's HTTP/1 client and its pool of idle
//! connections.
//!
//! It runs the pieces pingora's path runs, in its order: the door, the
//! route and the gate's cheap part (`lean.rs`, as the RAM-hit shortcut),
//! the request's id and trace, the pool's request limit, the pick, the
//! upstream request (written from the client's header map when edge's
//! edits only replace and append, `lean_request.rs`; else
//! `h1_upstream_request`: pingora's own rules, then
//! [`EdgeProxy::upstream_request_of`]), the answer's outcome
//! ([`EdgeProxy::upstream_answered`]), the client's head (hop-by-hop
//! fields, framing, `X-Cache`, decoration) and body, the connection back
//! to the pool, then the counters and the access log line (`log.rs`).
//!
//! What it does not do itself goes to pingora's path:
//! - before anything is decided (a site, a pool over TLS or with a sticky
//!   cookie): the request as it came, as if this path did not exist;
//! - before anything is sent (a sampled trace whose spans are exported, a
//!   full request limit, no backend to pick): the request as it came with
//!   its ids and trace ([`decided`]), so a trace is sampled once;
//! - a failed attempt (a request `h1_upstream_request` refuses, which
//!   pingora's path would refuse after connecting; a connection that
//!   failed, a reset or timeout before the answer's head, a bad head, a
//!   5xx the retry policy retries):
//!   judged by the same functions as pingora's path ([`EdgeProxy::connect_failed`],
//!   [`EdgeProxy::proxy_failed_exchange`]), then handed over with the
//!   request's state (the backend tried, the retries, the permit, the
//!   deadline, the ids; [`Carried`]): pingora's path retries it or
//!   answers the failure, as it would have after its own attempt.
//!
//! Once the client has the head, a failure ends the connection, as on
//! pingora's path.

use bytes::BytesMut;
use futures::FutureExt;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::v1::client::{HttpSession as UpstreamH1, RawHead, RawTask};
use pingora_core::protocols::http::v1::wait_timer::WaitTimer;
use pingora_core::protocols::http::HttpTask;
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::Peer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::upstream::{hash_key_of, peer_for, AttemptTimeouts, Exchange};
use super::*;
use crate::listen::Connection as ClientConnection;

/// The request to the backend: its bytes, or a header pingora writes.
enum Upstream {
    Head(BytesMut),
    Header(Box<RequestHeader>),
}

/// The client's connection a pass-through answers on.
pub struct ClientConn<'a> {
    pub stream: &'a mut Stream,
    /// What the client sent after this request (its next one); what it
    /// sends while this one is served is added.
    pub held: &'a mut BytesMut,
    /// What the connection's reader and its requests share.
    pub conn: &'a Arc<ClientConnection>,
    /// The client's address.
    pub client: Option<IpAddr>,
    /// The connection's timer for the waits of its requests' upstream
    /// sessions (made when first needed).
    pub wait_timer: &'a mut Option<WaitTimer>,
}

/// An upstream session with the client connection's [`WaitTimer`] lent to
/// it: its waits re-arm that one timer (vendored pingora-core,
/// `wait_timer.rs`: about 1,000 instructions fewer per request than a
/// timer registered per wait). Given back when this is dropped, whichever
/// way the request ends.
struct Lent<'a> {
    h1: &'a mut UpstreamH1,
    timer: &'a mut Option<WaitTimer>,
}

impl<'a> Lent<'a> {
    fn new(h1: &'a mut UpstreamH1, timer: &'a mut Option<WaitTimer>) -> Self {
        h1.lend_wait_timer(timer.take().unwrap_or_default());
        Lent { h1, timer }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        *self.timer = self.h1.take_wait_timer();
    }
}

impl std::ops::Deref for Lent<'_> {
    type Target = UpstreamH1;
    fn deref(&self) -> &UpstreamH1 {
        self.h1
    }
}

impl std::ops::DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut UpstreamH1 {
        self.h1
    }
}

/// What became of a request the pass-through was given.
pub enum LeanPass {
    /// Nothing was sent: pingora's path takes the request as it came.
    Pass,
    /// An attempt failed before the client had a head: pingora's path
    /// takes the request as it came, with the state the connection holds
    /// ([`Carried`]).
    Carried,
    /// Answered: the connection goes on with the next request.
    Answered,
    /// The client went away or its answer was cut off: the connection ends.
    Closed,
}

/// A request handed to pingora's path through the connection
/// ([`ClientConnection::carry`]) with what was decided for it: its context
/// (the trace and ids; after an attempt, the backend tried, the attempt,
/// the retries, the permit, the deadline), the failure as judged, and the
/// number the connection gave it.
pub(super) struct Carried {
    pub(super) ctx: RequestCtx,
    /// The attempt's failure, and whether it is retried.
    pub(super) failure: Option<(Box<Error>, bool)>,
    /// The request's number on the connection, if it was begun.
    pub(super) index: Option<u64>,
}

/// Body reads already in taken into one write at most (pingora's
/// `TASK_BUFFER_SIZE`).
const READ_AHEAD: usize = 4;

/// How the client's body is framed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (`HEAD`, 204, 304).
    None,
    /// `Content-Length` bytes.
    Length,
    /// Chunked (the backend's chunks, or a body delimited by its close).
    Chunked,
}

/// The pieces of the client's side of the exchange.
struct Downstream<'a> {
    stream: &'a mut Stream,
    /// The status of the last head written whole, 1xx included (0: none):
    /// what the access log says was answered, as pingora's `response_written`.
    written: u16,
    /// The final head was written whole.
    head_out: bool,
    /// Body bytes written.
    body_out: u64,
}

impl Downstream<'_> {
    async fn write(&mut self, bytes: &[u8], context: &'static str) -> Result<()> {
        self.stream.write_all(bytes).await.map_err(|e| {
            Error::create(
                ErrorType::WriteError,
                ErrorSource::Downstream,
                Some(context.into()),
                Some(Box::new(e)),
            )
        })
    }

    async fn flush(&mut self, context: &'static str) -> Result<()> {
        self.stream.flush().await.map_err(|e| {
            Error::create(
                ErrorType::WriteError,
                ErrorSource::Downstream,
                Some(context.into()),
                Some(Box::new(e)),
            )
        })
    }

    /// Body pieces, as one chunk or as they came; `end`: the body ends
    /// with them (a chunked one gets its last chunk).
    async fn body(&mut self, pieces: &[Bytes], framing: Framing, end: bool) -> Result<()> {
        if framing == Framing::None {
            return Ok(());
        }
        let len: usize = pieces.iter().map(Bytes::len).sum();
        if framing == Framing::Chunked && len > 0 {
            let mut size = [0u8; 18];
            let size = chunk_size_line(len, &mut size);
            self.write(size, "while writing body").await?;
        }
        for piece in pieces {
            self.write(piece, "while writing body").await?;
            // As pingora's writer counts a cut-off body: what went out.
            self.body_out += piece.len() as u64;
        }
        if framing == Framing::Chunked {
            let tail: &[u8] = match (len > 0, end) {
                (true, true) => b"\r\n0\r\n\r\n",
                (true, false) => b"\r\n",
                (false, true) => b"0\r\n\r\n",
                (false, false) => b"",
            };
            if !tail.is_empty() {
                self.write(tail, "while writing body").await?;
            }
        }
        Ok(())
    }
}

/// A chunk's size line (RFC 9112 §7.1: hex digits, then CRLF), written
/// into `out`, as pingora's writer writes it (upper case, no leading
/// zero).
fn chunk_size_line(len: usize, out: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut at = out.len() - 2;
    out[at..].copy_from_slice(b"\r\n");
    let mut n = len;
    loop {
        at -= 1;
        out[at] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    &out[at..]
}

impl EdgeProxy {
    /// Passes `req` through (read on an HTTP/1 keep-alive connection, as
    /// the shortcut takes it: `GET` or `HEAD`, HTTP/1.1, no body, no
    /// `Connection` or `Upgrade` field) when nothing on pingora's path
    /// would do more; see the module's text. `candidate`: the route
    /// [`EdgeProxy::shortcut_may_take`] found, one that passes through.
    pub async fn lean_pass(
        &self,
        connector: &Connector,
        client_conn: ClientConn<'_>,
        req: &mut RequestHeader,
        candidate: Candidate,
    ) -> LeanPass {
        let ClientConn {
            stream,
            held,
            conn,
            client,
            wait_timer,
        } = client_conn;
        let Some(lean::Admitted {
            mut ctx,
            state,
            route,
            pool,
        }) = self.shortcut_door(req, client, candidate)
        else {
            return LeanPass::Pass;
        };
        if state.site.is_some() {
            // Tiers, the owner, `CDN-Loop`: pingora's.
            return LeanPass::Pass;
        }
        let Some(pool) = state.pools.get(pool).cloned() else {
            return LeanPass::Pass;
        };
        if pool.config.tls.is_some() || pool.uses_cookie().is_some() {
            return LeanPass::Pass;
        }
        // As the request phase: the id and trace every request gets. A
        // trace whose spans are exported is pingora's, with this decision
        // (sampled once, not again there).
        let tracing = self.proxy.tracing();
        let trace =
            crate::trace_context::continue_or_start(req, tracing.as_ref().map(|t| t.sample_ratio));
        (ctx.request_id, ctx.request_id_new) = crate::request_id::choose(req);
        ctx.trace = Some(trace);
        // From here a request this path does not send goes to pingora's
        // with these ids and this trace (`decided`), not drawn again.
        let hand_over = |ctx: &RequestCtx| {
            carry(conn, decided(ctx), None, None);
            LeanPass::Carried
        };
        if tracing.is_some() && trace.sampled() {
            return hand_over(&ctx);
        }
        ctx.state = Some(state);
        ctx.route = Some(route);
        ctx.deadline = ctx.timeouts(&pool).total.map(|t| ctx.start + t);
        ctx.pool = Some(pool.clone());
        // pingora's path stamps the ids where the request phase ends; here
        // the upstream request writes them (`lean_request.rs`) or they are
        // stamped before it is built, unless the pick reads a field.
        if matches!(
            pool.config.algorithm,
            Algorithm::ConsistentHash {
                key: HashKey::Header(_)
            }
        ) {
            ctx.stamp_ids(req);
        }
        // The pick, as `pick_upstream`'s first attempt; anything that
        // would wait or answer is pingora's.
        ctx.went_upstream = true;
        match pool.admit(Duration::ZERO).await {
            Ok(permit) => ctx.permit = permit,
            Err(_) => return hand_over(&ctx),
        }
        pool.counters.active.fetch_add(1, Ordering::Relaxed);
        ctx.counted_active = true;
        ctx.hash_key = hash_key_of(&pool, req, client);
        let remaining = ctx
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        if remaining.is_some_and(|r| r.is_zero()) {
            return hand_over(&ctx);
        }
        // Judged as of the request's start, a moment ago (one clock read
        // fewer).
        let Ok(pick) = pool.select_at(ctx.start, &ctx.tried, None, ctx.hash_key.as_deref()) else {
            return hand_over(&ctx);
        };
        ctx.tried.push(pick.index);
        ctx.start_attempt(&pool, pick, false);
        // The backend as the connector knows it, made with the pool (an
        // attempt's own peer only for a new connection, below).
        let plain = &pool.backends[pick.index].plain;
        let times = AttemptTimeouts::of(&ctx, &pool, remaining);
        // From here the request is this path's: numbered on the connection
        // as pingora numbers it, in flight for the connection's reader.
        let index = conn.begin().index;
        let carried =
            |this: &Self, mut ctx: Box<RequestCtx>, e: Box<Error>, reused: bool, exchange| {
                let e = this.proxy_failed_exchange(&plain.peer, exchange, e, &mut ctx, reused);
                let retry = e.retry();
                carry(conn, *ctx, Some((e, retry)), Some(index));
                LeanPass::Carried
            };
        let mut exchange = Exchange {
            answered: false,
            idempotent: true,
            truncated: false,
        };
        // The upstream request: written from the client's header map when
        // edge's edits only replace and append (`lean_request.rs`), else
        // built as pingora's path builds it.
        let policy = crate::hop::upstream_request_policy(req);
        let upstream = match self.plain_upstream_head(client, req, &ctx, policy) {
            Some(head) => {
                ctx.ids_stamped = true;
                Upstream::Head(head)
            }
            None => {
                ctx.stamp_ids(req);
                let upstream = pingora_proxy::h1_upstream_request(req, policy, |up| {
                    self.upstream_request_of(client, up, &mut ctx)
                });
                match upstream {
                    Ok(u) => Upstream::Header(Box::new(u)),
                    Err(e) => return carried(self, ctx, e, false, exchange),
                }
            }
        };
        // The session made here, over the stream the connector gives (not
        // made there and moved out through its layers).
        // A pooled connection is found under the plain peer's key; a new
        // one is made with this attempt's peer (its connect timeouts).
        let got = match connector.reused_h1_stream(&plain.peer, plain.key).await {
            Some(stream) => Some(Ok((stream, true))),
            None => {
                let peer = peer_for(&ctx, req, &pool, pick.index, remaining);
                let made = connector.new_h1_stream(&peer).await;
                made.map(|made| made.map(|stream| (stream, false)))
            }
        };
        let (stream_up, reused) = match got {
            Some(Ok(got)) => got,
            None => {
                let e = Error::explain(ErrorType::InternalError, "not an HTTP/1 upstream");
                return carried(self, ctx, e, false, exchange);
            }
            Some(Err(mut e)) => {
                e.as_up();
                let e = self.connect_failed(&mut ctx, e).into_up();
                let retry = e.retry();
                carry(conn, *ctx, Some((e, retry)), Some(index));
                return LeanPass::Carried;
            }
        };
        // As on pingora's path, the wait for the answer counts from here,
        // not from before the connection (`upstream_ms`, the latency the
        // backend's selection sees).
        ctx.upstream_sent = Some(Instant::now());
        // The attempt's timeouts, as `peer_for` gives them to pingora's.
        let mut session = UpstreamH1::new_with_options(stream_up, &plain.peer);
        session.response_header_timeout = Some(times.first_byte);
        session.read_timeout = Some(times.idle);
        session.write_timeout = Some(times.idle);
        session.set_body_pieces_kept(false);
        // Its waits re-arm the connection's timer, given back however
        // this ends (`Lent`).
        let mut h1 = Lent::new(&mut session, wait_timer);
        let written = match upstream {
            Upstream::Head(head) => {
                let head_method = req.method == http::Method::HEAD;
                h1.write_request_head(&head, head_method).await
            }
            Upstream::Header(header) => h1.write_request_header(header).await,
        };
        if let Err(e) = written {
            return carried(self, ctx, e.into_up(), reused, exchange);
        }
        // A request that could not be finished is not retried from here:
        // the answer may still come, and a failed read then reports this
        // (pingora's sequential loop).
        let mut send_error = h1.finish_body().await.err();
        let mut upstream_reusable = send_error.is_none();
        let mut client_side = Downstream {
            stream,
            written: 0,
            head_out: false,
            body_out: 0,
        };
        let mut framing = Framing::None;
        let mut outcome: Result<()> = Ok(());
        // The client is watched while the backend is awaited, as pingora's
        // loop watches it: gone, the exchange ends at once (nginx's 499);
        // bytes of its next request are kept for it (`held`).
        let mut watch = true;
        // Whether the rest of a long body may be spliced (`splice.rs`);
        // off for this body once no pipe could be had.
        let mut may_splice = cfg!(target_os = "linux");
        loop {
            let read = if watch {
                tokio::select! {
                    biased;
                    read = h1.read_response_task_raw() => Some(read),
                    probe = client_side.stream.read_buf(held) => match probe {
                        Ok(0) => {
                            outcome = Err(Error::explain(
                                ErrorType::ConnectionClosed,
                                if client_side.head_out {
                                    "Prematurely before response body is complete"
                                } else {
                                    "Prematurely before response header is sent"
                                },
                            )
                            .into_down());
                            break;
                        }
                        Ok(_) => {
                            watch = false;
                            None
                        }
                        Err(e) => {
                            outcome = Err(Error::because(
                                ErrorType::ReadError,
                                "during HTTP body-or-idle state",
                                e,
                            )
                            .into_down());
                            break;
                        }
                    },
                }
            } else {
                Some(h1.read_response_task_raw().await)
            };
            let Some(read) = read else {
                continue;
            };
            // A final head with a plain length is written from the
            // backend's lines (`lean_head.rs`) when nothing in it would
            // change; any other is built into a header map.
            let read = match read {
                Ok(RawTask::Head(raw, end)) => match lean_head::plain(&raw, ctx.decor()) {
                    Some(plain) => Ok(Got::Raw(raw, plain, end)),
                    None => raw
                        .into_response_header()
                        .map(|head| Got::Task(HttpTask::Header(head, end))),
                },
                Ok(RawTask::Task(task)) => Ok(Got::Task(task)),
                Err(e) => Err(e),
            };
            let task = match read {
                Ok(Got::Task(HttpTask::Failed(e))) | Err(e) => {
                    let e = send_error.take().unwrap_or(e).into_up();
                    if exchange.answered {
                        outcome = Err(e);
                        break;
                    }
                    return carried(self, ctx, e, reused, exchange);
                }
                Ok(task) => task,
            };
            let mut head_out = None;
            // Inline: no allocation for the pieces of a usual answer.
            let mut pieces = smallvec::SmallVec::<[Bytes; READ_AHEAD + 1]>::new();
            let mut end = false;
            match task {
                Got::Raw(raw, plain, head_end) => {
                    let code = raw.status().as_u16();
                    ctx.response_started = true;
                    ctx.cache.upstream_status = Some(code);
                    let kind = self.upstream_answered_with(
                        code,
                        |name| lean_head::field(&raw, name),
                        &mut ctx,
                    );
                    if let Some(kind) = kind {
                        if self.may_retry_exchange(exchange, &ctx, kind) {
                            let e = response::retrying(&mut ctx, code);
                            return carried(self, ctx, e, reused, exchange);
                        }
                    }
                    let x_cache = caching::bypass_x_cache(&mut ctx.cache);
                    framing = raw_framing(req, code);
                    let head = lean_head::client_head(&raw, &plain, x_cache, ctx.decor().ops);
                    head_out = Some((code, head));
                    end = head_end;
                }
                Got::Task(HttpTask::Header(mut head, head_end)) => {
                    let code = head.status.as_u16();
                    if code == 101 {
                        // RFC 9110 §7.8: no upgrade was asked for.
                        let e = Error::explain(
                            ErrorType::InvalidHTTPHeader,
                            "the backend switched protocols for a request that asked for no upgrade",
                        )
                        .into_up();
                        if exchange.answered {
                            outcome = Err(e);
                            break;
                        }
                        return carried(self, ctx, e, reused, exchange);
                    }
                    ctx.response_started = true;
                    if code < 200 {
                        // RFC 9110 §15.2: a proxy forwards 1xx, with the
                        // fields pingora's path gives it, at once; the
                        // client has an answer from then on.
                        exchange.answered = true;
                        conn.answered(index, code);
                        let written = self
                            .interim(&mut client_side, &mut head, req, &mut ctx)
                            .await;
                        if let Err(e) = written {
                            outcome = Err(e);
                            break;
                        }
                        continue;
                    }
                    ctx.cache.upstream_status = Some(code);
                    if let Some(kind) = self.upstream_answered(&head, &mut ctx) {
                        if self.may_retry_exchange(exchange, &ctx, kind) {
                            let e = response::retrying(&mut ctx, code);
                            return carried(self, ctx, e, reused, exchange);
                        }
                    }
                    framing = match client_head(&mut head, req, &mut ctx, head_end) {
                        Ok(f) => f,
                        Err(e) => {
                            outcome = Err(e);
                            break;
                        }
                    };
                    head_out = Some((code, head_bytes(&head)));
                    end = head_end;
                }
                Got::Task(HttpTask::Body(piece, body_end)) => {
                    pieces.extend(piece);
                    end = body_end;
                }
                Got::Task(HttpTask::Done) => end = true,
                Got::Task(HttpTask::Trailer(_)) => {}
                Got::Task(HttpTask::UpgradedBody(..) | HttpTask::Failed(_)) => {
                    outcome = Err(Error::explain(
                        ErrorType::InternalError,
                        "an upgraded body on a request that asked for no upgrade",
                    ));
                    break;
                }
            }
            // What the backend already sent goes out in one write, as
            // pingora's loop batches it (a 2 MiB body in about 11 writes,
            // not one per read; one chunk per batch).
            let mut late = None;
            // What is left on the socket is spliced below, not read.
            let mut splice_next = false;
            while !end && pieces.len() < READ_AHEAD {
                #[cfg(target_os = "linux")]
                if may_splice
                    && framing == Framing::Length
                    && splice::worth_it(&mut h1, client_side.stream)
                {
                    splice_next = true;
                    break;
                }
                let Some(read) = tokio::task::unconstrained(h1.read_response_task()).now_or_never()
                else {
                    break;
                };
                match read {
                    Ok(HttpTask::Body(piece, body_end)) => {
                        pieces.extend(piece);
                        end = body_end;
                    }
                    Ok(HttpTask::Done) => end = true,
                    Ok(HttpTask::Trailer(_)) => {}
                    Ok(HttpTask::Failed(e)) | Err(e) => {
                        late = Some(e.into_up());
                        break;
                    }
                    Ok(_) => {
                        late = Some(Error::explain(
                            ErrorType::InternalError,
                            "an unexpected response task while reading the body",
                        ));
                        break;
                    }
                }
            }
            // `total` bounds the body too (Envoy's route timeout), checked
            // as each piece comes (`upstream_response_body_filter`), and
            // before a splice as before a piece: a piece past it is not
            // written; before the head is, the failure is pingora's path's
            // to answer (a 504).
            if late.is_none()
                && (!pieces.is_empty() || splice_next)
                && !end
                && ctx.deadline.is_some_and(|d| Instant::now() >= d)
            {
                ctx.failure = Some(Failure::Deadline);
                let e = Error::explain(
                    ErrorType::ReadTimedout,
                    "total timeout passed while the body was streaming",
                );
                if head_out.is_some() && !exchange.answered {
                    return carried(self, ctx, e, reused, exchange);
                }
                outcome = Err(e);
                break;
            }
            if let Some((code, head)) = head_out {
                conn.answered(index, code);
                exchange.answered = true;
                if let Err(e) = client_side.write(&head, "writing response header").await {
                    outcome = Err(e);
                    break;
                }
                client_side.written = code;
                client_side.head_out = true;
            }
            if let Err(e) = client_side.body(&pieces, framing, end).await {
                outcome = Err(e);
                break;
            }
            let context = if framing == Framing::None {
                "flushing response header"
            } else {
                "flushing body"
            };
            if let Err(e) = client_side.flush(context).await {
                outcome = Err(e);
                break;
            }
            if let Some(e) = late {
                outcome = Err(e);
                break;
            }
            if end {
                break;
            }
            // The rest of a long `Content-Length` body, both sides plain
            // TCP: spliced, not read and written (`splice.rs`).
            #[cfg(target_os = "linux")]
            if may_splice
                && framing == Framing::Length
                && client_side.head_out
                && splice::worth_it(&mut h1, client_side.stream)
            {
                let before = client_side.body_out;
                let spliced = splice::body(
                    &mut h1,
                    client_side.stream,
                    held,
                    &mut watch,
                    ctx.deadline,
                    &mut client_side.body_out,
                )
                .await;
                self.spliced.inc_by(client_side.body_out - before);
                outcome = match spliced {
                    // No pipe: read and written, as any body.
                    Ok(false) => {
                        may_splice = false;
                        continue;
                    }
                    Ok(true) => Ok(()),
                    Err(splice::Cut::Up(e)) => Err(send_error.take().unwrap_or(e).into_up()),
                    Err(splice::Cut::Down(e)) => Err(e.into_down()),
                    Err(splice::Cut::Deadline) => {
                        ctx.failure = Some(Failure::Deadline);
                        Err(Error::explain(
                            ErrorType::ReadTimedout,
                            "total timeout passed while the body was streaming",
                        ))
                    }
                };
                break;
            }
        }
        let (written, body_out) = (client_side.written, client_side.body_out);
        if outcome.is_err() {
            upstream_reusable = false;
        }
        // `is_body_done` only once a head was read (before, pingora's
        // body reader is not set up and it panics).
        let reusable = upstream_reusable && h1.is_body_done();
        drop(h1);
        if reusable {
            // Kept without an await where none is needed (the session is
            // not moved through the release's async layers).
            session.respect_keepalive();
            match session.into_reusable() {
                Ok(stream) => {
                    connector.release_h1_stream_keyed(stream, plain.key, plain.peer.idle_timeout())
                }
                Err(mut session) => session.shutdown().await,
            }
        }
        if written == 0 {
            conn.answered(index, 0);
        }
        conn.end();
        self.sessionless[1].inc();
        // Every failure goes where pingora's path sends it
        // (`error_while_proxy`): counted, and named with the backend.
        let e = match outcome {
            Ok(()) => None,
            Err(e) => Some(self.proxy_failed_exchange(&plain.peer, exchange, e, &mut ctx, reused)),
        };
        self.count_and_log(req, client, e.as_deref(), &ctx, (written, body_out), false);
        if e.is_none() {
            LeanPass::Answered
        } else {
            LeanPass::Closed
        }
    }

    /// A 1xx head forwarded to the client at once, with the fields
    /// [`client_fields`] gives it.
    async fn interim(
        &self,
        client: &mut Downstream<'_>,
        head: &mut ResponseHeader,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        client_fields(head, req, ctx)?;
        client
            .write(&head_bytes(head), "writing response header")
            .await?;
        client.written = head.status.as_u16();
        client.flush("flushing response header").await
    }
}

/// The client's head from the backend's, as pingora's path makes it:
/// a body with neither length nor chunks sent chunked as HTTP/1.1
/// (pingora's `h1_response_filter`), [`client_fields`], then
/// pingora's HTTP/1 writer's `Date` where the backend gave none and
/// `Connection: keep-alive`; and how its body is framed. `end`: the
/// backend's answer has no body to come.
pub(super) fn client_head(
    head: &mut ResponseHeader,
    req: &RequestHeader,
    ctx: &mut RequestCtx,
    end: bool,
) -> Result<Framing> {
    let code = head.status.as_u16();
    let no_body = req.method == http::Method::HEAD || code == 204 || code == 304;
    if !no_body
        && !end
        && !head.headers.contains_key(http::header::TRANSFER_ENCODING)
        && !head.headers.contains_key(http::header::CONTENT_LENGTH)
    {
        head.set_version(http::Version::HTTP_11);
        head.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    client_fields(head, req, ctx)?;
    if !head.headers.contains_key(http::header::DATE) {
        head.insert_header(
            http::header::DATE,
            pingora_core::protocols::http::date::get_cached_date(),
        )?;
    }
    head.insert_header(http::header::CONNECTION, "keep-alive")?;
    Ok(if no_body {
        Framing::None
    } else if head.headers.contains_key(http::header::TRANSFER_ENCODING) {
        Framing::Chunked
    } else {
        Framing::Length
    })
}

/// What `response_phase` does to every head the client gets, 1xx
/// included: hop-by-hop fields out, a body delimited by the backend's
/// close sent chunked, `X-Cache` and `Age`, the route's decoration.
fn client_fields(
    head: &mut ResponseHeader,
    req: &RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    crate::hop::strip_response(head, false);
    if crate::hop::delimited_by_close(head, &req.method) {
        head.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    caching::bypass_fields(&mut ctx.cache, head)?;
    ctx.decor().apply(head)
}

/// How the client's body of a head read raw (`lean_head.rs`: a plain
/// length) is framed: none for `HEAD`, 204 and 304 (RFC 9110 §6.4.1).
pub(super) fn raw_framing(req: &RequestHeader, code: u16) -> Framing {
    if req.method == http::Method::HEAD || code == 204 || code == 304 {
        Framing::None
    } else {
        Framing::Length
    }
}

/// What the backend's answer gave the loop.
enum Got {
    /// A final head written from the backend's lines (`lean_head.rs`),
    /// and whether its body is done.
    Raw(RawHead, lean_head::Plain, bool),
    /// Anything else, as pingora's client gives it.
    Task(HttpTask),
}

/// A response head as pingora's HTTP/1 writer serializes it.
pub(super) fn head_bytes(head: &ResponseHeader) -> BytesMut {
    let mut buf = BytesMut::with_capacity(512);
    buf.extend_from_slice(match head.version {
        http::Version::HTTP_10 => b"HTTP/1.0 ",
        http::Version::HTTP_09 => b"HTTP/0.9 ",
        _ => b"HTTP/1.1 ",
    });
    buf.extend_from_slice(head.status.as_str().as_bytes());
    buf.extend_from_slice(b" ");
    if let Some(reason) = head.get_reason_phrase() {
        buf.extend_from_slice(reason.as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
    head.header_to_h1_wire(&mut buf);
    buf.extend_from_slice(b"\r\n");
    buf
}

/// A new context with only what was decided for `ctx`'s request before
/// anything was taken for it: when it started, its ids and its trace.
pub(super) fn decided(ctx: &RequestCtx) -> RequestCtx {
    let mut d = RequestCtx::new();
    d.start = ctx.start;
    d.request_id = ctx.request_id.clone();
    d.request_id_new = ctx.request_id_new;
    d.trace = ctx.trace;
    d
}

/// Hands a request's state to pingora's path through the connection.
pub(super) fn carry(
    conn: &ClientConnection,
    ctx: RequestCtx,
    failure: Option<(Box<Error>, bool)>,
    index: Option<u64>,
) {
    conn.carry(Box::new(Carried {
        ctx,
        failure,
        index,
    }));
}

#[cfg(test)]
mod tests {
    use super::chunk_size_line;

    /// The size line is what `format!("{len:X}\r\n")` (pingora's writer)
    /// gives, for every width from one digit to the largest `usize`.
    #[test]
    fn a_chunk_size_line_is_upper_case_hex_and_crlf() {
        let mut lens = vec![
            0,
            1,
            9,
            10,
            15,
            16,
            255,
            256,
            1024,
            4095,
            65_536,
            usize::MAX,
        ];
        lens.extend((0..64).map(|bit| 1usize << bit));
        lens.extend((1..64).map(|bit| (1usize << bit) - 1));
        lens.extend((0..1000).map(|_| fastrand::usize(..)));
        for len in lens {
            let mut out = [0u8; 18];
            assert_eq!(
                chunk_size_line(len, &mut out),
                format!("{len:X}\r\n").as_bytes(),
                "{len}"
            );
        }
    }
}
