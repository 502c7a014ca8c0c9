//! Prometheus metrics of the cache. Counters are resolved to handles once;
//! tier sizes are read at scrape time by [`TierCollector`].

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// How a request used the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Hit,
    Miss,
    Stale,
    Revalidated,
    Bypass,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Hit,
        Status::Miss,
        Status::Stale,
        Status::Revalidated,
        Status::Bypass,
    ];

    /// As in the `X-Cache` header.
    pub fn as_header(self) -> &'static str {
        match self {
            Status::Hit => "HIT",
            Status::Miss => "MISS",
            Status::Stale => "STALE",
            Status::Revalidated => "REVALIDATED",
            Status::Bypass => "BYPASS",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Status::Hit => "hit",
            Status::Miss => "miss",
            Status::Stale => "stale",
            Status::Revalidated => "revalidated",
            Status::Bypass => "bypass",
        }
    }
}

/// Tier labels: where a cached response came from (`none` for misses and bypasses).
pub const TIER_LABELS: [&str; 3] = ["ram", "disk", "none"];

/// Why a prefetch was or was not made.
#[derive(Debug, Clone, Copy)]
pub enum PrefetchOutcome {
    Issued,
    SkippedCached,
    SkippedBusy,
    SkippedStruggling,
}

/// Every cache metric family, registered once per node.
pub struct CacheMetrics {
    /// `[status][tier]`.
    requests: Vec<[IntCounter; 3]>,
    pub bytes_from_cache: IntCounter,
    pub bytes_from_origin: IntCounter,
    pub evictions_ram: IntCounter,
    pub evictions_disk: IntCounter,
    pub coalesced: IntCounter,
    prefetch: [IntCounter; 4],
    pub prefetch_used: IntCounter,
    pub disk_corrupt: IntCounter,
    pub disk_write_errors: IntCounter,
    pub disk_writes_skipped: IntCounter,
    pub purged_hard: IntCounter,
    pub purged_soft: IntCounter,
}

fn counter_vec(
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

impl CacheMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = counter_vec(
            "edge_cache_requests_total",
            "Requests on cached routes by cache status (hit, miss, stale, revalidated, bypass) and tier",
            &["status", "tier"],
        )?;
        let bytes = counter_vec(
            "edge_cache_response_bytes_total",
            "Response body bytes sent to clients on cached routes, by source (cache or origin)",
            &["source"],
        )?;
        let evictions = counter_vec(
            "edge_cache_evictions_total",
            "Objects evicted to stay within a tier's byte budget, by tier",
            &["tier"],
        )?;
        let coalesced = IntCounter::new(
            "edge_cache_coalesced_total",
            "Requests served from another request's fill instead of going upstream",
        )?;
        let prefetch = counter_vec(
            "edge_cache_prefetch_total",
            "Segment prefetches, by outcome (issued or why skipped)",
            &["outcome"],
        )?;
        let prefetch_used = IntCounter::new(
            "edge_cache_prefetch_used_total",
            "Prefetched objects later requested by a client",
        )?;
        let disk_errors = counter_vec(
            "edge_cache_disk_errors_total",
            "Disk tier problems: corrupt or truncated objects dropped, failed writes, writes skipped under load",
            &["kind"],
        )?;
        let purged = counter_vec(
            "edge_cache_purged_objects_total",
            "Objects removed (hard) or marked stale (soft) by purges",
            &["mode"],
        )?;
        for c in [
            &requests,
            &bytes,
            &evictions,
            &prefetch,
            &disk_errors,
            &purged,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(coalesced.clone()))?;
        registry.register(Box::new(prefetch_used.clone()))?;
        Ok(Self {
            requests: Status::ALL
                .iter()
                .map(|s| TIER_LABELS.map(|t| requests.with_label_values(&[s.label(), t])))
                .collect(),
            bytes_from_cache: bytes.with_label_values(&["cache"]),
            bytes_from_origin: bytes.with_label_values(&["origin"]),
            evictions_ram: evictions.with_label_values(&["ram"]),
            evictions_disk: evictions.with_label_values(&["disk"]),
            coalesced,
            prefetch: [
                "issued",
                "skipped_cached",
                "skipped_busy",
                "skipped_struggling",
            ]
            .map(|o| prefetch.with_label_values(&[o])),
            prefetch_used,
            disk_corrupt: disk_errors.with_label_values(&["corrupt"]),
            disk_write_errors: disk_errors.with_label_values(&["write"]),
            disk_writes_skipped: disk_errors.with_label_values(&["write_skipped"]),
            purged_hard: purged.with_label_values(&["hard"]),
            purged_soft: purged.with_label_values(&["soft"]),
        })
    }

    /// Metrics that count but are not exported (tools and tests).
    pub fn unregistered() -> Self {
        // Registering into a private registry cannot clash.
        match Self::new(&Registry::new()) {
            Ok(m) => m,
            Err(e) => unreachable_metrics(e),
        }
    }

    /// Counts one request. `tier` is the index into [`TIER_LABELS`].
    pub fn request(&self, status: Status, tier: usize) {
        let s = Status::ALL.iter().position(|x| *x == status).unwrap_or(0);
        if let Some(row) = self.requests.get(s) {
            row[tier.min(2)].inc();
        }
    }

    pub fn prefetch(&self, outcome: PrefetchOutcome) {
        self.prefetch[outcome as usize].inc();
    }
}

#[cold]
fn unreachable_metrics(e: prometheus::Error) -> ! {
    // Constant names and labels into an empty registry: a programming error.
    panic!("cache metric definitions are invalid: {e}")
}

/// Objects and bytes per tier, and each tier's budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierUsage {
    pub objects: u64,
    pub bytes: u64,
    pub capacity: u64,
}

/// Something that can report tier usage at scrape time.
pub trait UsageSource: Send + Sync {
    /// `(tier label, usage)` for every tier in use.
    fn tier_usage(&self) -> Vec<(&'static str, TierUsage)>;
}

/// Exposes `edge_cache_objects`, `edge_cache_bytes` and
/// `edge_cache_capacity_bytes` by tier, read when scraped.
pub struct TierCollector {
    source: &'static dyn UsageSource,
    descs: Vec<Desc>,
}

fn gauges() -> Result<[IntGaugeVec; 3], prometheus::Error> {
    Ok([
        IntGaugeVec::new(
            Opts::new("edge_cache_objects", "Objects stored, by tier"),
            &["tier"],
        )?,
        IntGaugeVec::new(
            Opts::new(
                "edge_cache_bytes",
                "Bytes stored (bodies and headers), by tier",
            ),
            &["tier"],
        )?,
        IntGaugeVec::new(
            Opts::new("edge_cache_capacity_bytes", "Byte budget, by tier"),
            &["tier"],
        )?,
    ])
}

impl TierCollector {
    pub fn new(source: &'static dyn UsageSource) -> Result<Self, prometheus::Error> {
        let descs = gauges()?
            .iter()
            .flat_map(|g| g.desc().into_iter().cloned())
            .collect();
        Ok(Self { source, descs })
    }
}

impl Collector for TierCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok([objects, bytes, capacity]) = gauges() else {
            return Vec::new();
        };
        for (tier, u) in self.source.tier_usage() {
            objects.with_label_values(&[tier]).set(u.objects as i64);
            bytes.with_label_values(&[tier]).set(u.bytes as i64);
            capacity.with_label_values(&[tier]).set(u.capacity as i64);
        }
        [objects, bytes, capacity]
            .iter()
            .flat_map(|g| g.collect())
            .collect()
    }
}
