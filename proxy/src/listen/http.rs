//! Serving HTTP (and HTTPS) connections with pingora's `HttpProxy`.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora_core::apps::{HttpServerOptions, ServerApp};
use std::time::Duration;

use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::net::TcpStream;

use super::buffered::{WriteBuffered, WRITE_CAPACITY};
use super::head::{HeadClock, HeadGuard};
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
    /// Whole-head deadline (slowloris protection).
    header_timeout: Duration,
    accept_proxy_protocol: bool,
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
        app.server_options = Some(options);
        Arc::new(Self {
            name: name.to_string(),
            app: Arc::new(app),
            tls: ArcSwapOption::from(tls.map(Arc::new)),
            metrics,
            header_timeout: listener.limits.header_timeout,
            accept_proxy_protocol: listener.accept_proxy_protocol,
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
        let mut stream = pingora_stream(tcp, client);
        stream.rewind(&early);
        let stream = WriteBuffered::new(stream, WRITE_CAPACITY);
        let clock = Arc::new(HeadClock::default());
        let stream: Stream = match self.tls.load_full() {
            None => Box::new(HeadGuard::new(stream, self.header_timeout, clock.clone())),
            Some(tls) => {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.tls_handshake(stream))
                    .await
                {
                    Ok(Ok(s)) => {
                        Box::new(HeadGuard::new(s, self.header_timeout, clock.clone())) as Stream
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
        let mut next = self.app.process_new(stream, &shutdown).await;
        while let Some(stream) = next {
            clock.next_request();
            next = self.app.process_new(stream, &shutdown).await;
        }
    }

    async fn drain(&self) {
        self.app.cleanup().await;
    }
}
