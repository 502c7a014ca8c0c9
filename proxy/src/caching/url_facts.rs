//! Facts learnt about URLs from their responses (an object's total size,
//! an origin that ignores `Range`), each kept for an hour, for at most a
//! fixed number of URLs.
//!
//! Keyed by a 64-bit hash of the URL under this process's random keys,
//! with the fact and when it was learnt: about 40 bytes an entry
//! (quick_cache's S3-FIFO), where moka's entry with the URL took about 400
//! for every object fetched (issue 17: bytes per cached object, measured
//! on the running server with `../shared/peers/edge/scale.sh cache`). Two
//! URLs with one hash (about one chance in 10^9 among 100,000 URLs, and
//! not to be aimed at without the keys) would share a fact that only
//! chooses how an object is fetched: whole or in slices, each response
//! checked against its request either way.
//!
//! The hash is XXH3 under a random 64-bit seed: every RAM hit of a route
//! that slices asks after its URL, and SipHash (std's `RandomState`) of a
//! usual URL took about 250 instructions of a 1 KiB hit's 21,800
//! (`benches/callgrind/instr.sh`, issue 17). XXH3 is not a keyed
//! cryptographic hash; what a collision would cost is said above.

use std::time::{Duration, Instant};

/// How long a fact is believed.
const TTL: Duration = Duration::from_secs(3600);

pub(crate) struct UrlFacts<V: Clone> {
    cache: quick_cache::sync::Cache<u64, (V, u32)>,
    /// The seed of every URL's hash, this process's own.
    seed: u64,
    /// What the stored seconds count from.
    start: Instant,
}

impl<V: Clone> UrlFacts<V> {
    /// Room for `capacity` URLs (the least used go first beyond it).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            cache: quick_cache::sync::Cache::new(capacity),
            // From std's keys (the OS's randomness), not fastrand's
            // guessable seed.
            seed: std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8),
            start: Instant::now(),
        }
    }

    fn hash(&self, url: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(url.as_bytes(), self.seed)
    }

    fn now(&self) -> u32 {
        u32::try_from(self.start.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// What was learnt about `url` within [`TTL`].
    pub(crate) fn get(&self, url: &str) -> Option<V> {
        self.get_at(url, self.now())
    }

    /// [`UrlFacts::get`] at `now` seconds from `start`.
    fn get_at(&self, url: &str, now: u32) -> Option<V> {
        let hash = self.hash(url);
        let (value, at) = self.cache.get(&hash)?;
        if u64::from(now.saturating_sub(at)) < TTL.as_secs() {
            return Some(value);
        }
        // Expired: gone, rather than kept by the reads that find it.
        self.cache.remove(&hash);
        None
    }

    pub(crate) fn insert(&self, url: &str, value: V) {
        self.cache.insert(self.hash(url), (value, self.now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fact_is_kept_per_url_and_for_an_hour() {
        let facts = UrlFacts::new(1000);
        assert_eq!(facts.get("h/a"), None);
        facts.insert("h/a", 10u64);
        facts.insert("h/b", 20);
        let before = facts.now();
        facts.insert("h/a", 11);
        let after = facts.now();
        assert_eq!(facts.get("h/a"), Some(11));
        assert_eq!(facts.get("h/b"), Some(20));
        assert_eq!(facts.get("h/c"), None);
        // An hour later: forgotten.
        let hour = TTL.as_secs() as u32;
        assert_eq!(facts.get_at("h/a", before + hour - 1), Some(11));
        assert_eq!(facts.get_at("h/a", after + hour), None);
        assert_eq!(facts.cache.len(), 1, "the expired fact is removed");
    }

    #[test]
    fn it_holds_about_its_capacity() {
        let facts = UrlFacts::new(100);
        for i in 0..10_000u64 {
            facts.insert(&format!("h/{i}"), i);
        }
        assert!(facts.cache.len() <= 200, "{}", facts.cache.len());
        assert_eq!(facts.get("h/9999"), Some(9999));
    }
}
