//! `/site`: this node's view of its site (peers, their health, the share
//! of objects each owns now, peer-fill traffic), and the purge fan-out to
//! the site's other nodes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::runtime::Runtime;

/// Keys sampled to estimate each node's share of the hash space.
const SAMPLE: u32 = 10_000;

/// `GET /site`
pub async fn view(State(rt): State<Arc<Runtime>>) -> Response {
    let state = rt.proxy.state();
    let config = rt.config();
    let (Some(site), Some(cfg)) = (state.site.as_ref(), config.site.as_ref()) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "this node has no [site]" })),
        )
            .into_response();
    };
    let peers_pool = site.peers.and_then(|i| state.pools.get(i));
    let shares = edge_proxy::site::shares(site, peers_pool, SAMPLE);
    let share = |name: &str| {
        shares
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, s)| *s)
    };
    let m = &rt.proxy.metrics.site;
    let peers: Vec<Value> = cfg
        .other_peers()
        .map(|p| {
            let backends: Vec<Value> = peers_pool
                .into_iter()
                .flat_map(|pool| pool.report().backends)
                .filter(|b| {
                    b.address == p.address.to_string()
                        || b.address.starts_with(&format!("{}@", p.address))
                })
                .map(|b| {
                    json!({
                        "resolved": b.resolved,
                        "usable": b.usable,
                        "healthy": b.healthy,
                        "health_error": b.health_error,
                        "ejected": b.ejected,
                        "admin": b.admin,
                        "in_flight": b.in_flight,
                    })
                })
                .collect();
            json!({
                "name": p.name,
                "address": p.address.to_string(),
                "admin": p.admin,
                "usable": backends.iter().any(|b| b["usable"] == true),
                "backends": backends,
                "owned_share": share(&p.name),
                "fills": m.fills.with_label_values(&[&p.name]).get(),
                "fill_bytes": m.fill_bytes.with_label_values(&[&p.name]).get(),
            })
        })
        .collect();
    Json(json!({
        "site": site.name,
        "node": site.node,
        "owned_share": share(&site.node),
        "keep_copies": cfg.keep_copies,
        "shield": cfg.shield,
        "shield_fallback": cfg.shield_fallback,
        "served_to_peers": m.served_to_peers.get(),
        "peer_fallbacks": m.fallbacks.get(),
        "copies_kept": m.copies.with_label_values(&["true"]).get(),
        "copies_not_kept": m.copies.with_label_values(&["false"]).get(),
        "peers": peers,
    }))
    .into_response()
}

/// Sends a purge to every other node of the site that names its admin
/// API (`[[site.peer]].admin`), at once, each bounded by 5 s; the same
/// body, marked `"local": true` so it goes no further, with the caller's
/// `Authorization` (the site's nodes share an admin token). One entry per
/// node: its answer, or why there is none.
pub async fn fan_out_purge(rt: &Runtime, body: &Value, authorization: &str) -> Vec<Value> {
    let config = rt.config();
    let Some(site) = config.site.as_ref() else {
        return Vec::new();
    };
    let mut body = body.clone();
    body["local"] = Value::Bool(true);
    let body = body.to_string();
    let calls = site.other_peers().map(|p| {
        let body = body.clone();
        async move {
            let Some(admin) = &p.admin else {
                return json!({ "node": p.name, "status": "skipped", "error": "no admin address in [[site.peer]]" });
            };
            match post(admin, &body, authorization).await {
                Ok((status, text)) if status.is_success() => {
                    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    json!({ "node": p.name, "status": "ok", "purged": answer.get("purged") })
                }
                Ok((status, text)) => json!({
                    "node": p.name,
                    "status": "failed",
                    "error": format!("{status}: {}", text.trim()),
                }),
                Err(e) => json!({ "node": p.name, "status": "failed", "error": e }),
            }
        }
    });
    futures::future::join_all(calls).await
}

async fn post(
    admin: &edge_config::HostPort,
    body: &str,
    authorization: &str,
) -> Result<(StatusCode, String), String> {
    let admin = admin.to_string();
    let call = crate::ctl::post_body(
        &admin,
        "/cache/purge",
        Some(authorization),
        "application/json",
        body.to_string(),
    );
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err("no answer within 5 s".to_string()),
    }
}
