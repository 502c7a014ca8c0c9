//! `/cache`: tier usage, and purges by URL, prefix or surrogate key.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edge_cache::metrics::UsageSource;
use edge_cache::{key, PurgeMode};
use edge_config::IgnoreQuery;
use edge_proxy::normalize;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::api::ErrorBody;
use super::auth::Authorized;

use crate::runtime::Runtime;

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// `GET /cache`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub tiers: Vec<TierUsage>,
}

/// One cache tier's use.
#[derive(Debug, Serialize, ToSchema)]
pub struct TierUsage {
    /// `ram` or `disk`.
    pub tier: String,
    pub objects: u64,
    /// Bytes held, as the budget counts them.
    pub bytes: u64,
    /// The budget in bytes (`cache.ram_size`, `cache.disk.size`).
    pub capacity: u64,
}

/// `GET /cache`
#[utoipa::path(
    get,
    path = "/cache",
    tag = "cache",
    summary = "Cache tiers: objects, bytes, budget",
    responses(
        (status = 200, description = "Each tier", body = Usage),
        (status = 503, description = "The node has no cache", body = ErrorBody),
    )
)]
pub async fn usage(State(rt): State<Arc<Runtime>>) -> Response {
    let Some(cache) = rt.proxy.cache() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the cache is not running");
    };
    let tiers = cache
        .storage
        .tier_usage()
        .into_iter()
        .map(|(tier, u)| TierUsage {
            tier: tier.to_string(),
            objects: u.objects,
            bytes: u.bytes,
            capacity: u.capacity,
        })
        .collect();
    Json(Usage { tiers }).into_response()
}

/// A purge: exactly one of `url`, `prefix` or `surrogate_key`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeBody {
    /// One object: `http://host/path?query` or `host/path?query`, normalized
    /// as requests are (every query rule of the cached routes is tried).
    url: Option<String>,
    /// Every object whose URL starts with it (`host/path…`).
    prefix: Option<String>,
    /// Every object the origin tagged with it (`Surrogate-Key`: keys are
    /// space-separated and case-sensitive; a key over 1,024 bytes, and the
    /// keys past a response's first 16 KiB of them, are not indexed).
    surrogate_key: Option<String>,
    /// `hard` (delete, the default) or `soft` (mark stale: revalidated on
    /// the next request, served stale meanwhile where allowed).
    #[serde(default)]
    mode: Option<String>,
    /// This node only: not sent on to the site's other nodes.
    #[serde(default)]
    local: bool,
}

/// `http://Host:8080/a/../b?q=1` or `host/a?q=1` → (`host:8080`, `/b`,
/// `Some("q=1")`): the authority and path normalized as the request path
/// normalizes them (so a purge names what requests stored), the query as
/// given. `None` when it is not a URL.
fn split(target: &str) -> Option<(String, String, Option<&str>)> {
    let (rest, default_port) = if let Some(r) = target.strip_prefix("http://") {
        (r, 80)
    } else if let Some(r) = target.strip_prefix("https://") {
        (r, 443)
    } else {
        (target, 80)
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_query) = rest.split_at(end);
    let authority = normalize::host::parse(authority.as_bytes(), default_port).ok()?;
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_query, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    let paths = normalize::PathOptions {
        merge_slashes: true,
        escaped_slashes: edge_config::EscapedSlashes::Keep,
    };
    let path = normalize::path::normalize(path.as_bytes(), &paths)
        .ok()?
        .path;
    Some((authority.to_header(), path, query))
}

/// `POST /cache/purge`: `{"url"|"prefix"|"surrogate_key": "...", "mode": "hard"|"soft"}`.
#[utoipa::path(
    post,
    path = "/cache/purge",
    tag = "cache",
    summary = "Purge by URL, prefix or surrogate key",
    description = "Purges this node's tiers, then sends the same purge to the site's other nodes (their \
`admin` addresses, with this call's token) unless `local` is true; each node's result is under `site`. \
Answers `{\"url\" | \"prefix\" | \"surrogate_key\": what, \"mode\", \"purged\": objects, \"site\": [...]}`.",
    security(("admin_token" = [])),
    request_body = PurgeBody,
    responses(
        (status = 200, description = "Purged", body = Object),
        (status = 400, description = "Not exactly one target, an unknown mode or field, or not a URL", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MB", body = ErrorBody),
        (status = 401, description = "No or wrong token", content_type = "text/plain", body = String),
        (status = 403, description = "No token is configured: mutating calls are disabled", content_type = "text/plain", body = String),
        (status = 500, description = "The purge failed", body = ErrorBody),
        (status = 503, description = "The node has no cache", body = ErrorBody),
    )
)]
pub async fn purge(
    _: Authorized,
    State(rt): State<Arc<Runtime>>,
    headers: axum::http::HeaderMap,
    body: Result<Json<PurgeBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => return super::api::body_rejected(&e, "bad purge request"),
    };
    let mode = match body.mode.as_deref() {
        None | Some("hard") => PurgeMode::Hard,
        Some("soft") => PurgeMode::Soft,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown mode {other:?}: \"hard\" (delete) or \"soft\" (mark stale)"),
            )
        }
    };
    let Some(cache) = rt.proxy.cache().cloned() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the cache is not running");
    };
    let forward = json!({
        "url": body.url,
        "prefix": body.prefix,
        "surrogate_key": body.surrogate_key,
        "mode": body.mode,
    });
    let local = body.local;
    let named = [&body.url, &body.prefix, &body.surrogate_key]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if named != 1 {
        return error(
            StatusCode::BAD_REQUEST,
            "name exactly one of \"url\", \"prefix\" or \"surrogate_key\"",
        );
    }
    // Every query-normalization in use, so a URL names its object whichever
    // route's rule stored it.
    let rules: Vec<IgnoreQuery> = {
        let mut rules = vec![IgnoreQuery::None];
        for r in &rt.config().routes {
            if r.cache.enabled && !rules.contains(&r.cache.ignore_query) {
                rules.push(r.cache.ignore_query.clone());
            }
        }
        rules
    };
    let (what, value, job): (&str, String, Box<dyn FnOnce() -> usize + Send>) =
        if let Some(url) = body.url {
            let Some((host, path, query)) = split(&url) else {
                return error(StatusCode::BAD_REQUEST, format!("{url:?} is not a URL"));
            };
            let mut urls: Vec<String> = rules
                .iter()
                .map(|r| key::url(&host, &path, query, r).as_str().to_string())
                .collect();
            urls.dedup();
            let storage = cache.storage;
            (
                "url",
                url,
                Box::new(move || urls.iter().map(|u| storage.purge_url(u, mode)).sum()),
            )
        } else if let Some(prefix) = body.prefix {
            let Some((host, path, query)) = split(&prefix) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{prefix:?} is not a URL prefix"),
                );
            };
            let p = match query {
                Some(q) => format!("{host}{path}?{q}"),
                None => format!("{host}{path}"),
            };
            let storage = cache.storage;
            (
                "prefix",
                prefix,
                Box::new(move || storage.purge_prefix(&p, mode)),
            )
        } else if let Some(sk) = body.surrogate_key.filter(|s| !s.trim().is_empty()) {
            let storage = cache.storage;
            let key = sk.trim().to_string();
            (
                "surrogate_key",
                sk,
                Box::new(move || storage.purge_surrogate(&key, mode)),
            )
        } else {
            return error(StatusCode::BAD_REQUEST, "surrogate_key is empty");
        };
    let purged = match tokio::task::spawn_blocking(job).await {
        Ok(n) => n,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("purge: {e}")),
    };
    let mode_name = match mode {
        PurgeMode::Hard => "hard",
        PurgeMode::Soft => "soft",
    };
    tracing::info!(what, value = %value, mode = mode_name, purged, "cache purge through the admin API");
    let mut answer = json!({ what: value, "mode": mode_name, "purged": purged });
    if !local {
        let authorization = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let site = super::site::fan_out_purge(&rt, &forward, authorization).await;
        if !site.is_empty() {
            answer["site"] = serde_json::Value::Array(site);
        }
    }
    Json(answer).into_response()
}

#[cfg(test)]
mod tests {
    use super::split;

    fn s(
        a: &str,
        p: &str,
        q: Option<&'static str>,
    ) -> Option<(String, String, Option<&'static str>)> {
        Some((a.to_string(), p.to_string(), q))
    }

    #[test]
    fn purge_targets_split_into_authority_path_query() {
        assert_eq!(
            split("http://Video.Example.com.:8080/a/./b.ts?x=1"),
            s("video.example.com:8080", "/a/b.ts", Some("x=1"))
        );
        assert_eq!(split("http://h:80/a"), s("h", "/a", None));
        assert_eq!(split("h/a"), s("h", "/a", None));
        assert_eq!(split("h"), s("h", "/", None));
        assert_eq!(split("h?x"), s("h", "/", Some("x")));
        assert_eq!(split("https://[::1]:443/%61"), s("[::1]", "/a", None));
        assert_eq!(split("/no-host"), None);
        assert_eq!(split("a b/c"), None);
        assert_eq!(split("h/a b"), None);
    }
}
