//! Metrics of TCP (L4) listeners and their backends. Counters are looked up
//! once (per listener when its handler is built, per backend when its pool
//! is), never per connection.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

pub struct TcpMetrics {
    bytes: IntCounterVec,
    backend_bytes: IntCounterVec,
    backend_open: IntGaugeVec,
    backend_total: IntCounterVec,
    connect_failures: IntCounterVec,
    rejected: IntCounterVec,
    closed: IntCounterVec,
}

/// One listener's counters.
#[derive(Clone)]
pub struct ListenerCounters {
    /// From clients.
    pub bytes_in: IntCounter,
    /// To clients.
    pub bytes_out: IntCounter,
    pub connect_failures: IntCounter,
    pub rejected_rate: IntCounter,
    pub rejected_no_backend: IntCounter,
    pub rejected_proxy_header: IntCounter,
    pub closed_done: IntCounter,
    pub closed_idle: IntCounter,
    pub closed_error: IntCounter,
}

/// One backend's counters (kept with the backend in its pool).
#[derive(Clone)]
pub struct BackendCounters {
    pub open: IntGauge,
    pub total: IntCounter,
    /// Sent to the backend.
    pub bytes_in: IntCounter,
    /// Received from the backend.
    pub bytes_out: IntCounter,
}

impl TcpMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let bytes = IntCounterVec::new(
            Opts::new(
                "edge_tcp_bytes_total",
                "Bytes relayed by TCP listeners, by listener and direction (in: from clients, out: to clients)",
            ),
            &["listener", "direction"],
        )?;
        let backend_bytes = IntCounterVec::new(
            Opts::new(
                "edge_tcp_backend_bytes_total",
                "Bytes relayed to and from TCP backends, by pool, backend and direction (in: to the backend, out: from it)",
            ),
            &["pool", "backend", "direction"],
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
        registry.register(Box::new(backend_bytes.clone()))?;
        registry.register(Box::new(backend_open.clone()))?;
        registry.register(Box::new(backend_total.clone()))?;
        registry.register(Box::new(connect_failures.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        Ok(Self {
            bytes,
            backend_bytes,
            backend_open,
            backend_total,
            connect_failures,
            rejected,
            closed,
        })
    }

    pub fn listener(&self, listener: &str) -> ListenerCounters {
        let rejected = |r: &str| self.rejected.with_label_values(&[listener, r]);
        let closed = |r: &str| self.closed.with_label_values(&[listener, r]);
        ListenerCounters {
            bytes_in: self.bytes.with_label_values(&[listener, "in"]),
            bytes_out: self.bytes.with_label_values(&[listener, "out"]),
            connect_failures: self.connect_failures.with_label_values(&[listener]),
            rejected_rate: rejected("rate_limited"),
            rejected_no_backend: rejected("no_backend"),
            rejected_proxy_header: rejected("proxy_header"),
            closed_done: closed("done"),
            closed_idle: closed("idle"),
            closed_error: closed("error"),
        }
    }

    pub fn backend(&self, pool: &str, backend: &str) -> BackendCounters {
        BackendCounters {
            open: self.backend_open.with_label_values(&[pool, backend]),
            total: self.backend_total.with_label_values(&[pool, backend]),
            bytes_in: self.backend_bytes.with_label_values(&[pool, backend, "in"]),
            bytes_out: self
                .backend_bytes
                .with_label_values(&[pool, backend, "out"]),
        }
    }
}
