//! `/pools`: what the pools are doing, and operator overrides of backends.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edge_proxy::pool::report::PoolReport;
use edge_proxy::pool::AdminState;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::ErrorBody;
use super::auth::Authorized;
use serde_json::{json, Value};

use crate::runtime::Runtime;

/// `GET /pools`
#[utoipa::path(
    get,
    path = "/pools",
    tag = "pools",
    summary = "Every pool (HTTP and TCP) and its backends",
    description = "Health, outlier ejection, circuit breaker, in-flight requests, peak-EWMA latency, weights and \
admin state of every backend, in config order.",
    responses((status = 200, description = "The pools", body = Vec<PoolReport>))
)]
pub async fn list(State(rt): State<Arc<Runtime>>) -> Response {
    let state = rt.proxy.state();
    let pools: Vec<_> = state.pools.iter().map(|p| p.report()).collect();
    Json(pools).into_response()
}

/// What a backend's admin state was set to.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateSet {
    pub pool: String,
    pub backend: String,
    pub admin: AdminState,
}

/// What a backend's weight override was set to (`null`: the configured one).
#[derive(Debug, Serialize, ToSchema)]
pub struct WeightSet {
    pub pool: String,
    pub backend: String,
    pub weight: Option<u32>,
}

fn not_found(pool: &str, backend: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("no backend {backend} in pool {pool}") })),
    )
        .into_response()
}

/// `POST /pools/{pool}/backends/{backend}/{action}`
#[utoipa::path(
    post,
    path = "/pools/{pool}/backends/{backend}/{action}",
    tag = "pools",
    summary = "Drain, disable or enable a backend",
    description = "`drain`: no new requests, in-flight ones finish; `disable`: out of selection; `enable`: back in. \
Lasts until the next reload.",
    security(("admin_token" = [])),
    params(
        ("pool" = String, Path, description = "The pool's name"),
        ("backend" = String, Path, description = "The backend's address as configured (`GET /pools` `address`), URL-encoded"),
        ("action" = String, Path, description = "`drain`, `disable` or `enable`"),
    ),
    responses(
        (status = 200, description = "Set", body = StateSet),
        (status = 401, description = "No or wrong token", content_type = "text/plain", body = String),
        (status = 403, description = "No token is configured: mutating calls are disabled", content_type = "text/plain", body = String),
        (status = 404, description = "No such pool, backend or action", body = ErrorBody),
    )
)]
pub async fn set_state(
    _: Authorized,
    State(rt): State<Arc<Runtime>>,
    Path((pool, backend, action)): Path<(String, String, String)>,
) -> Response {
    let Some(target) = AdminState::parse(&action) else {
        return (
            StatusCode::NOT_FOUND,
            Json(
                json!({ "error": format!("unknown action {action:?}: drain, disable or enable") }),
            ),
        )
            .into_response();
    };
    let Some(state) = rt.proxy.backend(&pool, &backend) else {
        return not_found(&pool, &backend);
    };
    state.set_admin_state(target);
    tracing::info!(%pool, %backend, state = ?target, "backend state set through the admin API");
    Json(StateSet {
        pool,
        backend,
        admin: target,
    })
    .into_response()
}

/// A weight override.
#[derive(Deserialize, ToSchema)]
pub struct WeightBody {
    /// From 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    weight: u32,
}

/// `POST /pools/{pool}/backends/{backend}/weight`
#[utoipa::path(
    post,
    path = "/pools/{pool}/backends/{backend}/weight",
    tag = "pools",
    summary = "Override a backend's weight",
    description = "Selection uses this weight instead of the configured one until `DELETE` or the next reload.",
    security(("admin_token" = [])),
    params(
        ("pool" = String, Path, description = "The pool's name"),
        ("backend" = String, Path, description = "The backend's address as configured, URL-encoded"),
    ),
    request_body = WeightBody,
    responses(
        (status = 200, description = "Set", body = WeightSet),
        (status = 400, description = "Not `{\"weight\": N}` with N from 1 to 1,000,000", body = ErrorBody),
        (status = 401, description = "No or wrong token", content_type = "text/plain", body = String),
        (status = 403, description = "No token is configured: mutating calls are disabled", content_type = "text/plain", body = String),
        (status = 404, description = "No such pool or backend", body = ErrorBody),
    )
)]
pub async fn set_weight(
    _: Authorized,
    State(rt): State<Arc<Runtime>>,
    Path((pool, backend)): Path<(String, String)>,
    body: Result<Json<WeightBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(WeightBody { weight }) = match body {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("expected {{\"weight\": N}}: {e}") })),
            )
                .into_response()
        }
    };
    if !(1..=1_000_000).contains(&weight) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "weight must be from 1 to 1000000" })),
        )
            .into_response();
    }
    let Some(state) = rt.proxy.backend(&pool, &backend) else {
        return not_found(&pool, &backend);
    };
    state.set_weight_override(Some(weight));
    tracing::info!(%pool, %backend, weight, "backend weight set through the admin API");
    Json(WeightSet {
        pool,
        backend,
        weight: Some(weight),
    })
    .into_response()
}

/// `DELETE /pools/{pool}/backends/{backend}/weight`
#[utoipa::path(
    delete,
    path = "/pools/{pool}/backends/{backend}/weight",
    tag = "pools",
    summary = "Restore a backend's configured weight",
    security(("admin_token" = [])),
    params(
        ("pool" = String, Path, description = "The pool's name"),
        ("backend" = String, Path, description = "The backend's address as configured, URL-encoded"),
    ),
    responses(
        (status = 200, description = "Restored (`weight` is `null`)", body = WeightSet),
        (status = 401, description = "No or wrong token", content_type = "text/plain", body = String),
        (status = 403, description = "No token is configured: mutating calls are disabled", content_type = "text/plain", body = String),
        (status = 404, description = "No such pool or backend", body = ErrorBody),
    )
)]
pub async fn clear_weight(
    _: Authorized,
    State(rt): State<Arc<Runtime>>,
    Path((pool, backend)): Path<(String, String)>,
) -> Response {
    let Some(state) = rt.proxy.backend(&pool, &backend) else {
        return not_found(&pool, &backend);
    };
    state.set_weight_override(None);
    Json(WeightSet {
        pool,
        backend,
        weight: None,
    })
    .into_response()
}

/// Every override in force, for `/config`.
pub fn overrides(rt: &Runtime) -> Value {
    let state = rt.proxy.state();
    let mut out = Vec::new();
    for pool in &state.pools {
        for b in &pool.backends {
            let admin = b.state.admin_state();
            let weight = b.state.weight_override();
            if admin != AdminState::Enabled || weight.is_some() {
                out.push(json!({ "pool": pool.name, "backend": b.label, "admin": admin, "weight": weight }));
            }
        }
    }
    Value::Array(out)
}
