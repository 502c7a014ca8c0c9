//! Metrics of TCP (L4) listeners and their backends.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

pub struct TcpMetrics {
    bytes: IntCounterVec,
    backend_open: IntGaugeVec,
    backend_total: IntCounterVec,
    connect_failures: IntCounterVec,
    rejected: IntCounterVec,
    closed: IntCounterVec,
}

/// Why a TCP connection was closed without reaching a backend.
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    RateLimited,
    NoBackend,
    ProxyHeader,
}

impl Rejection {
    fn label(self) -> &'static str {
        match self {
            Rejection::RateLimited => "rate_limited",
            Rejection::NoBackend => "no_backend",
            Rejection::ProxyHeader => "proxy_header",
        }
    }
}

impl TcpMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let bytes = IntCounterVec::new(
            Opts::new(
                "edge_tcp_bytes_total",
                "Bytes relayed by TCP listeners, by listener, backend and direction (in: from clients, out: to clients)",
            ),
            &["listener", "backend", "direction"],
        )?;
        let backend_open = IntGaugeVec::new(
            Opts::new(
                "edge_tcp_backend_connections_open",
                "TCP connections open to a backend, by pool and backend",
            ),
            &["pool", "backend"],
        )?;
        let backend_total = IntCounterVec::new(
            Opts::new(
                "edge_tcp_backend_connections_total",
                "TCP connections made to a backend, by pool and backend",
            ),
            &["pool", "backend"],
        )?;
        let connect_failures = IntCounterVec::new(
            Opts::new(
                "edge_tcp_connect_failures_total",
                "Failed connects to backends from a TCP listener (each is retried on another backend)",
            ),
            &["listener"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "edge_tcp_rejected_total",
                "TCP connections closed before reaching a backend, by listener and reason",
            ),
            &["listener", "reason"],
        )?;
        let closed = IntCounterVec::new(
            Opts::new(
                "edge_tcp_closed_total",
                "Relayed TCP connections by how they ended (done, idle, error)",
            ),
            &["listener", "reason"],
        )?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(backend_open.clone()))?;
        registry.register(Box::new(backend_total.clone()))?;
        registry.register(Box::new(connect_failures.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        Ok(Self {
            bytes,
            backend_open,
            backend_total,
            connect_failures,
            rejected,
            closed,
        })
    }

    pub fn bytes(&self, listener: &str, backend: &str) -> (IntCounter, IntCounter) {
        (
            self.bytes.with_label_values(&[listener, backend, "in"]),
            self.bytes.with_label_values(&[listener, backend, "out"]),
        )
    }

    pub fn backend_open(&self, pool: &str, backend: &str) -> IntGauge {
        self.backend_total.with_label_values(&[pool, backend]).inc();
        self.backend_open.with_label_values(&[pool, backend])
    }

    pub fn connect_failed(&self, listener: &str) {
        self.connect_failures.with_label_values(&[listener]).inc();
    }

    pub fn rejected(&self, listener: &str, why: Rejection) {
        self.rejected
            .with_label_values(&[listener, why.label()])
            .inc();
    }

    pub fn closed(&self, listener: &str, reason: &str) {
        self.closed.with_label_values(&[listener, reason]).inc();
    }
}
