//! The cache on the request path: which requests use it and how
//! (`plan`), keys, what may be stored, `Vary`, `X-Cache`, the metrics, and
//! the two jobs done with subrequests: slices ([`slice`]) and segment
//! prefetch ([`prefetch`]).
//!
//! A request on a route with `[route.cache]` takes one of three ways:
//!
//! ```text
//! bypass   not GET/HEAD, or a `bypass` condition holds: straight upstream,
//!          nothing stored                                   X-Cache: BYPASS
//! whole    pingora-cache with EdgeStorage: lookup, coalesced miss, store,
//!          revalidation, stale serving, ranges from the stored object
//! sliced   (GET of a large object, or a range of one not seen yet) the
//!          response is assembled from fixed-size slices, each fetched with
//!          a subrequest through the whole-object way under its own key
//! ```

pub(crate) mod blocking;
pub(crate) mod directives;
pub mod fast;
pub(crate) mod fields;
pub(crate) mod h1_head;
pub(crate) mod head_memo;
pub(crate) mod invalidate;
pub mod prefetch;
pub(crate) mod range;
pub mod slice;
mod url_facts;
pub(crate) mod vary;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use edge_cache::key;
use edge_cache::policy::{self, TtlSource};
use edge_cache::video::{self, Kind};
use edge_cache::{EdgeHit, EdgeStorage, FillHints, Status, Tier};
use edge_config::{Bypass, Cache, RouteCache};
use http::header;
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::{CacheMeta, CacheOptionOverrides, CachePhase, NoCacheReason, RespCacheable};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::route::matcher::{parse_cookies, query_value};

/// The node's cache as the proxy uses it; outlives reloads.
pub struct CacheRuntime {
    pub storage: &'static EdgeStorage,
    lock: ArcSwap<LockSettings>,
    /// Total length of objects seen, by URL: decides slicing.
    sizes: url_facts::UrlFacts<u64>,
    /// URLs whose origin answered a slice's `Range` with the whole object:
    /// they are fetched and stored whole, as slice 0, and ranges are served
    /// from that.
    ignores_ranges: url_facts::UrlFacts<()>,
    /// Prefetches in flight.
    pub(crate) prefetching: Arc<AtomicUsize>,
    /// Whole RAM hits' heads, rendered once per object.
    pub(crate) heads: head_memo::Memo,
}

struct LockSettings {
    lock: &'static CacheKeyLockImpl,
    timeout: Duration,
}

fn leak_lock(timeout: Duration) -> &'static CacheKeyLockImpl {
    // One per distinct lock timeout over the life of the process.
    Box::leak(CacheLock::new_boxed(timeout))
}

impl CacheRuntime {
    pub fn new(storage: &'static EdgeStorage) -> Self {
        let timeout = storage.settings().lock_timeout;
        Self {
            storage,
            lock: ArcSwap::from_pointee(LockSettings {
                lock: leak_lock(timeout),
                timeout,
            }),
            sizes: url_facts::UrlFacts::new(100_000),
            ignores_ranges: url_facts::UrlFacts::new(100_000),
            prefetching: Arc::new(AtomicUsize::new(0)),
            heads: head_memo::Memo::default(),
        }
    }

    /// Readies new `[cache]` settings: what can fail (a disk tier at a new
    /// path) is done here, aside; [`Self::commit`] then cannot fail.
    pub fn prepare(&self, cache: &Cache) -> std::io::Result<edge_cache::PreparedCache> {
        self.storage.prepare(cache)
    }

    /// Applies prepared `[cache]` settings (tier sizes, disk, lock timeout).
    pub fn commit(&self, cache: &Cache, prepared: edge_cache::PreparedCache) {
        if self.lock.load().timeout != cache.lock_timeout {
            self.lock.store(Arc::new(LockSettings {
                lock: leak_lock(cache.lock_timeout),
                timeout: cache.lock_timeout,
            }));
        }
        self.storage.commit_settings(cache, prepared);
    }

    pub(crate) fn known_size(&self, url: &str) -> Option<u64> {
        self.sizes.get(url)
    }

    pub(crate) fn remember_size(&self, url: &str, size: u64) {
        self.sizes.insert(url, size);
    }

    /// Whether `url`'s origin was seen ignoring `Range` (within the hour).
    pub(crate) fn ignores_ranges(&self, url: &str) -> bool {
        self.ignores_ranges.get(url).is_some()
    }

    pub(crate) fn remember_ignores_ranges(&self, url: &str) {
        self.ignores_ranges.insert(url, ());
    }

    /// Turns pingora-cache on for this request.
    pub(crate) fn enable(&self, session: &mut Session) {
        let lock = self.lock.load();
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(lock.timeout);
        session
            .cache
            .enable(self.storage, None, None, Some(lock.lock), Some(overrides));
        let max = usize::try_from(self.storage.max_object()).unwrap_or(usize::MAX);
        session.cache.set_max_file_size_bytes(max.max(1));
    }
}

/// What a subrequest edge made is for (its `user_ctx`).
pub enum SubTask {
    /// Slice `index` (of `size` bytes) of the parent's URL.
    Slice { index: u64, size: u64 },
    /// The next segment after one a client fetched.
    Prefetch {
        path_and_query: String,
        _slot: prefetch::Slot,
    },
    /// A whole object its parent serves: the parent's request, or this
    /// path and query (a blocking playlist reload and its fallback).
    Fetch { path_and_query: Option<String> },
}

/// The plain facts of a [`SubTask`] the request keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sub {
    Slice { index: u64, size: u64 },
    Prefetch,
    Fetch,
}

/// How a request uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// The route does not cache, or a bypass condition holds.
    Bypass,
    Whole,
    Sliced,
}

/// Per-request cache state.
#[derive(Default)]
pub struct CacheCtx {
    pub way: Option<Way>,
    /// `http` or `https`: part of every key.
    pub scheme: &'static str,
    /// Authority + path + normalized query.
    pub url: key::Url,
    pub sub: Option<Sub>,
    pub tier: Option<Tier>,
    pub status: Option<Status>,
    /// Set by the slice path, which counts its bytes itself.
    pub counted: bool,
    /// From the request going upstream to its response head (for the
    /// response's age, RFC 9111 §4.2.3).
    pub response_delay: Duration,
    /// The 304 that revalidated the stored response, kept until the stored
    /// header is freshened with it.
    pub not_modified: Option<Box<ResponseHeader>>,
    /// The status of the upstream's response head, when one came.
    pub upstream_status: Option<u16>,
    /// Why the request was forwarded when the cache had it (a client's
    /// `no-cache`: `request`), for `Cache-Status`.
    pub fwd: Option<&'static str>,
    /// The request's cache directives that count.
    pub directives: directives::RequestDirectives,
}

/// A bypass condition holds: the value is there and not empty or `0`.
fn bypassed(conditions: &[Bypass], req: &RequestHeader) -> bool {
    let on = |v: Option<&str>| v.is_some_and(|v| !v.is_empty() && v != "0");
    conditions.iter().any(|c| match c {
        Bypass::Header(name) => on(req.headers.get(name.as_str()).and_then(|v| v.to_str().ok())),
        Bypass::Cookie(name) => parse_cookies(&req.headers)
            .into_iter()
            .any(|(k, v)| k == *name && on(Some(&v))),
        Bypass::Query(name) => on(query_value(req.uri.query(), name).as_deref()),
    })
}

/// One single range with a known start, as slicing needs it.
pub(crate) fn single_range(req: &RequestHeader) -> Option<(Option<u64>, Option<u64>)> {
    let v = req.headers.get(header::RANGE)?.to_str().ok()?;
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let start = if a.is_empty() {
        None
    } else {
        Some(a.parse().ok()?)
    };
    let end = if b.is_empty() {
        None
    } else {
        Some(b.parse().ok()?)
    };
    if start.is_none() && end.is_none() {
        return None;
    }
    Some((start, end))
}

/// Decides how this request uses the cache.
pub(crate) fn plan(
    rt: &CacheRuntime,
    route: &RouteCache,
    req: &RequestHeader,
    authority: &str,
    scheme: &str,
    sub: Option<&Sub>,
    can_spawn: bool,
) -> (Way, key::Url) {
    let get = req.method == http::Method::GET;
    if !route.enabled || !(get || req.method == http::Method::HEAD) || bypassed(&route.bypass, req)
    {
        return (Way::Bypass, key::Url::default());
    }
    let url = key::url(
        authority,
        req.uri.path(),
        req.uri.query(),
        &route.ignore_query,
    );
    if sub.is_some() || !route.slice || !can_spawn {
        return (Way::Whole, url);
    }
    let threshold = rt.storage.settings_now().slice_threshold;
    let sliced = match rt.known_size(&url) {
        Some(size) => size >= threshold,
        // Not seen since start: sliced if stored in slices, or if it is a
        // range of an object not stored whole (then only the slices the
        // range needs are fetched).
        None => {
            let stored = |slice: Option<u64>| {
                let primary = key::primary(&url, scheme, slice, &route.key_headers, &req.headers);
                rt.storage
                    .is_cached(&edge_cache::key::storage_key(&edge_cache::key::cache_key(
                        primary,
                    )))
            };
            get && if single_range(req).is_some() {
                !stored(None)
            } else {
                stored(Some(0))
            }
        }
    };
    (if sliced { Way::Sliced } else { Way::Whole }, url)
}

/// The cache key of this request.
pub(crate) fn cache_key(
    ctx: &CacheCtx,
    route: &RouteCache,
    req: &RequestHeader,
) -> pingora_cache::CacheKey {
    let slice = match ctx.sub {
        Some(Sub::Slice { index, .. }) => Some(index),
        _ => None,
    };
    edge_cache::key::cache_key(key::primary(
        &ctx.url,
        ctx.scheme,
        slice,
        &route.key_headers,
        &req.headers,
    ))
}

fn content_length(resp: &ResponseHeader) -> Option<u64> {
    resp.headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `Content-Range: bytes a-b/total` → (a, b, total).
pub(crate) fn content_range(resp: &ResponseHeader) -> Option<(u64, u64, u64)> {
    let v = resp.headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

fn uncacheable(why: &'static str) -> RespCacheable {
    RespCacheable::Uncacheable(NoCacheReason::Custom(why))
}

/// Decides whether `resp` is stored (and with what hints for the storage).
pub(crate) fn response_cacheable(
    rt: &CacheRuntime,
    ctx: &mut CacheCtx,
    route: &RouteCache,
    req: &RequestHeader,
    resp: &ResponseHeader,
    stored: Option<&CacheMeta>,
) -> RespCacheable {
    // A revalidation: pingora merged only a few fields of the 304 into the
    // stored header; every field counts (RFC 9111 §4.3.4).
    let freshened;
    let resp = match (ctx.not_modified.take(), stored) {
        (Some(nm), Some(meta)) => {
            let mut stored_header = meta.response_header_copy();
            // Its age was counted into the stored epoch; the 304's own
            // `Age` (if any) is what counts now.
            stored_header.remove_header(&header::AGE);
            freshened = policy::freshen(&stored_header, &nm);
            &freshened
        }
        _ => resp,
    };
    if ctx.directives.no_store {
        return uncacheable("the request says no-store");
    }
    let settings = rt.storage.settings();
    match ctx.sub {
        Some(Sub::Slice { index, size }) => {
            let fits = match resp.status.as_u16() {
                206 => content_range(resp).is_some_and(|(a, b, total)| {
                    a == index.saturating_mul(size)
                        && b.saturating_add(1)
                            == index.saturating_add(1).saturating_mul(size).min(total)
                }),
                // An origin that ignores ranges: slice 0 is the whole object.
                200 => index == 0,
                _ => false,
            };
            if !fits {
                return uncacheable("response does not match the slice asked for");
            }
        }
        _ => {
            if resp.status.as_u16() == 206 {
                return uncacheable("partial response to a whole-object request");
            }
            if let Some(len) = content_length(resp).filter(|_| resp.status.as_u16() == 200) {
                rt.remember_size(&ctx.url, len);
                if route.slice && len >= settings.slice_threshold {
                    // Cached in slices from the next request on.
                    return uncacheable("large object: cached in slices");
                }
            }
        }
    }
    if policy::header_tokens(&resp.headers, header::VARY)
        .iter()
        .any(|t| t == "*")
    {
        return uncacheable("Vary: *");
    }
    let d = policy::decide(
        req,
        resp,
        route,
        &settings,
        req.uri.path(),
        ctx.response_delay,
    );
    match d.cacheable {
        RespCacheable::Cacheable(mut meta) => {
            let surrogate_keys = surrogate_keys(&resp.headers);
            meta.extensions_mut().insert(FillHints {
                kind: d.kind,
                ttl_source: d.ttl_source.unwrap_or(TtlSource::Default),
                origin_ttl: d.origin_ttl,
                surrogate_keys,
            });
            RespCacheable::Cacheable(meta)
        }
        other => other,
    }
}

/// A surrogate key longer than this many bytes is not indexed.
const MAX_SURROGATE_KEY: usize = 1024;

/// Bytes of surrogate keys indexed per response, at most.
const MAX_SURROGATE_KEYS: usize = 16 * 1024;

/// The keys of a response's `Surrogate-Key` fields (space-separated
/// tokens, as Fastly reads them) that purges by surrogate key find: each
/// once, in the origin's order, none longer than [`MAX_SURROGATE_KEY`]
/// bytes, and the first [`MAX_SURROGATE_KEYS`] bytes of them: one
/// response's keys are indexed under the cache's one lock, and an origin
/// may send a megabyte of them.
fn surrogate_keys(headers: &http::HeaderMap) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut room = MAX_SURROGATE_KEYS;
    let mut out = Vec::new();
    let tokens = headers
        .get_all("surrogate-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(str::split_ascii_whitespace);
    for key in tokens {
        if key.len() > MAX_SURROGATE_KEY || !seen.insert(key) {
            continue;
        }
        let Some(left) = room.checked_sub(key.len()) else {
            break;
        };
        room = left;
        out.push(key.to_string());
    }
    out
}

/// Records the tier of a hit and applies the request's directives to it.
pub(crate) fn on_hit(
    rt: &CacheRuntime,
    ctx: &mut CacheCtx,
    meta: &CacheMeta,
    hit: &pingora_cache::storage::HitHandler,
    is_fresh: bool,
) -> Option<pingora_cache::ForcedFreshness> {
    if let Some(h) = hit.as_any().downcast_ref::<EdgeHit>() {
        ctx.tier = Some(h.tier);
    }
    if ctx.directives == directives::RequestDirectives::default() {
        return None;
    }
    let (cc, _) = policy::governing(meta.response_header(), &rt.storage.settings());
    let origin_allows_stale = cc.is_none_or(|c| {
        !(c.no_cache() || c.must_revalidate() || c.proxy_revalidate() || c.has_key("s-maxage"))
    });
    let forced = ctx.directives.on_hit(
        meta,
        is_fresh,
        origin_allows_stale,
        std::time::SystemTime::now(),
    );
    if forced == Some(pingora_cache::ForcedFreshness::ForceExpired) {
        ctx.fwd = Some("request");
    }
    forced
}

/// The cache status of a response on its way to the client.
pub(crate) fn status_of(session: &Session, ctx: &CacheCtx) -> Status {
    if ctx.way != Some(Way::Whole) {
        return Status::Bypass;
    }
    match session.cache.phase() {
        CachePhase::Hit => Status::Hit,
        CachePhase::Stale | CachePhase::StaleUpdating => Status::Stale,
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => Status::Revalidated,
        _ => Status::Miss,
    }
}

/// Index into the tier labels of the metrics.
pub(crate) fn tier_index(tier: Option<Tier>) -> usize {
    match tier {
        Some(Tier::Ram | Tier::Fill) => 0,
        Some(Tier::Disk) => 1,
        None => 2,
    }
}

/// `X-Cache` value: the status, and for responses from the cache the tier.
pub(crate) fn x_cache(status: Status, tier: Option<Tier>) -> &'static str {
    // Static, so the field goes on without an allocation (`HeaderValue::from_static`).
    let ram = matches!(tier, Some(Tier::Ram | Tier::Fill));
    match (status, tier) {
        (Status::Hit, Some(_)) if ram => "HIT RAM",
        (Status::Hit, Some(_)) => "HIT DISK",
        (Status::Stale, Some(_)) if ram => "STALE RAM",
        (Status::Stale, Some(_)) => "STALE DISK",
        (Status::Revalidated, Some(_)) if ram => "REVALIDATED RAM",
        (Status::Revalidated, Some(_)) => "REVALIDATED DISK",
        _ => status.as_header(),
    }
}

/// Whether bytes of a response with this status came from the cache.
pub(crate) fn from_cache(status: Status) -> bool {
    matches!(status, Status::Hit | Status::Stale | Status::Revalidated)
}

/// The kind of a response for prefetching: by path, then content type.
pub(crate) fn kind_of(req: &RequestHeader, resp: &ResponseHeader) -> Kind {
    video::classify(
        req.uri.path(),
        resp.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Sets `X-Cache`, `Age`, `Cache-Status` and the rest of [`fields`] on a
/// response the proxy sends (not the fast or sliced paths, which do it
/// themselves), and records its cache status.
/// [`client_fields`] of a response of a route that does not cache (`X-Cache`
/// from `status`, an `Age` of 0 where the backend gave none), its cache
/// fields already stripped.
fn uncached_fields(
    status: Status,
    tier: Option<Tier>,
    resp: &mut ResponseHeader,
) -> pingora_error::Result<()> {
    resp.insert_header(
        crate::names::X_CACHE,
        http::HeaderValue::from_static(x_cache(status, tier)),
    )?;
    if !resp.headers.contains_key(header::AGE) {
        resp.insert_header(header::AGE, http::HeaderValue::from_static("0"))?;
    }
    Ok(())
}

/// [`client_fields`] of a request that does not go through the cache (no
/// way: `BYPASS`), without a pingora session (`service/lean_pass.rs`).
pub(crate) fn bypass_fields(
    ctx: &mut CacheCtx,
    resp: &mut ResponseHeader,
) -> pingora_error::Result<()> {
    bypass_x_cache(ctx);
    strip_cache_headers(resp);
    uncached_fields(Status::Bypass, ctx.tier, resp)
}

/// What [`bypass_fields`] records of a request that does not go through
/// the cache, and the `X-Cache` it gets (a head written from the
/// backend's lines, `service/lean_head.rs`).
pub(crate) fn bypass_x_cache(ctx: &mut CacheCtx) -> &'static str {
    ctx.status = Some(Status::Bypass);
    x_cache(Status::Bypass, ctx.tier)
}

pub(crate) fn client_fields(
    rt: Option<&CacheRuntime>,
    session: &Session,
    ctx: &mut CacheCtx,
    route_caches: bool,
    resp: &mut ResponseHeader,
) -> pingora_error::Result<()> {
    let status = status_of(session, ctx);
    ctx.status = Some(status);
    strip_cache_headers(resp);
    let Some(rt) = rt.filter(|_| route_caches) else {
        return uncached_fields(status, ctx.tier, resp);
    };
    let phase = if ctx.way == Some(Way::Whole) {
        Some(session.cache.phase())
    } else {
        None
    };
    let meta = if phase.is_some() {
        session.cache.maybe_cache_meta()
    } else {
        None
    };
    let storing = matches!(phase, Some(CachePhase::Miss | CachePhase::Expired)) && meta.is_some();
    let fwd = ctx.fwd.or(match phase {
        Some(CachePhase::Expired) => Some("stale"),
        _ => None,
    });
    let served = fields::Served {
        status,
        tier: ctx.tier,
        stored: meta.map(|m| (m.fresh_until(), m.epoch())),
        storing,
        fwd_status: ctx.upstream_status,
        fwd,
        key: ctx.url.as_str(),
        kind: kind_of(session.req_header(), resp),
    };
    fields::apply(
        resp,
        &served,
        &rt.storage.settings(),
        std::time::SystemTime::now(),
    )
}

/// Removes what only the cache needs from a response to a client.
pub(crate) fn strip_cache_headers(resp: &mut ResponseHeader) {
    static NAMES: [http::HeaderName; 3] = [
        crate::names::SURROGATE_KEY,
        crate::names::SURROGATE_CONTROL,
        crate::names::X_CACHE,
    ];
    if crate::names::any_present(&resp.headers, &NAMES) {
        for name in &NAMES {
            resp.remove_header(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrogate_keys_are_taken_once_in_order_and_bounded() {
        let keys = |fields: &[&str]| {
            let mut h = http::HeaderMap::new();
            for f in fields {
                h.append("surrogate-key", http::HeaderValue::from_str(f).unwrap());
            }
            surrogate_keys(&h)
        };
        assert!(keys(&[]).is_empty());
        assert!(keys(&["", "  \t "]).is_empty());
        assert_eq!(keys(&["a  b\tc", "b d", "a"]), ["a", "b", "c", "d"]);
        assert_eq!(
            keys(&["Vod vod VOD"]),
            ["Vod", "vod", "VOD"],
            "keys are case-sensitive"
        );
        let long = "k".repeat(MAX_SURROGATE_KEY + 1);
        let at_limit = "k".repeat(MAX_SURROGATE_KEY);
        assert_eq!(
            keys(&[&format!("x {long} y {at_limit}")]),
            ["x", "y", &at_limit]
        );
        // A megabyte of distinct keys: the first 16 KiB of them.
        let many: Vec<String> = (0..100_000).map(|i| format!("key-{i:06}")).collect();
        let got = keys(&[&many.join(" ")]);
        // (Each is 10 bytes: as many as fit whole.)
        assert_eq!(got[..], many[..MAX_SURROGATE_KEYS / 10]);
        // The same key a hundred thousand times is one key.
        assert_eq!(keys(&[&vec!["same"; 100_000].join(" ")]), ["same"]);
    }

    #[test]
    fn x_cache_names_the_status_and_for_stored_bytes_the_tier() {
        let statuses = [
            Status::Hit,
            Status::Miss,
            Status::Stale,
            Status::Revalidated,
            Status::Bypass,
        ];
        for status in statuses {
            for tier in [None, Some(Tier::Ram), Some(Tier::Disk), Some(Tier::Fill)] {
                let expected = match tier {
                    Some(t) if from_cache(status) => {
                        format!("{} {}", status.as_header(), t.as_str())
                    }
                    _ => status.as_header().to_string(),
                };
                assert_eq!(x_cache(status, tier), expected, "{status:?} {tier:?}");
            }
        }
    }

    fn req(range: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/a.mp4?x=1", None).unwrap();
        if let Some(v) = range {
            r.insert_header("range", v).unwrap();
        }
        r
    }

    #[test]
    fn single_ranges_only() {
        assert_eq!(
            single_range(&req(Some("bytes=10-20"))),
            Some((Some(10), Some(20)))
        );
        assert_eq!(
            single_range(&req(Some("bytes=10-"))),
            Some((Some(10), None))
        );
        assert_eq!(
            single_range(&req(Some("bytes=-500"))),
            Some((None, Some(500)))
        );
        assert_eq!(single_range(&req(Some("bytes=0-1,5-6"))), None);
        assert_eq!(single_range(&req(Some("bytes=-"))), None);
        assert_eq!(single_range(&req(Some("items=1-2"))), None);
        assert_eq!(single_range(&req(None)), None);
    }

    #[test]
    fn bypass_conditions() {
        let mut r = req(None);
        r.insert_header("x-debug", "1").unwrap();
        r.insert_header("cookie", "a=b; nocache=0").unwrap();
        assert!(bypassed(&[Bypass::Header("x-debug".into())], &r));
        assert!(
            !bypassed(&[Bypass::Cookie("nocache".into())], &r),
            "0 is off"
        );
        assert!(bypassed(&[Bypass::Query("x".into())], &r));
        assert!(!bypassed(&[Bypass::Query("y".into())], &r));
    }

    #[test]
    fn content_ranges_parse() {
        let mut r = ResponseHeader::build(206, None).unwrap();
        r.insert_header("content-range", "bytes 0-99/1000").unwrap();
        assert_eq!(content_range(&r), Some((0, 99, 1000)));
        r.insert_header("content-range", "bytes */1000").unwrap();
        assert_eq!(content_range(&r), None);
    }
}
