//! Serving HTTP (and HTTPS) connections with pingora's `HttpProxy`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Peek, Ssl, Stream, ALPN, IO};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::buffered::{WriteBuffered, WRITE_CAPACITY};
use super::conn::Connection;
use super::framing::Limits;
use super::head::HeadGuard;
use super::inspect::{InspectSettings, Inspector};
use super::pingora_stream;
use super::shortcut::{self, Taken};
use super::tls::TlsSettings;
use super::{ConnectionHandler, HANDSHAKE_TIMEOUT};
use crate::metrics::ListenerMetrics;
use crate::service::EdgeProxy;
use crate::tcp::{proxy_protocol, PROXY_HEADER_TIMEOUT};

/// One HTTP or HTTPS listener's connection handler.
pub struct HttpHandler {
    name: String,
    app: Arc<HttpProxy<EdgeProxy>>,
    /// Swapped when certificates change on reload.
    tls: ArcSwapOption<TlsSettings>,
    metrics: ListenerMetrics,
    /// Framing limits and the head deadline of HTTP/1 connections.
    inspect: InspectSettings,
    accept_proxy_protocol: bool,
    h2c: bool,
    /// Reuses of a connection after its first request (`None`: no limit).
    max_requests: Option<u32>,
    /// How long a keep-alive connection may idle between requests.
    keepalive: std::time::Duration,
    /// How long a write may wait on a client that reads nothing.
    send_timeout: std::time::Duration,
    /// Unsent bytes the kernel holds per connection before a write waits
    /// (`TCP_NOTSENT_LOWAT`; 0: not set).
    notsent_lowat: u32,
    /// Set when this handler is replaced or its listener drains: idle
    /// connections close.
    retired: tokio::sync::watch::Sender<bool>,
}

impl HttpHandler {
    pub fn new(
        name: &str,
        proxy: EdgeProxy,
        conf: &Arc<pingora_core::server::configuration::ServerConf>,
        listener: &edge_config::HttpListener,
        tls: Option<TlsSettings>,
        metrics: ListenerMetrics,
    ) -> Arc<Self> {
        let mut app = pingora_proxy::http_proxy(conf, proxy);
        let mut options = HttpServerOptions::default();
        options.h2c = listener.h2c;
        // HTTP/2 connections with no stream for the keep-alive timeout
        // close (a head never completed leaves no stream).
        options.h2_idle_timeout = Some(listener.limits.keepalive_timeout);
        app.server_options = Some(options);
        Arc::new(Self {
            name: name.to_string(),
            app: Arc::new(app),
            tls: ArcSwapOption::from(tls.map(Arc::new)),
            metrics,
            inspect: InspectSettings {
                limits: Limits {
                    max_request_line: listener.limits.max_request_line,
                    max_header_bytes: listener.limits.max_header_bytes,
                    max_headers: listener.limits.max_headers,
                },
                header_timeout: listener.limits.header_timeout,
                request_buffer: listener.limits.request_buffer,
            },
            accept_proxy_protocol: listener.accept_proxy_protocol,
            h2c: listener.h2c,
            // pingora counts reuses: n requests are n - 1 reuses.
            max_requests: Some(listener.limits.max_requests_per_connection)
                .filter(|n| *n > 0)
                .map(|n| n - 1),
            keepalive: listener.limits.keepalive_timeout,
            send_timeout: listener.limits.send_timeout,
            notsent_lowat: listener.limits.tcp_notsent_lowat,
            retired: tokio::sync::watch::channel(false).0,
        })
    }

    /// New certificates for new connections; open ones keep theirs.
    pub fn set_tls(&self, tls: Option<TlsSettings>) {
        self.tls.store(tls.map(Arc::new));
    }
}

#[async_trait]
impl ConnectionHandler for HttpHandler {
    async fn serve(self: Arc<Self>, mut tcp: TcpStream, peer: SocketAddr, shutdown: ShutdownWatch) {
        if self.notsent_lowat > 0 {
            // A large response is handed to the kernel as the client takes
            // it, not all at once: without this a 2 MiB RAM hit sits whole
            // in the socket (Linux lets the send buffer grow to 4 MiB), and
            // clients that drain slower wait behind the greedy ones (p99
            // of 2 MiB hits 541 ms against HAProxy's 73, whose 64 KiB
            // buffer has the same effect; benches/RESULTS.md).
            if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_notsent_lowat(self.notsent_lowat) {
                tracing::debug!(listener = %self.name, error = %e, "cannot set TCP_NOTSENT_LOWAT");
            }
        }
        let mut early = Vec::new();
        let mut client = None;
        if self.accept_proxy_protocol {
            // Boxed, as the streams below: its state (744 bytes) would be
            // kept in the connection's future for the connection's life.
            match Box::pin(proxy_protocol::read_header(&mut tcp, PROXY_HEADER_TIMEOUT)).await {
                Ok(h) => {
                    client = h.source;
                    early = h.rest;
                }
                Err(e) => {
                    tracing::info!(listener = %self.name, client = %peer, error = %e, "closed: bad PROXY protocol header");
                    return;
                }
            }
        }
        let tls = self.tls.load_full();
        let h2c = tls.is_none()
            && self.h2c
            && Box::pin(starts_with_preface(
                &tcp,
                &early,
                self.inspect.header_timeout,
            ))
            .await;
        // The client's address as accept gave it (or as the PROXY header
        // said), not looked up later: a client that resets right after
        // its request has no peer left to ask, and its request would be
        // logged `client=-` (and one `getpeername` per connection saved).
        let client = client.or(Some(peer));
        // The streams are built outside this future (`plain`, `handshake`):
        // a stream that was a local here kept its room (hundreds of bytes)
        // in the connection's future for the connection's life.
        let served = match tls {
            None => self.plain(tcp, client, early, h2c),
            Some(tls) => {
                // The handshake's future boxed on its own and gone once it
                // is done: it is large (rustls' handshake state, pingora's
                // accept), and inline it would stay part of the
                // connection's future, and of its memory, for as long as the
                // connection lives.
                match Box::pin(self.handshake(&tls, tcp, client, early, peer)).await {
                    Some(served) => served,
                    None => return,
                }
            }
        };
        self.serve_stream(served, &shutdown).await;
    }

    async fn drain(&self) {
        self.retired.send_replace(true);
        self.app.cleanup().await;
    }
}

/// An accepted stream, boxed for the protocol it speaks.
enum Served {
    H2(Stream),
    H1(Stream, Arc<Connection>),
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a cleartext connection starts with the HTTP/2 preface (prior
/// knowledge). Decided as soon as the first bytes differ from it (a short
/// HTTP/1 request is answered at once), or when all 24 are there; a client
/// that sends part of it and stops is HTTP/1 after `limit`, whose head
/// deadline then applies.
async fn starts_with_preface(tcp: &TcpStream, early: &[u8], limit: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; H2_PREFACE.len()];
    let from_early = early.len().min(buf.len());
    buf[..from_early].copy_from_slice(&early[..from_early]);
    loop {
        let mut seen = from_early;
        if seen < buf.len() {
            match tokio::time::timeout_at(deadline, tcp.peek(&mut buf[from_early..])).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
                Ok(Ok(n)) => seen += n,
            }
        }
        if buf[..seen] != H2_PREFACE[..seen] {
            return false;
        }
        if seen == buf.len() {
            return true;
        }
        // A prefix of the preface so far: wait for the rest to arrive.
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

impl HttpHandler {
    /// The accepted socket as pingora's stream (`client`: the client's
    /// address), `early` (what the PROXY protocol header's read took
    /// beyond it) put back in front, behind the write buffer with the send
    /// timeout.
    fn transport(
        &self,
        tcp: TcpStream,
        client: Option<SocketAddr>,
        early: Vec<u8>,
    ) -> WriteBuffered<pingora_core::protocols::l4::stream::Stream> {
        let mut stream = pingora_stream(tcp, client);
        // Copied by the rewind: `early` is not kept for the connection's life.
        stream.rewind(&early);
        WriteBuffered::new(stream, WRITE_CAPACITY).with_send_timeout(self.send_timeout)
    }

    /// A cleartext connection's stream, boxed for its protocol.
    fn plain(
        &self,
        tcp: TcpStream,
        client: Option<SocketAddr>,
        early: Vec<u8>,
        h2c: bool,
    ) -> Served {
        let stream = self.transport(tcp, client, early);
        if h2c {
            stream.fail_reads_on_send_timeout();
        }
        self.boxed(stream, h2c)
    }

    /// The TLS handshake; the stream over TLS, boxed for its protocol
    /// (`None`: the handshake failed or timed out).
    async fn handshake(
        &self,
        tls: &TlsSettings,
        tcp: TcpStream,
        client: Option<SocketAddr>,
        early: Vec<u8>,
        peer: SocketAddr,
    ) -> Option<Served> {
        let stream = self.transport(tcp, client, early);
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.tls_handshake(stream));
        match handshake.await {
            Ok(Ok(s)) => {
                if matches!(s.selected_alpn_proto(), Some(ALPN::H2)) {
                    if let Some(transport) = s.transport() {
                        transport.fail_reads_on_send_timeout();
                    }
                    Some(self.boxed(s, true))
                } else {
                    // A response's head and body in one record (the send
                    // timeout is the transport's, below TLS).
                    Some(self.boxed(WriteBuffered::new(s, WRITE_CAPACITY), false))
                }
            }
            Ok(Err(e)) => {
                self.metrics.tls_errors.inc();
                tracing::debug!(listener = %self.name, client = %peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.metrics.tls_errors.inc();
                tracing::debug!(listener = %self.name, client = %peer, "TLS handshake timed out");
                None
            }
        }
    }

    /// The stream boxed for its protocol: HTTP/2 behind a [`HeadGuard`],
    /// HTTP/1 behind an [`Inspector`] with its [`Connection`]. Not `async`:
    /// the connection's future holds the box, with no room kept for `S`
    /// (a TLS stream holds rustls' connection state).
    fn boxed<S: IO + Peek + 'static>(&self, stream: S, h2: bool) -> Served {
        if h2 {
            // The preface is the only head of an HTTP/2 connection.
            Served::H2(Box::new(HeadGuard::new(
                stream,
                self.inspect.header_timeout,
            )))
        } else {
            let conn = Arc::new(Connection::default());
            let stream = Box::new(Inspector::new(stream, conn.clone(), self.inspect));
            Served::H1(stream, conn)
        }
    }

    /// Waits until the client sends (true), or until `limit` passes, the
    /// node drains or this handler is retired (false: close), by the
    /// inspector's `poll_idle` (over TLS too: its first read goes through
    /// a stack buffer).
    ///
    /// `timer` is the connection's one idle timer, moved on to `limit`
    /// from now: a timer made and dropped per request was registered anew
    /// each time, earlier than any other of the runtime's, which woke the
    /// runtime through its event fd (a `write` and an `epoll_wait` per
    /// request, beyond HAProxy's system calls; issue 17). Moved later, the
    /// registered timer wakes nothing.
    ///
    /// `closing` is the connection's one wait for the drain or the
    /// retirement ([`Self::closing`]), made at its first idle wait and
    /// kept: its place on the two watch channels' lists of waiters stays
    /// while requests are served (a drain then wakes the connection's task
    /// once for nothing), where a wait made per request put two waiters on
    /// and took them off again (about 800 instructions per request,
    /// `benches/callgrind/instr.sh`; issue 17).
    async fn idle(
        &self,
        stream: &mut Stream,
        timer: &mut Pin<Box<Sleep>>,
        limit: std::time::Duration,
        shutdown: &ShutdownWatch,
        closing: &mut Option<DrainWait>,
    ) -> bool {
        if *shutdown.borrow() || *self.retired.borrow() {
            return false;
        }
        let closing = closing.get_or_insert_with(|| (self.closing(shutdown), false));
        wait_for_client(stream.as_mut(), timer, limit, closing).await
    }

    /// Finishes when the node drains or this handler is retired (or either
    /// watch's sender is gone): an idle connection then closes. Not held
    /// to the task's budget (`unconstrained`): each poll of it looks at
    /// both watches and puts the task on their lists, which `idle` counts
    /// on (a `wait_for` out of budget returns without either).
    fn closing(&self, shutdown: &ShutdownWatch) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut shutdown = shutdown.clone();
        let mut retired = self.retired.subscribe();
        Box::pin(tokio::task::unconstrained(async move {
            tokio::select! {
                _ = shutdown.wait_for(|down| *down) => {}
                _ = retired.wait_for(|r| *r) => {}
            }
        }))
    }

    /// pingora's session for the next request on an HTTP/1 connection:
    /// the connection's settings from its last request (`None`: the
    /// first), `held` (what the shortcut read and did not take) as its
    /// pipelined prefix, the requests it may still carry after the
    /// `requests` begun. Not `async`: a session (672 bytes) that was a
    /// local of the connection's future kept its room there, and in an
    /// idle connection's memory.
    fn session(
        &self,
        stream: Stream,
        settings: Option<pingora_core::apps::HttpPersistentSettings>,
        held: &mut bytes::BytesMut,
        requests: u32,
        conn: &Arc<Connection>,
        shutdown: &ShutdownWatch,
    ) -> ServerSession {
        let mut session = ServerSession::new_http1(stream);
        match settings {
            Some(s) => s.apply_to_session(&mut session),
            None => {
                session.set_keepalive((!*shutdown.borrow()).then_some(60));
                session.set_keepalive_reuses_remaining(self.max_requests);
                // RFC 9112 §9.3.2: pipelined requests are answered in order.
                session.set_pipelining_enabled(true);
                session.set_connection_user_context(Some(Box::new(conn.clone())));
            }
        }
        if !held.is_empty() {
            session.set_pipelined_prefix(std::mem::take(held));
        }
        if requests > 0 {
            // pingora counts down its own requests only.
            session.set_keepalive_reuses_remaining(
                self.max_requests.map(|m| m.saturating_sub(requests)),
            );
        }
        session
    }

    /// Serves HTTP/2 through pingora, HTTP/1 through edge's own keep-alive
    /// loop over an [`Inspector`]. Each in a box of its own, so that the
    /// connection's future holds only the one its protocol needs: inline,
    /// the HTTP/1 loop's state (728 bytes) sized every HTTP/2 connection's
    /// future too. pingora's HTTP/2 branch alone (EDGE-PATCH thirty-second):
    /// its `process_new` future, sized by its HTTP/1 and handshake states,
    /// was 3,720 bytes kept for the connection's life.
    async fn serve_stream(&self, served: Served, shutdown: &ShutdownWatch) {
        match served {
            Served::H2(stream) => {
                // Fresh RAM hits answered where the connection accepts them
                // (`service/lean_h2.rs`), the rest through pingora.
                Box::pin(pingora_core::apps::serve_h2_with(
                    &self.app,
                    stream,
                    shutdown,
                    Some(EdgeProxy::h2_shortcut),
                ))
                .await
            }
            Served::H1(stream, conn) => Box::pin(self.serve_h1(stream, conn, shutdown)).await,
        }
    }

    /// Serves HTTP/1 requests on `stream` until the connection is done
    /// (edge's keep-alive loop).
    async fn serve_h1(&self, mut stream: Stream, conn: Arc<Connection>, shutdown: &ShutdownWatch) {
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut settings = None;
        let mut first = true;
        // Requests begun on this connection, pingora's and the shortcut's.
        let mut requests: u32 = 0;
        // What the shortcut read and did not take: pingora's next.
        let mut held = bytes::BytesMut::new();
        // The connection's idle timer (see `idle`); set when first waited on.
        let mut timer = Box::pin(tokio::time::sleep_until(Instant::now() + self.keepalive));
        // The timer the pass-through's upstream waits re-arm (`lean_pass.rs`).
        let mut wait_timer = None;
        // The wait for the drain or the retirement (see `idle`).
        let mut closing = None;
        loop {
            // Idle until the client sends: the request's state (pingora's
            // session and proxy future, about 17 KB) exists only while a
            // request is read and served, so an idle keep-alive connection
            // holds little (issue 17: 36 KiB each before, taken at accept).
            let pipelined = settings
                .as_ref()
                .is_some_and(pingora_core::apps::HttpPersistentSettings::has_pipelined_prefix);
            if !pipelined && held.is_empty() {
                // The shortcut's read buffer goes while the connection
                // waits (`shortcut::release`): the empty tail of the last
                // read kept it for the connection's life.
                shortcut::release(&mut held);
                let limit = if first {
                    self.inspect.header_timeout
                } else {
                    self.keepalive
                };
                if !self
                    .idle(&mut stream, &mut timer, limit, shutdown, &mut closing)
                    .await
                {
                    if first {
                        tracing::debug!(listener = %self.name, limit = ?limit, "closed: no request in time");
                    }
                    return;
                }
            }
            // A fresh RAM hit, answered before a pingora session exists
            // (`shortcut.rs`); not the last request a connection may
            // carry (pingora closes after that one).
            let proxy = self.app.inner();
            if !pipelined
                && proxy.shortcut_possible()
                && self.max_requests.is_none_or(|m| requests < m)
            {
                // Boxed: its state (the request, its context, the
                // answer, about 2.9 KB) inline would be part of the
                // connection's future, and of an idle connection's memory,
                // for the connection's life. Written into its box as it is
                // made (the optimizer builds it there in release builds: a
                // `Box::pin` built it on the stack and copied it, +1.9%
                // instructions per hit against +0.6%; benches/RESULTS.md).
                let slot = Box::new_uninit();
                let take = Box::write(
                    slot,
                    shortcut::take(
                        proxy,
                        self.app.upstream_connector(),
                        &mut stream,
                        &mut held,
                        &conn,
                        client,
                        &mut wait_timer,
                    ),
                );
                match Box::into_pin(take).await {
                    Taken::Answered => {
                        requests += 1;
                        first = false;
                        continue;
                    }
                    Taken::Closed => return,
                    Taken::Pass => {}
                }
            }
            let session = self.session(
                stream,
                settings.take(),
                &mut held,
                requests,
                &conn,
                shutdown,
            );
            requests = requests.saturating_add(1);
            first = false;
            // The request's future (pingora's session and proxy state, about
            // 16 KB) comes boxed, built in its box (vendored pingora-proxy,
            // EDGE-PATCH.md): it exists only while the request is served.
            let reused = self.app.process_new_http(session, shutdown).await;
            let Some((next, next_settings)) = reused.map(|r| r.consume()) else {
                return;
            };
            stream = next;
            settings = next_settings;
        }
    }
}

/// A connection's wait for the drain or its handler's retirement
/// ([`HttpHandler::closing`]) and whether it was ever polled.
type DrainWait = (Pin<Box<dyn Future<Output = ()> + Send>>, bool);

/// [`HttpHandler::idle`]'s wait once the watches were read `false`: true
/// when the client has sent (or ended), false when `timer`, re-armed to
/// `limit` from now, fires first or `closing.0` (the drain's wait, with
/// whether it was ever polled) finishes.
async fn wait_for_client<S: Peek + ?Sized>(
    stream: &mut S,
    timer: &mut Pin<Box<Sleep>>,
    limit: std::time::Duration,
    closing: &mut DrainWait,
) -> bool {
    let (closing, polled) = closing;
    let mut first = true;
    std::future::poll_fn(|cx| {
        // The client first: when it has sent already, the timer is not
        // touched. Polled, not `try_peek`'s boxed future (vendored
        // pingora-core, forty-second).
        if let Poll::Ready(r) = stream.poll_idle(cx) {
            return Poll::Ready(r.is_ok());
        }
        if first {
            timer.as_mut().reset(Instant::now() + limit);
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        // `closing` is polled until it has been once, then on every poll
        // of a wait after its first, not on the first: both watches only
        // ever go from `false` to `true` (the listeners' drain,
        // `ListenerControl`, and `retire`; neither sender is dropped while
        // a connection is open),
        // both were read `false` before, and a wait polled once stays on
        // its channel's list with this task's waker until that send,
        // which wakes the task: the wait is then polled again and finds
        // it. Not "when made": a first wait the client ended at once (it
        // had sent already) never polled it. About 400 instructions per
        // request (`benches/callgrind/instr.sh`; issue 17).
        if !*polled || !first {
            *polled = true;
            if closing.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
        }
        first = false;
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn inspector(server: tokio::io::DuplexStream) -> Inspector<tokio::io::DuplexStream> {
        let settings = InspectSettings {
            limits: Limits {
                max_request_line: 1024,
                max_header_bytes: 4096,
                max_headers: 20,
            },
            header_timeout: Duration::from_secs(10),
            request_buffer: 64 * 1024,
        };
        Inspector::new(server, Arc::new(Connection::default()), settings)
    }

    /// A drain ends a connection's idle wait, also when its first wait
    /// ended at once (the client had sent already: the drain's wait was
    /// not polled then) and it waits again after its request. Paused
    /// time: a wait the drain did not end ends by the timer, an hour on.
    #[tokio::test(start_paused = true)]
    async fn a_drain_ends_an_idle_wait_whatever_the_waits_before_it() {
        for sent_first in [true, false] {
            let (mut client, server) = tokio::io::duplex(4096);
            let mut insp = inspector(server);
            let (drain, mut drained) = tokio::sync::watch::channel(false);
            let wait: Pin<Box<dyn Future<Output = ()> + Send>> =
                Box::pin(tokio::task::unconstrained(async move {
                    let _ = drained.wait_for(|d| *d).await;
                }));
            let mut closing = (wait, false);
            let limit = Duration::from_secs(3600);
            let mut timer = Box::pin(tokio::time::sleep_until(Instant::now() + limit));
            let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
            // Kept open to the end: its end would end the wait too.
            let _client = if sent_first {
                client.write_all(request).await.unwrap();
                assert!(wait_for_client(&mut insp, &mut timer, limit, &mut closing).await);
                client
            } else {
                // From a task of its own, run once this one waits: a join
                // in this task would poll the wait again for nothing.
                let writer = tokio::spawn(async move {
                    client.write_all(request).await.unwrap();
                    client
                });
                assert!(wait_for_client(&mut insp, &mut timer, limit, &mut closing).await);
                writer.await.unwrap()
            };
            let mut buf = [0u8; 64];
            let n = insp.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], request);
            // Served; idle again: the drain comes while it waits.
            let start = Instant::now();
            tokio::spawn(async move { drain.send_replace(true) });
            let sent = wait_for_client(&mut insp, &mut timer, limit, &mut closing).await;
            assert!(
                !sent,
                "sent_first {sent_first}: the wait ends without a request"
            );
            assert!(
                start.elapsed() < limit,
                "sent_first {sent_first}: ended by the drain, not by the timer"
            );
        }
    }
}
