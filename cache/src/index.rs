//! What purges look up: stored keys by URL (exact and prefix) and by
//! surrogate key. An entry lives while its object is in any tier.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::ops::Bound;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::object::ObjectInfo;

/// Every stored object has an entry here, so it is kept lean (issue 17:
/// 457 bytes per object at first, about 130 before this layout): the
/// object's [`ObjectInfo`], which holds its key, URL and surrogate keys in
/// one shared allocation, is all an entry holds. The table and the URL
/// order hold an 8-byte pointer to it each, the surrogate key order one
/// and its place in the list for each of its surrogate keys: a key
/// unique to one object costs no more than one shared by thousands (a
/// map of sets took about 280 bytes per unique key).
#[derive(Default)]
pub struct PurgeIndex {
    hasher: DefaultHashBuilder,
    /// By the key each info names.
    entries: HashTable<ObjectInfo>,
    /// By URL, then key.
    by_url: BTreeSet<UrlOf>,
    by_surrogate: BTreeSet<SurrogateOf>,
}

/// An object's info, ordered by its URL, then its key.
struct UrlOf(ObjectInfo);

impl PartialEq for UrlOf {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
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
        (self.0.url(), self.0.key()).cmp(&(other.0.url(), other.0.key()))
    }
}

/// An object's info and where one of its surrogate keys begins in it
/// ([`ObjectInfo::surrogate_key_at`]: read in constant time, so adding an
/// object with k keys takes O(k log n) comparisons, not O(k² log n)),
/// ordered by that surrogate key, then the object's key.
#[derive(Clone)]
struct SurrogateOf(ObjectInfo, u32);

impl SurrogateOf {
    fn surrogate(&self) -> &str {
        self.0.surrogate_key_at(self.1 as usize)
    }

    /// One per surrogate key of `info` (an info's text is far below 4 GiB:
    /// it is made from one response's head).
    fn all(info: &ObjectInfo) -> impl Iterator<Item = SurrogateOf> + '_ {
        info.surrogate_key_offsets()
            .filter_map(|at| u32::try_from(at).ok())
            .map(|at| SurrogateOf(info.clone(), at))
    }
}

impl PartialEq for SurrogateOf {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for SurrogateOf {}

impl PartialOrd for SurrogateOf {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SurrogateOf {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.surrogate(), self.0.key()).cmp(&(other.surrogate(), other.0.key()))
    }
}

impl PurgeIndex {
    /// Adds the object stored under `key`, replacing what was known of
    /// that key. (An info made for another key is copied with this one.)
    pub fn add(&mut self, key: &str, info: &ObjectInfo) {
        let renamed;
        let info = if info.key() == key {
            info
        } else {
            let keys: Vec<&str> = info.surrogate_keys().collect();
            renamed = ObjectInfo::new(key, info.url(), &keys);
            &renamed
        };
        if let Some(old) = self.get(key) {
            if old.same(info) || old == info {
                return;
            }
            self.remove(key);
        }
        let hash = self.hasher.hash_one(key);
        let hasher = &self.hasher;
        self.entries
            .insert_unique(hash, info.clone(), |i| hasher.hash_one(i.key()));
        self.by_surrogate.extend(SurrogateOf::all(info));
        self.by_url.insert(UrlOf(info.clone()));
    }

    fn get(&self, key: &str) -> Option<&ObjectInfo> {
        self.entries
            .find(self.hasher.hash_one(key), |i| i.key() == key)
    }

    pub fn remove(&mut self, key: &str) {
        let hash = self.hasher.hash_one(key);
        let Ok(entry) = self.entries.find_entry(hash, |i| i.key() == key) else {
            return;
        };
        let (info, _) = entry.remove();
        for s in SurrogateOf::all(&info) {
            self.by_surrogate.remove(&s);
        }
        self.by_url.remove(&UrlOf(info));
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries whose URL starts with `prefix`, in URL order. (The
    /// lookup's probe, an info of no key, orders before every key of the
    /// URL it names.)
    fn urls_from(&self, prefix: &str) -> impl Iterator<Item = &ObjectInfo> + '_ {
        let probe = UrlOf(ObjectInfo::new::<&str>("", prefix, &[]));
        self.by_url
            .range((Bound::Included(probe), Bound::Unbounded))
            .map(|u| &u.0)
    }

    /// Keys stored for exactly this URL (every slice and header variant).
    pub fn by_url(&self, url: &str) -> Vec<String> {
        self.urls_from(url)
            .take_while(|i| i.url() == url)
            .map(|i| i.key().to_string())
            .collect()
    }

    /// Keys whose URL starts with `prefix`.
    pub fn by_prefix(&self, prefix: &str) -> Vec<String> {
        self.urls_from(prefix)
            .take_while(|i| i.url().starts_with(prefix))
            .map(|i| i.key().to_string())
            .collect()
    }

    /// Keys whose object named `surrogate` in its `Surrogate-Key`.
    pub fn by_surrogate(&self, surrogate: &str) -> Vec<String> {
        let Some(probe) = SurrogateOf::all(&ObjectInfo::new("", "", &[surrogate])).next() else {
            return Vec::new();
        };
        self.by_surrogate
            .range((Bound::Included(probe), Bound::Unbounded))
            .take_while(|s| s.surrogate() == surrogate)
            .map(|s| s.0.key().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(key: &str, url: &str, sk: &[&str]) -> ObjectInfo {
        ObjectInfo::new(key, url, sk)
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn lookups_name_exactly_what_they_match() {
        let mut i = PurgeIndex::default();
        i.add("k1", &info("k1", "h/vod/a/1.ts", &["title-a", "vod"]));
        i.add("k2", &info("k2", "h/vod/a/2.ts", &["title-a"]));
        i.add("k3", &info("k3", "h/vod/ab/1.ts", &["title-ab"]));
        i.add("k4", &info("k4", "h/vod/a/1.ts", &[]));
        assert_eq!(sorted(i.by_url("h/vod/a/1.ts")), ["k1", "k4"]);
        assert_eq!(sorted(i.by_prefix("h/vod/a/")), ["k1", "k2", "k4"]);
        assert_eq!(sorted(i.by_prefix("h/vod/a")), ["k1", "k2", "k3", "k4"]);
        assert_eq!(sorted(i.by_surrogate("title-a")), ["k1", "k2"]);
        assert!(i.by_surrogate("title").is_empty());
        assert!(i.by_url("h/vod/a/").is_empty());
        i.remove("k1");
        assert_eq!(i.by_url("h/vod/a/1.ts"), ["k4"]);
        assert!(i.by_surrogate("vod").is_empty());
        // Re-adding with other facts replaces the old ones.
        i.add("k2", &info("k2", "h/other", &["x"]));
        assert!(i.by_surrogate("title-a").is_empty());
        assert_eq!(i.by_prefix("h/vod/a/"), ["k4"]);
        assert_eq!(i.len(), 3);
    }

    /// An object with thousands of surrogate keys, among others that share
    /// some: each key finds exactly its objects, and removal forgets them.
    #[test]
    fn objects_with_many_surrogate_keys_are_indexed_and_forgotten() {
        let mut i = PurgeIndex::default();
        let many: Vec<String> = (0..5_000).map(|n| format!("k{n}")).collect();
        for n in 0..200 {
            let keys = [format!("k{}", n * 25), "shared".to_string()];
            i.add(
                &format!("o{n}"),
                &ObjectInfo::new(&format!("o{n}"), "h/x", &keys),
            );
        }
        i.add("big", &ObjectInfo::new("big", "h/big", &many));
        assert_eq!(sorted(i.by_surrogate("k25")), ["big", "o1"]);
        assert_eq!(i.by_surrogate("k4999"), ["big"]);
        assert_eq!(i.by_surrogate("shared").len(), 200);
        i.remove("big");
        assert_eq!(i.by_surrogate("k25"), ["o1"]);
        assert!(i.by_surrogate("k4999").is_empty());
        assert_eq!(i.len(), 200);
    }

    /// Random adds, re-adds and removes over few keys, URLs that prefix
    /// each other and shared surrogate keys: every lookup answers what a
    /// plain list of the live entries answers.
    #[test]
    fn lookups_match_a_plain_list_after_any_changes() {
        let urls = [
            "", "h", "h/", "h/a", "h/a/", "h/a/1", "h/ab", "h/a:b", "i/a", "é/1",
        ];
        let keys: Vec<String> = (0..12)
            .map(|n| {
                if n % 2 == 0 {
                    format!("{n:032x}")
                } else {
                    format!("k{n}")
                }
            })
            .collect();
        let surrogates = ["s1", "s2", "7:odd", ""];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut index = PurgeIndex::default();
        let mut model: std::collections::HashMap<String, ObjectInfo> = Default::default();
        for _ in 0..3000 {
            let key = &keys[next(keys.len())];
            if next(3) == 0 {
                index.remove(key);
                model.remove(key);
            } else {
                let mut sk: Vec<&str> = surrogates
                    .iter()
                    .copied()
                    .filter(|_| next(2) == 0)
                    .collect();
                if next(4) == 0 {
                    // The same surrogate key twice in one header.
                    sk.push("s1");
                }
                let i = info(key, urls[next(urls.len())], &sk);
                index.add(key, &i);
                model.insert(key.clone(), i);
            }
            assert_eq!(index.len(), model.len());
            for probe in urls.iter().chain(&["h/a/1/", "z"]) {
                let want = |f: &dyn Fn(&ObjectInfo) -> bool| {
                    sorted(
                        model
                            .values()
                            .filter(|i| f(i))
                            .map(|i| i.key().to_string())
                            .collect(),
                    )
                };
                assert_eq!(sorted(index.by_url(probe)), want(&|i| i.url() == *probe));
                assert_eq!(
                    sorted(index.by_prefix(probe)),
                    want(&|i| i.url().starts_with(probe))
                );
            }
            for s in surrogates {
                let want: Vec<String> = sorted(
                    model
                        .values()
                        .filter(|i| i.surrogate_keys().any(|k| k == s))
                        .map(|i| i.key().to_string())
                        .collect(),
                );
                assert_eq!(sorted(index.by_surrogate(s)), want);
            }
        }
    }
}
