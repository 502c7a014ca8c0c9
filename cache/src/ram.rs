//! The RAM tier: moka, weighted by bytes, with its TinyLFU admission (a new
//! object may be refused room if what it would push out is used more).

use std::sync::Arc;

use moka::notification::RemovalCause;

use crate::object::Object;

/// Called with the key of an entry moka evicted to stay within its budget.
pub type OnEvict = Arc<dyn Fn(&str) + Send + Sync>;

pub struct RamTier {
    cache: moka::sync::Cache<String, Arc<Object>>,
    pub capacity: u64,
    pub max_object: u64,
}

impl RamTier {
    pub fn new(capacity: u64, max_object: u64, on_evict: OnEvict) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|k: &String, v: &Arc<Object>| {
                (v.ram_weight() + k.len() as u64).min(u64::from(u32::MAX)) as u32
            })
            .eviction_listener(move |k: Arc<String>, _v, cause| {
                if cause == RemovalCause::Size {
                    on_evict(&k);
                }
            })
            .build();
        Self {
            cache,
            capacity,
            max_object: max_object.min(capacity),
        }
    }

    /// Whether an object of `size` bytes may enter this tier at all.
    pub fn admits(&self, size: u64) -> bool {
        self.capacity > 0 && size <= self.max_object
    }

    /// May run moka's maintenance, and so the eviction callback: call with
    /// no lock held that the callback takes.
    pub fn get(&self, key: &str) -> Option<Arc<Object>> {
        self.cache.get(key)
    }

    /// Runs moka's maintenance, and so the eviction callback (see [`get`](Self::get)).
    pub fn insert(&self, key: String, object: Arc<Object>) {
        self.cache.insert(key, object);
        // Evict now, so the tier never sits above its budget.
        self.cache.run_pending_tasks();
    }

    pub fn remove(&self, key: &str) -> Option<Arc<Object>> {
        self.cache.remove(key)
    }

    /// Never runs maintenance: safe under any lock.
    pub fn contains(&self, key: &str) -> bool {
        self.cache.contains_key(key)
    }

    /// (objects, bytes) after pending maintenance.
    pub fn usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// The infos of objects whose body is at least `min` bytes.
    pub fn infos_at_least(&self, min: u64) -> Vec<Arc<crate::object::ObjectInfo>> {
        self.cache
            .iter()
            .filter(|(_, v)| v.body.len() as u64 >= min)
            .map(|(_, v)| v.info.clone())
            .collect()
    }

    /// Every entry, for moving them into a resized tier.
    pub fn entries(&self) -> Vec<(String, Arc<Object>)> {
        self.cache.iter().map(|(k, v)| ((*k).clone(), v)).collect()
    }
}
