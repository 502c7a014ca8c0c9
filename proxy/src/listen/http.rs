//! Serving HTTP (and HTTPS) connections with pingora's `HttpProxy`.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora_core::apps::{HttpServerOptions, ServerApp};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;

use super::buffered::{WriteBuffered, WRITE_CAPACITY};
use super::tls::TlsSettings;
use super::{ConnectionHandler, HANDSHAKE_TIMEOUT};
use crate::metrics::ListenerMetrics;
use crate::service::EdgeProxy;

/// One HTTP or HTTPS listener's connection handler.
pub struct HttpHandler {
    name: String,
    app: Arc<HttpProxy<EdgeProxy>>,
    /// Swapped when certificates change on reload.
    tls: ArcSwapOption<TlsSettings>,
    metrics: ListenerMetrics,
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
        })
    }

    /// New certificates for new connections; open ones keep theirs.
    pub fn set_tls(&self, tls: Option<TlsSettings>) {
        self.tls.store(tls.map(Arc::new));
    }
}

#[async_trait]
impl ConnectionHandler for HttpHandler {
    async fn serve(self: Arc<Self>, stream: L4Stream, peer: SocketAddr, shutdown: ShutdownWatch) {
        let stream = WriteBuffered::new(stream, WRITE_CAPACITY);
        let stream: Stream = match self.tls.load_full() {
            None => Box::new(stream),
            Some(tls) => {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.tls_handshake(stream))
                    .await
                {
                    Ok(Ok(s)) => Box::new(s) as Stream,
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
            next = self.app.process_new(stream, &shutdown).await;
        }
    }

    async fn drain(&self) {
        self.app.cleanup().await;
    }
}
