use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::units::duration_serde;

/// `[[pool]]`: a named set of backends and how to use them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pool {
    pub name: String,
    pub algorithm: Algorithm,
    pub backends: Vec<Backend>,
    /// Host header sent upstream; `None` passes the client's.
    pub host: Option<String>,
    /// When every backend is down or ejected, send to all of them anyway
    /// (Envoy's panic mode) instead of failing fast with 503.
    pub panic_mode: bool,
    /// PROXY protocol header sent to backends.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Connections open at once to one backend (0: no limit).
    pub max_connections_per_backend: usize,
    pub load_feedback: Option<LoadFeedback>,
    pub health_check: Option<HealthCheck>,
    pub outlier_detection: Option<OutlierDetection>,
    pub circuit_breaker: CircuitBreaker,
    pub timeouts: Timeouts,
    pub retry: Retry,
    pub tls: Option<UpstreamTls>,
}

/// How a backend is picked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Algorithm {
    /// Each backend in turn, ignoring weights.
    RoundRobin,
    /// Smooth weighted round robin (nginx's): spreads a backend's turns evenly.
    WeightedRoundRobin,
    /// Uniformly at random, weighted.
    Random,
    /// The backend with the fewest requests in flight (weighted).
    LeastRequests,
    /// Power of two random choices over peak-EWMA latency × in-flight.
    P2cEwma,
    /// A client IP always maps to the same backend (while the set is unchanged).
    SourceIpHash,
    /// Stick a client to the backend named in a cookie edge sets.
    Cookie(StickyCookie),
    /// Ketama consistent hashing on a request key.
    ConsistentHash { key: HashKey },
}

impl Algorithm {
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::Random => "random",
            Algorithm::LeastRequests => "least_requests",
            Algorithm::P2cEwma => "p2c_ewma",
            Algorithm::SourceIpHash => "source_ip_hash",
            Algorithm::Cookie(_) => "cookie",
            Algorithm::ConsistentHash { .. } => "consistent_hash",
        }
    }

    pub const NAMES: &'static [&'static str] = &[
        "round_robin",
        "weighted_round_robin",
        "random",
        "least_requests",
        "p2c_ewma",
        "source_ip_hash",
        "cookie",
        "consistent_hash",
    ];
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StickyCookie {
    pub name: String,
    /// Cookie lifetime; `None` is a session cookie.
    #[serde(with = "duration_serde::option")]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    /// Path and query.
    Uri,
    Path,
    ClientIp,
    Header(String),
    Cookie(String),
    Query(String),
}

/// A backend reports its load; edge moves weight away from busy ones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadFeedback {
    /// Response header carrying a load figure 0–100 (percent busy).
    pub header: Option<String>,
    /// Read the load figure from the health check body (HAProxy agent-check style).
    pub from_health_check: bool,
    /// A fully loaded backend keeps this share of its weight.
    pub min_weight_percent: u8,
}

/// A backend: `host:port` with a weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backend {
    pub address: HostPort,
    pub weight: u32,
}

/// A host (IP literal or DNS name) and port. Names are resolved when the
/// pool is built, so a reload picks up DNS changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Parses `host:port`, `1.2.3.4:80` or `[::1]:80`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| format!("{text:?}: an IPv6 address is written [addr]:port"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{text:?}: {host:?} is not an IPv6 address"))?;
            (host, port)
        } else {
            text.rsplit_once(':')
                .ok_or_else(|| format!("{text:?} has no port"))?
        };
        if host.is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        if host.contains(':') && !text.starts_with('[') {
            return Err(format!("{text:?}: an IPv6 address is written [addr]:port"));
        }
        // RFC 1123 §2.1 names: labels of letters, digits and inner hyphens,
        // at most 63 bytes each and 253 in all, the last not all digits
        // (`127.000.000.001` is neither an address nor a name).
        let valid_name = host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            && !host
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()));
        // One spelling per backend: an address as Rust writes it
        // (`[0:0::1]` is `::1`), a name in lower case.
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) if valid_name => host.to_ascii_lowercase(),
            Err(_) => {
                return Err(format!(
                    "{text:?}: {host:?} is not an IP address or host name"
                ))
            }
        };
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{text:?}: {port:?} is not a port number (0-65535)"))?;
        if port == 0 {
            return Err(format!("{text:?}: a backend port cannot be 0"));
        }
        Ok(Self { host, port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Serialize for HostPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProtocol {
    V1,
    V2,
}

/// Active health checking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    #[serde(with = "duration_serde")]
    pub interval: Duration,
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
    /// Consecutive passes before a down backend is up again.
    pub rise: u32,
    /// Consecutive failures before an up backend is down.
    pub fall: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HealthCheckKind {
    Http {
        path: String,
        host: Option<String>,
        expect_status: StatusRange,
        body_contains: Option<String>,
    },
    Tcp,
}

/// An inclusive range of HTTP status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatusRange {
    pub min: u16,
    pub max: u16,
}

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        (self.min..=self.max).contains(&status)
    }
}

/// `[resolver]`: how backend host names become addresses. Each name is
/// looked up at start and again when its answer's TTL runs out (clamped to
/// `min_ttl`..`max_ttl`); every A and AAAA record is a backend of its own
/// (Envoy's `STRICT_DNS`, HAProxy's `server-template`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolver {
    /// Name servers (`ip:port`); empty: the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<std::net::SocketAddr>,
    #[serde(with = "duration_serde")]
    pub min_ttl: Duration,
    #[serde(with = "duration_serde")]
    pub max_ttl: Duration,
    /// One lookup waits this long.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
}

impl Default for Resolver {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Passive health: eject backends that fail real traffic (Envoy's semantics).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutlierDetection {
    pub consecutive_5xx: Option<u32>,
    /// Connect refused, reset, timeout, 502/503/504.
    pub consecutive_gateway_errors: Option<u32>,
    /// Connections refused or timed out (the backend never saw a request):
    /// 1 takes a backend that refuses connections out at once (nginx's
    /// `max_fails=1`).
    pub consecutive_connect_failures: Option<u32>,
    /// Eject when this percentage of requests in `interval` failed.
    pub failure_percentage: Option<u8>,
    pub failure_percentage_min_requests: u32,
    #[serde(with = "duration_serde")]
    pub interval: Duration,
    /// First ejection lasts this long; each further ejection adds as much again.
    #[serde(with = "duration_serde")]
    pub base_ejection_time: Duration,
    #[serde(with = "duration_serde")]
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u8,
}

impl Default for OutlierDetection {
    /// What a pool gets without `[pool.outlier_detection]`: a backend that
    /// refuses a connection is out at once, five gateway errors in a row
    /// take it out too; it comes back after 10 s, then 20 s, … (at most
    /// 5 min) while it keeps failing. Never more than half the pool is out.
    fn default() -> Self {
        Self {
            consecutive_5xx: None,
            consecutive_gateway_errors: Some(5),
            consecutive_connect_failures: Some(1),
            failure_percentage: None,
            failure_percentage_min_requests: 20,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// Limits and a per-backend breaker. Zero limits mean "no limit".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitBreaker {
    pub max_connections: usize,
    pub max_pending: usize,
    pub max_requests: usize,
    pub max_retries: usize,
    /// Open a backend's breaker after this many failures in a row.
    pub consecutive_failures: Option<u32>,
    /// … or when this percentage of requests in `window` failed.
    pub failure_rate: Option<u8>,
    pub min_requests: u32,
    #[serde(with = "duration_serde")]
    pub window: Duration,
    /// How long an open breaker refuses before letting probes through.
    #[serde(with = "duration_serde")]
    pub open_for: Duration,
    /// Probe requests allowed while half-open; all must pass to close.
    pub half_open_probes: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            max_connections: 0,
            max_pending: 0,
            max_requests: 0,
            max_retries: 0,
            consecutive_failures: None,
            failure_rate: None,
            min_requests: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
            half_open_probes: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeouts {
    #[serde(with = "duration_serde")]
    pub connect: Duration,
    /// From sending the request to the first response byte.
    #[serde(with = "duration_serde")]
    pub first_byte: Duration,
    /// Between two reads or writes once the response has started.
    #[serde(with = "duration_serde")]
    pub idle: Duration,
    /// The whole exchange, retries included.
    #[serde(with = "duration_serde::option")]
    pub total: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: None,
        }
    }
}

/// When and how often a failed request is tried again on another backend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retry {
    /// Tries after the first (0: never retry).
    pub attempts: u32,
    pub on: Vec<RetryOn>,
    #[serde(with = "duration_serde")]
    pub backoff: Duration,
    #[serde(with = "duration_serde")]
    pub max_backoff: Duration,
    /// Retries in flight may be at most this percentage of requests in flight…
    pub budget_percent: u8,
    /// … but this many retries at once are always allowed (Envoy's retry budget).
    pub min_concurrent_retries: u32,
    /// Retry POST, PATCH and other non-idempotent methods too.
    pub non_idempotent: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 1,
            // Not `Timeout`: a `first_byte` of 2 s answers 504 at 2 s, not
            // 2 s per backend (HAProxy's default `retry-on conn-failure`).
            on: vec![RetryOn::ConnectFailure, RetryOn::Reset],
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            budget_percent: 20,
            min_concurrent_retries: 3,
            non_idempotent: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    ConnectFailure,
    Reset,
    Timeout,
    /// 502, 503, 504.
    GatewayError,
    /// Any 5xx.
    ServerError,
}

impl RetryOn {
    pub const NAMES: &'static [&'static str] = &[
        "connect_failure",
        "reset",
        "timeout",
        "gateway_error",
        "5xx",
    ];
}

/// TLS to backends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamTls {
    pub sni: Option<String>,
    /// Trust these roots instead of the system's.
    pub ca_file: Option<PathBuf>,
    pub verify: bool,
}
