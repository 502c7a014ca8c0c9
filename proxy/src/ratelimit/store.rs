//! A governor state store with a bound on the keys it holds.
//!
//! governor's own keyed stores grow with every distinct key until pruned.
//! This one is sharded maps with a fixed capacity: a full shard first drops
//! stale keys (untouched for longer than a bucket takes to refill, so
//! forgetting them changes no decision), and if none are stale, evicts an
//! arbitrary key, which can only let that key through earlier, never block
//! anyone. Memory stays below `capacity` entries whatever arrives.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use governor::nanos::Nanos;
use governor::state::StateStore;
use parking_lot::Mutex;

const SHARDS: usize = 16;

struct Entry {
    tat: Nanos,
    touched: Instant,
}

struct Shard {
    map: HashMap<u64, Entry>,
    last_sweep: Instant,
}

pub struct BoundedStore {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    /// A key untouched this long holds a full bucket: dropping it is exact.
    stale_after: Duration,
}

impl BoundedStore {
    pub fn new(capacity: usize, stale_after: Duration) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        let now = Instant::now();
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        last_sweep: now,
                    })
                })
                .collect(),
            per_shard,
            stale_after,
        }
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        // Keys are hashes already; the high bits pick the shard.
        &self.shards[(key >> 60) as usize % SHARDS]
    }

    fn make_room(&self, shard: &mut Shard, now: Instant) {
        if shard.map.len() < self.per_shard {
            return;
        }
        // A full sweep at most every stale period / 8, so a flood of new
        // keys does not scan the shard on every request.
        if now.saturating_duration_since(shard.last_sweep) >= self.stale_after / 8 {
            let stale_after = self.stale_after;
            shard
                .map
                .retain(|_, e| now.saturating_duration_since(e.touched) < stale_after);
            shard.last_sweep = now;
        }
        while shard.map.len() >= self.per_shard {
            let Some(k) = shard.map.keys().next().copied() else {
                break;
            };
            shard.map.remove(&k);
        }
    }
}

/// A [`BoundedStore`] shared with whoever reports its size.
pub struct SharedStore(pub std::sync::Arc<BoundedStore>);

impl StateStore for SharedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl StateStore for BoundedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut shard = self.shard(*key).lock();
        let prev = shard.map.get(key).map(|e| e.tat);
        let (out, tat) = f(prev)?;
        let now = Instant::now();
        if prev.is_none() {
            self.make_room(&mut shard, now);
        }
        shard.map.insert(*key, Entry { tat, touched: now });
        Ok(out)
    }
}

/// Hashes a limit key to the u64 the store holds (fixed seed: the same key
/// maps the same way in every process, which cluster fallback relies on
/// only for logging).
pub fn key_hash(key: &str) -> u64 {
    std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn holds_no_more_than_its_capacity() {
        let store = BoundedStore::new(1000, Duration::from_secs(60));
        for i in 0..100_000u64 {
            let k = key_hash(&i.to_string());
            let _: Result<(), ()> = store.measure_and_replace(&k, |_| Ok(((), Nanos::from(i))));
        }
        let held = store.len();
        assert!(held <= 1008, "{held}");
        assert!(held >= 900, "{held}");
    }

    #[test]
    fn a_refused_measurement_changes_nothing() {
        let store = BoundedStore::new(10, Duration::from_secs(60));
        let r: Result<(), ()> = store.measure_and_replace(&1, |_| Err(()));
        assert!(r.is_err());
        assert_eq!(store.len(), 0);
    }
}
