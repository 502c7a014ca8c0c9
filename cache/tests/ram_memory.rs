//! What a RAM-cached object really costs in heap bytes, counted by the
//! allocator (issue 17): the overhead beyond key and body stays small, and
//! the tier's accounted size (what `ram_size` bounds) is at least what the
//! objects really hold.
#![allow(clippy::unwrap_used)]

use std::alloc::System;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use edge_cache::metrics::UsageSource;
use edge_cache::{CacheMetrics, EdgeStorage, FillHints};
use pingora_cache::key::CacheHashKey;
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_http::ResponseHeader;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes held now more than when `region` began.
fn live(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    // A realloc is counted in these two already (its net change).
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

/// A response head as an origin such as nginx sends for a segment, with
/// `extra` more fields and these surrogate keys.
fn meta(extra: usize, surrogates: &[String]) -> CacheMeta {
    let mut h = ResponseHeader::build(200, None).unwrap();
    for i in 0..extra {
        h.append_header(
            format!("X-Origin-Field-{i}"),
            format!("value {i} of a longer field"),
        )
        .unwrap();
    }
    for (k, v) in [
        ("server", "nginx/1.22.1"),
        ("date", "Tue, 01 Dec 2026 02:00:00 GMT"),
        ("content-type", "video/mp2t"),
        ("content-length", "1024"),
        ("last-modified", "Mon, 30 Nov 2026 12:00:00 GMT"),
        ("etag", "\"6565a0c0-400\""),
        ("cache-control", "public, max-age=3600"),
        ("accept-ranges", "bytes"),
    ] {
        h.insert_header(k, v).unwrap();
    }
    let now = SystemTime::now();
    let mut m = CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, h);
    m.extensions_mut().insert(FillHints {
        kind: edge_cache::video::Kind::Segment,
        ttl_source: edge_cache::policy::TtlSource::Origin,
        origin_ttl: Some(Duration::from_secs(3600)),
        surrogate_keys: surrogates.to_vec(),
    });
    m
}

#[tokio::test(flavor = "current_thread")]
async fn a_ram_object_costs_little_beyond_key_and_body_and_is_accounted_in_full() {
    // A usual segment's head, and one with 30 more fields and 3 surrogate
    // keys: accounted in full either way.
    let none = |_: usize| Vec::new();
    let (overhead, _) = fill_and_count(0, &none).await;
    // Issue 17 asks for at most about 300; 3,769 before this test existed
    // (a header map with its case map per object, meta with slack, keys
    // copied three times in the purge index), 1,258 while the head was kept
    // twice (pingora's serialized header besides the lines), 1,034 with
    // moka's entry (about 340), 815 with the S3-FIFO tier and keys inline,
    // 640 now, each object read once (612 before that read shares the kept
    // head's buffer; one buffer per head, the info and the purge index's
    // entries in one thin shared allocation, slots in chunks, a smaller
    // object).
    // The head's lines and meta (about 285) and the URL and key (about 90)
    // are in it; the rest is about 265. This bounds it against regressions.
    assert!(
        overhead <= 660.0,
        "{overhead:.0} bytes per object beyond key and body"
    );
    // Keys every object shares, and keys each object has alone.
    let shared = |_: usize| vec!["title-1234".to_string(), "vod".into(), "season-2".into()];
    let unique = |i: usize| vec![format!("segment-{i}"), format!("title-{i}"), "vod".into()];
    fill_and_count(30, &none).await;
    fill_and_count(0, &shared).await;
    fill_and_count(30, &shared).await;
    fill_and_count(0, &unique).await;
    fill_and_count(30, &unique).await;
}

/// Fills 20,000 objects of 1 KiB; (overhead beyond key and body, real
/// bytes) per object. Fails unless the tier accounts at least the real.
async fn fill_and_count(extra: usize, surrogates: &dyn Fn(usize) -> Vec<String>) -> (f64, f64) {
    const N: usize = 20_000;
    const BODY: usize = 1024;
    let settings = edge_config::Cache {
        ram_size: 1 << 30,
        ram_max_object: 1 << 20,
        disk: None,
        ..edge_config::Cache::default()
    };
    let storage = EdgeStorage::open(&settings, Arc::new(CacheMetrics::unregistered())).unwrap();
    let span = Span::inactive();
    let body = Bytes::from(vec![7u8; BODY]);
    let urls: Vec<String> = (0..N)
        .map(|i| format!("video.example/live/stream_1080p/segment_{i:06}.ts"))
        .collect();
    let mut key_bytes = 0usize;
    let metas: Vec<CacheMeta> = (0..N).map(|i| meta(extra, &surrogates(i))).collect();
    let region = Region::new(GLOBAL);
    for (url, meta) in urls.iter().zip(&metas) {
        let key = CacheKey::new(url.as_str(), "");
        let mut miss = storage
            .get_miss_handler(&key, meta, &span.handle())
            .await
            .unwrap();
        miss.write_body(Bytes::copy_from_slice(&body), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
        key_bytes += key.combined().len();
    }
    // Each read once, as pingora's hit path reads it: a hit's first use
    // of the kept head shares its buffer (24 bytes more per object).
    for url in &urls {
        let key = CacheKey::new(url.as_str(), "");
        let (meta, _hit) = storage.lookup(&key, &span.handle()).await.unwrap().unwrap();
        assert!(meta.is_fresh(SystemTime::now()));
    }
    let ram = storage
        .tier_usage()
        .into_iter()
        .find(|(t, _)| *t == "ram")
        .unwrap()
        .1;
    let (objects, accounted) = (ram.objects, ram.bytes);
    let grown = live(&region);
    let change = region.change();
    let allocations = (change.allocations as f64 - change.deallocations as f64) / N as f64;
    drop(metas);
    assert_eq!(objects, N as u64);
    let real = grown as f64 / N as f64;
    let key = key_bytes as f64 / N as f64;
    let overhead = real - key - BODY as f64;
    let accounted = accounted as f64 / N as f64;
    eprintln!(
        "{extra} extra fields, surrogate keys {:?}; per object: {real:.0} bytes of heap in {allocations:.1} allocations = key {key:.0} + body {BODY} + overhead {overhead:.0}; accounted {accounted:.0}",
        surrogates(0)
    );
    assert!(
        accounted >= real,
        "the tier accounts {accounted:.0} bytes per object, which really hold {real:.0}"
    );
    (overhead, real)
}
