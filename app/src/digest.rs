//! This node's digest of what it holds (see [`edge_cache::digest`]):
//! rebuilt every `[site] digest.refresh` from the cache's RAM and disk
//! tiers, on a blocking thread, and served by `GET /site/digest` to the
//! GeoDNS nodes that steer clients. `GET /site/state` says its
//! generation, so a poller fetches the filter only when it changed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use edge_cache::digest::Digest;
use serde_json::{json, Value};

use crate::runtime::Runtime;

/// A digest as built.
pub struct Held {
    pub digest: Digest,
    /// Grows by one each time the digest's content changes; a process
    /// starts from its start time in Unix milliseconds, so a restarted
    /// node never says a generation its previous run said (a poller that
    /// missed the restart would keep the old run's digest as current).
    pub generation: u64,
    pub built: Instant,
    pub built_at: SystemTime,
    /// What it took to build (walk both tiers and hash every URL).
    pub build_time: Duration,
    pub min_size: u64,
}

impl Held {
    /// What `/site/state` says of it.
    pub fn summary(&self) -> Value {
        json!({
            "generation": self.generation,
            "keys": self.digest.keys(),
            "bits": self.digest.bits(),
            "hashes": self.digest.hashes(),
            "bytes": self.digest.bytes().len(),
            "min_size": self.min_size,
            "age_seconds": self.built.elapsed().as_secs_f64(),
            "built": self.built_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "build_seconds": self.build_time.as_secs_f64(),
            "false_positive_rate": self.digest.expected_false_positive_rate(),
        })
    }
}

/// The current digest, if this node has a cache and a `[site]`.
pub struct NodeDigest {
    current: ArcSwapOption<Held>,
    generation: AtomicU64,
    keys: prometheus::IntGauge,
    bytes: prometheus::IntGauge,
    built: prometheus::Gauge,
}

impl NodeDigest {
    /// `edge_site_digest_keys`, `edge_site_digest_bytes` and
    /// `edge_site_digest_built_timestamp_seconds` (its age is `time() -`
    /// that) in `registry`.
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let keys = prometheus::IntGauge::new(
            "edge_site_digest_keys",
            "URLs in this node's digest of held objects (GET /site/digest)",
        )?;
        let bytes = prometheus::IntGauge::new(
            "edge_site_digest_bytes",
            "Size of this node's digest of held objects, bytes",
        )?;
        let built = prometheus::Gauge::new(
            "edge_site_digest_built_timestamp_seconds",
            "When this node's digest of held objects was last rebuilt, Unix seconds",
        )?;
        registry.register(Box::new(keys.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(built.clone()))?;
        Ok(Self {
            current: ArcSwapOption::empty(),
            generation: AtomicU64::new(first_generation()),
            keys,
            bytes,
            built,
        })
    }

    pub fn current(&self) -> Option<Arc<Held>> {
        self.current.load_full()
    }

    /// Rebuilds the digest now (blocking: call from a blocking thread).
    pub fn rebuild(&self, storage: &edge_cache::EdgeStorage, min_size: u64) {
        let started = Instant::now();
        let digest = storage.digest(min_size);
        let build_time = started.elapsed();
        let previous = self.current.load_full();
        let generation = match &previous {
            Some(p) if p.digest == digest && p.min_size == min_size => p.generation,
            _ => self.generation.fetch_add(1, Ordering::Relaxed) + 1,
        };
        self.keys.set(digest.keys() as i64);
        self.bytes.set(digest.bytes().len() as i64);
        self.built.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        self.current.store(Some(Arc::new(Held {
            digest,
            generation,
            built: Instant::now(),
            built_at: SystemTime::now(),
            build_time,
            min_size,
        })));
    }
}

/// Where this process's generations start: the Unix time in milliseconds
/// (a node rebuilds at most once a second, so its generations grow slower
/// than the clock: the next run starts above the last one said).
fn first_generation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2))
}

/// Rebuilds the digest every `[site] digest.refresh` while the node has a
/// `[site]` and a cache (settings are read each round: a reload applies).
pub async fn refresh_loop(rt: Arc<Runtime>) {
    loop {
        let config = rt.config();
        let settings = config.site.as_ref().map(|s| s.digest);
        let cache = rt.proxy.cache().cloned();
        let wait = settings.map_or(Duration::from_secs(5), |s| s.refresh);
        if let (Some(settings), Some(cache)) = (settings, cache) {
            let node = rt.clone();
            let storage = cache.storage;
            let _ = tokio::task::spawn_blocking(move || {
                node.digest.rebuild(storage, settings.min_size)
            })
            .await;
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_node_starts_above_the_generations_it_said() {
        let before = first_generation();
        let a = NodeDigest::new(&prometheus::Registry::new()).unwrap();
        let first = a.generation.load(Ordering::Relaxed);
        // The clock, not 0: a run that rebuilt (at most once a second)
        // until now said generations below this one.
        assert!(first >= before && before > 1_700_000_000_000, "{first}");
        std::thread::sleep(Duration::from_millis(2));
        let b = NodeDigest::new(&prometheus::Registry::new()).unwrap();
        assert!(b.generation.load(Ordering::Relaxed) > first);
    }
}
