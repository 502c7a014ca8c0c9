//! [`EdgeStorage`]: pingora-cache's `Storage` over a RAM tier and a disk
//! tier.
//!
//! ```text
//! lookup:  fill in progress → RAM → written, awaiting its disk write → disk
//!          (a disk hit small enough for RAM is read whole, verified, and
//!          offered to RAM; a larger one streams, block by verified block)
//! miss:    the body is kept in a fill that coalesced readers follow; at the
//!          end the object goes to RAM if the RAM tier admits it and to disk
//!          (on a blocking thread) if the disk tier does
//! ```
//!
//! A purge index (URL, prefix, surrogate key) covers every tier. Locks are
//! never held across a RAM tier insert, whose eviction callback (run after
//! the tier's own lock is released) takes the index lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use edge_config::Cache;
use parking_lot::Mutex;
use pingora_cache::key::CacheKey;
use pingora_cache::storage::streaming_write::U64WriteId;
use pingora_cache::storage::{
    HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget, PurgeType,
    Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::CacheMeta;
use pingora_error::{Error, ErrorType, Result};

use crate::disk::{DiskError, DiskTier, Removed};
use crate::fill::Fill;
use crate::hit::{DiskStream, EdgeHit, HitBody};
use crate::index::PurgeIndex;
use crate::key::StoredKey;
use crate::metrics::{CacheMetrics, TierUsage, UsageSource};
use crate::object::{Meta, Object, ObjectInfo, Tier};
use crate::policy::{self, TtlSource};
use crate::ram::RamTier;
use crate::video::{self, Kind, Successors};

/// What the proxy knows about a response when it decides to store it,
/// carried to the storage in the meta's extensions.
#[derive(Debug, Clone)]
pub struct FillHints {
    pub kind: Kind,
    pub ttl_source: TtlSource,
    /// The freshness the origin gave, if it gave any.
    pub origin_ttl: Option<Duration>,
    pub surrogate_keys: Vec<String>,
}

/// Disk hits up to this size (or RAM's object limit, if larger) are read
/// and verified whole before the first byte is sent.
const WHOLE_READ_LIMIT: u64 = 8 << 20;
/// How long a starting node waits for the disk tier's lock (held by the
/// process it replaces until that one's last disk write ends).
const DISK_LOCK_WAIT: Duration = Duration::from_secs(15);

/// Bodies waiting for their disk write, at most; past this, writes are
/// skipped (the disk tier lags rather than memory growing).
const PENDING_LIMIT: u64 = 512 << 20;

/// A soft or hard purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeMode {
    /// Delete: the next request is a miss.
    Hard,
    /// Mark stale: the next request revalidates (and a 304 keeps the body).
    Soft,
}

/// Says when a repeated log line may be written again (once a minute),
/// and how many were held back since.
#[derive(Default)]
struct OncePerMinute {
    state: Mutex<(Option<std::time::Instant>, u64)>,
}

impl OncePerMinute {
    fn due(&self) -> Option<u64> {
        let mut s = self.state.lock();
        let now = std::time::Instant::now();
        match s.0 {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(60) => {
                s.1 += 1;
                None
            }
            _ => {
                let held = std::mem::take(&mut s.1);
                s.0 = Some(now);
                Some(held)
            }
        }
    }
}

/// A disk tier change made ready by [`EdgeStorage::prepare`].
pub struct PreparedCache {
    disk: Option<NewDisk>,
}

enum NewDisk {
    Off,
    Open(Box<(DiskTier, Vec<crate::disk::Removed>)>),
}

/// How long a prefetch mark lives unused (`EdgeStorage::mark_prefetched`).
const PREFETCH_MARK_TTL: Duration = Duration::from_secs(600);

pub struct EdgeStorage {
    ram: ArcSwap<RamTier>,
    disk: ArcSwapOption<DiskTier>,
    fills: Mutex<HashMap<String, Vec<Arc<Fill>>>>,
    pending: Mutex<HashMap<String, Arc<Object>>>,
    pending_bytes: AtomicU64,
    index: Mutex<PurgeIndex>,
    settings: ArcSwap<Cache>,
    successors: Successors,
    prefetched: moka::sync::Cache<StoredKey, ()>,
    /// When the last prefetch mark was made: whole seconds since `epoch`,
    /// plus one (0: never). Once every mark has outlived its
    /// `PREFETCH_MARK_TTL` a hit skips the map (a `moka` remove is about
    /// 500 instructions, a quarter of a RAM hit's lookup).
    prefetch_last_mark: AtomicU64,
    epoch: std::time::Instant,
    next_fill: AtomicU64,
    write_errors_log: OncePerMinute,
    metrics: Arc<CacheMetrics>,
    anchor: Anchor,
}

/// The eviction callback of the RAM tier reaches the storage through this
/// (the tier is built before the storage has its `'static` address).
type Anchor = Arc<OnceLock<&'static EdgeStorage>>;

fn ram_tier(settings: &Cache, anchor: &Anchor) -> RamTier {
    let anchor = anchor.clone();
    RamTier::new(
        settings.ram_size,
        settings.ram_max_object,
        Arc::new(move |key| {
            if let Some(s) = anchor.get() {
                s.metrics.evictions_ram.inc();
                s.forget_if_gone(key);
            }
        }),
    )
}

fn internal(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Box<Error> {
    Error::because(ErrorType::InternalError, what.to_string(), e)
}

impl EdgeStorage {
    /// Builds the storage (opening the disk tier, whose objects are hits at
    /// once) and gives it the `'static` life pingora-cache requires: one per
    /// node, alive as long as the process.
    pub fn open(settings: &Cache, metrics: Arc<CacheMetrics>) -> std::io::Result<&'static Self> {
        let anchor: Anchor = Arc::new(OnceLock::new());
        let storage = Box::leak(Box::new(Self {
            ram: ArcSwap::from_pointee(ram_tier(settings, &anchor)),
            disk: ArcSwapOption::empty(),
            fills: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            pending_bytes: AtomicU64::new(0),
            index: Mutex::new(PurgeIndex::default()),
            settings: ArcSwap::from_pointee(settings.clone()),
            successors: Successors::new(100_000),
            prefetched: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(PREFETCH_MARK_TTL)
                .build(),
            prefetch_last_mark: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            next_fill: AtomicU64::new(1),
            write_errors_log: OncePerMinute::default(),
            metrics,
            anchor: anchor.clone(),
        }));
        let _ = anchor.set(storage);
        // The process this one replaces (a binary upgrade) may still be
        // finishing its last disk writes: its lock goes with the last one.
        let deadline = std::time::Instant::now() + DISK_LOCK_WAIT;
        loop {
            match storage.open_disk(settings) {
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => break other?,
            }
        }
        Ok(storage)
    }

    fn open_disk(&self, settings: &Cache) -> std::io::Result<()> {
        let Some(d) = &settings.disk else {
            self.disk.store(None);
            return Ok(());
        };
        let (tier, found) = DiskTier::open(&d.path, d.size, d.max_object)?;
        {
            let mut index = self.index.lock();
            for f in &found {
                index.add(&f.key, &f.info);
            }
        }
        tracing::info!(path = %d.path.display(), objects = found.len(), "disk cache opened");
        self.disk.store(Some(Arc::new(tier)));
        Ok(())
    }

    /// Applies new `[cache]` settings: a resized RAM tier keeps what fits,
    /// a resized disk tier evicts down to its budget, a new disk path opens
    /// that directory (the old one is left as it is).
    pub fn configure(&self, settings: &Cache) -> std::io::Result<()> {
        let prepared = self.prepare(settings)?;
        self.commit_settings(settings, prepared);
        Ok(())
    }

    /// What applying `settings` needs that can fail, done aside: a disk
    /// tier at a new path is opened (and read back) here.
    pub fn prepare(&self, settings: &Cache) -> std::io::Result<PreparedCache> {
        let old = self.settings.load_full();
        let same_disk = match (&old.disk, &settings.disk) {
            (Some(a), Some(b)) => a.path == b.path && self.disk.load().is_some(),
            (None, None) => true,
            _ => false,
        };
        if same_disk {
            return Ok(PreparedCache { disk: None });
        }
        let disk = match &settings.disk {
            None => NewDisk::Off,
            Some(d) => {
                let (tier, found) = DiskTier::open(&d.path, d.size, d.max_object)?;
                NewDisk::Open(Box::new((tier, found)))
            }
        };
        Ok(PreparedCache { disk: Some(disk) })
    }

    /// Makes `settings` the running ones, with what [`Self::prepare`] made
    /// for them. Cannot fail.
    pub fn commit_settings(&self, settings: &Cache, prepared: PreparedCache) {
        let old = self.settings.load_full();
        self.settings.store(Arc::new(settings.clone()));
        if (old.ram_size, old.ram_max_object) != (settings.ram_size, settings.ram_max_object) {
            let fresh = Arc::new(ram_tier(settings, &self.anchor));
            let previous = self.ram.swap(fresh.clone());
            for (k, obj) in previous.entries() {
                if fresh.admits(obj.weight()) {
                    fresh.insert(k.clone(), obj);
                }
                self.forget_if_gone(&k);
            }
        }
        match prepared.disk {
            None => {
                if let (Some(b), Some(tier)) = (&settings.disk, self.disk.load_full()) {
                    for r in tier.set_limits(b.size, b.max_object) {
                        self.metrics.evictions_disk.inc();
                        self.forget_if_gone(&r.key);
                    }
                }
            }
            Some(NewDisk::Off) => self.close_disk(),
            Some(NewDisk::Open(opened)) => {
                self.close_disk();
                let (tier, found) = *opened;
                {
                    let mut index = self.index.lock();
                    for f in &found {
                        index.add(&f.key, &f.info);
                    }
                }
                if let Some(d) = &settings.disk {
                    tracing::info!(path = %d.path.display(), objects = found.len(), "disk cache opened");
                }
                self.disk.store(Some(Arc::new(tier)));
            }
        }
    }

    /// Stops using the disk tier (its files stay, and its directory lock
    /// is released once writes in flight end).
    pub fn close_disk(&self) {
        if let Some(old_tier) = self.disk.swap(None) {
            let keys: Vec<String> = self
                .index
                .lock()
                .by_prefix("")
                .into_iter()
                .filter(|k| old_tier.contains(k))
                .collect();
            for k in keys {
                self.forget_if_gone(&k);
            }
        }
    }

    /// Hands the disk tier to another process (a binary upgrade): lookups
    /// stop using it at once, writes under way finish. Waits up to `wait`
    /// for the last of them, after which the directory's lock is free;
    /// returns whether that happened in time.
    pub async fn release_disk(&self, wait: Duration) -> bool {
        let Some(tier) = self.disk.load_full() else {
            return true;
        };
        self.close_disk();
        let deadline = tokio::time::Instant::now() + wait;
        while Arc::strong_count(&tier) > 1 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Opens the configured disk tier again after [`Self::release_disk`]
    /// (the upgrade did not happen). Blocks: reads the tier's index back.
    pub fn reopen_disk(&self) -> std::io::Result<()> {
        if self.disk.load().is_some() {
            return Ok(());
        }
        self.open_disk(&self.settings.load_full())
    }

    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    pub fn settings(&self) -> Arc<Cache> {
        self.settings.load_full()
    }

    /// [`Self::settings`] without a count taken on them (`arc_swap`'s
    /// guard): for a look that ends before the caller waits on anything.
    pub fn settings_now(&self) -> arc_swap::Guard<Arc<Cache>> {
        self.settings.load()
    }

    pub fn successors(&self) -> &Successors {
        &self.successors
    }

    /// Largest object any tier takes (pingora's fill size limit).
    pub fn max_object(&self) -> u64 {
        let ram = self.ram.load().max_object;
        let disk = self
            .settings
            .load()
            .disk
            .as_ref()
            .map_or(0, |d| d.max_object.min(d.size));
        ram.max(disk)
    }

    /// Removes `key` from the purge index unless some tier still has it.
    fn forget_if_gone(&self, key: &str) {
        let mut index = self.index.lock();
        if !index.contains(key) {
            return;
        }
        let present = self.ram.load().contains(key)
            || self.pending.lock().contains_key(key)
            || self.disk.load().as_ref().is_some_and(|d| d.contains(key))
            || self.fills.lock().contains_key(key);
        if !present {
            index.remove(key);
        }
    }

    fn fill_for(&self, key: &str, id: Option<u64>) -> Option<Arc<Fill>> {
        let fills = self.fills.lock();
        let list = fills.get(key)?;
        match id {
            Some(id) => list.iter().find(|f| f.id == id).cloned(),
            None => list.last().cloned(),
        }
    }

    fn remove_fill(&self, key: &str, id: u64) {
        {
            let mut fills = self.fills.lock();
            if let Some(list) = fills.get_mut(key) {
                list.retain(|f| f.id != id);
                if list.is_empty() {
                    fills.remove(key);
                }
            }
        }
        self.forget_if_gone(key);
    }

    /// A corrupt disk object: deleted (and counted) so the next request refetches it.
    pub(crate) fn drop_corrupt(&self, key: &str, e: &DiskError) {
        tracing::warn!(error = %e, "dropping a corrupt cached object; it will be refetched");
        self.metrics.disk_corrupt.inc();
        if let Some(d) = self.disk.load_full() {
            d.remove(key);
        }
        self.forget_if_gone(key);
    }

    /// Offers an object to RAM (which may refuse it).
    fn offer_ram(&self, key: &str, obj: &Arc<Object>) -> bool {
        let ram = self.ram.load_full();
        if !ram.admits(obj.weight()) {
            return false;
        }
        self.index.lock().add(key, &obj.info);
        ram.insert(key.to_string(), obj.clone());
        true
    }

    fn count_prefetch_use(&self, key: &str) {
        if self.prefetch_marks_may_live() {
            self.count_prefetch_use_of(&StoredKey::new(key));
        }
    }

    fn count_prefetch_use_of(&self, key: &StoredKey) {
        if self.prefetch_marks_may_live() && self.prefetched.remove(key).is_some() {
            self.metrics.prefetch_used.inc();
        }
    }

    /// Whether a prefetch mark may still be in `prefetched`: one was made
    /// less than `PREFETCH_MARK_TTL` (and a second, for the rounding) ago.
    fn prefetch_marks_may_live(&self) -> bool {
        let last = self.prefetch_last_mark.load(Ordering::Acquire);
        last != 0 && self.epoch.elapsed().as_secs() <= last + PREFETCH_MARK_TTL.as_secs()
    }

    /// Remembers that `key` is being prefetched (to count its first use).
    pub fn mark_prefetched(&self, key: &str) {
        // Noted first: a hit that sees the mark sees the time too.
        let now = self.epoch.elapsed().as_secs() + 1;
        self.prefetch_last_mark.fetch_max(now, Ordering::AcqRel);
        self.prefetched.insert(StoredKey::new(key), ());
    }

    /// Whether `key` was prefetched and not requested since.
    pub fn prefetched_unused(&self, key: &str) -> bool {
        self.prefetched.contains_key(&StoredKey::new(key))
    }

    /// A RAM tier object, for the proxy's fast path of fresh hits (which
    /// checks freshness, `Vary` and the request itself); `key` as
    /// [`crate::key::stored_key`] gives it (no hex text made and parsed
    /// back).
    pub fn ram_object(&self, key: &StoredKey) -> Option<Arc<Object>> {
        let obj = self.ram.load().get_stored(key)?;
        self.count_prefetch_use_of(key);
        Some(obj)
    }

    /// A digest of the URLs of stored objects of at least `min_size` bytes
    /// (RAM and disk), for steering (see [`crate::digest`]).
    pub fn digest(&self, min_size: u64) -> crate::digest::Digest {
        let mut infos = self.ram.load().infos_at_least(min_size);
        if let Some(disk) = self.disk.load_full() {
            infos.extend(disk.infos_at_least(min_size));
        }
        let mut urls: Vec<&str> = infos.iter().map(|i| i.url()).collect();
        urls.sort_unstable();
        urls.dedup();
        crate::digest::Digest::of(urls.into_iter())
    }

    /// Where `key` is: (in RAM, on disk, being filled or written).
    pub fn tiers_of(&self, key: &str) -> (bool, bool, bool) {
        (
            self.ram.load().contains(key),
            self.disk.load().as_ref().is_some_and(|d| d.contains(key)),
            self.fills.lock().contains_key(key) || self.pending.lock().contains_key(key),
        )
    }

    /// Whether `key` waits for its disk write.
    pub fn disk_write_pending(&self, key: &str) -> bool {
        self.pending.lock().contains_key(key)
    }

    /// Whether `key` is stored or being filled.
    pub fn is_cached(&self, key: &str) -> bool {
        self.ram.load().contains(key)
            || self.fills.lock().contains_key(key)
            || self.pending.lock().contains_key(key)
            || self.disk.load().as_ref().is_some_and(|d| d.contains(key))
    }

    async fn lookup_disk(&'static self, key: &str) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(disk) = self.disk.load_full() else {
            return Ok(None);
        };
        if !disk.contains(key) {
            return Ok(None);
        }
        let whole_limit = WHOLE_READ_LIMIT.max(self.ram.load().max_object);
        let k = key.to_string();
        let opened = tokio::task::spawn_blocking(move || {
            let (meta, reader) = match disk.open_object(&k)? {
                Some(found) => found,
                None => return Ok(None),
            };
            let body = if reader.len() <= whole_limit {
                Some(reader.read_all()?)
            } else {
                None
            };
            Ok::<_, DiskError>(Some((meta, reader, body)))
        })
        .await
        .map_err(|e| internal("disk lookup task", e))?;
        let (file, reader, body) = match opened {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(e @ DiskError::Corrupt { .. }) => {
                self.drop_corrupt(key, &e);
                return Ok(None);
            }
            Err(DiskError::Io(e)) => {
                tracing::warn!(error = %e, "disk cache read failed; treating as a miss");
                return Ok(None);
            }
        };
        let meta = match CacheMeta::deserialize(&file.meta.0, &file.meta.1) {
            Ok(m) => m,
            Err(e) => {
                self.drop_corrupt(
                    key,
                    &DiskError::Corrupt {
                        path: Default::default(),
                        what: format!("stored meta does not decode: {e}"),
                    },
                );
                return Ok(None);
            }
        };
        self.count_prefetch_use(key);
        let info = self
            .disk
            .load()
            .as_ref()
            .and_then(|d| d.info(key))
            .unwrap_or_else(|| file.info.clone());
        let hit = match body {
            Some(body) => {
                let body = body.into_bytes();
                let obj = Arc::new(Object::new(file.meta, body.clone(), info));
                self.offer_ram(key, &obj);
                EdgeHit::memory(Tier::Disk, body)
            }
            None => EdgeHit {
                tier: Tier::Disk,
                body: HitBody::Disk(DiskStream {
                    storage: self,
                    key: key.to_string(),
                    len: reader.len(),
                    end: reader.len(),
                    reader: Some(reader),
                    pos: 0,
                }),
            },
        };
        Ok(Some((meta, Box::new(hit))))
    }

    /// A stored object's body and facts, from whichever tier has it.
    async fn stored_body(&'static self, key: &str) -> Option<(bytes::Bytes, ObjectInfo)> {
        let in_memory = self
            .ram
            .load()
            .get(key)
            .or_else(|| self.pending.lock().get(key).cloned());
        if let Some(obj) = in_memory {
            return Some((obj.body.clone(), obj.info.clone()));
        }
        let disk = self.disk.load_full()?;
        let k = key.to_string();
        tokio::task::spawn_blocking(move || {
            let (file, reader) = disk.open_object(&k).ok()??;
            let body = reader.read_all().ok()?;
            Some((body.into_bytes(), file.info))
        })
        .await
        .ok()?
    }

    /// Installs a completed fill in the tiers that take it.
    fn commit(&'static self, key: &str, fill: &Fill, obj: Arc<Object>) {
        if fill.is_purged() {
            return;
        }
        let size = obj.weight();
        self.index.lock().add(key, &obj.info);
        self.offer_ram(key, &obj);
        let Some(disk) = self.disk.load_full().filter(|d| d.admits(size)) else {
            return;
        };
        if self.pending_bytes.load(Ordering::Relaxed) + size > PENDING_LIMIT {
            self.metrics.disk_writes_skipped.inc();
            return;
        }
        self.pending_bytes.fetch_add(size, Ordering::Relaxed);
        self.pending.lock().insert(key.to_string(), obj.clone());
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let wanted = || {
                self.pending
                    .lock()
                    .get(&key)
                    .is_some_and(|p| Arc::ptr_eq(p, &obj))
            };
            let result = disk.write(&key, &obj, wanted);
            {
                let mut pending = self.pending.lock();
                if pending.get(&key).is_some_and(|p| Arc::ptr_eq(p, &obj)) {
                    pending.remove(&key);
                }
            }
            self.pending_bytes.fetch_sub(size, Ordering::Relaxed);
            match result {
                Ok(evicted) => self.evicted_from_disk(evicted),
                Err(e) => {
                    self.metrics.disk_write_errors.inc();
                    // At most a line a minute, with how many since the last.
                    if let Some(more) = self.write_errors_log.due() {
                        tracing::warn!(error = %e, dir = %disk.dir().display(), more, "disk cache write failed");
                    }
                }
            }
            self.forget_if_gone(&key);
        });
    }

    fn evicted_from_disk(&self, evicted: Vec<Removed>) {
        for r in evicted {
            self.metrics.evictions_disk.inc();
            self.forget_if_gone(&r.key);
        }
    }

    /// Deletes `key` from every tier. Returns whether anything was there.
    pub fn remove_key(&self, key: &str) -> bool {
        let mut found = false;
        if let Some(list) = self.fills.lock().remove(key) {
            for f in list {
                f.mark_purged();
            }
            found = true;
        }
        found |= self.ram.load().remove(key).is_some();
        found |= self.pending.lock().remove(key).is_some();
        if let Some(d) = self.disk.load_full() {
            found |= d.remove(key);
        }
        self.index.lock().remove(key);
        found
    }

    /// Marks `key` stale in every tier, keeping it for revalidation.
    pub fn expire_key(&self, key: &str) -> bool {
        let now = SystemTime::now();
        let expire = |m: pingora_error::Result<CacheMeta>| -> Option<Meta> {
            let mut m = m.ok()?;
            m.expire_at(now);
            m.serialize().ok()
        };
        let mut found = false;
        // A fill still arriving is newer than the purge: it cannot be marked
        // stale, so it is not installed.
        if let Some(list) = self.fills.lock().remove(key) {
            for f in list {
                f.mark_purged();
            }
            found = true;
        }
        let ram = self.ram.load_full();
        if let Some(obj) = ram.get(key) {
            if let Some(meta) = expire(obj.cache_meta()) {
                ram.insert(key.to_string(), Arc::new(obj.with_meta(meta)));
                found = true;
            }
        }
        {
            let mut pending = self.pending.lock();
            if let Some(obj) = pending.get(key).cloned() {
                if let Some(meta) = expire(obj.cache_meta()) {
                    pending.insert(key.to_string(), Arc::new(obj.with_meta(meta)));
                    found = true;
                }
            }
        }
        if let Some(d) = self.disk.load_full() {
            if let Ok(Some((file, _))) = d.open_object(key) {
                if let Some(meta) = expire(CacheMeta::deserialize(&file.meta.0, &file.meta.1)) {
                    found |= d.update_meta(key, &meta).unwrap_or(false);
                }
            }
        }
        found
    }

    fn keys_matching(
        &self,
        select: impl Fn(&PurgeIndex) -> Vec<String>,
        url_match: impl Fn(&ObjectInfo) -> bool,
    ) -> Vec<String> {
        let mut keys = select(&self.index.lock());
        for (k, list) in self.fills.lock().iter() {
            if list.iter().any(|f| url_match(&f.info)) && !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        keys
    }

    fn purge_keys(&self, keys: Vec<String>, mode: PurgeMode) -> usize {
        let mut n = 0;
        for k in keys {
            let done = match mode {
                PurgeMode::Hard => self.remove_key(&k),
                PurgeMode::Soft => self.expire_key(&k),
            };
            if done {
                n += 1;
                match mode {
                    PurgeMode::Hard => self.metrics.purged_hard.inc(),
                    PurgeMode::Soft => self.metrics.purged_soft.inc(),
                }
            }
        }
        n
    }

    /// Purges every object of exactly this URL (host + path + normalized
    /// query): all its slices and header variants. Blocking (disk).
    pub fn purge_url(&self, url: &str, mode: PurgeMode) -> usize {
        let keys = self.keys_matching(|i| i.by_url(url), |info| info.url() == url);
        self.purge_keys(keys, mode)
    }

    /// Purges every object whose URL starts with `prefix`. Blocking (disk).
    pub fn purge_prefix(&self, prefix: &str, mode: PurgeMode) -> usize {
        let keys = self.keys_matching(
            |i| i.by_prefix(prefix),
            |info| info.url().starts_with(prefix),
        );
        self.purge_keys(keys, mode)
    }

    /// Purges every object the origin tagged with this surrogate key. Blocking (disk).
    pub fn purge_surrogate(&self, surrogate: &str, mode: PurgeMode) -> usize {
        let keys = self.keys_matching(
            |i| i.by_surrogate(surrogate),
            |info| info.surrogate_keys().any(|s| s == surrogate),
        );
        self.purge_keys(keys, mode)
    }

    /// Adjusts a completed playlist's freshness to what its body says, and
    /// learns its segment order for prefetching.
    fn finish_playlist(
        &self,
        hints: &FillHints,
        info: &ObjectInfo,
        body: &[u8],
        meta: Meta,
    ) -> Meta {
        let settings = self.settings.load();
        if let Ok(text) = std::str::from_utf8(body) {
            let (host, path) = split_url(info.url());
            match hints.kind {
                Kind::HlsPlaylist => self.successors.learn(host, path, &video::parse_hls(text)),
                Kind::DashManifest => self.successors.learn_dash(host, path, text),
                _ => {}
            }
        }
        if hints.ttl_source == TtlSource::Route {
            return meta;
        }
        let Some(policy::PlaylistTtl { ttl, live }) = policy::playlist_ttl(
            hints.kind,
            body,
            hints.ttl_source == TtlSource::Origin,
            hints.origin_ttl.unwrap_or_default(),
            &settings,
        ) else {
            return meta;
        };
        let Ok(mut m) = CacheMeta::deserialize(&meta.0, &meta.1) else {
            return meta;
        };
        // A live playlist is never served older than its TTL: no stale.
        let (swr, sie) = if live {
            (0, 0)
        } else {
            (m.stale_while_revalidate_sec(), m.stale_if_error_sec())
        };
        // Counted from its epoch: when the response (or the 304 that
        // revalidated it) arrived, less the age it arrived with.
        let fresh_until = m.epoch() + ttl;
        m.update_freshness(fresh_until, swr, sie);
        m.serialize().unwrap_or(meta)
    }
}

/// `host/path?query` → (`host`, `/path`).
pub fn split_url(url: &str) -> (&str, &str) {
    let (host, rest) = url.split_at(url.find('/').unwrap_or(url.len()));
    let path = rest.split('?').next().unwrap_or(rest);
    (host, path)
}

impl UsageSource for EdgeStorage {
    fn tier_usage(&self) -> Vec<(&'static str, TierUsage)> {
        let ram = self.ram.load_full();
        let (objects, bytes) = ram.usage();
        let mut out = vec![(
            "ram",
            TierUsage {
                objects,
                bytes,
                capacity: ram.capacity,
            },
        )];
        if let Some(d) = self.disk.load_full() {
            let (objects, bytes) = d.usage();
            out.push((
                "disk",
                TierUsage {
                    objects,
                    bytes,
                    capacity: d.capacity(),
                },
            ));
        }
        out
    }
}

struct EdgeMiss {
    storage: &'static EdgeStorage,
    key: String,
    fill: Arc<Fill>,
    tag: U64WriteId,
    hints: Option<FillHints>,
    finished: bool,
}

#[async_trait]
impl HandleMiss for EdgeMiss {
    async fn write_body(&mut self, data: bytes::Bytes, _eof: bool) -> Result<()> {
        self.fill.push(data);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let body = self.fill.contents();
        let size = body.len();
        let info = self.fill.info.clone();
        let meta = match &self.hints {
            Some(h) if matches!(h.kind, Kind::HlsPlaylist | Kind::DashManifest) => self
                .storage
                .finish_playlist(h, &info, body.bytes(), self.fill.meta.clone()),
            _ => self.fill.meta.clone(),
        };
        let obj = Arc::new(Object::new(meta, body.into_bytes(), info));
        self.storage.commit(&self.key, &self.fill, obj);
        self.fill.finish();
        self.finished = true;
        self.storage.remove_fill(&self.key, self.fill.id);
        Ok(MissFinishType::Created(size))
    }

    fn streaming_write_tag(&self) -> Option<&[u8]> {
        Some(self.tag.as_bytes())
    }
}

impl Drop for EdgeMiss {
    fn drop(&mut self) {
        if !self.finished {
            self.fill.fail();
            self.storage.remove_fill(&self.key, self.fill.id);
        }
    }
}

fn partial_hit(fill: &Arc<Fill>) -> Result<(CacheMeta, HitHandler)> {
    let meta = CacheMeta::deserialize(&fill.meta.0, &fill.meta.1)?;
    let hit = EdgeHit {
        tier: Tier::Fill,
        body: HitBody::Fill(fill.reader()),
    };
    Ok((meta, Box::new(hit)))
}

#[async_trait]
impl Storage for EdgeStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let k = crate::key::storage_key(key);
        // A fill in progress is newer than anything stored.
        if let Some(fill) = self.fill_for(&k, None) {
            self.count_prefetch_use(&k);
            return partial_hit(&fill).map(Some);
        }
        let in_memory = self
            .ram
            .load()
            .get(&k)
            .map(|o| (o, Tier::Ram))
            .or_else(|| self.pending.lock().get(&k).cloned().map(|o| (o, Tier::Ram)));
        if let Some((obj, tier)) = in_memory {
            let meta = obj.cache_meta()?;
            self.count_prefetch_use(&k);
            return Ok(Some((
                meta,
                Box::new(EdgeHit::memory(tier, obj.body.clone())),
            )));
        }
        self.lookup_disk(&k).await
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(tag) = tag else {
            return self.lookup(key, trace).await;
        };
        let id: u64 = U64WriteId::try_from(tag)
            .map_err(|e| internal("streaming write tag", e))?
            .into();
        match self.fill_for(&crate::key::storage_key(key), Some(id)) {
            Some(fill) => partial_hit(&fill).map(Some),
            // pingora expects the writer's own fill; it was purged meanwhile.
            None => Error::e_explain(
                ErrorType::InternalError,
                "the fill was purged while starting",
            ),
        }
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let k = crate::key::storage_key(key);
        let hints = meta.extensions().get::<FillHints>().cloned();
        let url = key.primary_key_str().map_or("", crate::key::url_of);
        let info = ObjectInfo::new(
            &k,
            url,
            hints.as_ref().map_or(&[][..], |h| &h.surrogate_keys[..]),
        );
        let id = self.next_fill.fetch_add(1, Ordering::Relaxed);
        let fill = Arc::new(Fill::new(id, meta.serialize()?, info.clone()));
        self.index.lock().add(&k, &info);
        self.fills
            .lock()
            .entry(k.clone())
            .or_default()
            .push(fill.clone());
        Ok(Box::new(EdgeMiss {
            storage: self,
            key: k,
            fill,
            tag: id.into(),
            hints,
            finished: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let k = crate::key::storage_key(target.key());
        let removed = tokio::task::spawn_blocking(move || self.remove_key(&k))
            .await
            .map_err(|e| internal("purge task", e))?;
        Ok(if removed {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn expire(
        &'static self,
        target: PurgeTarget<'_>,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let k = crate::key::storage_key(target.key());
        let expired = tokio::task::spawn_blocking(move || self.expire_key(&k))
            .await
            .map_err(|e| internal("expire task", e))?;
        Ok(if expired {
            PurgeOutcome::Expired
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let k = crate::key::storage_key(key);
        let mut serialized = meta.serialize()?;
        // A revalidated playlist: its freshness again follows its body.
        if let Some(h) = meta
            .extensions()
            .get::<FillHints>()
            .filter(|h| matches!(h.kind, Kind::HlsPlaylist | Kind::DashManifest))
        {
            if let Some((body, info)) = self.stored_body(&k).await {
                serialized = self.finish_playlist(h, &info, &body, serialized);
            }
        }
        let mut found = false;
        let ram = self.ram.load_full();
        if let Some(obj) = ram.get(&k) {
            ram.insert(k.clone(), Arc::new(obj.with_meta(serialized.clone())));
            found = true;
        }
        {
            let mut pending = self.pending.lock();
            if let Some(obj) = pending.get(&k).cloned() {
                pending.insert(k.clone(), Arc::new(obj.with_meta(serialized.clone())));
                found = true;
            }
        }
        if let Some(d) = self.disk.load_full() {
            let updated = tokio::task::spawn_blocking(move || d.update_meta(&k, &serialized))
                .await
                .map_err(|e| internal("meta update task", e))?;
            match updated {
                Ok(u) => found |= u,
                Err(e) => {
                    tracing::warn!(error = %e, "could not refresh a cached object's headers on disk")
                }
            }
        }
        Ok(found)
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync + 'static) {
        self
    }
}
