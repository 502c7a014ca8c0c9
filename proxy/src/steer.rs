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
    let url = edge_cache::key::url(&admitted.header, req.uri.path(), req.uri.query(), ignore);
    let key_headers = route.map_or(&[][..], |r| &r.cache.key_headers[..]);
    let key = pingora_cache::CacheKey::new(
        edge_cache::key::primary(&url, scheme, None, key_headers, &req.headers),
        "",
    );
    let primary = pingora_cache::key::CacheHashKey::primary_bin(&key);
    let storage_key = pingora_cache::key::CacheHashKey::combined(&key);
    let first_slice_key =
        pingora_cache::key::CacheHashKey::combined(&pingora_cache::CacheKey::new(
            edge_cache::key::primary(&url, scheme, Some(0), key_headers, &req.headers),
            "",
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

/// A route's steering answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteerMode {
    /// `200`, `application/json`: the ranked list.
    List,
    /// `302` to the best node (`503` when none).
    Redirect,
}
