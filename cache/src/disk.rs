//! The disk tier: objects under a directory, within a byte budget.
//!
//! Each object is two files in `objects/<first two hex digits>/`:
//! `<key>.meta` (key, URL, surrogate keys, pingora's serialized meta, body
//! length, a CRC-32 of every 256 KiB block of the body, and a CRC of all
//! that) and `<key>-<generation>.body` (the body bytes). Both are written in
//! `tmp/` and renamed into place, body first, so a reader sees either the old
//! object or the new one. A replaced body file stays readable through open
//! handles until they close.
//!
//! On start the `.meta` files are read back (not the bodies): an object
//! whose meta does not decode or whose body is missing or of the wrong
//! length is deleted; so are body files no meta names. Block checksums are
//! verified when a body is read, so a corrupt object is dropped and
//! refetched, never served.
//!
//! Eviction is least recently used, by bytes.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

use crate::object::{Meta, Object, ObjectInfo};

const MAGIC: &[u8; 8] = b"EDGEC\x00\x01\x00";
/// Checksummed unit of a body.
pub const BLOCK: usize = 256 * 1024;
/// A meta file larger than this is not ours.
const MAX_META_FILE: u64 = 16 << 20;

/// What a `.meta` file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct MetaFile {
    pub key: String,
    pub generation: u64,
    pub info: ObjectInfo,
    pub meta: Meta,
    pub body_len: u64,
    pub block_crcs: Vec<u32>,
}

/// Why a stored object could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{path}: {what}")]
    Corrupt { path: PathBuf, what: String },
}

fn corrupt(path: &Path, what: impl Into<String>) -> DiskError {
    DiskError::Corrupt {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

impl MetaFile {
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(256 + self.meta.0.len() + self.meta.1.len());
        put_bytes(&mut p, self.key.as_bytes());
        p.extend_from_slice(&self.generation.to_le_bytes());
        put_bytes(&mut p, self.info.url().as_bytes());
        p.extend_from_slice(&(self.info.surrogate_keys().count() as u32).to_le_bytes());
        for k in self.info.surrogate_keys() {
            put_bytes(&mut p, k.as_bytes());
        }
        put_bytes(&mut p, &self.meta.0);
        put_bytes(&mut p, &self.meta.1);
        p.extend_from_slice(&self.body_len.to_le_bytes());
        p.extend_from_slice(&(BLOCK as u32).to_le_bytes());
        p.extend_from_slice(&(self.block_crcs.len() as u32).to_le_bytes());
        for c in &self.block_crcs {
            p.extend_from_slice(&c.to_le_bytes());
        }
        let mut out = Vec::with_capacity(p.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&p);
        out.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
        out
    }

    pub fn decode(raw: &[u8]) -> Option<MetaFile> {
        let rest = raw.strip_prefix(MAGIC.as_slice())?;
        let (len, rest) = rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() != len + 4 {
            return None;
        }
        let (payload, crc) = rest.split_at(len);
        if crc32fast::hash(payload).to_le_bytes() != crc {
            return None;
        }
        let mut r = Reader(payload);
        let key = r.string()?;
        let generation = r.u64()?;
        let url = r.string()?;
        let n = r.u32()? as usize;
        let mut surrogate_keys = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            surrogate_keys.push(r.string()?);
        }
        let m0 = r.bytes()?.to_vec();
        let m1 = r.bytes()?.to_vec();
        let body_len = r.u64()?;
        if r.u32()? as usize != BLOCK {
            return None;
        }
        let blocks = r.u32()? as usize;
        if blocks != blocks_for(body_len) {
            return None;
        }
        let mut block_crcs = Vec::with_capacity(blocks);
        for _ in 0..blocks {
            block_crcs.push(r.u32()?);
        }
        let info = ObjectInfo::new(&key, &url, &surrogate_keys);
        r.0.is_empty().then_some(MetaFile {
            key,
            generation,
            info,
            meta: (m0, m1),
            body_len,
            block_crcs,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

fn blocks_for(len: u64) -> usize {
    (len as usize).div_ceil(BLOCK)
}

fn block_crcs(body: &[u8]) -> Vec<u32> {
    body.chunks(BLOCK).map(crc32fast::hash).collect()
}

/// A stored object, as the index knows it.
#[derive(Debug, Clone)]
struct Entry {
    generation: u64,
    /// Body plus meta file.
    size: u64,
    tick: u64,
    info: ObjectInfo,
}

#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    /// Least recently used first.
    lru: BTreeMap<u64, String>,
    used: u64,
    tick: u64,
}

impl Index {
    fn touch(&mut self, key: &str) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.entries.get_mut(key) {
            self.lru.remove(&e.tick);
            e.tick = tick;
            self.lru.insert(tick, key.to_string());
        }
    }

    fn insert(&mut self, key: String, mut entry: Entry) -> Option<Entry> {
        self.tick += 1;
        entry.tick = self.tick;
        self.used += entry.size;
        self.lru.insert(entry.tick, key.clone());
        let old = self.entries.insert(key, entry);
        if let Some(o) = &old {
            self.lru.remove(&o.tick);
            self.used -= o.size;
        }
        old
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.lru.remove(&e.tick);
        self.used -= e.size;
        Some(e)
    }

    /// The least recently used key other than `keep`.
    fn victim(&self, keep: &str) -> Option<String> {
        self.lru.values().find(|k| k.as_str() != keep).cloned()
    }
}

/// An object removed from the disk tier.
#[derive(Debug, Clone)]
pub struct Removed {
    pub key: String,
    pub info: ObjectInfo,
}

/// The disk tier.
pub struct DiskTier {
    /// Held (locked) while the tier is open: one process per directory.
    _lock: File,
    dir: PathBuf,
    objects: PathBuf,
    tmp: PathBuf,
    capacity: AtomicU64,
    max_object: AtomicU64,
    index: Mutex<Index>,
    next_generation: AtomicU64,
    next_tmp: AtomicU64,
}

/// A body being read, verified block by block.
pub struct BodyReader {
    file: File,
    path: PathBuf,
    crcs: Vec<u32>,
    len: u64,
}

impl BodyReader {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads and verifies block `i`.
    pub fn block(&self, i: usize) -> Result<Bytes, DiskError> {
        let start = (i * BLOCK) as u64;
        let Some(expected) = self.crcs.get(i) else {
            return Err(corrupt(&self.path, format!("block {i} is past the end")));
        };
        let n = (self.len - start).min(BLOCK as u64) as usize;
        let mut buf = BytesMut::zeroed(n);
        self.file.read_exact_at(&mut buf, start).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                corrupt(&self.path, "truncated")
            } else {
                DiskError::Io(e)
            }
        })?;
        if crc32fast::hash(&buf) != *expected {
            return Err(corrupt(
                &self.path,
                format!("checksum mismatch in block {i}"),
            ));
        }
        Ok(buf.freeze())
    }

    /// Reads and verifies the whole body.
    pub fn read_all(&self) -> Result<crate::mapped::Body, DiskError> {
        // Read into a mapping of its own when long (`mapped.rs`): a disk
        // hit offered to the RAM tier is sent from there by reference.
        let buf = crate::mapped::filled(self.len as usize, |buf| {
            self.file.read_exact_at(buf, 0).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    corrupt(&self.path, "truncated")
                } else {
                    DiskError::Io(e)
                }
            })
        })?;
        // One extra byte means the file is longer than its meta says.
        let mut extra = [0u8; 1];
        if self.file.read_at(&mut extra, self.len)? != 0 {
            return Err(corrupt(&self.path, "longer than recorded"));
        }
        for (i, (block, expected)) in buf.bytes().chunks(BLOCK).zip(&self.crcs).enumerate() {
            if crc32fast::hash(block) != *expected {
                return Err(corrupt(
                    &self.path,
                    format!("checksum mismatch in block {i}"),
                ));
            }
        }
        Ok(buf)
    }
}

impl DiskTier {
    /// Opens (creating if needed) the tier at `dir` and rebuilds its index
    /// from the meta files there. Returns what it found, for the purge index.
    pub fn open(dir: &Path, capacity: u64, max_object: u64) -> io::Result<(Self, Vec<Removed>)> {
        let objects = dir.join("objects");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&objects)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        if let Err(e) = lock.try_lock() {
            return Err(match e {
                fs::TryLockError::WouldBlock => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "another edge process is using this cache directory",
                ),
                fs::TryLockError::Error(e) => e,
            });
        }
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let tier = Self {
            _lock: lock,
            dir: dir.to_path_buf(),
            objects,
            tmp,
            capacity: AtomicU64::new(capacity),
            max_object: AtomicU64::new(max_object.min(capacity)),
            index: Mutex::new(Index::default()),
            next_generation: AtomicU64::new(1),
            next_tmp: AtomicU64::new(0),
        };
        let found = tier.rebuild()?;
        let evicted = tier.evict_to_budget("");
        let found = found
            .into_iter()
            .filter(|f| !evicted.iter().any(|e| e.key == f.key))
            .collect();
        Ok((tier, found))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn shard(&self, key: &str) -> PathBuf {
        self.objects.join(key.get(..2).unwrap_or("00"))
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        self.shard(key).join(format!("{key}.meta"))
    }

    fn body_path(&self, key: &str, generation: u64) -> PathBuf {
        self.shard(key).join(format!("{key}-{generation}.body"))
    }

    fn rebuild(&self) -> io::Result<Vec<Removed>> {
        let mut metas: Vec<(MetaFile, SystemTime, u64)> = Vec::new();
        let mut bodies: Vec<PathBuf> = Vec::new();
        for shard in fs::read_dir(&self.objects)? {
            let shard = shard?.path();
            if !shard.is_dir() {
                continue;
            }
            for f in fs::read_dir(&shard)? {
                let path = f?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.ends_with(".body") {
                    bodies.push(path);
                    continue;
                }
                let valid = name
                    .strip_suffix(".meta")
                    .and_then(|key| Some((key, read_meta_file(&path).ok()?)))
                    .filter(|(key, (m, _))| m.key == *key);
                match valid {
                    Some((_, (m, md))) => {
                        let when = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                        metas.push((m, when, md.len()));
                    }
                    None => {
                        tracing::warn!(path = %path.display(), "dropping an unreadable cache meta file");
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        // Oldest first, so the LRU order approximates the last use.
        metas.sort_by_key(|(_, when, _)| *when);
        let mut index = self.index.lock();
        let mut found = Vec::new();
        let mut max_gen = 0;
        for (m, _, meta_len) in metas {
            let body = self.body_path(&m.key, m.generation);
            let body_ok = fs::metadata(&body).is_ok_and(|md| md.len() == m.body_len);
            if !body_ok {
                tracing::warn!(path = %body.display(), "dropping a cached object whose body is missing or truncated");
                let _ = fs::remove_file(self.meta_path(&m.key));
                continue;
            }
            max_gen = max_gen.max(m.generation);
            let info = m.info;
            index.insert(
                m.key.clone(),
                Entry {
                    generation: m.generation,
                    size: m.body_len + meta_len,
                    tick: 0,
                    info: info.clone(),
                },
            );
            found.push(Removed { key: m.key, info });
        }
        for body in bodies {
            let referenced = body
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".body"))
                .and_then(|n| n.rsplit_once('-'))
                .is_some_and(|(key, g)| {
                    index
                        .entries
                        .get(key)
                        .is_some_and(|e| g.parse() == Ok(e.generation))
                });
            if !referenced {
                let _ = fs::remove_file(&body);
            }
        }
        self.next_generation.store(max_gen + 1, Ordering::Relaxed);
        Ok(found)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Whether an object of `size` bytes may be stored at all.
    pub fn admits(&self, size: u64) -> bool {
        size <= self.max_object.load(Ordering::Relaxed) && size <= self.capacity()
    }

    /// New limits; evicts down to the new budget.
    pub fn set_limits(&self, capacity: u64, max_object: u64) -> Vec<Removed> {
        self.capacity.store(capacity, Ordering::Relaxed);
        self.max_object
            .store(max_object.min(capacity), Ordering::Relaxed);
        self.evict_to_budget("")
    }

    pub fn contains(&self, key: &str) -> bool {
        self.index.lock().entries.contains_key(key)
    }

    pub fn info(&self, key: &str) -> Option<ObjectInfo> {
        self.index.lock().entries.get(key).map(|e| e.info.clone())
    }

    /// The infos of objects of at least `min` bytes (body and meta).
    pub fn infos_at_least(&self, min: u64) -> Vec<ObjectInfo> {
        let index = self.index.lock();
        index
            .entries
            .values()
            .filter(|e| e.size >= min)
            .map(|e| e.info.clone())
            .collect()
    }

    /// (objects, bytes).
    pub fn usage(&self) -> (u64, u64) {
        let i = self.index.lock();
        (i.entries.len() as u64, i.used)
    }

    /// Opens a stored object: its meta (verified) and a reader for its body.
    /// `Ok(None)` when it is not stored; an error when it is unusable (the
    /// caller should [`remove`](Self::remove) it).
    pub fn open_object(&self, key: &str) -> Result<Option<(MetaFile, BodyReader)>, DiskError> {
        let generation = {
            let mut i = self.index.lock();
            let Some(g) = i.entries.get(key).map(|e| e.generation) else {
                return Ok(None);
            };
            i.touch(key);
            g
        };
        let meta_path = self.meta_path(key);
        // A purge, an eviction or a newer write may race this read: files
        // that vanish for those reasons mean "not stored", not "corrupt".
        let changed = |g: u64| self.index.lock().entries.get(key).map(|e| e.generation) != Some(g);
        let (meta, _) = match read_meta_file(&meta_path) {
            Ok(m) => m,
            Err(DiskError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                if changed(generation) {
                    return Ok(None);
                }
                return Err(corrupt(&meta_path, "meta file missing"));
            }
            Err(e) => return Err(e),
        };
        if meta.key != key {
            return Err(corrupt(&meta_path, "holds another key"));
        }
        let body_path = self.body_path(key, meta.generation);
        let file = match File::open(&body_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if changed(meta.generation) {
                    return Ok(None);
                }
                return Err(corrupt(&body_path, "body file missing"));
            }
            Err(e) => return Err(e.into()),
        };
        let reader = BodyReader {
            file,
            path: body_path,
            crcs: meta.block_crcs.clone(),
            len: meta.body_len,
        };
        Ok(Some((meta, reader)))
    }

    fn tmp_path(&self) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{n}", std::process::id()))
    }

    fn write_file(&self, bytes: &[u8], to: &Path) -> io::Result<()> {
        let tmp = self.tmp_path();
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            drop(f);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::rename(&tmp, to)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Stores `object` under `key`, replacing what was there, then evicts
    /// least recently used objects until the tier is within its budget.
    /// `still_wanted` is asked (under the index lock) just before the object
    /// becomes visible: if it says no (a purge came first), nothing is kept.
    /// Blocking: call from a blocking thread.
    pub fn write(
        &self,
        key: &str,
        object: &Object,
        still_wanted: impl FnOnce() -> bool,
    ) -> io::Result<Vec<Removed>> {
        let stored_meta = object.meta().map_err(|e| io::Error::other(e.to_string()))?;
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let meta = MetaFile {
            key: key.to_string(),
            generation,
            info: object.info.clone(),
            meta: stored_meta,
            body_len: object.body.len() as u64,
            block_crcs: block_crcs(&object.body),
        };
        let encoded = meta.encode();
        let need = object.body.len() as u64 + encoded.len() as u64;
        let body_path = self.body_path(key, generation);
        let mut made_room = Vec::new();
        if let Err(e) = self.write_file(&object.body, &body_path) {
            if !is_full(&e) {
                return Err(e);
            }
            // The filesystem holds less than the budget says: learn what it
            // holds, make room, and try once more.
            made_room = self.make_room(need, key);
            self.write_file(&object.body, &body_path)?;
        }
        let meta_path = self.meta_path(key);
        let mut index = self.index.lock();
        if !still_wanted() {
            drop(index);
            let _ = fs::remove_file(&body_path);
            return Ok(made_room);
        }
        if let Err(e) = self.write_file(&encoded, &meta_path) {
            drop(index);
            let _ = fs::remove_file(&body_path);
            return Err(e);
        }
        let old = index.insert(
            key.to_string(),
            Entry {
                generation,
                size: meta.body_len + encoded.len() as u64,
                tick: 0,
                info: object.info.clone(),
            },
        );
        let victims = Self::choose_victims(&mut index, self.capacity(), key);
        drop(index);
        if let Some(old) = old.filter(|o| o.generation != generation) {
            let _ = fs::remove_file(self.body_path(key, old.generation));
        }
        made_room.extend(self.delete_victims(victims));
        Ok(made_room)
    }

    /// After a write found the filesystem full: the budget becomes what the
    /// tier holds now less `need` (the disk is smaller than configured, or
    /// shared), and least recently used objects go until `need` fits.
    fn make_room(&self, need: u64, keep: &str) -> Vec<Removed> {
        let victims = {
            let mut index = self.index.lock();
            let fits = index.used.saturating_sub(need);
            let budget = self.capacity().min(index.used.max(need));
            self.capacity.store(budget, Ordering::Relaxed);
            Self::choose_victims(&mut index, fits, keep)
        };
        self.delete_victims(victims)
    }

    /// Evicts least recently used objects (never `keep`) until within budget.
    fn evict_to_budget(&self, keep: &str) -> Vec<Removed> {
        let victims = Self::choose_victims(&mut self.index.lock(), self.capacity(), keep);
        self.delete_victims(victims)
    }

    /// Takes victims out of the index (under its lock, so nobody sees the
    /// tier above budget); their files are deleted after.
    fn choose_victims(index: &mut Index, capacity: u64, keep: &str) -> Vec<(String, Entry)> {
        let mut out = Vec::new();
        while index.used > capacity {
            let Some(k) = index.victim(keep) else { break };
            if let Some(e) = index.remove(&k) {
                out.push((k, e));
            }
        }
        out
    }

    fn delete_victims(&self, victims: Vec<(String, Entry)>) -> Vec<Removed> {
        victims
            .into_iter()
            .map(|(key, e)| {
                self.delete_files(&key, e.generation);
                Removed { key, info: e.info }
            })
            .collect()
    }

    fn delete_files(&self, key: &str, generation: u64) {
        let _ = fs::remove_file(self.meta_path(key));
        let _ = fs::remove_file(self.body_path(key, generation));
    }

    /// Deletes `key`. Returns whether it was stored.
    pub fn remove(&self, key: &str) -> bool {
        let Some(e) = self.index.lock().remove(key) else {
            return false;
        };
        self.delete_files(key, e.generation);
        true
    }

    /// Replaces the stored meta of `key` (the body stays). Returns whether
    /// it was stored.
    pub fn update_meta(&self, key: &str, meta: &Meta) -> Result<bool, DiskError> {
        let _guard = self.index.lock();
        let Some(_) = _guard.entries.get(key) else {
            return Ok(false);
        };
        let path = self.meta_path(key);
        let (mut m, _) = read_meta_file(&path)?;
        m.meta = meta.clone();
        self.write_file(&m.encode(), &path)?;
        Ok(true)
    }
}

/// The filesystem (or a quota) is full.
pub fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || e.raw_os_error() == Some(28)
}

fn read_meta_file(path: &Path) -> Result<(MetaFile, fs::Metadata), DiskError> {
    let mut f = File::open(path)?;
    let md = f.metadata()?;
    if md.len() > MAX_META_FILE {
        return Err(corrupt(path, "too large for a meta file"));
    }
    let mut raw = Vec::with_capacity(md.len() as usize);
    f.read_to_end(&mut raw)?;
    let m = MetaFile::decode(&raw).ok_or_else(|| corrupt(path, "does not decode"))?;
    Ok((m, md))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(url: &str, body: Vec<u8>) -> Object {
        Object::new(
            (b"internal".to_vec(), b"HTTP/1.1 200 OK\r\n\r\n".to_vec()),
            Bytes::from(body),
            ObjectInfo::new("", url, &["a", "b"]),
        )
    }

    fn key(n: u32) -> String {
        format!("{n:032x}")
    }

    #[test]
    fn meta_files_round_trip_and_reject_damage() {
        let m = MetaFile {
            key: key(1),
            generation: 7,
            info: ObjectInfo::new(&key(1), "h/a", &["x"]),
            meta: (vec![1, 2, 3], vec![4, 5]),
            body_len: BLOCK as u64 + 1,
            block_crcs: vec![1, 2],
        };
        let raw = m.encode();
        assert_eq!(MetaFile::decode(&raw), Some(m));
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x40;
            assert_eq!(MetaFile::decode(&bad), None, "flipped byte {i}");
        }
        assert_eq!(MetaFile::decode(&raw[..raw.len() - 1]), None);
    }

    #[test]
    fn objects_survive_a_reopen_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..(BLOCK * 2 + 100)).map(|i| (i % 251) as u8).collect();
        {
            let (tier, found) = DiskTier::open(dir.path(), 10 << 20, 10 << 20).unwrap();
            assert!(found.is_empty());
            tier.write(&key(1), &object("h/a", body.clone()), || true)
                .unwrap();
            tier.write(&key(2), &object("h/b", vec![7; 10]), || true)
                .unwrap();
        }
        let (tier, found) = DiskTier::open(dir.path(), 10 << 20, 10 << 20).unwrap();
        assert_eq!(found.len(), 2);
        let (meta, reader) = tier.open_object(&key(1)).unwrap().unwrap();
        assert_eq!(meta.info.url(), "h/a");
        assert_eq!(&reader.read_all().unwrap().bytes()[..], &body[..]);
        assert_eq!(&reader.block(2).unwrap()[..], &body[BLOCK * 2..]);

        // Flip one byte of the body on disk.
        let path = tier.body_path(&key(1), meta.generation);
        let mut raw = fs::read(&path).unwrap();
        raw[BLOCK + 5] ^= 1;
        fs::write(&path, raw).unwrap();
        let (_, reader) = tier.open_object(&key(1)).unwrap().unwrap();
        assert!(matches!(reader.read_all(), Err(DiskError::Corrupt { .. })));
        assert!(reader.block(0).is_ok());
        assert!(matches!(reader.block(1), Err(DiskError::Corrupt { .. })));

        // Truncate the other: dropped at the next start.
        let (m2, _) = tier.open_object(&key(2)).unwrap().unwrap();
        fs::write(tier.body_path(&key(2), m2.generation), [7u8; 3]).unwrap();
        drop(tier);
        let (tier, found) = DiskTier::open(dir.path(), 10 << 20, 10 << 20).unwrap();
        assert_eq!(found.len(), 1);
        assert!(!tier.contains(&key(2)));
    }

    #[test]
    fn eviction_keeps_the_tier_within_budget_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let (tier, _) = DiskTier::open(dir.path(), 100_000, 50_000).unwrap();
        assert!(!tier.admits(60_000));
        for n in 0..5 {
            tier.write(&key(n), &object("h/x", vec![0; 30_000]), || true)
                .unwrap();
            // Key 0 stays in use.
            assert!(tier.open_object(&key(0)).unwrap().is_some());
            assert!(tier.usage().1 <= 100_000);
        }
        assert!(tier.contains(&key(0)));
        assert!(tier.contains(&key(4)));
        assert!(!tier.contains(&key(1)));
        let files = fs::read_dir(tier.objects.join("00")).unwrap().count();
        assert_eq!(
            files,
            2 * tier.usage().0 as usize,
            "evicted files are deleted"
        );
    }

    #[test]
    fn a_purge_during_a_write_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (tier, _) = DiskTier::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        tier.write(&key(3), &object("h/c", vec![1; 10]), || false)
            .unwrap();
        assert!(!tier.contains(&key(3)));
        assert_eq!(fs::read_dir(tier.objects.join("00")).unwrap().count(), 0);
    }
}
