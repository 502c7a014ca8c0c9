//! Segment prefetch: after a client is served segment *i* of a playlist the
//! cache has seen, segments *i+1 … i+k* are fetched in the background by
//! subrequests that fill the cache as a client's request would. Skipped
//! when already cached (or being fetched), when the node has
//! `prefetch_concurrency` prefetches in flight, or when the pool is
//! struggling.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use edge_cache::key;
use edge_cache::PrefetchOutcome;
use edge_config::RouteCache;
use pingora_http::RequestHeader;
use pingora_proxy::subrequest::Ctx as SubrequestCtx;
use pingora_proxy::Session;

use super::{CacheRuntime, SubTask};
use crate::pool::Pool;

/// A prefetch's place in the concurrency budget, given back when its
/// subrequest ends.
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(in_flight: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(in_flight.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts prefetches for the segments after the one `session` was served.
pub(crate) fn after_segment(
    rt: &CacheRuntime,
    session: &Session,
    route: &RouteCache,
    pool: &Pool,
    authority: &str,
    scheme: &str,
) {
    let next = ahead(rt, route, authority, session.req_header().uri.path());
    spawn(rt, session, route, pool, authority, scheme, next);
}

/// The paths (with their query) of the segments [`after_segment`] looks
/// at after the segment at `path`: the route's `prefetch` (else the
/// node's) next ones the cache has learned.
fn ahead(rt: &CacheRuntime, route: &RouteCache, authority: &str, path: &str) -> Vec<String> {
    let k = route
        .prefetch
        .unwrap_or(rt.storage.settings().video.prefetch) as usize;
    if k == 0 {
        return Vec::new();
    }
    rt.storage.successors().after(authority, path, k)
}

/// When [`after_segment`] would fetch nothing after `req`'s segment
/// because every segment it looks at is cached or fetched ahead already:
/// how many it would count as `skipped_cached` (the HTTP/1 shortcut
/// answers such a hit itself and counts them with
/// [`count_skipped_cached`]). `None`: one would be fetched (pingora's
/// subrequests do that).
pub(crate) fn all_ahead_cached(
    rt: &CacheRuntime,
    route: &RouteCache,
    authority: &str,
    scheme: &str,
    req: &RequestHeader,
) -> Option<usize> {
    let next = ahead(rt, route, authority, req.uri.path());
    next.iter()
        .all(|p| {
            let key = storage_key(route, authority, scheme, req, p);
            rt.storage.is_cached(&key) || rt.storage.prefetched_unused(&key)
        })
        .then_some(next.len())
}

/// Counts `n` segments not fetched ahead because they were cached.
pub(crate) fn count_skipped_cached(rt: &CacheRuntime, n: usize) {
    let metrics = rt.storage.metrics();
    for _ in 0..n {
        metrics.prefetch(PrefetchOutcome::SkippedCached);
    }
}

/// The storage key a prefetch of `path_and_query` (a copy of `req` for
/// another path) is stored under.
fn storage_key(
    route: &RouteCache,
    authority: &str,
    scheme: &str,
    req: &RequestHeader,
    path_and_query: &str,
) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let url = key::url(authority, path, query, &route.ignore_query);
    let primary = key::primary(&url, scheme, None, &route.key_headers, &req.headers);
    edge_cache::key::storage_key(&edge_cache::key::cache_key(primary))
}

/// After an LL-HLS playlist was served: fetches the part it hints at
/// (`EXT-X-PRELOAD-HINT`), which the origin holds until it is produced, so
/// the clients that ask for it next join a fetch already under way.
pub(crate) fn after_playlist(
    rt: &CacheRuntime,
    session: &Session,
    route: &RouteCache,
    pool: &Pool,
    authority: &str,
    scheme: &str,
) {
    let path = session.req_header().uri.path();
    let Some(hint) = preload_hint(rt, route, authority, path) else {
        return;
    };
    spawn(rt, session, route, pool, authority, scheme, vec![hint]);
}

/// The part an LL-HLS playlist at `path` hints at, when the route
/// prefetches: what [`after_playlist`] fetches.
pub(crate) fn preload_hint(
    rt: &CacheRuntime,
    route: &RouteCache,
    authority: &str,
    path: &str,
) -> Option<String> {
    let settings = rt.storage.settings();
    if route.prefetch.unwrap_or(settings.video.prefetch) == 0 {
        return None;
    }
    rt.storage
        .successors()
        .low_latency(authority, path)
        .and_then(|ll| ll.preload_hint.clone())
}

/// Prefetches each of `paths` (with their query) not cached, not fetched
/// ahead already, while the pool copes and the node has slots. Each is a
/// copy of the session's request: the caller has written the request id
/// and trace context on it (`RequestCtx::stamp_ids`).
fn spawn(
    rt: &CacheRuntime,
    session: &Session,
    route: &RouteCache,
    pool: &Pool,
    authority: &str,
    scheme: &str,
    paths: Vec<String>,
) {
    let Some(spawner) = session.subrequest_spawner.as_ref() else {
        return;
    };
    let settings = rt.storage.settings();
    let req = session.req_header();
    let metrics = rt.storage.metrics();
    for path_and_query in paths {
        let cache_key = storage_key(route, authority, scheme, req, &path_and_query);
        if rt.storage.is_cached(&cache_key) || rt.storage.prefetched_unused(&cache_key) {
            metrics.prefetch(PrefetchOutcome::SkippedCached);
            continue;
        }
        if pool.struggling() {
            metrics.prefetch(PrefetchOutcome::SkippedStruggling);
            return;
        }
        let max = settings.video.prefetch_concurrency as usize;
        let Some(slot) = Slot::take(&rt.prefetching, max) else {
            metrics.prefetch(PrefetchOutcome::SkippedBusy);
            return;
        };
        rt.storage.mark_prefetched(&cache_key);
        metrics.prefetch(PrefetchOutcome::Issued);
        let task = SubTask::Prefetch {
            path_and_query,
            _slot: slot,
        };
        spawner.spawn_background_subrequest(
            session.as_ref(),
            SubrequestCtx::builder().user_ctx(Box::new(task)).build(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let n = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&n, 2).unwrap();
        let b = Slot::take(&n, 2).unwrap();
        assert!(Slot::take(&n, 2).is_none());
        drop(a);
        assert!(Slot::take(&n, 2).is_some());
        drop(b);
        assert_eq!(n.load(Ordering::Relaxed), 0);
    }
}
