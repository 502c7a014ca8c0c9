//! What purges look up: stored keys by URL (exact and prefix) and by
//! surrogate key. An entry lives while its object is in any tier.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use crate::key::StoredKey;
use crate::object::ObjectInfo;

/// Every stored object has an entry here, so it is kept lean (issue 17:
/// 457 bytes per object before): keys as [`StoredKey`]s (inline), the URL shared with
/// the object's info rather than copied, and a URL's few variants in a
/// `Vec` rather than a hash set.
#[derive(Default)]
pub struct PurgeIndex {
    entries: HashMap<StoredKey, Arc<ObjectInfo>>,
    by_url: BTreeMap<UrlOf, Vec<StoredKey>>,
    by_surrogate: HashMap<String, HashSet<StoredKey>>,
}

/// An object's info, ordered and looked up by its URL.
struct UrlOf(Arc<ObjectInfo>);

impl std::borrow::Borrow<str> for UrlOf {
    fn borrow(&self) -> &str {
        &self.0.url
    }
}

impl PartialEq for UrlOf {
    fn eq(&self, other: &Self) -> bool {
        self.0.url == other.0.url
    }
}

impl Eq for UrlOf {}

impl PartialOrd for UrlOf {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for UrlOf {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.url.cmp(&other.0.url)
    }
}

impl PurgeIndex {
    pub fn add(&mut self, key: &str, info: &Arc<ObjectInfo>) {
        let key = StoredKey::new(key);
        if let Some(old) = self.entries.get(&key) {
            if Arc::ptr_eq(old, info) || **old == **info {
                return;
            }
            self.remove_stored(&key);
        }
        self.entries.insert(key.clone(), info.clone());
        for s in &info.surrogate_keys {
            self.by_surrogate
                .entry(s.clone())
                .or_default()
                .insert(key.clone());
        }
        match self.by_url.get_mut(info.url.as_str()) {
            Some(keys) => keys.push(key),
            None => {
                self.by_url.insert(UrlOf(info.clone()), vec![key]);
            }
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.remove_stored(&StoredKey::new(key));
    }

    fn remove_stored(&mut self, key: &StoredKey) {
        let Some(info) = self.entries.remove(key) else {
            return;
        };
        if let Some(keys) = self.by_url.get_mut(info.url.as_str()) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_url.remove(info.url.as_str());
            }
        }
        for s in &info.surrogate_keys {
            if let Some(set) = self.by_surrogate.get_mut(s) {
                set.remove(key);
                if set.is_empty() {
                    self.by_surrogate.remove(s);
                }
            }
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(&StoredKey::new(key))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys stored for exactly this URL (every slice and header variant).
    pub fn by_url(&self, url: &str) -> Vec<String> {
        self.by_url
            .get(url)
            .map(|s| s.iter().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    /// Keys whose URL starts with `prefix`.
    pub fn by_prefix(&self, prefix: &str) -> Vec<String> {
        self.by_url
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(url, _)| url.0.url.starts_with(prefix))
            .flat_map(|(_, keys)| keys.iter().map(|k| k.to_string()))
            .collect()
    }

    pub fn by_surrogate(&self, surrogate: &str) -> Vec<String> {
        self.by_surrogate
            .get(surrogate)
            .map(|s| s.iter().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(url: &str, sk: &[&str]) -> Arc<ObjectInfo> {
        Arc::new(ObjectInfo {
            url: url.into(),
            surrogate_keys: sk.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn lookups_name_exactly_what_they_match() {
        let mut i = PurgeIndex::default();
        i.add("k1", &info("h/vod/a/1.ts", &["title-a", "vod"]));
        i.add("k2", &info("h/vod/a/2.ts", &["title-a"]));
        i.add("k3", &info("h/vod/ab/1.ts", &["title-ab"]));
        i.add("k4", &info("h/vod/a/1.ts", &[]));
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        assert_eq!(sorted(i.by_url("h/vod/a/1.ts")), ["k1", "k4"]);
        assert_eq!(sorted(i.by_prefix("h/vod/a/")), ["k1", "k2", "k4"]);
        assert_eq!(sorted(i.by_prefix("h/vod/a")), ["k1", "k2", "k3", "k4"]);
        assert_eq!(sorted(i.by_surrogate("title-a")), ["k1", "k2"]);
        assert!(i.by_surrogate("title").is_empty());
        i.remove("k1");
        assert_eq!(i.by_url("h/vod/a/1.ts"), ["k4"]);
        assert!(i.by_surrogate("vod").is_empty());
        // Re-adding with other facts replaces the old ones.
        i.add("k2", &info("h/other", &["x"]));
        assert!(i.by_surrogate("title-a").is_empty());
        assert_eq!(i.len(), 3);
    }
}
