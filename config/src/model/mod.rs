//! The validated model: what the rest of edge sees. Every value here has been
//! parsed (addresses, durations, sizes, regexes) and cross-checked (pools named
//! by routes exist, ports are not claimed twice). Types derive `PartialEq` so
//! [`crate::ConfigDiff`] can compare sections, and `Serialize` for `/config`
//! (secrets print as `"<redacted>"`).

mod cache;
mod dns;
mod limit;
mod listener;
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
    /// Idle upstream connections kept for reuse, per node.
    pub upstream_keepalive: usize,
    /// One multi-threaded runtime whose threads steal work (true), or one
    /// single-threaded runtime per thread with connections spread among them
    /// (false: cheaper per request, as nginx workers).
    pub work_stealing: bool,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            threads: 1,
            grace_period: Duration::from_secs(30),
            shutdown_delay: Duration::from_secs(5),
            log_format: LogFormat::Text,
            access_log: true,
            upstream_keepalive: 128,
            work_stealing: false,
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
    /// Other nodes of the site; objects are shared among them by consistent hash.
    pub peers: Vec<Peer>,
    /// The pool of the parent (shield) site that misses of cached routes
    /// go to before the origin.
    pub shield: Option<String>,
    /// When no shield node can be reached.
    pub shield_fallback: ShieldFallback,
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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Peer {
    pub name: String,
    pub address: SocketAddr,
}
