//! The `steer` route action (Traffic Router's HTTP mode, Open Connect's
//! playback steering): for the client's location, the nodes that hold or
//! own an object, nearest healthy site with headroom first, as a ranked
//! JSON list or a 302 to the best. The request names the object with
//! `?url=` (absolute, or a path on the request's host), or is the object
//! itself (any URL on a steering route).
//!
//! The proxy finds the route that would serve the object and computes its
//! cache URL and primary key (what digests and owners are computed
//! from); the ranking is the node's [`Steerer`] (set by `app`, which
//! holds the GeoDNS state and the nodes' digests).

use std::net::IpAddr;

use serde::Serialize;

/// What a steering decision starts from.
#[derive(Debug, Clone)]
pub struct SteerQuery<'a> {
    pub client: IpAddr,
    /// The object's host (lower-case, no port).
    pub host: &'a str,
    /// The object's cache URL (authority, path, normalized query): what
    /// digests hold.
    pub object: &'a str,
    /// The primary hash of its whole-object key: what owners are computed from.
    pub primary: [u8; 16],
    /// The object's path and query, appended to a node's base URL.
    pub path_and_query: &'a str,
}

/// A node (or a site, when its nodes are unknown) that can serve the object.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SteerTarget {
    /// Where to fetch the object: the node's base URL + path and query.
    pub url: String,
    pub site: String,
    pub node: Option<String>,
    /// The node's digest says it holds the object.
    pub holds: bool,
    /// The node owns the object in its site (rendezvous hashing).
    pub owner: bool,
    pub distance_km: Option<f64>,
    pub utilization: Option<f64>,
}

/// The ranking, and where the client was found (for the JSON answer).
#[derive(Debug, Clone, Default)]
pub struct SteerAnswer {
    pub targets: Vec<SteerTarget>,
    pub location: serde_json::Value,
}

/// Ranks the nodes for a query.
pub trait Steerer: Send + Sync {
    fn steer(&self, q: &SteerQuery<'_>) -> SteerAnswer;
}

/// An object named by URL, as the request path would key it.
#[derive(Debug, Clone)]
pub struct Object {
    /// Lower-case, no port.
    pub host: String,
    /// The cache URL (what digests hold and purges match).
    pub url: edge_cache::key::Url,
    /// The primary hash of its whole-object key (what owners are computed from).
    pub primary: [u8; 16],
    /// The storage key of its whole-object entry (no `Vary` variant).
    pub storage_key: String,
    /// The storage key of its first slice (objects stored in slices).
    pub first_slice_key: String,
    pub path_and_query: String,
    /// The route that would serve it, and that route's pool.
    pub route: Option<String>,
    pub pool: Option<String>,
    pub cached: bool,
}

/// The first `name` parameter of a query string (`application/x-www-form-
/// urlencoded`: `+` is a space), percent-decoded. Bytes that are not UTF-8
/// once decoded are an error: a lossy decoding (U+FFFD for each) would
/// name another object than the one meant, silently.
pub fn param(query: Option<&str>, name: &str) -> Result<Option<String>, String> {
    let Some(query) = query else {
        return Ok(None);
    };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(k).as_deref() != Ok(name) {
            continue;
        }
        return decode(v)
            .map(Some)
            .map_err(|_| format!("{name}: not UTF-8 once percent-decoded"));
    }
    Ok(None)
}

/// Form-decodes `s`: `+` is a space, `%XX` a byte (a `%` not followed
/// by two hex digits stays as it is).
fn decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let byte = match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                i += 2;
                h << 4 | l
            }
            (b'+', _, _) => b' ',
            (c, _, _) => c,
        };
        out.push(byte);
        i += 1;
    }
    String::from_utf8(out)
}

/// A URL naming an object (`?url=`) as (scheme, authority, target):
/// absolute (`http` or `https`), scheme-relative (`//host/path`, RFC 3986
/// §4.2: on `scheme`), or a path on `authority` (an error without one).
pub fn split_url(
    text: &str,
    scheme: &str,
    authority: Option<&str>,
) -> Result<(String, String, String), String> {
    if text.starts_with("//") {
        return split_url(&format!("{scheme}:{text}"), scheme, None);
    }
    if text.starts_with('/') {
        let authority = authority.ok_or("url: a path needs a host")?;
        return Ok((scheme.to_string(), authority.to_string(), text.to_string()));
    }
    let u = url::Url::parse(text).map_err(|e| format!("url: not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("url: scheme `{}`: http or https", u.scheme()));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("url: a user part".into());
    }
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("url: no host")?;
    let authority = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let mut target = u.path().to_string();
    if let Some(q) = u.query() {
        target.push('?');
        target.push_str(q);
    }
    Ok((u.scheme().to_string(), authority, target))
}

/// Keys the object at `scheme://authority` + `target` as a request on one
/// of `listeners` would be keyed: normalized by the same rules (a target
/// the door refuses is an error), keyed by the first route that matches
/// and is not a steering one (no route: the query is kept whole).
pub fn object(
    state: &crate::state::ProxyState,
    listeners: &[&str],
    paths: &crate::normalize::PathOptions,
    scheme: &str,
    authority: &str,
    target: &str,
) -> Result<Object, String> {
    use crate::route::{Action, RequestView};
    let mut req = pingora_http::RequestHeader::build("GET", target.as_bytes(), None)
        .map_err(|_| "not a request target".to_string())?;
    req.insert_header(http::header::HOST, authority)
        .map_err(|_| "not a host".to_string())?;
    let scheme = if scheme == "https" { "https" } else { "http" };
    let admitted = crate::normalize::admit(&mut req, scheme == "https", paths)
        .map_err(|r| r.reason.to_string())?;
    if admitted.authority.is_none() {
        return Err("no host".into());
    }
    let route = listeners.iter().find_map(|listener| {
        let view = RequestView {
            listener,
            host: admitted.host(),
            path: req.uri.path(),
            query: req.uri.query(),
            method: &req.method,
            headers: &req.headers,
            cookies: &[],
        };
        state
            .routes
            .find(&view)
            .filter(|r| !matches!(r.action, Action::Steer { .. }))
    });
    let none = edge_config::IgnoreQuery::None;
    let ignore = route.map_or(&none, |r| &r.cache.ignore_query);
    let query = key_query(
        req.uri.query(),
        route.and_then(|r| r.auth.as_ref()).map(|a| &a.config),
    );
    let url = edge_cache::key::url(&admitted.header, req.uri.path(), query.as_deref(), ignore);
    let key_headers = route.map_or(&[][..], |r| &r.cache.key_headers[..]);
    let key = edge_cache::key::cache_key(edge_cache::key::primary(
        &url,
        scheme,
        None,
        key_headers,
        &req.headers,
    ));
    let primary = pingora_cache::key::CacheHashKey::primary_bin(&key);
    let storage_key = pingora_cache::key::CacheHashKey::combined(&key);
    let first_slice_key = pingora_cache::key::CacheHashKey::combined(&edge_cache::key::cache_key(
        edge_cache::key::primary(&url, scheme, Some(0), key_headers, &req.headers),
    ));
    let pool = route.and_then(|r| match r.action {
        Action::Proxy { pool } => state.pools.get(pool).map(|p| p.name.clone()),
        _ => None,
    });
    Ok(Object {
        host: admitted.host().to_string(),
        url,
        primary,
        storage_key,
        first_slice_key,
        path_and_query: req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
        route: route.map(|r| r.name.clone()),
        pool,
        cached: route.is_some_and(|r| r.cache.enabled),
    })
}

/// The query a node keys an object by: without `CMCD` (every route's
/// gate takes the players' data out) nor the route's token and expiry
/// (`auth`: taken out once accepted), as [`crate::video::gate`] leaves it.
/// A player's URL, CMCD and token included, names the object every other
/// player's does.
fn key_query(query: Option<&str>, auth: Option<&edge_config::UrlAuth>) -> Option<String> {
    let query = query?;
    let mut names = vec![crate::video::cmcd::QUERY];
    if let Some(a) = auth {
        names.push(&a.param);
        names.push(&a.expires_param);
    }
    if !names.iter().any(|n| query.contains(n)) {
        return Some(query.to_string());
    }
    crate::video::strip_params(query, &names).0
}

/// A route's steering answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteerMode {
    /// `200`, `application/json`: the ranked list.
    List,
    /// `302` to the best node (`503` when none).
    Redirect,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_is_decoded_strictly() {
        let p = |q: &str| param(Some(q), "url");
        assert_eq!(p("a=1&url=%2Fx%20y+z").unwrap().as_deref(), Some("/x y z"));
        assert_eq!(p("url=/%C3%A9").unwrap().as_deref(), Some("/\u{e9}"));
        assert_eq!(p("url=/a%zz%2").unwrap().as_deref(), Some("/a%zz%2"));
        assert_eq!(p("u%72l=/b&url=/c").unwrap().as_deref(), Some("/b"));
        assert_eq!(p("url").unwrap().as_deref(), Some(""));
        assert_eq!(p("x=1").unwrap(), None);
        assert_eq!(param(None, "url").unwrap(), None);
        assert_eq!(
            p("url=/%FF").unwrap_err(),
            "url: not UTF-8 once percent-decoded"
        );
        assert!(p("url=http://h/%C3").is_err());
    }

    #[test]
    fn the_key_query_is_the_one_the_gate_leaves() {
        let auth = edge_config::UrlAuth {
            keys: Vec::new(),
            param: "token".into(),
            expires_param: "exp".into(),
            scope: edge_config::AuthScope::Path,
            bind_client_ip: false,
            cookies: false,
        };
        let q = |s: &str, a| key_query(Some(s), a);
        assert_eq!(
            q("b=2&CMCD=bl%3D1000&a=1", None).as_deref(),
            Some("b=2&a=1")
        );
        assert_eq!(q("CMCD=bl%3D1000", None), None);
        assert_eq!(
            q("token=x.y&exp=9&v=2&CMCD=x", Some(&auth)).as_deref(),
            Some("v=2")
        );
        // Without `auth`, a parameter named token is the object's own.
        assert_eq!(q("token=x&v=2", None).as_deref(), Some("token=x&v=2"));
        assert_eq!(key_query(None, Some(&auth)), None);
    }

    #[test]
    fn urls_absolute_scheme_relative_or_paths() {
        let s = |t: &str| split_url(t, "https", Some("own.example"));
        let own = |t: &str| {
            (
                "https".to_string(),
                "own.example".to_string(),
                t.to_string(),
            )
        };
        assert_eq!(s("/a?b").unwrap(), own("/a?b"));
        assert_eq!(
            s("//cdn.example:8443/a?b").unwrap(),
            ("https".into(), "cdn.example:8443".into(), "/a?b".into())
        );
        assert_eq!(
            s("HTTP://CDN.example:80/a").unwrap(),
            ("http".into(), "cdn.example".into(), "/a".into())
        );
        assert_eq!(
            s("http://[2001:db8::1]:8080/a").unwrap(),
            ("http".into(), "[2001:db8::1]:8080".into(), "/a".into())
        );
        assert!(s("//").unwrap_err().starts_with("url: "));
        assert!(s("ftp://h/x").unwrap_err().contains("scheme"));
        assert!(s("http://u:p@h/x").unwrap_err().contains("user"));
        assert!(s("?q=1").unwrap_err().starts_with("url: not a URL"));
        assert!(split_url("/a", "http", None).is_err());
    }
}
