//! Errors building the request path from a config.

use std::path::PathBuf;

/// Why a config could not be turned into a running proxy. The running one
/// stays as it was.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("route {route}: {what}: {source}")]
    Regex {
        route: String,
        what: String,
        source: regex::Error,
    },
    #[error("route {route}: unknown pool {pool}")]
    UnknownPool { route: String, pool: String },
    #[error("listener {listener}: certificate {path}: {why}")]
    Certificate {
        listener: String,
        path: PathBuf,
        why: String,
    },
    #[error("listener {listener}: cannot listen on {address}: {source}")]
    Bind {
        listener: String,
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    RateLimit(String),
    #[error("route {route}: auth: {why}")]
    Secret { route: String, why: String },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
