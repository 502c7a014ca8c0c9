//! L4 (TCP) load balancing: each accepted connection goes to one backend of
//! a pool, chosen by the pool's algorithm among healthy backends (the same
//! pools, health checks, breakers and admin drain as HTTP), with failover to
//! another backend when a connect fails, PROXY protocol both ways, a
//! connection-rate limit and an idle timeout.

pub mod metrics;
pub mod proxy_protocol;
mod relay;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use edge_config::{Algorithm, HashKey};
use governor::{DefaultDirectRateLimiter, RateLimiter};
use pingora_core::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::listen::ConnectionHandler;
use crate::pool::{Outcome, Pool, Unavailable};
use crate::state::Proxy;

use self::metrics::ListenerCounters;
use self::relay::{relay, RelayCounters, RelayEnd};

/// How long a client in front may take to send its PROXY protocol header.
pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// One TCP listener's connection handler.
pub struct TcpHandler {
    listener: String,
    settings: edge_config::TcpListener,
    proxy: Arc<Proxy>,
    connection_rate: Option<DefaultDirectRateLimiter>,
    counters: ListenerCounters,
}

impl TcpHandler {
    /// One access log line per connection (target `access`, `kind = "tcp"`):
    /// client, backend, bytes each way, duration, why it closed.
    fn log(
        &self,
        client: SocketAddr,
        backend: Option<&str>,
        bytes_in: u64,
        bytes_out: u64,
        started: std::time::Instant,
        reason: &str,
    ) {
        if !self.proxy.access_log() {
            return;
        }
        tracing::info!(
            target: "access",
            kind = "tcp",
            listener = %self.listener,
            client = %client,
            pool = %self.settings.pool,
            backend = backend.unwrap_or("-"),
            bytes_in,
            bytes_out,
            total_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            close = reason,
        );
    }

    pub fn new(
        listener: &str,
        settings: &edge_config::TcpListener,
        proxy: Arc<Proxy>,
    ) -> Arc<Self> {
        let connection_rate = settings
            .connection_rate
            .as_ref()
            .and_then(|r| {
                // No burst given: a period's worth of connections at once.
                let burst = match settings.connection_burst {
                    0 => u32::try_from(r.count).unwrap_or(u32::MAX),
                    b => b,
                };
                crate::ratelimit::quota(r, burst)
            })
            .map(RateLimiter::direct);
        Arc::new(Self {
            listener: listener.to_string(),
            settings: settings.clone(),
            counters: proxy.metrics.tcp.listener(listener),
            proxy,
            connection_rate,
        })
    }
}

/// The bytes pools with a client-address algorithm hash on.
fn hash_key(pool: &Pool, client: SocketAddr) -> Option<Vec<u8>> {
    match &pool.config.algorithm {
        Algorithm::SourceIpHash
        | Algorithm::ConsistentHash {
            key: HashKey::ClientIp,
        } => Some(client.ip().to_string().into_bytes()),
        _ => None,
    }
}

/// A connection to a backend, holding its place in the backend's count.
struct Upstream {
    stream: TcpStream,
    pool: Arc<Pool>,
    index: usize,
    open: prometheus::IntGauge,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(b) = self.pool.backends.get(self.index) {
            b.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        self.open.dec();
    }
}

impl TcpHandler {
    /// Connects to a backend of the pool, trying the others when a connect
    /// fails or times out.
    async fn connect(&self, client: SocketAddr) -> Result<Upstream, Unavailable> {
        let state = self.proxy.state();
        let Some(pool) = state.pool(&self.settings.pool).cloned() else {
            return Err(Unavailable::NoneUp);
        };
        let key = hash_key(&pool, client);
        let mut tried = Vec::new();
        loop {
            let pick = pool.select(&tried, None, key.as_deref())?;
            let b = &pool.backends[pick.index];
            b.state.in_flight.fetch_add(1, Ordering::Relaxed);
            b.state.requests.fetch_add(1, Ordering::Relaxed);
            let connect = TcpStream::connect(b.addr);
            let error = match tokio::time::timeout(pool.config.timeouts.connect, connect).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    pool.record_outcome(pick.index, Outcome::Success, pick.probe);
                    let open = b.tcp.open.clone();
                    open.inc();
                    b.tcp.total.inc();
                    return Ok(Upstream {
                        stream,
                        index: pick.index,
                        pool: pool.clone(),
                        open,
                    });
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {:?}", pool.config.timeouts.connect),
            };
            b.state.in_flight.fetch_sub(1, Ordering::Relaxed);
            b.metrics.connect_errors.inc();
            self.counters.connect_failures.inc();
            pool.record_outcome(pick.index, Outcome::ConnectFailure, pick.probe);
            tracing::warn!(listener = %self.listener, pool = %pool.name, backend = %b.label, %error, "connect to backend failed; trying another");
            tried.push(pick.index);
        }
    }
}

#[async_trait]
impl ConnectionHandler for TcpHandler {
    async fn serve(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
        _shutdown: ShutdownWatch,
    ) {
        let started = std::time::Instant::now();
        let metrics = &self.counters;
        if let Some(limiter) = &self.connection_rate {
            if limiter.check().is_err() {
                metrics.rejected_rate.inc();
                self.log(peer, None, 0, 0, started, "connection rate limit");
                return;
            }
        }
        let (client, early) = if self.settings.accept_proxy_protocol {
            match proxy_protocol::read_header(&mut stream, PROXY_HEADER_TIMEOUT).await {
                Ok(h) => (h.source.unwrap_or(peer), h.rest),
                Err(e) => {
                    metrics.rejected_proxy_header.inc();
                    let reason = format!("bad PROXY protocol header: {e}");
                    self.log(peer, None, 0, 0, started, &reason);
                    return;
                }
            }
        } else {
            (peer, Vec::new())
        };
        let mut upstream = match self.connect(client).await {
            Ok(u) => u,
            Err(why) => {
                metrics.rejected_no_backend.inc();
                tracing::warn!(listener = %self.listener, pool = %self.settings.pool, client = %client, reason = ?why, "no backend for a TCP connection; closed");
                self.log(client, None, 0, 0, started, "no backend");
                return;
            }
        };
        let pool = upstream.pool.clone();
        let backend = &pool.backends[upstream.index];
        let mut preamble = Vec::new();
        if let Some(version) = pool.config.proxy_protocol {
            let local = stream.local_addr().unwrap_or(peer);
            preamble = proxy_protocol::encode(version, client, local);
        }
        preamble.extend_from_slice(&early);
        if !preamble.is_empty() {
            if let Err(e) = upstream.stream.write_all(&preamble).await {
                metrics.closed_error.inc();
                let reason = format!("error: writing to the backend: {e}");
                self.log(client, Some(&backend.label), 0, 0, started, &reason);
                return;
            }
        }
        metrics.bytes_in.inc_by(early.len() as u64);
        backend.tcp.bytes_in.inc_by(early.len() as u64);
        let counters = RelayCounters {
            up: [metrics.bytes_in.clone(), backend.tcp.bytes_in.clone()],
            down: [metrics.bytes_out.clone(), backend.tcp.bytes_out.clone()],
        };
        let end = relay(
            stream,
            &mut upstream.stream,
            self.settings.idle_timeout,
            counters,
        )
        .await;
        let reason = match &end.end {
            RelayEnd::Done => {
                metrics.closed_done.inc();
                "done".to_string()
            }
            RelayEnd::Idle => {
                metrics.closed_idle.inc();
                "idle timeout".to_string()
            }
            RelayEnd::Error(e) => {
                metrics.closed_error.inc();
                format!("error: {e}")
            }
        };
        self.log(
            client,
            Some(&backend.label),
            early.len() as u64 + end.up,
            end.down,
            started,
            &reason,
        );
    }
}
