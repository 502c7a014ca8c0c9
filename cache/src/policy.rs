//! What may be stored, and for how long (RFC 9111, with video defaults for
//! when the origin says nothing).
//!
//! TTL, in order: the route's override; the origin's `s-maxage`, `max-age`
//! or `Expires`; for video, the playlist/segment defaults of `[cache.video]`;
//! the first matching `[[cache.ttl_rule]]`; `cache.default_ttl`. A live
//! playlist is never kept longer than half its target duration (applied once
//! its body has been seen, see [`playlist_ttl`]).

use std::time::{Duration, SystemTime};

use edge_config::{Cache, RouteCache, TtlMatch};
use http::StatusCode;
use pingora_cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora_cache::{CacheMeta, NoCacheReason, RespCacheable};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::age;
use crate::video::{self, Kind};

/// Statuses cacheable without explicit freshness (RFC 9110 §15.1 "heuristically cacheable").
const DEFAULT_STATUSES: &[u16] = &[200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// Where a response's TTL came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlSource {
    Route,
    Origin,
    Default,
}

/// The decision for one response.
pub struct Decision {
    pub cacheable: RespCacheable,
    pub kind: Kind,
    pub ttl_source: Option<TtlSource>,
    /// The freshness the origin gave, if any.
    pub origin_ttl: Option<Duration>,
}

fn uncacheable(reason: &'static str, kind: Kind) -> Decision {
    Decision {
        cacheable: RespCacheable::Uncacheable(NoCacheReason::Custom(reason)),
        kind,
        ttl_source: None,
        origin_ttl: None,
    }
}

fn expires_ttl(resp: &ResponseHeader, now: SystemTime) -> Option<Duration> {
    let expires = resp.headers.get(http::header::EXPIRES)?.to_str().ok()?;
    // An invalid Expires means "already expired" (RFC 9111 §5.3).
    let at = expires
        .parse::<httpdate::HttpDate>()
        .ok()
        .map(SystemTime::from)?;
    let base = resp
        .headers
        .get(http::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| d.parse::<httpdate::HttpDate>().ok())
        .map_or(now, SystemTime::from);
    Some(at.duration_since(base).unwrap_or(Duration::ZERO))
}

fn rule_ttl(cache: &Cache, path: &str, status: u16) -> Option<Duration> {
    cache.ttl_rules.iter().find_map(|rule| {
        let path_ok = match &rule.matcher {
            TtlMatch::Any => true,
            TtlMatch::Suffix(s) => path.ends_with(s.as_str()),
            TtlMatch::Regex(r) => regex_lite_match(r, path),
        };
        let status_ok = if rule.statuses.is_empty() {
            DEFAULT_STATUSES.contains(&status)
        } else {
            rule.statuses.iter().any(|s| s.contains(status))
        };
        (path_ok && status_ok).then_some(rule.ttl)
    })
}

/// TTL rules are few and consulted on misses only; compiled patterns are
/// kept (the config crate validated them: one that fails matches nothing).
fn regex_lite_match(pattern: &str, path: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::{Arc, OnceLock};
    static COMPILED: OnceLock<parking_lot::Mutex<HashMap<String, Option<Arc<regex::Regex>>>>> =
        OnceLock::new();
    let re = {
        let mut map = COMPILED.get_or_init(Default::default).lock();
        if map.len() > 256 {
            map.clear();
        }
        map.entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(pattern).ok().map(Arc::new))
            .clone()
    };
    re.is_some_and(|r| r.is_match(path))
}

/// The directives that govern edge's caching of `resp` (RFC 9213 §2.1):
/// the first targeted field (in `cache.targeted_fields` order) with a valid,
/// non-empty value, else `Cache-Control`. The flag says a targeted field won
/// (then `Expires` is ignored too).
pub fn governing(resp: &ResponseHeader, cache: &Cache) -> (Option<CacheControl>, bool) {
    for name in &cache.targeted_fields {
        if let Some(cc) = CacheControl::from_resp_headers_named(name, resp) {
            if !cc.directives.is_empty() {
                return (Some(cc), true);
            }
        }
    }
    (CacheControl::from_resp_headers(resp), false)
}

/// The stale windows a response allows (RFC 9111 §4.2.4, RFC 5861):
/// `no-cache`, `must-revalidate` and `proxy-revalidate` forbid stale
/// outright; the origin's own `stale-while-revalidate` / `stale-if-error`
/// count otherwise (also beside `s-maxage`, which is how origins ask a CDN
/// for them); the route's defaults apply only when the origin said none of
/// these, nor `s-maxage` (which for a shared cache implies
/// `proxy-revalidate`).
fn stale_windows(cc: Option<&CacheControl>, route: &RouteCache) -> (Duration, Duration) {
    let Some(c) = cc else {
        return (
            route.stale_while_revalidate.unwrap_or_default(),
            route.stale_if_error.unwrap_or_default(),
        );
    };
    if c.no_cache() || c.must_revalidate() || c.proxy_revalidate() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let secs = |v: pingora_error::Result<Option<u32>>| {
        v.ok().flatten().map(|s| Duration::from_secs(s.into()))
    };
    let (swr, sie) = (secs(c.stale_while_revalidate()), secs(c.stale_if_error()));
    let route_may = !c.has_key("s-maxage");
    let pick = |origin: Option<Duration>, default: Option<Duration>| {
        origin.or(default.filter(|_| route_may)).unwrap_or_default()
    };
    (
        pick(swr, route.stale_while_revalidate),
        pick(sie, route.stale_if_error),
    )
}

/// Decides whether `resp` (to `req`, for `path`) may be stored and builds
/// its meta. `response_delay` is how long after the request went upstream
/// the response arrived (for its age, RFC 9111 §4.2.3).
pub fn decide(
    req: &RequestHeader,
    resp: &ResponseHeader,
    route: &RouteCache,
    cache: &Cache,
    path: &str,
    response_delay: Duration,
) -> Decision {
    let now = SystemTime::now();
    let status = resp.status.as_u16();
    let content_type = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let kind = video::classify(path, content_type);
    if resp.status == StatusCode::NOT_MODIFIED || resp.status.is_informational() {
        return uncacheable("status", kind);
    }
    if resp.headers.contains_key(http::header::SET_COOKIE) && !route.store_set_cookie {
        return uncacheable("set-cookie", kind);
    }
    let (cc, targeted) = governing(resp, cache);
    if let Some(c) = &cc {
        if c.is_cacheable() == Cacheable::No {
            return uncacheable("origin says private or no-store", kind);
        }
    }
    // Stricter than RFC 9111 §3.5, which lets `public`/`s-maxage` allow it:
    // an answer to a credentialed request is stored only if the route says so.
    if req.headers.contains_key(http::header::AUTHORIZATION) && !route.store_authorization {
        return uncacheable("authorization", kind);
    }

    let origin_ttl = cc
        .as_ref()
        .and_then(|c| c.fresh_duration())
        .or_else(|| (!targeted).then(|| expires_ttl(resp, now)).flatten());
    // A server error is stored only when the origin gave it freshness
    // (RFC 9111 §3): never by a route's or a default TTL.
    if status >= 500 && origin_ttl.is_none_or(|t| t.is_zero()) {
        return uncacheable("status", kind);
    }
    let video_ttl = match kind {
        // Until the body says VOD, a playlist is assumed live.
        Kind::HlsPlaylist | Kind::DashManifest => Some(cache.video.live_playlist_max_ttl),
        Kind::Segment => Some(cache.video.segment_ttl),
        Kind::Other => None,
    };
    let default_ok = DEFAULT_STATUSES.contains(&status);
    let (ttl, source) = match (route.ttl, origin_ttl) {
        (Some(t), _) if status < 500 => (Some(t), TtlSource::Route),
        (_, Some(t)) => (Some(t), TtlSource::Origin),
        _ => (
            video_ttl
                .filter(|_| default_ok)
                .or_else(|| rule_ttl(cache, path, status))
                .or_else(|| {
                    (default_ok && !cache.default_ttl.is_zero()).then_some(cache.default_ttl)
                }),
            TtlSource::Default,
        ),
    };
    let Some(ttl) = ttl else {
        return uncacheable("no freshness information", kind);
    };
    // `no-cache` means: store, but revalidate before every use.
    let ttl = if cc.as_ref().is_some_and(|c| c.no_cache()) {
        Duration::ZERO
    } else {
        ttl
    };
    let (swr, sie) = stale_windows(cc.as_ref(), route);
    let mut header = resp.clone();
    if let Some(c) = &cc {
        c.strip_private_headers(&mut header);
    }
    strip_hop_by_hop(&mut header);
    // What `Age` says is computed on every use from the epoch below.
    header.remove_header(&http::header::AGE);
    if !header.headers.contains_key(http::header::DATE) {
        // RFC 9110 §6.6.1: a recipient with a clock adds one; it is stored.
        let _ = header.insert_header(http::header::DATE, httpdate::fmt_http_date(now));
    }
    let initial_age = age::corrected_initial_age(&resp.headers, now, response_delay);
    let epoch = age::epoch(now, initial_age);
    // A route's TTL is the operator's "keep it this long from now"; the
    // origin's and the defaults are freshness lifetimes, which the age it
    // arrived with uses up (§4.2).
    let fresh_until = match source {
        TtlSource::Route => now + ttl,
        _ => epoch + ttl,
    };
    let expires = fresh_until;
    let fresh_until = if ttl.is_zero() || fresh_until <= now {
        fresh_until.min(now.checked_sub(Duration::from_secs(1)).unwrap_or(now))
    } else {
        fresh_until
    };
    // A response that arrived stale is marked stale from a second ago at
    // the latest (freshness is kept in whole seconds); its stale windows
    // still run from when it expired (RFC 5861 §3, §4), so they are
    // lengthened by what the mark moved, rounded up to a second.
    let moved = expires.duration_since(fresh_until).unwrap_or_default();
    let moved = Duration::from_secs(moved.as_secs() + u64::from(moved.subsec_nanos() > 0));
    let lengthen = |w: Duration| if w.is_zero() { w } else { w + moved };
    let (swr, sie) = (lengthen(swr), lengthen(sie));
    let secs = |d: Duration| d.as_secs().min(u64::from(u32::MAX)) as u32;
    let mut meta = CacheMeta::new(fresh_until, now, secs(swr), secs(sie), header);
    meta.set_epoch_override(epoch);
    Decision {
        cacheable: RespCacheable::Cacheable(meta),
        kind,
        ttl_source: Some(source),
        origin_ttl,
    }
}

/// Fields a 304 never changes in a stored response (RFC 9111 §3.2): those
/// not stored at all (§3.1), the framing, and those the stored body depends
/// on (its length, range, coding; `Vary`, whose variants are keyed).
const NOT_UPDATED_BY_304: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
    "content-length",
    "content-range",
    "content-encoding",
    "vary",
];

/// The stored response freshened by a 304 (RFC 9111 §3.2, §4.3.4): every
/// field the 304 carries replaces the stored one (all its lines), except
/// [`NOT_UPDATED_BY_304`] and the fields the 304's `Connection` names.
pub fn freshen(stored: &ResponseHeader, not_modified: &ResponseHeader) -> ResponseHeader {
    let mut out = stored.clone();
    let listed = header_tokens(&not_modified.headers, http::header::CONNECTION);
    let mut done: Vec<&http::HeaderName> = Vec::new();
    for name in not_modified.headers.keys() {
        let n = name.as_str();
        if NOT_UPDATED_BY_304.contains(&n) || listed.iter().any(|l| l == n) || done.contains(&name)
        {
            continue;
        }
        done.push(name);
        out.remove_header(name);
        for v in not_modified.headers.get_all(name) {
            let _ = out.append_header(name.clone(), v.clone());
        }
    }
    out
}

/// The lower-case tokens of a comma-separated header (`Vary`, `Connection`), all its lines.
pub fn header_tokens(headers: &http::HeaderMap, name: http::header::HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Headers about one connection, not the response: never stored (RFC 9110 §7.6.1).
fn strip_hop_by_hop(header: &mut ResponseHeader) {
    for name in header_tokens(&header.headers, http::header::CONNECTION) {
        header.remove_header(&name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
    ] {
        header.remove_header(name);
    }
}

/// What a playlist's body changes about its freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaylistTtl {
    pub ttl: Duration,
    /// Live: never served stale (its stale windows are closed), so never
    /// older than `ttl`.
    pub live: bool,
}

/// The TTL a playlist gets once its body is known, if it differs from what
/// was decided at header time: live ones at most half their refresh period
/// (and `live_playlist_max_ttl`), VOD ones `vod_playlist_ttl` when the
/// origin gave no freshness.
pub fn playlist_ttl(
    kind: Kind,
    body: &[u8],
    origin_gave_ttl: bool,
    origin_ttl: Duration,
    cache: &Cache,
) -> Option<PlaylistTtl> {
    let text = std::str::from_utf8(body).ok()?;
    let info = match kind {
        Kind::HlsPlaylist => video::parse_hls(text),
        Kind::DashManifest => video::parse_mpd(text),
        _ => return None,
    };
    if info.live {
        let half = info
            .refresh
            .map_or(cache.video.live_playlist_max_ttl, |r| r / 2);
        let cap = half.min(cache.video.live_playlist_max_ttl);
        Some(PlaylistTtl {
            ttl: if origin_gave_ttl {
                origin_ttl.min(cap)
            } else {
                cap
            },
            live: true,
        })
    } else if origin_gave_ttl {
        None
    } else {
        Some(PlaylistTtl {
            ttl: cache.video.vod_playlist_ttl,
            live: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(
        req: &RequestHeader,
        resp: &ResponseHeader,
        route: &RouteCache,
        cache: &Cache,
        path: &str,
    ) -> Decision {
        super::decide(req, resp, route, cache, path, Duration::ZERO)
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn ttl(d: &Decision) -> Option<Duration> {
        match &d.cacheable {
            RespCacheable::Cacheable(m) => Some(
                m.fresh_until()
                    .duration_since(m.created())
                    .unwrap_or_default(),
            ),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    fn enabled() -> RouteCache {
        RouteCache {
            enabled: true,
            ..RouteCache::default()
        }
    }

    #[test]
    fn connection_headers_are_not_stored() {
        let r = resp(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("connection", "keep-alive, x-conn"),
                ("keep-alive", "timeout=5"),
                ("x-conn", "1"),
                ("etag", "\"a\""),
            ],
        );
        let RespCacheable::Cacheable(m) =
            decide(&req(&[]), &r, &enabled(), &Cache::default(), "/a").cacheable
        else {
            panic!()
        };
        let h = m.headers();
        assert!(
            h.get("connection").is_none()
                && h.get("keep-alive").is_none()
                && h.get("x-conn").is_none()
        );
        assert!(h.get("etag").is_some());
    }

    #[test]
    fn origin_max_age_and_s_maxage() {
        let c = Cache::default();
        let d = decide(
            &req(&[]),
            &resp(200, &[("cache-control", "max-age=60")]),
            &enabled(),
            &c,
            "/a",
        );
        assert_eq!(ttl(&d), Some(Duration::from_secs(60)));
        let d = decide(
            &req(&[]),
            &resp(200, &[("cache-control", "max-age=60, s-maxage=600")]),
            &enabled(),
            &c,
            "/a",
        );
        assert_eq!(ttl(&d), Some(Duration::from_secs(600)));
    }

    #[test]
    fn private_no_store_set_cookie_and_authorization_are_not_stored() {
        let c = Cache::default();
        let r = enabled();
        for h in [
            ("cache-control", "private, max-age=60"),
            ("cache-control", "no-store"),
        ] {
            assert!(
                ttl(&decide(&req(&[]), &resp(200, &[h]), &r, &c, "/a")).is_none(),
                "{h:?}"
            );
        }
        let cookie = resp(
            200,
            &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
        );
        assert!(ttl(&decide(&req(&[]), &cookie, &r, &c, "/a")).is_none());
        let allowed = RouteCache {
            store_set_cookie: true,
            ..enabled()
        };
        assert!(ttl(&decide(&req(&[]), &cookie, &allowed, &c, "/a")).is_some());
        let authed = req(&[("authorization", "Bearer x")]);
        assert!(ttl(&decide(
            &authed,
            &resp(200, &[("cache-control", "max-age=60")]),
            &r,
            &c,
            "/a"
        ))
        .is_none());
        assert!(
            ttl(&decide(
                &authed,
                &resp(200, &[("cache-control", "public, s-maxage=60")]),
                &r,
                &c,
                "/a"
            ))
            .is_none(),
            "only the route allows storing answers to credentialed requests"
        );
        let trusting = RouteCache {
            store_authorization: true,
            ..enabled()
        };
        assert!(ttl(&decide(
            &authed,
            &resp(200, &[("cache-control", "max-age=60")]),
            &trusting,
            &c,
            "/a"
        ))
        .is_some());
    }

    #[test]
    fn silent_origins_get_video_defaults_and_rules() {
        let c = Cache::default();
        let seg = decide(&req(&[]), &resp(200, &[]), &enabled(), &c, "/v/seg_1.ts");
        assert_eq!(ttl(&seg), Some(c.video.segment_ttl));
        let other = decide(&req(&[]), &resp(200, &[]), &enabled(), &c, "/page.html");
        assert!(
            ttl(&other).is_none(),
            "no freshness, no default: not stored"
        );
        let route = RouteCache {
            ttl: Some(Duration::from_secs(5)),
            ..enabled()
        };
        let forced = decide(
            &req(&[]),
            &resp(200, &[("cache-control", "max-age=600")]),
            &route,
            &c,
            "/a",
        );
        assert_eq!(ttl(&forced), Some(Duration::from_secs(5)));
        // A server error is stored only with the origin's explicit
        // freshness (RFC 9111 §3), never a route's or a default TTL.
        for (status, cc, want) in [
            (503, "max-age=60", Some(60)),
            (500, "s-maxage=7", Some(7)),
            (502, "", None),
            (504, "no-cache", None),
            (503, "max-age=0", None),
        ] {
            let headers: &[(&str, &str)] = if cc.is_empty() {
                &[]
            } else {
                &[("cache-control", cc)]
            };
            for r in [enabled(), route.clone()] {
                assert_eq!(
                    ttl(&decide(&req(&[]), &resp(status, headers), &r, &c, "/a")),
                    want.map(Duration::from_secs),
                    "{status} {cc}"
                );
            }
        }
    }

    #[test]
    fn stale_windows_come_from_the_origin_or_the_route() {
        let c = Cache::default();
        let route = RouteCache {
            stale_if_error: Some(Duration::from_secs(30)),
            ..enabled()
        };
        let d = decide(
            &req(&[]),
            &resp(200, &[("cache-control", "max-age=1")]),
            &route,
            &c,
            "/a",
        );
        let RespCacheable::Cacheable(m) = d.cacheable else {
            panic!()
        };
        assert_eq!(m.stale_if_error_sec(), 30);
        let d = decide(
            &req(&[]),
            &resp(200, &[("cache-control", "max-age=1, stale-if-error=5")]),
            &route,
            &c,
            "/a",
        );
        let RespCacheable::Cacheable(m) = d.cacheable else {
            panic!()
        };
        assert_eq!(m.stale_if_error_sec(), 5);
    }

    /// A response that arrives stale by less than a second (its `Date`'s
    /// second, a slow first byte) keeps its whole stale windows from when it
    /// expired: they end no earlier than expiry plus the window.
    #[test]
    fn a_response_that_arrived_stale_keeps_its_stale_windows_from_expiry() {
        let c = Cache::default();
        for (age, max_age) in [(3u64, 3u64), (1, 1), (4, 3), (10, 3), (0, 0)] {
            let cc = format!("max-age={max_age}, stale-if-error=10, stale-while-revalidate=4");
            let age = age.to_string();
            let before = SystemTime::now();
            let d = decide(
                &req(&[]),
                &resp(200, &[("cache-control", &cc), ("age", &age)]),
                &enabled(),
                &c,
                "/a",
            );
            let RespCacheable::Cacheable(m) = d.cacheable else {
                panic!("{cc} age {age}")
            };
            let age: u64 = age.parse().unwrap();
            // Expired at (arrival - age + max_age), at the latest `before`.
            let expired = before + Duration::from_secs(max_age) - Duration::from_secs(age);
            assert!(m.fresh_until() < before, "{cc} age {age}: stale on arrival");
            let sie_end = m.fresh_until() + Duration::from_secs(m.stale_if_error_sec().into());
            let swr_end =
                m.fresh_until() + Duration::from_secs(m.stale_while_revalidate_sec().into());
            assert!(
                sie_end + Duration::from_millis(50) >= expired + Duration::from_secs(10),
                "{cc} age {age}: stale-if-error ends early"
            );
            assert!(
                swr_end + Duration::from_millis(50) >= expired + Duration::from_secs(4),
                "{cc} age {age}: stale-while-revalidate ends early"
            );
            // And by at most the second the mark moved.
            assert!(
                sie_end <= expired + Duration::from_secs(11) + Duration::from_millis(50),
                "{cc} age {age}: stale-if-error ends late"
            );
        }
    }

    #[test]
    fn live_playlists_are_kept_at_most_half_a_target_duration() {
        let c = Cache::default();
        let live = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg_1.ts\n";
        assert_eq!(
            playlist_ttl(Kind::HlsPlaylist, live, true, Duration::from_secs(60), &c),
            Some(PlaylistTtl {
                ttl: Duration::from_secs(1),
                live: true
            })
        );
        let vod = b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nseg_1.ts\n#EXT-X-ENDLIST\n";
        assert_eq!(
            playlist_ttl(Kind::HlsPlaylist, vod, true, Duration::from_secs(60), &c),
            None
        );
        assert_eq!(
            playlist_ttl(Kind::HlsPlaylist, vod, false, Duration::ZERO, &c),
            Some(PlaylistTtl {
                ttl: c.video.vod_playlist_ttl,
                live: false
            })
        );
    }
}
