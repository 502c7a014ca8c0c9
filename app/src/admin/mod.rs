//! The admin API, on loopback by default. Reads are open except `/config`;
//! every mutating call needs `Authorization: Bearer <admin.token>` (refused
//! outright when no token is configured). Tokens compare in constant time;
//! the scheme is case-insensitive.
//!
//! Every call, its parameters, answers and errors: `api.rs` lists the
//! handlers, whose annotations make both the routes and the OpenAPI 3.1
//! document (`GET /openapi.json`, rendered into `docs/admin-api.md`).
//!
//! What the admin API changes lasts until the next reload and is listed
//! under `admin_overrides` in `/config`.

mod api;
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
use axum::{Json, Router};
use serde_json::json;

use crate::runtime::{ApplyError, Runtime};

/// The admin API's routes over a runtime (the list is `api::routes`).
pub fn router(runtime: Arc<Runtime>) -> Router {
    let (router, _doc) = api::routes().split_for_parts();
    router
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such admin endpoint\n") })
        .with_state(runtime)
}

/// The OpenAPI document as JSON, or rendered as Markdown.
pub fn openapi_text(markdown: bool) -> anyhow::Result<String> {
    let doc = api::document();
    if markdown {
        Ok(api::markdown(doc))
    } else {
        let mut text = doc.to_pretty_json()?;
        text.push('\n');
        Ok(text)
    }
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

/// `GET /live`
#[utoipa::path(
    get,
    path = "/live",
    tag = "node",
    summary = "Liveness: the process answers",
    responses((status = 200, description = "`live`", content_type = "text/plain", body = String))
)]
async fn live() -> &'static str {
    "live\n"
}

/// `GET /ready`
#[utoipa::path(
    get,
    path = "/ready",
    tag = "node",
    summary = "Readiness: serving, or starting or draining",
    responses(
        (status = 200, description = "Serving", content_type = "text/plain", body = String),
        (status = 503, description = "Starting, or draining after SIGTERM", content_type = "text/plain", body = String),
    )
)]
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

/// `GET /config`
#[utoipa::path(
    get,
    path = "/config",
    tag = "node",
    summary = "The running config",
    description = "The config in force as JSON, secrets shown as `<redacted>`, with `admin_overrides`: \
what the admin API changed since the last reload. Needs the token when one is configured.",
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "The config", body = Object),
        (status = 401, description = "A token is configured and the call did not carry it", content_type = "text/plain", body = String),
        (status = 500, description = "The config could not be written as JSON", content_type = "text/plain", body = String),
    )
)]
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

/// `GET /metrics`
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "node",
    summary = "Prometheus metrics",
    description = "Prometheus text exposition format 0.0.4; the names are listed in ARCHITECTURE.md (Metrics).",
    responses((status = 200, description = "Every metric", content_type = "text/plain; version=0.0.4", body = String))
)]
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

/// `POST /reload`
#[utoipa::path(
    post,
    path = "/reload",
    tag = "node",
    summary = "Re-read the config file and apply it",
    description = "All or nothing, as SIGHUP: everything the new config needs is built first; on any error \
the running config stays and the answer says why, with the same diagnostics as `edge check`.",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Applied: `{\"status\": \"applied\", \"summary\", \"changes\"}`", body = Object),
        (status = 401, description = "No or wrong token", content_type = "text/plain", body = String),
        (status = 403, description = "No token is configured: mutating calls are disabled", content_type = "text/plain", body = String),
        (status = 409, description = "The node runs without a config file", body = Object),
        (status = 422, description = "Refused: `{\"status\": \"rejected\", \"error\", \"diagnostics\", \"text\"}`; the running config stays", body = Object),
        (status = 500, description = "Applying failed inside edge; the running config stays", body = Object),
    )
)]
async fn reload(_: auth::Authorized, State(rt): State<Arc<Runtime>>) -> Response {
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

/// `POST /upgrade`
#[utoipa::path(
    post,
    path = "/upgrade",
    tag = "node",
    summary = "Binary upgrade",
    description = "Start the executable at the node's path again with the same arguments and hand it every \
socket; answers once the new process serves, then this one drains (as SIGUSR2).",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "`{\"status\": \"upgraded\", \"pid\", \"old_pid\"}`", body = Object),
        (status = 401, description = "No or wrong token", content_type = "text/plain", body = String),
        (status = 403, description = "No token is configured", content_type = "text/plain", body = String),
        (status = 409, description = "An upgrade is already running, or this process was replaced", body = Object),
        (status = 422, description = "No executable to start, or the new process refused the config", body = Object),
        (status = 500, description = "The new process failed to start or to serve", body = Object),
    )
)]
async fn upgrade(_: auth::Authorized, State(rt): State<Arc<Runtime>>) -> Response {
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
    async fn bad_bodies_and_queries_get_json_errors_and_too_large_is_413() {
        let rt = runtime(true).await;
        let (status, body) = call(&rt, "GET", "/events?after=-1", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].as_str().unwrap().starts_with("after:"), "{body}");
        assert_eq!(
            call(&rt, "GET", "/events?after=3", None).await.0,
            StatusCode::OK
        );
        let auth = format!("Bearer {TOKEN}");
        for path in [
            "/pools/p/backends",
            "/pools/p/backends/127.0.0.1:1/weight",
            "/cache/purge",
            "/cache/prefill",
        ] {
            let huge = format!("{{\"address\": \"{}\"}}", "a".repeat(3 << 20));
            let req = Request::builder()
                .method("POST")
                .uri(path)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(Body::from(huge))
                .unwrap();
            let resp = router(rt.clone()).oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
            let req = Request::builder()
                .method("POST")
                .uri(path)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(Body::from("{not json"))
                .unwrap();
            let resp = router(rt.clone()).oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"].is_string(), "{path}");
        }
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
