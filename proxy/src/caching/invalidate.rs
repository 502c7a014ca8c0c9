//! Invalidation after unsafe requests (RFC 9111 §4.4): a non-error
//! response (2xx, 3xx) to a method that is not known safe (anything but
//! GET, HEAD, OPTIONS, TRACE) removes what is stored for the target URI,
//! and for the URIs in `Location` and `Content-Location` when they are
//! same-origin — every scheme, slice and `Vary` variant, in RAM, on disk
//! and fills in flight (a hard purge of the URL).

use edge_cache::key;
use edge_cache::PurgeMode;
use edge_config::RouteCache;
use http::header;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::normalize::host;
use crate::normalize::path::{self, PathOptions};

/// Whether a response to `req` invalidates: an unsafe method, a 2xx or 3xx.
pub(crate) fn applies(req: &RequestHeader, resp: &ResponseHeader) -> bool {
    let safe = matches!(
        req.method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    );
    !safe && (200..400).contains(&resp.status.as_u16())
}

/// The cache URL (authority + normalized path + query) a `Location` or
/// `Content-Location` value names, when it is same-origin with the request
/// (`authority`, `tls`): absolute (same scheme and authority), or a
/// reference resolved against `req_path` (RFC 3986 §5.2).
fn same_origin_url(
    value: &str,
    authority: &str,
    tls: bool,
    req_path: &str,
    route: &RouteCache,
    paths: &PathOptions,
) -> Option<String> {
    let value = value.trim();
    let (scheme_ok, auth, rest) = if let Some((scheme, rest)) = value.split_once("://") {
        let scheme_ok = if tls {
            scheme.eq_ignore_ascii_case("https")
        } else {
            scheme.eq_ignore_ascii_case("http")
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        (scheme_ok, Some(&rest[..end]), &rest[end..])
    } else if let Some(rest) = value.strip_prefix("//") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        (true, Some(&rest[..end]), &rest[end..])
    } else {
        (true, None, value)
    };
    if !scheme_ok {
        return None;
    }
    if let Some(a) = auth {
        let parsed = host::parse(a.as_bytes(), if tls { 443 } else { 80 }).ok()?;
        if !parsed.to_header().eq_ignore_ascii_case(authority) {
            return None;
        }
    }
    let rest = rest.split('#').next().unwrap_or_default();
    let (p, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let joined;
    let p = if p.starts_with('/') {
        p
    } else if p.is_empty() {
        if auth.is_some() {
            "/"
        } else {
            req_path
        }
    } else {
        let dir = &req_path[..req_path.rfind('/').map_or(0, |i| i + 1)];
        joined = format!("{}{p}", if dir.is_empty() { "/" } else { dir });
        &joined
    };
    let normalized = path::normalize(p.as_bytes(), paths).ok()?;
    Some(key::url(authority, &normalized.path, query, &route.ignore_query).to_string())
}

/// The URLs a response to an unsafe request invalidates: the target's
/// (`target_url`), then those of same-origin `Location` and
/// `Content-Location`.
pub(crate) fn urls(
    target_url: String,
    req: &RequestHeader,
    resp: &ResponseHeader,
    authority: &str,
    tls: bool,
    route: &RouteCache,
    paths: &PathOptions,
) -> Vec<String> {
    let mut out = vec![target_url];
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(v) = resp.headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if let Some(u) = same_origin_url(v, authority, tls, req.uri.path(), route, paths) {
            if !out.contains(&u) {
                out.push(u);
            }
        }
    }
    out
}

/// Removes every stored response of `urls` (on a blocking thread: disk).
pub(crate) async fn purge(storage: &'static edge_cache::EdgeStorage, urls: Vec<String>) {
    let _ = tokio::task::spawn_blocking(move || {
        for u in urls {
            storage.purge_url(&u, PurgeMode::Hard);
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(value: &str, tls: bool) -> Option<String> {
        let route = RouteCache {
            enabled: true,
            ..RouteCache::default()
        };
        same_origin_url(
            value,
            "a.test",
            tls,
            "/dir/item",
            &route,
            &PathOptions::default(),
        )
    }

    #[test]
    fn only_same_origin_locations_count() {
        assert_eq!(
            url("/x?b=2&a=1", false).as_deref(),
            Some("a.test/x?a=1&b=2")
        );
        assert_eq!(
            url("http://A.TEST:80/y", false).as_deref(),
            Some("a.test/y")
        );
        assert_eq!(url("https://a.test/y", true).as_deref(), Some("a.test/y"));
        assert_eq!(url("https://a.test/y", false), None, "another scheme");
        assert_eq!(url("http://b.test/y", false), None, "another host");
        assert_eq!(url("http://a.test:8080/y", false), None, "another port");
        assert_eq!(url("//a.test/z", false).as_deref(), Some("a.test/z"));
        assert_eq!(url("other", false).as_deref(), Some("a.test/dir/other"));
        assert_eq!(url("../up#frag", false).as_deref(), Some("a.test/up"));
        assert_eq!(url("/%7Euser", false).as_deref(), Some("a.test/~user"));
        assert_eq!(url("http://user@a.test/", false), None);
    }

    #[test]
    fn unsafe_methods_with_non_error_statuses() {
        let resp = |s| ResponseHeader::build(s, None).unwrap();
        let req = |m: &str| RequestHeader::build(m, b"/x", None).unwrap();
        for m in ["POST", "PUT", "DELETE", "PATCH", "PURGE", "FOO"] {
            assert!(applies(&req(m), &resp(200)), "{m}");
            assert!(applies(&req(m), &resp(303)), "{m}");
            assert!(!applies(&req(m), &resp(404)), "{m}");
            assert!(!applies(&req(m), &resp(500)), "{m}");
        }
        for m in ["GET", "HEAD", "OPTIONS", "TRACE"] {
            assert!(!applies(&req(m), &resp(200)), "{m}");
        }
    }
}
