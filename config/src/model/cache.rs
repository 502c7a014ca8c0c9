use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::StatusRange;
use crate::units::duration_serde;

/// `[cache]`: the RAM and disk tiers and default policies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cache {
    /// Bytes the RAM tier may hold (0 disables it).
    pub ram_size: u64,
    /// Objects larger than this never enter RAM.
    pub ram_max_object: u64,
    pub disk: Option<DiskTier>,
    /// Size of one slice when large objects are cached in parts.
    pub slice_size: u64,
    /// Objects of at least this size (by Content-Length) are sliced.
    pub slice_threshold: u64,
    /// How long a request waits for another's fill of the same key before
    /// going upstream itself.
    #[serde(with = "duration_serde")]
    pub lock_timeout: Duration,
    /// TTL when the origin gives no freshness information (0: do not cache).
    #[serde(with = "duration_serde")]
    pub default_ttl: Duration,
    pub video: VideoPolicy,
    /// Matched in order; the first match sets the TTL when the origin is silent.
    pub ttl_rules: Vec<TtlRule>,
    /// Targeted cache-control fields (RFC 9213), lower-case, in precedence
    /// order: the first present with a valid value replaces `Cache-Control`
    /// and `Expires` for edge's own caching decision.
    pub targeted_fields: Vec<String>,
    /// Send the targeted fields on to clients (a shield whose children are
    /// edge nodes wants this); by default they stop here.
    pub forward_targeted_fields: bool,
    /// This cache's name in `Cache-Status` (RFC 9211).
    pub status_name: String,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            ram_size: 256 << 20,
            ram_max_object: 32 << 20,
            disk: None,
            slice_size: 2 << 20,
            slice_threshold: 8 << 20,
            lock_timeout: Duration::from_secs(5),
            default_ttl: Duration::ZERO,
            video: VideoPolicy::default(),
            ttl_rules: Vec::new(),
            targeted_fields: vec!["cdn-cache-control".to_string()],
            forward_targeted_fields: false,
            status_name: "edge".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskTier {
    pub path: PathBuf,
    pub size: u64,
    pub max_object: u64,
}

/// Defaults for HLS/DASH when the origin sends no freshness information.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoPolicy {
    #[serde(with = "duration_serde")]
    pub vod_playlist_ttl: Duration,
    #[serde(with = "duration_serde")]
    pub segment_ttl: Duration,
    /// A live playlist is cached for at most half its target duration, and
    /// never longer than this.
    #[serde(with = "duration_serde")]
    pub live_playlist_max_ttl: Duration,
    /// Segments fetched ahead after one is served (0: off).
    pub prefetch: u32,
    /// Prefetches in flight at once, per node.
    pub prefetch_concurrency: u32,
    /// How long a blocking LL-HLS playlist reload (`_HLS_msn`) is held
    /// before the current playlist is sent instead; `None`: three part
    /// targets of that playlist (3 s until one is seen).
    #[serde(with = "duration_serde::option")]
    pub blocking_hold: Option<Duration>,
}

impl Default for VideoPolicy {
    fn default() -> Self {
        Self {
            vod_playlist_ttl: Duration::from_secs(3600),
            segment_ttl: Duration::from_secs(86400),
            live_playlist_max_ttl: Duration::from_secs(2),
            prefetch: 2,
            prefetch_concurrency: 4,
            blocking_hold: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TtlRule {
    pub matcher: TtlMatch,
    /// Applies only to these statuses; empty: 200, 203, 204, 206, 300, 301, 404, 410.
    pub statuses: Vec<StatusRange>,
    #[serde(with = "duration_serde")]
    pub ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TtlMatch {
    Suffix(String),
    Regex(String),
    Any,
}
