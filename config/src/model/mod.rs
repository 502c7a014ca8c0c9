//! The validated model: what the rest of edge sees. Every value here has been
//! parsed (addresses, durations, sizes, regexes) and cross-checked (pools named
//! by routes exist, ports are not claimed twice). Types derive `PartialEq` so
//! [`crate::ConfigDiff`] can compare sections, and `Serialize` for `/config`
//! (secrets print as `"<redacted>"`).

mod cache;
mod dns;
mod limit;
mod listener;
mod log;
mod pool;
mod route;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};

pub use cache::*;
pub use dns::*;
pub use limit::*;
pub use listener::*;
pub use log::*;
pub use pool::*;
pub use route::*;

use crate::units::duration_serde;

/// A whole validated config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// The file this was loaded from, if any (reloads read it again).
    pub source: Option<PathBuf>,
    pub server: Server,
    pub admin: Admin,
    pub site: Option<Site>,
    pub listeners: Vec<Listener>,
    pub pools: Vec<Pool>,
    /// In evaluation order: highest priority first, file order among equals.
    pub routes: Vec<Route>,
    pub cache: Cache,
    pub rate_limits: Vec<RateLimit>,
    pub redis: Option<Redis>,
    pub dns: Option<Dns>,
    pub resolver: Resolver,
    /// Which lists the file names, even empty: a reload may empty a list
    /// only when the new file says so (`listener = []`).
    #[serde(skip)]
    pub declared: Declared,
}

/// Lists a config file names (the key is there, even with no items).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Declared {
    pub listeners: bool,
    pub routes: bool,
    pub dns_zones: bool,
}

impl Config {
    /// A config that defines nothing: what a node runs before its first apply.
    pub fn empty() -> Self {
        Config {
            source: None,
            server: Server::default(),
            admin: Admin::default(),
            site: None,
            listeners: Vec::new(),
            pools: Vec::new(),
            routes: Vec::new(),
            cache: Cache::default(),
            rate_limits: Vec::new(),
            redis: None,
            dns: None,
            resolver: Resolver::default(),
            declared: Declared::default(),
        }
    }

    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    pub fn rate_limit(&self, name: &str) -> Option<&RateLimit> {
        self.rate_limits.iter().find(|r| r.name == name)
    }
}

/// `[server]`: process-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Server {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// How long SIGTERM waits for in-flight requests before exiting.
    #[serde(with = "duration_serde")]
    pub grace_period: Duration,
    /// After SIGTERM, how long listeners keep accepting (with `/ready` at
    /// 503 and every answer saying `Connection: close`) before they stop:
    /// the time a load balancer or Kubernetes needs to stop sending.
    #[serde(with = "duration_serde")]
    pub shutdown_delay: Duration,
    pub log_format: LogFormat,
    /// One log line per request (target `access`).
    pub access_log: bool,
    /// The text access line as a template (nginx's `log_format`); `None`:
    /// every field as `key=value`.
    pub access_log_format: Option<AccessLogFormat>,
    /// Idle upstream connections kept for reuse, per worker thread: each
    /// HTTP listener keeps at most this times `threads` (the oldest closed
    /// beyond that), and a thread reuses the connections it released
    /// (nginx: `keepalive` per worker).
    pub upstream_keepalive: usize,
    /// One multi-threaded runtime whose threads steal work (true), or one
    /// single-threaded runtime per thread with connections spread among them
    /// (false: cheaper per request, as nginx workers).
    pub work_stealing: bool,
    /// The HTTP/1 fast paths (fresh RAM hits written from the stored head
    /// lines without header maps; body-less requests on routes that do not
    /// cache proxied by pingora's sequential loop, vendor/pingora-proxy
    /// EDGE-PATCH.md). `false` forces every request through the general
    /// path; answers are the same either way (the tests run both).
    pub fast_paths: bool,
    /// `server.otlp`: request spans exported over OTLP/HTTP.
    pub otlp: Option<Otlp>,
}

/// `[server.otlp]`: one span per request (kind server, OpenTelemetry HTTP
/// semantic conventions) sent as OTLP/HTTP protobuf to a collector, as
/// Envoy, Traefik and Caddy export theirs. A request whose `traceparent`
/// is sampled is recorded; one that is not, is not; a new trace is sampled
/// at `sample_ratio` (parent-based sampling, as OpenTelemetry's default).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Otlp {
    /// The collector's traces URL (`http://collector:4318/v1/traces`);
    /// shown with its query redacted (vendors put keys there).
    #[serde(serialize_with = "redacted_query")]
    pub endpoint: String,
    /// The resource's `service.name`.
    pub service_name: String,
    /// Share of new traces sampled, 0 to 1.
    pub sample_ratio: f64,
    /// Sent with every export (an API key, for instance); values redacted
    /// when shown.
    pub headers: Vec<(String, Secret)>,
    /// How long one export may take.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
    /// A PEM root the collector's HTTPS certificate may chain to, besides
    /// the system's.
    pub ca: Option<std::path::PathBuf>,
}

impl Otlp {
    /// The endpoint with its query (which may hold a key) as `<redacted>`,
    /// for logs and `/config`.
    pub fn endpoint_shown(&self) -> String {
        match self.endpoint.split_once('?') {
            Some((base, _)) => format!("{base}?<redacted>"),
            None => self.endpoint.clone(),
        }
    }
}

fn redacted_query<S: Serializer>(endpoint: &str, s: S) -> Result<S::Ok, S::Error> {
    match endpoint.split_once('?') {
        Some((base, _)) => s.serialize_str(&format!("{base}?<redacted>")),
        None => s.serialize_str(endpoint),
    }
}

impl Default for Server {
    fn default() -> Self {
        Self {
            threads: 1,
            grace_period: Duration::from_secs(30),
            shutdown_delay: Duration::from_secs(5),
            log_format: LogFormat::Text,
            access_log: true,
            access_log_format: None,
            upstream_keepalive: 128,
            work_stealing: false,
            fast_paths: true,
            otlp: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[admin]`: the control API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Bearer token every mutating call must carry. Without one, mutating
    /// calls are refused.
    pub token: Option<AdminToken>,
}

/// Where the admin token comes from. Serialises as `"<redacted>"` or
/// `{"env": "NAME"}`.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminToken {
    Value(Secret),
    /// Read from this environment variable when the config is applied (not
    /// when it is checked, which may happen on another machine).
    Env(String),
}

impl Serialize for AdminToken {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            AdminToken::Value(secret) => secret.serialize(s),
            AdminToken::Env(name) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("env", name)?;
                map.end()
            }
        }
    }
}

impl AdminToken {
    /// The token, reading the environment if needed.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            AdminToken::Value(s) => Ok(s.clone()),
            AdminToken::Env(name) => match std::env::var(name) {
                Ok(v) if v.len() >= 16 => Ok(Secret::new(v)),
                Ok(_) => Err(format!(
                    "admin.token_env: ${name} holds fewer than 16 characters"
                )),
                Err(_) => Err(format!(
                    "admin.token_env: environment variable {name} is not set"
                )),
            },
        }
    }
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token: None,
        }
    }
}

/// A value that must not be printed: `Debug`, `Display` and `Serialize` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// `[site]`: where this node is, and its neighbours.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Site {
    pub name: String,
    /// This node's name within the site (defaults to the host name).
    pub node: String,
    /// The site's other nodes (an entry named as this node is skipped, so
    /// every node may share one list). Each cached object has an owner
    /// among this node and its healthy peers (rendezvous hashing of the
    /// cache key); a node that does not own an object fetches it from
    /// the owner.
    pub peers: Vec<Peer>,
    /// Whether a node keeps a copy of what it fetched from the owner.
    pub keep_copies: KeepCopies,
    /// Active health check of the peers (default: a TCP connect every 2 s,
    /// 2 failures down, 2 passes up). Passive health is the pools'
    /// default outlier detection: a refused connection ejects at once.
    pub health_check: Option<HealthCheck>,
    /// Timeouts toward peers (default: connect 1 s, first byte and idle 60 s).
    pub timeouts: Timeouts,
    /// The pool of the parent (shield) site that misses of cached routes
    /// go to before the origin.
    pub shield: Option<String>,
    /// When no shield node can be reached.
    pub shield_fallback: ShieldFallback,
    /// What this node can serve, for steering (`GET /site/state`).
    pub capacity: Capacity,
    /// Where clients reach this node (`scheme://host[:port]`, no path),
    /// what steering answers name it by; `None`: its first HTTP
    /// listener's address.
    pub url: Option<String>,
    /// The digest of held objects that `GET /site/digest` serves.
    pub digest: DigestSettings,
}

/// `[site] digest`: which objects the digest lists and how often it is rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DigestSettings {
    /// Objects smaller than this (bytes) are left out (default 64 KiB:
    /// segments in, playlists out; what is small is cheap to fill anyway).
    pub min_size: u64,
    /// How often the digest is rebuilt (default 5 s).
    #[serde(with = "crate::units::duration_serde")]
    pub refresh: Duration,
}

impl Default for DigestSettings {
    fn default() -> Self {
        Self {
            min_size: 64 * 1024,
            refresh: Duration::from_secs(5),
        }
    }
}

/// A node's capacity: `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Capacity {
    /// Response bits per second.
    pub egress_bits: Option<u64>,
    /// Client connections open at once.
    pub connections: Option<u64>,
}

/// What a miss does when no node of the shield pool can be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShieldFallback {
    /// Go to the route's own pool (the origin).
    Origin,
    /// Answer 503: the origin is never asked directly.
    Fail,
}

/// `[site].keep_copies`: what a node that does not own an object keeps of
/// it after fetching it from the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepCopies {
    /// A copy when this node was asked for the object before (a second
    /// request within the last 64 Ki distinct keys it fetched from peers).
    Hot,
    /// Never: the owner holds the site's only copy.
    Never,
    /// Always, like any object it fetched itself.
    Always,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Peer {
    /// The node's name (`[site].node` on that node): what the owner of
    /// an object is computed from, so every node must list the same names.
    pub name: String,
    /// Its HTTP listener (an IP or a DNS name, such as a StatefulSet pod's).
    pub address: HostPort,
    /// Its admin API (host:port), which purges fan out to.
    pub admin: Option<HostPort>,
}

/// The pool name the site's peers are known by (in `/pools`, metrics
/// and logs); no configured pool can have it (`:` is not allowed in names).
pub const PEER_POOL: &str = "site:peers";

impl Site {
    /// The peers other than this node.
    pub fn other_peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.iter().filter(|p| p.name != self.node)
    }

    /// This node's own entry in the peer list, when it has one.
    pub fn own_entry(&self) -> Option<&Peer> {
        self.peers.iter().find(|p| p.name == self.node)
    }

    /// The pool the request path reaches the peers through: one backend
    /// per peer, health-checked as `health_check` says, never retried
    /// (a failed peer sends the request on to the shield or origin).
    pub fn peer_pool(&self) -> Option<Pool> {
        let backends: Vec<Backend> = self
            .other_peers()
            .map(|p| Backend {
                address: p.address.clone(),
                weight: 1,
            })
            .collect();
        if backends.is_empty() {
            return None;
        }
        Some(Pool {
            name: PEER_POOL.to_string(),
            algorithm: Algorithm::RoundRobin,
            backends,
            host: None,
            panic_mode: false,
            proxy_protocol: None,
            max_connections_per_backend: 0,
            load_feedback: None,
            health_check: Some(self.health_check.clone().unwrap_or(HealthCheck {
                kind: HealthCheckKind::Tcp,
                interval: std::time::Duration::from_secs(2),
                timeout: std::time::Duration::from_secs(1),
                rise: 2,
                fall: 2,
            })),
            outlier_detection: Some(OutlierDetection {
                max_ejection_percent: 100,
                ..OutlierDetection::default()
            }),
            circuit_breaker: CircuitBreaker::default(),
            timeouts: self.timeouts.clone(),
            retry: Retry {
                attempts: 0,
                ..Retry::default()
            },
            tls: None,
        })
    }
}
