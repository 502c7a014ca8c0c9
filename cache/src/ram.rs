//! The RAM tier: S3-FIFO eviction weighted by bytes (Yang et al., "FIFO
//! queues are all you need for cache eviction", SOSP 2023).
//!
//! A new object enters a small FIFO queue that holds about a tenth of the
//! tier's bytes. Leaving it, an object read since it came (a second
//! request) moves to the main FIFO queue, one never read again is evicted
//! and its key's hash remembered in a ghost queue (as many as the tier
//! holds objects); a key in the ghost queue goes straight to the main queue
//! when it comes back. Leaving the main queue, an object read since it was
//! last there goes round again with one read fewer counted (up to 3), else
//! it is evicted. One-hit wonders (a catalog crawl, a viewer's single
//! seek) so pass through a tenth of RAM without pushing out what is
//! watched (tests below; hit ratio against LRU in benches/RESULTS.md).
//!
//! It replaced moka (issue 17): moka's entry took about 340 bytes per
//! object; this tier's bookkeeping is a slot (48 bytes, the key inline),
//! a 4-byte index in the hash table, 8 bytes in a queue and 16 in the
//! ghost queue
//! (cache/tests/ram_memory.rs counts the whole with the allocator). A read
//! takes a shared lock, finds the slot, and counts the read atomically.
//!
//! Not quick_cache, which also implements S3-FIFO (the DNS packet cache
//! uses it): it splits the budget between shards, and refuses an object
//! heavier than a shard's share, such as a 2 MiB segment in a 64 MiB tier
//! on a 32-core machine; this tier keeps one budget and one lock, as
//! nginx's and HAProxy's caches do.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use parking_lot::RwLock;

use crate::key::StoredKey;
use crate::object::Object;

/// Called with the key of an object evicted to stay within the budget
/// (not for [`RamTier::remove`] or a replacement). Runs after the tier's
/// lock is released: it may call the tier.
pub type OnEvict = Arc<dyn Fn(&str) + Send + Sync>;

/// Reads counted per object, at most (S3-FIFO's 2-bit counter).
const MAX_FREQ: u8 = 3;

/// The small queue's share of the budget: one part in this many.
const SMALL_SHARE: u64 = 10;

pub struct RamTier {
    queues: RwLock<Queues>,
    on_evict: OnEvict,
    /// Bytes (as [`Object::ram_weight`] plus the key's length counts them).
    pub capacity: u64,
    /// The largest object this tier takes, in bytes (at most `capacity`).
    pub max_object: u64,
}

/// An object in the tier, or a free slot (`object` is `None`).
struct Slot {
    /// Free slots keep a placeholder (they are not in the table).
    key: StoredKey,
    object: Option<Arc<Object>>,
    weight: u64,
    /// Bumped when the slot is freed: queue entries naming an older
    /// generation are stale.
    generation: u32,
    /// Reads since it entered its queue or last went round the main queue.
    freq: AtomicU8,
    main: bool,
}

/// Slots per chunk of a [`Slab`] (48 KiB of slots).
const CHUNK: usize = 1024;

/// The tier's slots, in chunks of [`CHUNK`]: growing never copies them
/// nor leaves more than one chunk unused. A `Vec` doubling its capacity
/// left up to half its slots unused: about 30 bytes per object on
/// average, 78 at 20,000 objects (issue 17; cache/tests/ram_memory.rs).
#[derive(Default)]
struct Slab {
    chunks: Vec<Vec<Slot>>,
    len: usize,
}

impl Slab {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, slot: Slot) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(slot),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(slot);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.chunks.iter().flatten()
    }
}

impl IntoIterator for Slab {
    type Item = Slot;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<Slot>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.into_iter().flatten()
    }
}

impl std::ops::Index<usize> for Slab {
    type Output = Slot;

    fn index(&self, i: usize) -> &Slot {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl std::ops::IndexMut<usize> for Slab {
    fn index_mut(&mut self, i: usize) -> &mut Slot {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

/// A slot's place in a queue.
#[derive(Clone, Copy)]
struct Entry {
    slot: u32,
    generation: u32,
}

struct Queues {
    hasher: DefaultHashBuilder,
    /// Indices into `slots`, hashed by the slot's key.
    table: HashTable<u32>,
    slots: Slab,
    free: Vec<u32>,
    /// Newest at the back, evicted from the front.
    small: VecDeque<Entry>,
    main: VecDeque<Entry>,
    small_bytes: u64,
    main_bytes: u64,
    /// Queue entries whose slot was removed since (skipped when reached,
    /// dropped by [`Queues::compact`]).
    stale: usize,
    /// Hashes of keys evicted from the small queue, oldest first, each
    /// with the number it was given; `ghosts` has each hash's latest
    /// number, so only that entry of it counts (a key evicted, back, and
    /// evicted again is remembered from the second time).
    ghost: VecDeque<(u64, u64)>,
    ghosts: HashMap<u64, u64>,
    ghost_number: u64,
    live: usize,
}

impl RamTier {
    pub fn new(capacity: u64, max_object: u64, on_evict: OnEvict) -> Self {
        Self {
            queues: RwLock::new(Queues {
                hasher: DefaultHashBuilder::default(),
                table: HashTable::new(),
                slots: Slab::default(),
                free: Vec::new(),
                small: VecDeque::new(),
                main: VecDeque::new(),
                small_bytes: 0,
                main_bytes: 0,
                stale: 0,
                ghost: VecDeque::new(),
                ghosts: HashMap::new(),
                ghost_number: 0,
                live: 0,
            }),
            on_evict,
            capacity,
            max_object: max_object.min(capacity),
        }
    }

    /// Whether an object of `size` bytes may enter this tier at all.
    pub fn admits(&self, size: u64) -> bool {
        self.capacity > 0 && size <= self.max_object
    }

    /// The object under `key`, counting the read.
    pub fn get(&self, key: &str) -> Option<Arc<Object>> {
        self.get_stored(&StoredKey::new(key))
    }

    /// [`Self::get`] of a key as the tier holds it.
    pub fn get_stored(&self, key: &StoredKey) -> Option<Arc<Object>> {
        let q = self.queues.read();
        let slot = q.find(key)?;
        let slot = &q.slots[slot as usize];
        let f = slot.freq.load(Ordering::Relaxed);
        if f < MAX_FREQ {
            // A lost increment between two readers only undercounts.
            slot.freq.store(f + 1, Ordering::Relaxed);
        }
        slot.object.clone()
    }

    /// Stores `object` under `key` (replacing what is there, in its place
    /// in the queues), evicting until the tier is within its budget; calls
    /// the eviction callback for each evicted key after. An object weighing
    /// more than the whole budget is not stored (and what was under its key
    /// is removed): the callback gets its key too, as for an eviction.
    pub fn insert(&self, key: String, object: Arc<Object>) {
        let weight = object.ram_weight().saturating_add(key.len() as u64);
        if weight > self.capacity {
            self.remove(&key);
            (self.on_evict)(&key);
            return;
        }
        let key = StoredKey::new(&key);
        let mut evicted = Vec::new();
        let mut replaced = None;
        {
            let mut q = self.queues.write();
            match q.find(&key) {
                Some(slot) => {
                    let s = &mut q.slots[slot as usize];
                    let old = std::mem::replace(&mut s.weight, weight);
                    // The object replaced goes once the lock is let go.
                    replaced = s.object.replace(object);
                    let main = s.main;
                    q.account(main, old, weight);
                }
                None => {
                    while q.used() + weight > self.capacity
                        && q.evict_one(self.capacity, &mut evicted)
                    {}
                    q.add(key, object, weight);
                }
            }
            while q.used() > self.capacity && q.evict_one(self.capacity, &mut evicted) {}
            q.compact();
        }
        drop(replaced);
        for (key, _object) in evicted {
            (self.on_evict)(&key.text());
        }
    }

    /// Removes the object under `key` (no eviction callback).
    pub fn remove(&self, key: &str) -> Option<Arc<Object>> {
        let mut q = self.queues.write();
        let slot = q.take(&StoredKey::new(key))?;
        let object = q.free_slot(slot);
        q.stale += 1;
        q.compact();
        object
    }

    pub fn contains(&self, key: &str) -> bool {
        self.queues.read().find(&StoredKey::new(key)).is_some()
    }

    /// (objects, bytes).
    pub fn usage(&self) -> (u64, u64) {
        let q = self.queues.read();
        (q.live as u64, q.used())
    }

    /// The infos of objects whose body is at least `min` bytes.
    pub fn infos_at_least(&self, min: u64) -> Vec<crate::object::ObjectInfo> {
        let q = self.queues.read();
        q.slots
            .iter()
            .filter_map(|s| s.object.as_ref())
            .filter(|o| o.body.len() as u64 >= min)
            .map(|o| o.info.clone())
            .collect()
    }

    /// Every entry, for moving them into a resized tier.
    pub fn entries(&self) -> Vec<(String, Arc<Object>)> {
        let q = self.queues.read();
        q.slots
            .iter()
            .filter_map(|s| Some((s.key.to_string(), s.object.clone()?)))
            .collect()
    }
}

impl Queues {
    fn used(&self) -> u64 {
        self.small_bytes + self.main_bytes
    }

    fn hash(&self, key: &StoredKey) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, key: &StoredKey) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(self.hash(key), |&i| slots[i as usize].key == *key)
            .copied()
    }

    /// Takes `key` out of the table; its slot.
    fn take(&mut self, key: &StoredKey) -> Option<u32> {
        let hash = self.hash(key);
        let slots = &self.slots;
        let entry = self
            .table
            .find_entry(hash, |&i| slots[i as usize].key == *key)
            .ok()?;
        Some(entry.remove().0)
    }

    fn account(&mut self, main: bool, old: u64, new: u64) {
        let bytes = if main {
            &mut self.main_bytes
        } else {
            &mut self.small_bytes
        };
        *bytes = bytes.saturating_sub(old) + new;
    }

    fn add(&mut self, key: StoredKey, object: Arc<Object>, weight: u64) {
        let hash = self.hash(&key);
        // Seen lately and evicted after one request: a second chance in
        // the main queue (S3-FIFO's ghost hit).
        let main = self.forget_ghost(hash);
        let slot = Slot {
            key,
            object: Some(object),
            weight,
            generation: 0,
            freq: AtomicU8::new(0),
            main,
        };
        let index = match self.free.pop() {
            Some(i) => {
                let s = &mut self.slots[i as usize];
                let generation = s.generation;
                *s = Slot { generation, ..slot };
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let entry = Entry {
            slot: index,
            generation: self.slots[index as usize].generation,
        };
        if main {
            self.main.push_back(entry);
        } else {
            self.small.push_back(entry);
        }
        self.account(main, 0, weight);
        self.live += 1;
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.table
            .insert_unique(hash, index, |&i| hasher.hash_one(&slots[i as usize].key));
    }

    /// Frees a slot taken out of the table; its object. Its queue entry
    /// becomes stale (the caller counts it).
    fn free_slot(&mut self, slot: u32) -> Option<Arc<Object>> {
        let s = &mut self.slots[slot as usize];
        let (main, weight) = (s.main, s.weight);
        s.generation = s.generation.wrapping_add(1);
        s.key = StoredKey::Hash([0; 16]);
        s.weight = 0;
        let object = s.object.take();
        self.account(main, weight, 0);
        self.live -= 1;
        self.free.push(slot);
        object
    }

    /// Whether the entry names the slot's current object.
    fn current(&self, e: Entry) -> bool {
        let s = &self.slots[e.slot as usize];
        s.generation == e.generation && s.object.is_some()
    }

    /// Evicts one object (moving others between queues as S3-FIFO says),
    /// pushing its key and the object to `evicted` (dropped by the caller
    /// once the lock is let go: the last reference to a mapped body
    /// unmaps it, `mapped.rs`); false when nothing is left to evict.
    fn evict_one(
        &mut self,
        capacity: u64,
        evicted: &mut Vec<(StoredKey, Option<Arc<Object>>)>,
    ) -> bool {
        loop {
            let from_small = !self.small.is_empty()
                && (self.small_bytes >= capacity / SMALL_SHARE || self.main.is_empty());
            let queue = if from_small {
                &mut self.small
            } else {
                &mut self.main
            };
            let Some(e) = queue.pop_front() else {
                // Both queues are empty (a queue is only picked if not).
                self.stale = 0;
                return false;
            };
            if !self.current(e) {
                self.stale = self.stale.saturating_sub(1);
                continue;
            }
            let s = &self.slots[e.slot as usize];
            let freq = s.freq.load(Ordering::Relaxed);
            if from_small && freq > 0 {
                // Read again while in the small queue: into the main one.
                let w = s.weight;
                let s = &mut self.slots[e.slot as usize];
                s.main = true;
                s.freq.store(0, Ordering::Relaxed);
                self.small_bytes = self.small_bytes.saturating_sub(w);
                self.main_bytes += w;
                self.main.push_back(e);
                continue;
            }
            if !from_small && freq > 0 {
                s.freq.store(freq - 1, Ordering::Relaxed);
                self.main.push_back(e);
                continue;
            }
            let hash = self.hash(&s.key);
            if let Ok(entry) = self.table.find_entry(hash, |&i| i == e.slot) {
                entry.remove();
            }
            // Taken before `free_slot` clears it, to be returned.
            let key = std::mem::replace(
                &mut self.slots[e.slot as usize].key,
                StoredKey::Hash([0; 16]),
            );
            let object = self.free_slot(e.slot);
            if from_small {
                self.remember_ghost(hash);
            }
            evicted.push((key, object));
            return true;
        }
    }

    fn remember_ghost(&mut self, hash: u64) {
        self.ghost_number += 1;
        self.ghost.push_back((hash, self.ghost_number));
        self.ghosts.insert(hash, self.ghost_number);
        self.trim_ghost();
    }

    /// Keeps the ghost queue to as many entries as the tier has objects.
    fn trim_ghost(&mut self) {
        while self.ghost.len() > self.live.max(16) {
            let Some((old, number)) = self.ghost.pop_front() else {
                break;
            };
            if self.ghosts.get(&old) == Some(&number) {
                self.ghosts.remove(&old);
            }
        }
    }

    /// Whether `hash` was in the ghost queue (it no longer counts there;
    /// its queue entry is dropped when it reaches the front).
    fn forget_ghost(&mut self, hash: u64) -> bool {
        self.ghosts.remove(&hash).is_some()
    }

    /// Drops stale queue entries once they are more than half the queues
    /// (so removals without evictions cannot grow the queues without end),
    /// and renumbers the slots once three in four are free (so the tier's
    /// structures shrink when small objects give way to large ones).
    fn compact(&mut self) {
        self.trim_ghost();
        if self.slots.len() > 1024 && self.live * 4 < self.slots.len() {
            self.renumber();
            return;
        }
        let total = self.small.len() + self.main.len();
        if self.stale <= 64 || self.stale * 2 <= total {
            return;
        }
        let slots = &self.slots;
        let current = |e: &Entry| {
            let s = &slots[e.slot as usize];
            s.generation == e.generation && s.object.is_some()
        };
        self.small.retain(current);
        self.main.retain(current);
        self.stale = 0;
    }

    /// Moves the objects into fresh slots in queue order, and rebuilds the
    /// table and the queues around them, each sized for what is left.
    fn renumber(&mut self) {
        let mut slots = Slab::default();
        let mut small = VecDeque::with_capacity(self.live);
        let mut main = VecDeque::with_capacity(self.live);
        let old = std::mem::take(&mut self.slots);
        let mut old: Vec<Option<Slot>> = old.into_iter().map(Some).collect();
        for (queue, into) in [(&self.small, &mut small), (&self.main, &mut main)] {
            for e in queue {
                let Some(slot) = old[e.slot as usize]
                    .take_if(|s| s.generation == e.generation && s.object.is_some())
                else {
                    continue;
                };
                into.push_back(Entry {
                    slot: slots.len() as u32,
                    generation: 0,
                });
                slots.push(Slot {
                    generation: 0,
                    ..slot
                });
            }
        }
        self.table = HashTable::with_capacity(slots.len());
        for (i, s) in slots.iter().enumerate() {
            let hash = self.hasher.hash_one(&s.key);
            self.table.insert_unique(hash, i as u32, |&j| {
                self.hasher.hash_one(&slots[j as usize].key)
            });
        }
        self.live = slots.len();
        self.slots = slots;
        self.small = small;
        self.main = main;
        self.free = Vec::new();
        self.stale = 0;
        self.trim_ghost();
        self.ghost.shrink_to(self.live.max(16));
        self.ghosts.shrink_to(self.live.max(16));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use bytes::Bytes;
    use parking_lot::Mutex;

    use super::*;
    use crate::object::{ObjectInfo, RAM_OVERHEAD};

    fn object(body: usize) -> Arc<Object> {
        Arc::new(Object::new(
            (Vec::new(), Vec::new()),
            Bytes::from(vec![0u8; body]),
            ObjectInfo::default(),
        ))
    }

    fn weight(key: &str, o: &Object) -> u64 {
        o.ram_weight() + key.len() as u64
    }

    fn tier(capacity: u64) -> RamTier {
        RamTier::new(capacity, capacity, Arc::new(|_| {}))
    }

    /// The tier's counts against its entries: bytes are the sum of the
    /// weights, within the budget; no stale entry outnumbers the rest.
    fn check(t: &RamTier) {
        let entries = t.entries();
        let (objects, bytes) = t.usage();
        let sum: u64 = entries.iter().map(|(k, o)| weight(k, o)).sum();
        assert_eq!(objects as usize, entries.len());
        assert_eq!(bytes, sum);
        assert!(bytes <= t.capacity, "{bytes} > {}", t.capacity);
        let q = t.queues.read();
        let (small, main) =
            q.slots
                .iter()
                .filter(|s| s.object.is_some())
                .fold((0, 0), |(s, m), slot| {
                    if slot.main {
                        (s, m + slot.weight)
                    } else {
                        (s + slot.weight, m)
                    }
                });
        assert_eq!((q.small_bytes, q.main_bytes), (small, main));
        assert_eq!(q.table.len(), q.live);
        let queued = q.small.len() + q.main.len();
        assert!(
            queued <= q.live + q.stale.max(64) * 2 + 64,
            "{queued} entries for {} objects",
            q.live
        );
    }

    fn rng(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn the_budget_holds_after_every_insert_remove_and_replacement() {
        let t = tier(200_000);
        let mut x = 0x9E37_79B9_7F4A_7C15;
        for i in 0..20_000u64 {
            let key = format!("k{}", rng(&mut x) % 600);
            match rng(&mut x) % 10 {
                0..=4 => t.insert(key, object((rng(&mut x) % 6_000) as usize)),
                5..=7 => {
                    t.get(&key);
                }
                8 => {
                    t.remove(&key);
                }
                _ => {
                    // A replacement, as a revalidation makes.
                    if t.contains(&key) {
                        t.insert(key, object((rng(&mut x) % 6_000) as usize));
                    }
                }
            }
            if i % 97 == 0 {
                check(&t);
            }
        }
        check(&t);
        assert!(t.usage().0 > 10, "it holds objects");
    }

    #[test]
    fn one_hit_wonders_pass_through_without_pushing_out_what_is_read() {
        let each = 1_000 + RAM_OVERHEAD;
        let t = tier(100 * (each + 8));
        for i in 0..50 {
            t.insert(format!("hot{i:04}"), object(1_000));
        }
        for i in 0..50 {
            assert!(t.get(&format!("hot{i:04}")).is_some());
        }
        // A crawl of ten times the tier, each object once.
        for i in 0..1_000 {
            t.insert(format!("scan{i:04}"), object(1_000));
            // The hot set goes on being read, now and then.
            if i % 100 == 0 {
                for h in 0..50 {
                    t.get(&format!("hot{h:04}"));
                }
            }
        }
        let kept = (0..50)
            .filter(|i| t.contains(&format!("hot{i:04}")))
            .count();
        assert_eq!(kept, 50, "hot objects kept through the crawl");
        check(&t);
    }

    #[test]
    fn an_object_read_once_is_kept_over_one_never_read() {
        let each = 1_000 + RAM_OVERHEAD + 8;
        let t = tier(20 * each);
        t.insert("read".into(), object(1_000));
        t.insert("unread".into(), object(1_000));
        t.get("read");
        for i in 0..25 {
            t.insert(format!("f{i:03}"), object(1_000));
        }
        assert!(t.contains("read"));
        assert!(!t.contains("unread"));
    }

    #[test]
    fn a_key_evicted_after_one_request_comes_back_to_the_main_queue() {
        let each = 1_000 + RAM_OVERHEAD + 8;
        let t = tier(20 * each);
        t.insert("back".into(), object(1_000));
        for i in 0..30 {
            t.insert(format!("a{i:03}"), object(1_000));
        }
        assert!(!t.contains("back"), "evicted from the small queue");
        // Requested again within the ghost queue's memory: main queue.
        t.insert("back".into(), object(1_000));
        {
            let q = t.queues.read();
            let slot = q
                .find(&StoredKey::new("back"))
                .map(|s| q.slots[s as usize].main);
            assert_eq!(slot, Some(true));
        }
        // So a crawl passes it by, though it was not read since.
        for i in 0..100 {
            t.insert(format!("b{i:03}"), object(1_000));
        }
        assert!(t.contains("back"));
        check(&t);
    }

    #[test]
    fn the_eviction_callback_gets_each_evicted_key_once_outside_the_lock() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let cell: Arc<OnceLock<Arc<RamTier>>> = Arc::new(OnceLock::new());
        let (s, c) = (seen.clone(), cell.clone());
        let t = Arc::new(RamTier::new(
            30 * 2_000,
            30 * 2_000,
            Arc::new(move |key| {
                // Calls the tier: would deadlock under its lock.
                let tier = c.get().expect("set");
                assert!(!tier.contains(key), "{key} evicted but present");
                s.lock().push(key.to_string());
            }),
        ));
        assert!(cell.set(t.clone()).is_ok());
        for i in 0..200 {
            t.insert(format!("k{i:03}"), object(1_000));
            if i % 3 == 0 {
                t.remove(&format!("k{i:03}"));
            }
            if i % 5 == 0 {
                // Replacing is not evicting.
                t.insert(format!("k{i:03}"), object(900));
            }
        }
        let mut seen = seen.lock().clone();
        let n = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), n, "each key once");
        let present = t.entries().len();
        let removed = (0..200).filter(|i| i % 3 == 0 && i % 5 != 0).count();
        assert_eq!(n + present + removed, 200);
    }

    #[test]
    fn removals_without_evictions_keep_the_queues_and_slots_bounded() {
        let t = tier(1 << 40);
        for i in 0..100_000 {
            let key = format!("k{}", i % 7);
            t.insert(key.clone(), object(10));
            if i % 2 == 1 {
                t.remove(&key);
            }
        }
        let q = t.queues.read();
        assert!(q.small.len() + q.main.len() <= 200, "{}", q.small.len());
        assert!(q.slots.len() <= 7, "{} slots", q.slots.len());
    }

    #[test]
    fn a_key_evicted_back_and_evicted_again_is_remembered_from_the_second_time() {
        let t = tier(1 << 20);
        let mut q = t.queues.write();
        // 16 ghosts at most with no objects.
        q.remember_ghost(7);
        for h in 100..105 {
            q.remember_ghost(h);
        }
        assert!(q.forget_ghost(7), "back: to the main queue");
        assert!(!q.forget_ghost(7), "once");
        q.remember_ghost(7);
        // Enough to push the first entry of 7 out, not the second.
        for h in 200..211 {
            q.remember_ghost(h);
        }
        assert_eq!(q.ghost.len(), 16);
        assert!(q.forget_ghost(7));
        // And the oldest are forgotten.
        assert!(!q.forget_ghost(100));
        assert!(q.forget_ghost(210));
    }

    #[test]
    fn small_objects_giving_way_to_large_ones_leave_small_structures() {
        let t = tier(4_000_000);
        for i in 0..4_000 {
            t.insert(format!("small{i:05}"), object(10));
            if i % 2 == 0 {
                t.get(&format!("small{i:05}"));
            }
        }
        let peak = t.queues.read().slots.len();
        assert!(peak >= 4_000);
        for i in 0..200 {
            t.insert(format!("large{i:03}"), object(100_000));
            t.get(&format!("large{i:03}"));
        }
        check(&t);
        let q = t.queues.read();
        assert!(
            q.slots.len() <= 4 * q.live.max(256),
            "{} slots for {} objects",
            q.slots.len(),
            q.live
        );
        assert!(q.ghost.len() <= q.live.max(16), "{} ghosts", q.ghost.len());
        drop(q);
        // Read and written after, as before.
        assert!(t.get("large199").is_some());
        t.insert("again".into(), object(10));
        assert!(t.contains("again"));
        check(&t);
    }

    #[test]
    fn what_weighs_more_than_the_budget_is_not_stored_and_takes_its_key_out() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s = seen.clone();
        let t = RamTier::new(
            10_000,
            10_000,
            Arc::new(move |key| s.lock().push(key.to_string())),
        );
        t.insert("k".into(), object(100));
        assert!(t.contains("k"));
        t.insert("k".into(), object(20_000));
        assert!(!t.contains("k"));
        assert_eq!(t.usage(), (0, 0));
        // Told as an eviction, so what indexes the key forgets it.
        t.insert("never".into(), object(20_000));
        assert_eq!(*seen.lock(), ["k", "never"]);
        let none = tier(0);
        assert!(!none.admits(1));
        none.insert("k".into(), object(0));
        assert_eq!(none.usage(), (0, 0));
    }

    #[test]
    fn an_object_as_large_as_the_budget_pushes_out_everything_else() {
        let t = tier(50_000);
        for i in 0..20 {
            t.insert(format!("k{i}"), object(1_000));
            t.get(&format!("k{i}"));
        }
        let big = 50_000 - RAM_OVERHEAD - 3 - ObjectInfo::default().len() as u64;
        t.insert("big".into(), object(big as usize));
        assert_eq!(t.usage(), (1, 50_000));
        assert!(t.get("big").is_some());
        check(&t);
    }

    #[test]
    fn threads_reading_and_writing_leave_the_counts_true() {
        let t = Arc::new(tier(300_000));
        let handles: Vec<_> = (0..4u64)
            .map(|n| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut x = 0x2545_F491_4F6C_DD1D ^ (n + 1);
                    for _ in 0..5_000 {
                        let key = format!("k{}", rng(&mut x) % 300);
                        match rng(&mut x) % 4 {
                            0 | 1 => t.insert(key, object((rng(&mut x) % 4_000) as usize)),
                            2 => {
                                t.get(&key);
                            }
                            _ => {
                                t.remove(&key);
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().is_ok());
        }
        check(&t);
    }
}
