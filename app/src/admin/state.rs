//! `GET /site/state`: what this node can tell a steering loop about itself,
//! as the proxy sees it (not as a probe from outside would):
//!
//! - `serving`: ready, and some pool a route proxies to has a usable
//!   backend (`why` says what is missing otherwise);
//! - `health`: readiness and, per pool a route uses, backends, usable ones,
//!   ejected ones;
//! - `load`: egress bits/s, requests/s, CPU cores busy (rates since the
//!   previous reading), client connections open now;
//! - `capacity` (`[site] capacity`) and `utilization`: the larger of egress
//!   ÷ egress capacity and connections ÷ connection capacity (`null`
//!   without a capacity);
//! - `qoe`: the players' reports (CMCD) for the 20 busiest client prefixes;
//! - `url`: where clients reach this node (`[site] url`, else its first
//!   HTTP listener), what steering answers name it by;
//! - `digest`: the generation, size and age of the digest of held objects
//!   that `GET /site/digest` serves (`null` before the first build, or
//!   without a cache or `[site]`).
//!
//! The GeoDNS side reads it when a site's health URL is this endpoint.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use edge_proxy::route::Action;
use prometheus::core::Collector;
use serde_json::{json, Value};

use crate::runtime::Runtime;

/// Client connections open now, every listener.
fn connections(rt: &Runtime) -> u64 {
    rt.proxy
        .metrics
        .connections_open
        .collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_gauge().get_value().max(0.0) as u64)
        .sum()
}

/// Where clients reach this node: `[site] url`, else the first HTTP
/// listener (by config order) as `http(s)://address`.
fn node_url(rt: &Runtime) -> Option<String> {
    let config = rt.config();
    if let Some(url) = config.site.as_ref().and_then(|s| s.url.clone()) {
        return Some(url);
    }
    let addresses = rt.listeners.addresses();
    config.listeners.iter().find_map(|l| {
        let scheme = match &l.kind {
            edge_config::ListenerKind::Http(_) => "http",
            edge_config::ListenerKind::Https(_) => "https",
            _ => return None,
        };
        let (_, addr) = addresses.iter().find(|(n, _)| *n == l.name)?;
        Some(format!("{scheme}://{addr}"))
    })
}

#[utoipa::path(
    get,
    path = "/site/digest",
    tag = "site",
    summary = "The digest of what the node holds",
    description = "A Bloom filter of the cache's URLs; its parameters are in the `Edge-Digest-Generation`, \
`Edge-Digest-Hashes`, `Edge-Digest-Keys` and `Edge-Digest-Min-Size` headers.",
    responses(
        (status = 200, description = "The bit array (binary)", content_type = "application/octet-stream", body = String),
        (status = 404, description = "No cache or `[site]`, or not built yet", content_type = "text/plain", body = String),
    )
)]
/// `GET /site/digest`: the digest's bit array (`application/octet-stream`),
/// its parameters in `Edge-Digest-Generation`, `-Hashes`, `-Keys` and
/// `-Min-Size`; 404 when there is none (no cache or `[site]`, or not built yet).
pub async fn digest(State(rt): State<Arc<Runtime>>) -> Response {
    let Some(held) = rt.digest.current() else {
        return (
            StatusCode::NOT_FOUND,
            "no digest: this node has no cache or [site], or has not built it yet\n",
        )
            .into_response();
    };
    let d = &held.digest;
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static("edge-digest-generation"),
                held.generation.to_string(),
            ),
            (
                header::HeaderName::from_static("edge-digest-hashes"),
                d.hashes().to_string(),
            ),
            (
                header::HeaderName::from_static("edge-digest-keys"),
                d.keys().to_string(),
            ),
            (
                header::HeaderName::from_static("edge-digest-min-size"),
                held.min_size.to_string(),
            ),
        ],
        d.bytes().to_vec(),
    )
        .into_response()
}

/// `GET /site/state`
#[utoipa::path(
    get,
    path = "/site/state",
    tag = "site",
    summary = "The node's state for steering",
    description = "Serving or why not, the pools' usable backends, egress, requests/s, connections, CPU, \
capacity and utilization, players' quality, its URL, and its digest's generation, size and age. \
GeoDNS health checks and the steering loop read it.",
    responses((status = 200, description = "The state", body = Object))
)]
pub async fn view(State(rt): State<Arc<Runtime>>) -> Json<Value> {
    let state = rt.proxy.state();
    let config = rt.config();
    let ready = rt.is_ready();
    let mut used: Vec<usize> = state
        .routes
        .iter()
        .filter_map(|r| match r.action {
            Action::Proxy { pool } => Some(pool),
            _ => None,
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    let pools: Vec<Value> = used
        .iter()
        .filter_map(|i| state.pools.get(*i))
        .map(|p| {
            let report = p.report();
            json!({
                "name": report.name,
                "backends": report.backends.len(),
                "usable": report.backends.iter().filter(|b| b.usable).count(),
                "ejected": report.backends.iter().filter(|b| b.ejected).count(),
            })
        })
        .collect();
    let any_usable = pools.iter().any(|p| p["usable"].as_u64().unwrap_or(0) > 0);
    let why = if !ready {
        Some("not ready (starting or draining)")
    } else if !pools.is_empty() && !any_usable {
        Some("no usable backend in any pool")
    } else {
        None
    };
    let rates = rt.proxy.load.rates();
    let open = connections(&rt);
    let capacity = config.site.as_ref().map(|s| s.capacity).unwrap_or_default();
    let utilization = [
        capacity
            .egress_bits
            .map(|c| rates.egress_bits_per_second / c as f64),
        capacity.connections.map(|c| open as f64 / c as f64),
    ]
    .into_iter()
    .flatten()
    .reduce(f64::max);
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Json(json!({
        "site": config.site.as_ref().map(|s| s.name.clone()),
        "url": node_url(&rt),
        "digest": rt.digest.current().map(|h| h.summary()),
        "node": config.site.as_ref().map(|s| s.node.clone()),
        "generation": state.generation,
        "time": time,
        "serving": why.is_none(),
        "why": why,
        "health": { "ready": ready, "pools": pools },
        "load": {
            "egress_bits_per_second": rates.egress_bits_per_second,
            "requests_per_second": rates.requests_per_second,
            "cpu_cores": rates.cpu_cores,
            "connections": open,
        },
        "capacity": {
            "egress_bits_per_second": capacity.egress_bits,
            "connections": capacity.connections,
        },
        "utilization": utilization,
        "qoe": rt.proxy.qoe.top(20),
    }))
}
