//! The storage through pingora-cache's `Storage` trait, as the proxy drives
//! it: fills, coalesced readers, tiers, restart, corruption, purge, budgets.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use edge_cache::{CacheMetrics, EdgeHit, EdgeStorage, FillHints, PurgeMode, Tier};
use edge_config::{Cache, DiskTier as DiskConfig};
use pingora_cache::key::CacheHashKey;
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_http::ResponseHeader;

fn settings(ram: u64, ram_max: u64, disk: Option<(&std::path::Path, u64, u64)>) -> Cache {
    Cache {
        ram_size: ram,
        ram_max_object: ram_max,
        disk: disk.map(|(p, size, max)| DiskConfig {
            path: p.to_path_buf(),
            size,
            max_object: max,
        }),
        ..Cache::default()
    }
}

fn open(s: &Cache) -> &'static EdgeStorage {
    EdgeStorage::open(s, Arc::new(CacheMetrics::unregistered())).unwrap()
}

/// Opens a storage on a directory another one just closed (its last disk
/// task may still hold the directory for a moment).
async fn reopen(s: &Cache) -> &'static EdgeStorage {
    for _ in 0..200 {
        if let Ok(storage) = EdgeStorage::open(s, Arc::new(CacheMetrics::unregistered())) {
            return storage;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the cache directory stayed locked")
}

fn meta(surrogates: &[&str]) -> CacheMeta {
    let mut h = ResponseHeader::build(200, None).unwrap();
    h.insert_header("content-type", "video/mp2t").unwrap();
    let now = SystemTime::now();
    let mut m = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, h);
    m.extensions_mut().insert(FillHints {
        kind: edge_cache::video::Kind::Segment,
        ttl_source: edge_cache::policy::TtlSource::Origin,
        origin_ttl: Some(Duration::from_secs(60)),
        surrogate_keys: surrogates.iter().map(|s| s.to_string()).collect(),
    });
    m
}

fn body(n: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<_>>(),
    )
}

async fn fill(s: &'static EdgeStorage, url: &str, data: &Bytes, surrogates: &[&str]) {
    let key = CacheKey::new(url, "");
    let span = Span::inactive();
    let mut miss = s
        .get_miss_handler(&key, &meta(surrogates), &span.handle())
        .await
        .unwrap();
    for chunk in data.chunks(7000) {
        miss.write_body(Bytes::copy_from_slice(chunk), false)
            .await
            .unwrap();
    }
    miss.finish().await.unwrap();
}

/// The body and tier of a hit, or `None` on a miss.
async fn get(s: &'static EdgeStorage, url: &str) -> Option<(Bytes, Tier)> {
    let span = Span::inactive();
    let (_, mut hit) = s
        .lookup(&CacheKey::new(url, ""), &span.handle())
        .await
        .unwrap()?;
    let tier = hit.as_any().downcast_ref::<EdgeHit>().unwrap().tier;
    let mut out = Vec::new();
    while let Some(b) = hit.read_body().await.unwrap() {
        out.extend_from_slice(&b);
    }
    Some((Bytes::from(out), tier))
}

fn usage(s: &EdgeStorage) -> Vec<(&'static str, u64, u64)> {
    use edge_cache::metrics::UsageSource;
    s.tier_usage()
        .into_iter()
        .map(|(t, u)| (t, u.bytes, u.capacity))
        .collect()
}

async fn wait_for_disk(s: &'static EdgeStorage, url: &str) {
    let key = CacheKey::new(url, "").combined();
    for _ in 0..500 {
        if !s.disk_write_pending(&key) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("disk write of {url} never finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_hit_from_ram_large_ones_from_disk_and_both_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = settings(1 << 20, 64 << 10, Some((dir.path(), 16 << 20, 4 << 20)));
    let s = open(&cfg);
    let small = body(10_000, 1);
    let large = body(600_000, 2);
    fill(s, "h/small", &small, &[]).await;
    fill(s, "h/large", &large, &[]).await;
    assert_eq!(get(s, "h/small").await, Some((small.clone(), Tier::Ram)));
    wait_for_disk(s, "h/large").await;
    wait_for_disk(s, "h/small").await;
    assert_eq!(get(s, "h/large").await, Some((large.clone(), Tier::Disk)));
    // A ranged read of a disk object across a block boundary.
    let span = Span::inactive();
    let (_, mut hit) = s
        .lookup(&CacheKey::new("h/large", ""), &span.handle())
        .await
        .unwrap()
        .unwrap();
    hit.seek(262_000, Some(263_000)).unwrap();
    let mut got = Vec::new();
    while let Some(b) = hit.read_body().await.unwrap() {
        got.extend_from_slice(&b);
    }
    assert_eq!(&got[..], &large[262_000..263_000]);

    // "Restart": a second storage on the same directory serves both from disk.
    assert!(
        EdgeStorage::open(&cfg, Arc::new(CacheMetrics::unregistered())).is_err(),
        "one process per directory"
    );
    s.close_disk();
    let s2 = reopen(&cfg).await;
    assert_eq!(get(s2, "h/small").await, Some((small.clone(), Tier::Disk)));
    assert_eq!(
        get(s2, "h/small").await,
        Some((small, Tier::Ram)),
        "promoted on the disk hit"
    );
    assert_eq!(get(s2, "h/large").await, Some((large, Tier::Disk)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_disk_object_is_dropped_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = settings(0, 0, Some((dir.path(), 16 << 20, 4 << 20)));
    let s = open(&cfg);
    let data = body(50_000, 3);
    fill(s, "h/seg.ts", &data, &[]).await;
    wait_for_disk(s, "h/seg.ts").await;
    // Flip one byte of the body file.
    let key = CacheKey::new("h/seg.ts", "").combined();
    let shard = dir.path().join("objects").join(&key[..2]);
    let body_file = std::fs::read_dir(&shard)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "body"))
        .unwrap();
    let mut raw = std::fs::read(&body_file).unwrap();
    raw[1234] ^= 0x01;
    std::fs::write(&body_file, raw).unwrap();
    assert_eq!(get(s, "h/seg.ts").await, None, "corrupt object is a miss");
    assert_eq!(s.metrics().disk_corrupt.get(), 1);
    assert!(!body_file.exists(), "and it is deleted");
    fill(s, "h/seg.ts", &data, &[]).await;
    wait_for_disk(s, "h/seg.ts").await;
    assert_eq!(get(s, "h/seg.ts").await, Some((data, Tier::Disk)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_readers_follow_the_fill_and_a_failed_fill_is_an_error() {
    let s = open(&settings(1 << 20, 1 << 20, None));
    let key = CacheKey::new("h/live", "");
    let span = Span::inactive();
    let mut miss = s
        .get_miss_handler(&key, &meta(&[]), &span.handle())
        .await
        .unwrap();
    miss.write_body(Bytes::from_static(b"abc"), false)
        .await
        .unwrap();
    let (_, mut reader) = s.lookup(&key, &span.handle()).await.unwrap().unwrap();
    assert_eq!(
        reader.as_any().downcast_ref::<EdgeHit>().unwrap().tier,
        Tier::Fill
    );
    assert_eq!(
        reader.read_body().await.unwrap().as_deref(),
        Some(&b"abc"[..])
    );
    let next = tokio::spawn(async move { reader.read_body().await.map(|b| b.map(|b| b.to_vec())) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    miss.write_body(Bytes::from_static(b"def"), true)
        .await
        .unwrap();
    assert_eq!(next.await.unwrap().unwrap().as_deref(), Some(&b"def"[..]));
    miss.finish().await.unwrap();
    assert_eq!(
        get(s, "h/live").await.unwrap().0,
        Bytes::from_static(b"abcdef")
    );

    // A writer dropped half-way: its follower errs instead of ending early.
    let key = CacheKey::new("h/broken", "");
    let mut miss = s
        .get_miss_handler(&key, &meta(&[]), &span.handle())
        .await
        .unwrap();
    miss.write_body(Bytes::from_static(b"abc"), false)
        .await
        .unwrap();
    let (_, mut reader) = s.lookup(&key, &span.handle()).await.unwrap().unwrap();
    assert!(reader.read_body().await.unwrap().is_some());
    drop(miss);
    assert!(reader.read_body().await.is_err());
    assert!(get(s, "h/broken").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_remove_exactly_what_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&settings(
        1 << 20,
        1 << 20,
        Some((dir.path(), 16 << 20, 4 << 20)),
    ));
    // Primary keys as the request path builds them.
    let pk = |path: &str, slice: Option<u64>| {
        let url = edge_cache::key::url("h", path, None, &edge_config::IgnoreQuery::None);
        edge_cache::key::primary(&url, "http", slice, &[], &http::HeaderMap::new())
    };
    let urls = [
        ("/vod/a/1.ts", None, vec!["title-a"]),
        ("/vod/a/1.ts", Some(1), vec!["title-a"]),
        ("/vod/a/2.ts", None, vec!["title-a", "season-1"]),
        ("/vod/ab/1.ts", None, vec!["title-ab", "season-1"]),
        ("/vod/b/1.ts", None, vec!["title-b"]),
    ];
    for (u, slice, sk) in &urls {
        let k = pk(u, *slice);
        fill(s, &k, &body(1000, 1), sk).await;
        wait_for_disk(s, &k).await;
    }
    let present = |s: &'static EdgeStorage| {
        urls.iter()
            .filter(|(u, slice, _)| s.is_cached(&CacheKey::new(pk(u, *slice), "").combined()))
            .map(|(u, _, _)| format!("h{u}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        s.purge_url("h/vod/a/1.ts", PurgeMode::Hard),
        2,
        "the URL and its slice"
    );
    assert_eq!(
        present(s),
        ["h/vod/a/2.ts", "h/vod/ab/1.ts", "h/vod/b/1.ts"]
    );
    assert_eq!(s.purge_surrogate("season-1", PurgeMode::Hard), 2);
    assert_eq!(present(s), ["h/vod/b/1.ts"]);
    assert_eq!(
        s.purge_prefix("h/vod/a", PurgeMode::Hard),
        0,
        "already gone"
    );
    assert_eq!(s.purge_prefix("h/vod/", PurgeMode::Soft), 1);
    // Soft: still stored, but no longer fresh, in RAM and on disk.
    assert_eq!(present(s), ["h/vod/b/1.ts"]);
    let span = Span::inactive();
    let key = CacheKey::new(pk("/vod/b/1.ts", None), "");
    let (m, _) = s.lookup(&key, &span.handle()).await.unwrap().unwrap();
    assert!(!m.is_fresh(SystemTime::now()));
    s.close_disk();
    let restarted = reopen(&settings(
        1 << 20,
        1 << 20,
        Some((dir.path(), 16 << 20, 4 << 20)),
    ))
    .await;
    let (m, hit) = restarted
        .lookup(&key, &span.handle())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        hit.as_any().downcast_ref::<EdgeHit>().unwrap().tier,
        Tier::Disk
    );
    assert!(!m.is_fresh(SystemTime::now()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tier_stays_within_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&settings(
        200_000,
        50_000,
        Some((dir.path(), 500_000, 100_000)),
    ));
    for i in 0..60 {
        let url = format!("h/obj/{i}");
        fill(s, &url, &body(20_000 + (i % 5) * 15_000, i as u8), &[]).await;
        wait_for_disk(s, &url).await;
        for (tier, bytes, cap) in usage(s) {
            assert!(bytes <= cap, "{tier} holds {bytes} > {cap}");
        }
    }
    let u = usage(s);
    assert!(u[0].1 > 100_000, "RAM is used: {u:?}");
    assert!(u[1].1 > 300_000, "disk is used: {u:?}");
    assert!(s.metrics().evictions_disk.get() > 0);
    assert!(s.metrics().evictions_ram.get() > 0);
    // What the disk tier counts is what is in its directory.
    let on_disk: u64 = walk(&dir.path().join("objects"));
    assert_eq!(on_disk, u[1].1);
}

fn walk(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path)
            } else {
                std::fs::metadata(&path).unwrap().len()
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_purge_of_an_object_only_on_disk_makes_it_stale() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = settings(1 << 20, 1 << 20, Some((dir.path(), 16 << 20, 4 << 20)));
    let s = open(&cfg);
    fill(s, "h/d.ts", &body(5000, 9), &[]).await;
    wait_for_disk(s, "h/d.ts").await;
    s.close_disk();
    let s2 = reopen(&cfg).await;
    assert_eq!(s2.purge_url("h/d.ts", PurgeMode::Soft), 1);
    let span = Span::inactive();
    let (m, hit) = s2
        .lookup(&CacheKey::new("h/d.ts", ""), &span.handle())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        hit.as_any().downcast_ref::<EdgeHit>().unwrap().tier,
        Tier::Disk
    );
    assert!(
        !m.is_fresh(SystemTime::now()),
        "fresh until {:?}",
        m.fresh_until()
    );
}

/// A tmpfs of `bytes`, unmounted when dropped (root only).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_evicts_and_keeps_admitting() {
    // A 2 MiB filesystem under a tier configured for 64 MiB.
    let Some(disk) = SmallDisk::mount(2 << 20) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    // Objects too big for RAM: what is cached is on disk.
    let cfg = settings(1 << 20, 1024, Some((disk.dir.path(), 64 << 20, 1 << 20)));
    let s = open(&cfg);
    let urls: Vec<String> = (0..16).map(|i| format!("h/full/{i}.ts")).collect();
    for (i, u) in urls.iter().enumerate() {
        fill(s, u, &body(300_000, i as u8), &[]).await;
        wait_for_disk(s, u).await;
    }
    let cached = |u: &String| s.is_cached(&CacheKey::new(u.as_str(), "").combined());
    // The newest objects are there: writes went on after the disk filled.
    for u in &urls[12..] {
        assert!(cached(u), "{u} was admitted after the disk filled");
    }
    // The oldest made room.
    assert!(!cached(&urls[0]));
    use edge_cache::metrics::UsageSource;
    let disk_tier = s
        .tier_usage()
        .into_iter()
        .find(|(t, _)| *t == "disk")
        .unwrap()
        .1;
    assert!(
        disk_tier.bytes <= 2 << 20 && disk_tier.objects >= 4,
        "{} objects, {} bytes on a 2 MiB disk",
        disk_tier.objects,
        disk_tier.bytes
    );
    drop(disk);
}

/// A prefetched object's first use is counted once, by the fast path's
/// lookup and by pingora-cache's alike; objects never prefetched count
/// nothing, and a key marked again after its use counts again (a hit skips
/// the map only once every mark has outlived its ten minutes).
#[tokio::test]
async fn a_prefetched_objects_first_use_is_counted_once() {
    use edge_cache::key::{storage_key, stored_key};
    let metrics = Arc::new(CacheMetrics::unregistered());
    let s = EdgeStorage::open(&settings(1 << 20, 1 << 16, None), metrics.clone()).unwrap();
    let data = body(1000, 3);
    for url in ["/p/a.ts", "/p/b.ts", "/p/c.ts"] {
        fill(s, url, &data, &[]).await;
    }
    let key = |url: &str| CacheKey::new(url, "");
    let used = || metrics.prefetch_used.get();

    assert!(s.ram_object(&stored_key(&key("/p/a.ts"))).is_some());
    assert!(get(s, "/p/a.ts").await.is_some());
    assert_eq!(used(), 0, "nothing was prefetched");

    s.mark_prefetched(&storage_key(&key("/p/b.ts")));
    assert!(s.prefetched_unused(&storage_key(&key("/p/b.ts"))));
    assert!(s.ram_object(&stored_key(&key("/p/a.ts"))).is_some());
    assert_eq!(used(), 0, "another object's hit is not b's use");
    assert!(s.ram_object(&stored_key(&key("/p/b.ts"))).is_some());
    assert_eq!(used(), 1);
    assert!(!s.prefetched_unused(&storage_key(&key("/p/b.ts"))));
    assert!(s.ram_object(&stored_key(&key("/p/b.ts"))).is_some());
    assert!(get(s, "/p/b.ts").await.is_some());
    assert_eq!(used(), 1, "only the first use counts");

    // Marked twice (the second replaces the first), used through a lookup.
    s.mark_prefetched(&storage_key(&key("/p/c.ts")));
    s.mark_prefetched(&storage_key(&key("/p/c.ts")));
    assert!(get(s, "/p/c.ts").await.is_some());
    assert_eq!(used(), 2);
    assert!(s.ram_object(&stored_key(&key("/p/c.ts"))).is_some());
    assert_eq!(used(), 2);

    // Every mark is used: marking again after that counts again.
    s.mark_prefetched(&storage_key(&key("/p/b.ts")));
    assert!(s.ram_object(&stored_key(&key("/p/b.ts"))).is_some());
    assert_eq!(used(), 3);
}
