//! Serving HTTP (and HTTPS) connections with pingora's `HttpProxy`.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Peek, Ssl, Stream, ALPN, IO};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::net::TcpStream;

use super::buffered::{WriteBuffered, WRITE_CAPACITY};
use super::conn::Connection;
use super::framing::Limits;
use super::head::HeadGuard;
use super::inspect::{InspectSettings, Inspector};
use super::pingora_stream;
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
        let mut early = Vec::new();
        let mut client = None;
        if self.accept_proxy_protocol {
            match proxy_protocol::read_header(&mut tcp, PROXY_HEADER_TIMEOUT).await {
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
            && starts_with_preface(&tcp, &early, self.inspect.header_timeout).await;
        let mut stream = pingora_stream(tcp, client);
        stream.rewind(&early);
        let stream = WriteBuffered::new(stream, WRITE_CAPACITY);
        let h2 = match tls {
            None => h2c,
            Some(tls) => {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.tls_handshake(stream))
                    .await
                {
                    Ok(Ok(s)) => {
                        let h2 = matches!(s.selected_alpn_proto(), Some(ALPN::H2));
                        return self.serve_stream(s, h2, &shutdown).await;
                    }
                    Ok(Err(e)) => {
                        self.metrics.tls_errors.inc();
                        tracing::debug!(listener = %self.name, client = %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        self.metrics.tls_errors.inc();
                        tracing::debug!(listener = %self.name, client = %peer, "TLS handshake timed out");
                        return;
                    }
                }
            }
        };
        self.serve_stream(stream, h2, &shutdown).await;
    }

    async fn drain(&self) {
        self.app.cleanup().await;
    }
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
    /// Serves HTTP/2 through pingora, HTTP/1 through edge's own keep-alive
    /// loop over an [`Inspector`].
    async fn serve_stream<S: IO + Peek + 'static>(
        &self,
        stream: S,
        h2: bool,
        shutdown: &ShutdownWatch,
    ) {
        if h2 {
            // The preface is the only head of an HTTP/2 connection.
            let stream: Stream = Box::new(HeadGuard::new(stream, self.inspect.header_timeout));
            self.app.process_new(stream, shutdown).await;
            return;
        }
        let conn = Arc::new(Connection::default());
        let stream: Stream = Box::new(Inspector::new(stream, conn.clone(), self.inspect));
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive((!*shutdown.borrow()).then_some(60));
        session.set_keepalive_reuses_remaining(self.max_requests);
        // RFC 9112 §9.3.2: pipelined requests are answered in order.
        session.set_pipelining_enabled(true);
        session.set_connection_user_context(Some(Box::new(conn)));
        let mut reused = self.app.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = reused.map(|r| r.consume()) {
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            reused = self.app.process_new_http(session, shutdown).await;
        }
    }
}
