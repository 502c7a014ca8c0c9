//! The admin API, on loopback by default. Reads are open except `/config`;
//! every mutating call needs `Authorization: Bearer <admin.token>` (refused
//! outright when no token is configured). Tokens compare in constant time;
//! the scheme is case-insensitive.
//!
//! | call | what |
//! |---|---|
//! | `GET /` | the live dashboard (a page; its script, style and icon are `/dashboard.js`, `/dashboard.css`, `/favicon.svg`) |
//! | `GET /stats` | every metric of `/metrics` as JSON: `{"time", "metrics": {name: {"type", "samples": [{"labels", "value", "count"}]}}}` |
//! | `GET /events?after=SEQ` | recent reloads, admin actions, health changes, warnings and errors, oldest first |
//! | `GET /live` | the process answers |
//! | `GET /ready` | 200 while serving, 503 while starting or draining |
//! | `GET /config` | the running config as JSON, secrets redacted (needs the token when one is set) |
//! | `GET /metrics` | Prometheus text |
//! | `POST /reload` | re-read the config file and apply it |
//! | `POST /upgrade` | binary upgrade: start the executable again with the sockets; answers once the new process serves (`{"pid": …}`), then this one drains |
//! | `GET /pools` | pools and backends: health, ejection, breaker, in-flight, latency, weight |
//! | `POST /pools/{pool}/backends/{backend}/drain` | no new requests; in-flight ones finish |
//! | `POST /pools/{pool}/backends/{backend}/disable` | out of selection |
//! | `POST /pools/{pool}/backends/{backend}/enable` | back in |
//! | `POST /pools/{pool}/backends/{backend}/weight` | `{"weight": N}`; `DELETE` restores the configured one |
//! | `GET /cache` | objects, bytes and budget of each cache tier |
//! | `GET /dns/sites` | GeoDNS sites: up, healthy, drained, their nodes' checks |
//! | `POST /dns/sites/{site}/drain`, `/undrain` | withdraw a site from DNS answers, or return it |
//! | `POST /cache/purge` | `{"url" \| "prefix" \| "surrogate_key": "…", "mode": "hard" \| "soft"}`; sent on to the site's other nodes (`"local": true` does not), each node's result under `"site"` |
//! | `POST /cache/prefill` | start a prefill job: `{"urls": [...], "renditions": [...], "window": "02:00-14:00", "rate": "50 Mbit/s"}` (replaces a running one); `DELETE` stops it |
//! | `GET /cache/prefill` | the job's phase and progress: objects, done, fetched, fresh, not owned, failed, bytes, rate, ETA, latest errors |
//! | `GET /site` | the node's view of its site: peers, their health, the share of objects each owns, peer-fill traffic |
//!
//! What the admin API changes lasts until the next reload and is listed
//! under `admin_overrides` in `/config`.

mod auth;
mod cache;
mod cmcd;
mod dashboard;
mod dns;
mod explain;
mod pools;
mod prefill;
mod site;
mod state;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::runtime::{ApplyError, Runtime};

/// The admin API's routes over a runtime.
pub fn router(runtime: Arc<Runtime>) -> Router {
    let mutating = Router::new()
        .route("/reload", post(reload))
        .route("/upgrade", post(upgrade))
        .route("/cache/purge", post(cache::purge))
        .route(
            "/cache/prefill",
            post(prefill::start).delete(prefill::cancel),
        )
        .route("/dns/sites/{site}/{action}", post(dns::set_drain))
        .route(
            "/pools/{pool}/backends/{backend}/weight",
            post(pools::set_weight).delete(pools::clear_weight),
        )
        .route(
            "/pools/{pool}/backends/{backend}/{action}",
            post(pools::set_state),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            runtime.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .route("/favicon.svg", get(dashboard::icon))
        .route("/stats", get(dashboard::stats))
        .route("/events", get(dashboard::events))
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/config", get(config))
        .route("/metrics", get(metrics))
        .route("/pools", get(pools::list))
        .route("/cache", get(cache::usage))
        .route("/dns/sites", get(dns::sites))
        .route("/site", get(site::view))
        .route("/site/state", get(state::view))
        .route("/site/digest", get(state::digest))
        .route("/explain", get(explain::explain))
        .route("/cache/lookup", get(explain::lookup))
        .route("/cmcd", get(cmcd::view))
        .route("/cache/prefill", get(prefill::status))
        .merge(mutating)
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such admin endpoint\n") })
        .with_state(runtime)
}

/// Serves the admin API until the process ends, or until a new process
/// takes over its socket (a binary upgrade): then it stops accepting,
/// answers what it has (idle keep-alive connections close) and says so.
pub async fn serve(listener: tokio::net::TcpListener, runtime: Arc<Runtime>) {
    let listener = runtime.upgrader.admin_listener(listener);
    let handed_over = {
        let runtime = runtime.clone();
        async move { runtime.upgrader.handed_over().await }
    };
    let served = axum::serve(listener, router(runtime.clone()))
        .with_graceful_shutdown(handed_over)
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "admin API stopped");
    }
    runtime.upgrader.admin_finished();
}

async fn ready(State(rt): State<Arc<Runtime>>) -> Response {
    if rt.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready (starting or draining)\n",
        )
            .into_response()
    }
}

async fn config(State(rt): State<Arc<Runtime>>, headers: axum::http::HeaderMap) -> Response {
    // It names backends, routes and limits: with a token, only for its holder.
    if rt.admin_token().is_some() && !auth::authorized(&rt, &headers) {
        return auth::unauthorized();
    }
    let mut value = match serde_json::to_value(&*rt.config()) {
        Ok(v) => v,
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("config: {e}\n")).into_response()
        }
    };
    if let Some(obj) = value.as_object_mut() {
        obj.insert("admin_overrides".into(), pools::overrides(&rt));
    }
    Json(value).into_response()
}

async fn metrics(State(rt): State<Arc<Runtime>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        rt.metrics_text(),
    )
        .into_response()
}

async fn reload(State(rt): State<Arc<Runtime>>) -> Response {
    match rt.reload().await {
        Ok(diff) => {
            tracing::info!(changes = %diff, "config reloaded through the admin API");
            Json(json!({ "status": "applied", "summary": diff.to_string(), "changes": diff }))
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "reload refused; the running config stays");
            apply_error_response(&e)
        }
    }
}

async fn upgrade(State(rt): State<Arc<Runtime>>) -> Response {
    use crate::upgrade::UpgradeError;
    match rt.upgrader.upgrade(&rt).await {
        Ok(pid) => Json(json!({ "status": "upgraded", "pid": pid, "old_pid": std::process::id() }))
            .into_response(),
        Err(e) => {
            let status = match e {
                UpgradeError::Busy | UpgradeError::Over => StatusCode::CONFLICT,
                UpgradeError::NoSource | UpgradeError::Refused(_) => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                UpgradeError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (
                status,
                Json(json!({ "status": "failed", "error": e.to_string() })),
            )
                .into_response()
        }
    }
}

pub fn apply_error_response(e: &ApplyError) -> Response {
    let (status, body) = match e {
        ApplyError::Invalid(diags) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "status": "rejected", "error": "invalid config", "diagnostics": diags, "text": diags.to_string() }),
        ),
        ApplyError::NoSource => (
            StatusCode::CONFLICT,
            json!({ "status": "rejected", "error": e.to_string() }),
        ),
        ApplyError::Build(_)
        | ApplyError::Dns(_)
        | ApplyError::Environment(_)
        | ApplyError::Refused(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "status": "rejected", "error": e.to_string() }),
        ),
        ApplyError::Internal(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "status": "rejected", "error": e.to_string() }),
        ),
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::router;
    use crate::runtime::Runtime;

    const TOKEN: &str = "in-memory-token-0123456789";

    async fn runtime(with_token: bool) -> Arc<Runtime> {
        let token = if with_token {
            format!("token = \"{TOKEN}\"")
        } else {
            String::new()
        };
        let text = format!("[admin]\nlisten = \"127.0.0.1:0\"\n{token}\n");
        let config = edge_config::parse_str(&text, "t.toml", std::path::Path::new(".")).unwrap();
        let conf = Arc::new(crate::server::server_conf(&config));
        let rt = Runtime::new(conf, None).unwrap();
        rt.apply(config).await.unwrap();
        rt
    }

    async fn call(
        rt: &Arc<Runtime>,
        method: &str,
        path: &str,
        auth: Option<&str>,
    ) -> (StatusCode, String) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = router(rt.clone())
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn ready_follows_the_runtime() {
        let rt = runtime(true).await;
        assert_eq!(
            call(&rt, "GET", "/ready", None).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        rt.set_ready(true);
        assert_eq!(call(&rt, "GET", "/ready", None).await.0, StatusCode::OK);
        assert_eq!(call(&rt, "GET", "/live", None).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn reload_without_a_file_is_a_conflict_once_authorised() {
        let rt = runtime(true).await;
        assert_eq!(
            call(&rt, "POST", "/reload", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(&rt, "POST", "/reload", Some("Bearer wrong")).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(&rt, "POST", "/reload", Some(TOKEN)).await.0,
            StatusCode::UNAUTHORIZED,
            "scheme required"
        );
        let (status, body) = call(&rt, "POST", "/reload", Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body.contains("without a config file"));
    }

    #[tokio::test]
    async fn no_token_means_no_mutation() {
        let rt = runtime(false).await;
        let (status, body) = call(&rt, "POST", "/reload", Some("Bearer anything")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("admin.token"));
    }

    #[tokio::test]
    async fn config_is_json_with_secrets_redacted_and_metrics_are_prometheus_text() {
        let rt = runtime(true).await;
        assert_eq!(
            call(&rt, "GET", "/config", None).await.0,
            StatusCode::UNAUTHORIZED,
            "the config is for the token's holder"
        );
        let (status, body) = call(&rt, "GET", "/config", Some(&format!("bearer {TOKEN}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!body.contains(TOKEN));
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["admin"]["token"], "<redacted>");
        assert_eq!(json["server"]["grace_period"], "30s");
        let (status, metrics) = call(&rt, "GET", "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            metrics.contains("edge_config_reloads_total{result=\"success\"} 1"),
            "{metrics}"
        );
        assert_eq!(
            call(&rt, "GET", "/nope", None).await.0,
            StatusCode::NOT_FOUND
        );
    }
}
