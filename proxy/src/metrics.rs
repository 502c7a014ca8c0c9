//! Prometheus metrics of the request path. Handles for each route and pool
//! are resolved when the route table is built, so a request does no label
//! lookups.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

/// Status classes counted per route: 1xx…5xx, and 0 for no response sent.
pub const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

pub fn class_index(status: u16) -> usize {
    match status {
        100..=599 => (status / 100) as usize,
        _ => 0,
    }
}

/// All proxy metric families, registered once per node.
pub struct ProxyMetrics {
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    upstream_seconds: HistogramVec,
    upstream_errors: IntCounterVec,
    retries: IntCounterVec,
    budget_exhausted: IntCounterVec,
    rejections: IntCounterVec,
    ejections: IntCounterVec,
    pub connections_open: IntGaugeVec,
    pub connections_total: IntCounterVec,
    pub connection_limit_hits: IntCounterVec,
    pub tls_handshake_errors: IntCounterVec,
    /// HTTP/1 requests the connection's own loop served without a pingora
    /// session (`listen/shortcut.rs`), by listener and way (`ram_hit`,
    /// `pass`).
    pub sessionless: IntCounterVec,
    pub spliced: IntCounterVec,
    pub tcp: crate::tcp::metrics::TcpMetrics,
    pub ratelimit: crate::ratelimit::metrics::RateLimitMetrics,
    pub site: crate::site::SiteMetrics,
    pub video: crate::video::VideoMetrics,
    /// `notAfter` of each https listener's certificates, Unix seconds.
    pub certificate_expiry: prometheus::GaugeVec,
    /// ACME orders by listener and result (`issued`, `failed`).
    pub acme_orders: IntCounterVec,
}

fn latency_buckets() -> Vec<f64> {
    // 0.5 ms … ~33 s
    exponential_buckets(0.0005, 2.0, 17).unwrap_or_default()
}

impl ProxyMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "edge_http_requests_total",
                "HTTP requests by route, pool and status class",
            ),
            &["route", "pool", "class"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "edge_http_request_duration_seconds",
                "Time from request to last byte sent, by route and status class",
            )
            .buckets(latency_buckets()),
            &["route", "class"],
        )?;
        let request_bytes = IntCounterVec::new(
            Opts::new(
                "edge_http_request_body_bytes_total",
                "Request body bytes read from clients, by route",
            ),
            &["route"],
        )?;
        let response_bytes = IntCounterVec::new(
            Opts::new(
                "edge_http_response_body_bytes_total",
                "Response body bytes sent to clients, by route",
            ),
            &["route"],
        )?;
        let upstream_seconds = HistogramVec::new(
            HistogramOpts::new(
                "edge_upstream_response_seconds",
                "Time from sending a request upstream to its response header, by pool and backend",
            )
            .buckets(latency_buckets()),
            &["pool", "backend"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "edge_upstream_errors_total",
                "Failed upstream attempts, by pool, backend and kind",
            ),
            &["pool", "backend", "kind"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new("edge_upstream_retries_total", "Retry attempts, by pool"),
            &["pool"],
        )?;
        let budget_exhausted = IntCounterVec::new(
            Opts::new(
                "edge_retry_budget_exhausted_total",
                "Retries not made because the retry budget was spent, by pool",
            ),
            &["pool"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "edge_pool_rejections_total",
                "Requests answered by edge because the pool could not take them, by pool and reason",
            ),
            &["pool", "reason"],
        )?;
        let ejections = IntCounterVec::new(
            Opts::new(
                "edge_outlier_ejections_total",
                "Backends ejected by outlier detection, by pool and backend",
            ),
            &["pool", "backend"],
        )?;
        let connections_open = IntGaugeVec::new(
            Opts::new(
                "edge_connections_open",
                "Client connections open, by listener",
            ),
            &["listener"],
        )?;
        let connections_total = IntCounterVec::new(
            Opts::new(
                "edge_connections_total",
                "Client connections accepted, by listener",
            ),
            &["listener"],
        )?;
        let connection_limit_hits = IntCounterVec::new(
            Opts::new(
                "edge_connection_limit_reached_total",
                "Times a listener stopped accepting because max_connections were open",
            ),
            &["listener"],
        )?;
        let tls_handshake_errors = IntCounterVec::new(
            Opts::new(
                "edge_tls_handshake_errors_total",
                "Failed or timed-out TLS handshakes, by listener",
            ),
            &["listener"],
        )?;
        let sessionless = IntCounterVec::new(
            Opts::new(
                "edge_http_sessionless_requests_total",
                "Requests served without a pingora session (server.fast_paths): by the HTTP/1 connection's own loop (ram_hit, pass) or where the HTTP/2 connection accepted the stream (h2_ram_hit), by listener and way",
            ),
            &["listener", "way"],
        )?;
        registry.register(Box::new(sessionless.clone()))?;
        let spliced = IntCounterVec::new(
            Opts::new(
                "edge_http_spliced_bytes_total",
                "Response body bytes moved to the client by reference to kernel pages, never copied through edge's memory: a pass-through's from the backend's socket (splice(2)), a large RAM hit's from its mapping (vmsplice(2)), by listener",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(spliced.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(request_bytes.clone()))?;
        registry.register(Box::new(response_bytes.clone()))?;
        registry.register(Box::new(upstream_seconds.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(budget_exhausted.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(ejections.clone()))?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(connections_total.clone()))?;
        registry.register(Box::new(connection_limit_hits.clone()))?;
        registry.register(Box::new(tls_handshake_errors.clone()))?;
        Ok(Self {
            requests,
            request_seconds,
            request_bytes,
            response_bytes,
            upstream_seconds,
            upstream_errors,
            retries,
            budget_exhausted,
            rejections,
            ejections,
            connections_open,
            connections_total,
            connection_limit_hits,
            tls_handshake_errors,
            sessionless,
            spliced,
            tcp: crate::tcp::metrics::TcpMetrics::new(registry)?,
            ratelimit: crate::ratelimit::metrics::RateLimitMetrics::new(registry)?,
            site: crate::site::SiteMetrics::new(registry)?,
            video: crate::video::VideoMetrics::new(registry)?,
            certificate_expiry: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "edge_tls_certificate_expiry_timestamp_seconds",
                        "When each certificate of an https listener expires (notAfter), Unix seconds",
                    ),
                    &["listener", "certificate"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            acme_orders: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "edge_acme_orders_total",
                        "ACME certificate orders of https listeners with tls.acme, by result (issued, failed)",
                    ),
                    &["listener", "result"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
        })
    }

    pub fn route(&self, route: &str, pool: &str) -> RouteMetrics {
        RouteMetrics {
            by_class: CLASSES.map(|c| self.requests.with_label_values(&[route, pool, c])),
            seconds: RouteSeconds {
                vec: self.request_seconds.clone(),
                route: route.to_string(),
                by_class: Default::default(),
            },
            bytes_in: self.request_bytes.with_label_values(&[route]),
            bytes: self.response_bytes.with_label_values(&[route]),
        }
    }

    pub fn pool(&self, pool: &str) -> PoolMetrics {
        PoolMetrics {
            retries: self.retries.with_label_values(&[pool]),
            budget_exhausted: self.budget_exhausted.with_label_values(&[pool]),
            overflow: self.rejections.with_label_values(&[pool, "overflow"]),
            no_backend: self.rejections.with_label_values(&[pool, "no_backend"]),
            breaker_open: self.rejections.with_label_values(&[pool, "breaker_open"]),
        }
    }

    pub fn backend(&self, pool: &str, backend: &str) -> BackendMetrics {
        BackendMetrics {
            ejections: self.ejections.with_label_values(&[pool, backend]),
            upstream_seconds: self.upstream_seconds.with_label_values(&[pool, backend]),
            connect_errors: self
                .upstream_errors
                .with_label_values(&[pool, backend, "connect"]),
            proxy_errors: self
                .upstream_errors
                .with_label_values(&[pool, backend, "proxy"]),
        }
    }

    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        ListenerMetrics {
            open: self.connections_open.with_label_values(&[listener]),
            total: self.connections_total.with_label_values(&[listener]),
            limit_hits: self.connection_limit_hits.with_label_values(&[listener]),
            tls_errors: self.tls_handshake_errors.with_label_values(&[listener]),
        }
    }
}

/// Per-route handles.
#[derive(Clone)]
pub struct RouteMetrics {
    pub by_class: [IntCounter; 6],
    pub seconds: RouteSeconds,
    /// Request body bytes read.
    pub bytes_in: IntCounter,
    /// Response body bytes sent.
    pub bytes: IntCounter,
}

/// A route's latency histogram by status class. A class's series is made
/// at its first answer (six histograms of 17 buckets for every route up
/// front would be 108 series a route).
#[derive(Clone)]
pub struct RouteSeconds {
    vec: HistogramVec,
    route: String,
    by_class: [std::sync::OnceLock<Histogram>; 6],
}

impl RouteSeconds {
    /// Records a request's time, in seconds, under its status's class.
    pub fn observe(&self, status: u16, seconds: f64) {
        let class = class_index(status);
        self.by_class[class]
            .get_or_init(|| self.vec.with_label_values(&[&self.route, CLASSES[class]]))
            .observe(seconds);
    }
}

/// Per-pool handles.
#[derive(Clone)]
pub struct PoolMetrics {
    pub retries: IntCounter,
    pub budget_exhausted: IntCounter,
    pub overflow: IntCounter,
    pub no_backend: IntCounter,
    pub breaker_open: IntCounter,
}

/// Per-backend handles.
#[derive(Clone)]
pub struct BackendMetrics {
    pub ejections: IntCounter,
    pub upstream_seconds: Histogram,
    pub connect_errors: IntCounter,
    pub proxy_errors: IntCounter,
}

/// Per-listener handles.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub open: IntGauge,
    pub total: IntCounter,
    pub limit_hits: IntCounter,
    pub tls_errors: IntCounter,
}
