use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

use super::Secret;
use crate::units::{duration_serde, Rate};

/// `[[rate_limit]]`: a GCRA limit on some key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimit {
    pub name: String,
    /// The parts that together make the key; empty means one bucket for all.
    pub key: Vec<LimitKey>,
    pub rate: Rate,
    /// Requests allowed at once (the bucket size); the rate refills it.
    pub burst: u32,
    pub scope: LimitScope,
    pub mode: LimitMode,
    /// Clients in these networks are never limited.
    pub exempt: Vec<IpNet>,
    /// Prefix lengths for `client_prefix`.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Distinct keys tracked at once; the least recently seen go first.
    pub max_keys: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    ClientIp,
    ClientPrefix,
    Route,
    Header(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// Counted in this node alone.
    Local,
    /// Counted in Redis, shared by every node that uses it.
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMode {
    Enforce,
    /// Count and log what would be limited, but let it pass.
    LogOnly,
}

/// `[redis]`: where cluster-scope limits are counted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Redis {
    pub url: Secret,
    /// A decision waits this long for Redis before falling back to local counting.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
    pub key_prefix: String,
}
