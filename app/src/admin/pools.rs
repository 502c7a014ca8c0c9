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

use crate::runtime::{BackendChange, EditError, Refusal, Runtime};
use edge_config::{Backend, HostPort};

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

/// The running backends `backend` names in `pool`: the one with that
/// label, or every address of a backend named by host name
/// (`name:port@address`).
fn running_backends(
    rt: &Runtime,
    pool: &str,
    backend: &str,
) -> Vec<(String, Arc<edge_proxy::pool::BackendState>)> {
    let state = rt.proxy.state();
    let Some(p) = state.pool(pool) else {
        return Vec::new();
    };
    let named = format!("{backend}@");
    p.backends
        .iter()
        .filter(|b| b.label == backend || b.label.starts_with(&named))
        .map(|b| (b.label.clone(), b.state.clone()))
        .collect()
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
    summary = "Drain, disable (maintenance) or enable a backend",
    description = "`drain`: no new requests, in-flight ones finish; `disable` (or `maintenance`, HAProxy's \
MAINT): out of selection; `enable` (or `ready`): back in. Lasts until the next reload.",
    security(("admin_token" = [])),
    params(
        ("pool" = String, Path, description = "The pool's name"),
        ("backend" = String, Path, description = "The backend's address (`GET /pools` `address`), URL-encoded; a host name as configured (`name:port`) means all its addresses"),
        ("action" = String, Path, description = "`drain`, `disable` (`maintenance`, `maint`) or `enable` (`ready`)"),
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
    // A backend named by host name is every address it has.
    let states = running_backends(&rt, &pool, &backend);
    if states.is_empty() {
        return not_found(&pool, &backend);
    }
    for (_, state) in &states {
        state.set_admin_state(target);
    }
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
        (status = 413, description = "The body is larger than 2 MB", body = ErrorBody),
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
        Err(e) => return super::api::body_rejected(&e, "expected {\"weight\": N}"),
    };
    if !(1..=1_000_000).contains(&weight) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "weight must be from 1 to 1000000" })),
        )
            .into_response();
    }
    let states = running_backends(&rt, &pool, &backend);
    if states.is_empty() {
        return not_found(&pool, &backend);
    }
    for (_, state) in &states {
        state.set_weight_override(Some(weight));
    }
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
    let states = running_backends(&rt, &pool, &backend);
    if states.is_empty() {
        return not_found(&pool, &backend);
    }
    for (_, state) in &states {
        state.set_weight_override(None);
    }
    Json(WeightSet {
        pool,
        backend,
        weight: None,
    })
    .into_response()
}

/// A backend to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBackend {
    /// `host:port`: an IP address (`10.0.0.5:8080`, `[2001:db8::5]:80`) or a
    /// name, resolved and kept fresh as configured backends are.
    address: String,
    /// From 1 to 1,000,000; default 1.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    weight: Option<u32>,
}

/// What a backend change did.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackendChanged {
    pub pool: String,
    /// As configured: `host:port`; later calls name it so.
    pub backend: String,
    /// `added` or `removed`.
    pub change: &'static str,
    /// What else the change applied (as a reload's summary).
    pub summary: String,
}

fn edit_error(e: EditError) -> Response {
    match e {
        EditError::Refused(r) => (
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::CONFLICT),
            Json(json!({ "error": r.message })),
        )
            .into_response(),
        EditError::Apply(e) => super::apply_error_response(&e),
    }
}

/// `POST /pools/{pool}/backends`
#[utoipa::path(
    post,
    path = "/pools/{pool}/backends",
    tag = "pools",
    summary = "Add a backend to a pool",
    description = "As HAProxy's `add server`: the pool gains the backend at once, applied as a reload is \
(its health checks start; all or nothing). It lasts until the config file is next applied and is listed \
under `admin_overrides` in `GET /config`.",
    security(("admin_token" = [])),
    params(("pool" = String, Path, description = "The pool's name")),
    request_body = NewBackend,
    responses(
        (status = 201, description = "Added", body = BackendChanged),
        (status = 400, description = "Not `{\"address\": \"host:port\", \"weight\": N}`, or a bad address or weight", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MB", body = ErrorBody),
        (status = 401, description = "No or wrong token", content_type = "text/plain", body = String),
        (status = 403, description = "No token is configured: mutating calls are disabled", content_type = "text/plain", body = String),
        (status = 404, description = "No such pool in the config", body = ErrorBody),
        (status = 409, description = "The pool has that backend already", body = ErrorBody),
        (status = 422, description = "Applying refused it; nothing changed", body = Object),
    )
)]
pub async fn add_backend(
    _: Authorized,
    State(rt): State<Arc<Runtime>>,
    Path(pool): Path<String>,
    body: Result<Json<NewBackend>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let bad =
        |msg: String| (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response();
    let NewBackend { address, weight } = match body {
        Ok(Json(b)) => b,
        Err(e) => {
            return super::api::body_rejected(
                &e,
                "expected {\"address\": \"host:port\", \"weight\": N}",
            )
        }
    };
    let address = match HostPort::parse(address.trim()) {
        Ok(a) => a,
        Err(e) => return bad(e),
    };
    let weight = weight.unwrap_or(1);
    if !(1..=1_000_000).contains(&weight) {
        return bad("weight must be from 1 to 1000000".into());
    }
    let label = address.to_string();
    let change = BackendChange {
        pool: pool.clone(),
        backend: label.clone(),
        change: "added",
        weight: Some(weight),
    };
    let edit = |config: &mut edge_config::Config| {
        let Some(p) = config.pools.iter_mut().find(|p| p.name == pool) else {
            return Err(Refusal {
                status: 404,
                message: format!("no pool {pool} in the config"),
            });
        };
        if p.backends.iter().any(|b| b.address == address) {
            return Err(Refusal {
                status: 409,
                message: format!("pool {pool} has backend {address} already"),
            });
        }
        p.backends.push(Backend { address, weight });
        Ok(())
    };
    match rt.edit_running(change, edit).await {
        Ok(diff) => {
            tracing::info!(%pool, backend = %label, weight, "backend added through the admin API");
            (
                StatusCode::CREATED,
                Json(BackendChanged {
                    pool,
                    backend: label,
                    change: "added",
                    summary: diff.to_string(),
                }),
            )
                .into_response()
        }
        Err(e) => edit_error(e),
    }
}

/// `DELETE /pools/{pool}/backends/{backend}`
#[utoipa::path(
    delete,
    path = "/pools/{pool}/backends/{backend}",
    tag = "pools",
    summary = "Remove a backend from a pool",
    description = "As HAProxy's `del server`: only a backend in maintenance (`disable`) with no request in \
flight, and not the pool's last one. Applied as a reload is; lasts until the config file is next applied.",
    security(("admin_token" = [])),
    params(
        ("pool" = String, Path, description = "The pool's name"),
        ("backend" = String, Path, description = "The backend as configured (`host:port`), URL-encoded"),
    ),
    responses(
        (status = 200, description = "Removed", body = BackendChanged),
        (status = 401, description = "No or wrong token", content_type = "text/plain", body = String),
        (status = 403, description = "No token is configured: mutating calls are disabled", content_type = "text/plain", body = String),
        (status = 404, description = "No such pool or backend", body = ErrorBody),
        (status = 409, description = "Not in maintenance, requests in flight, or the pool's last backend", body = ErrorBody),
        (status = 422, description = "Applying refused it; nothing changed", body = Object),
    )
)]
pub async fn remove_backend(
    _: Authorized,
    State(rt): State<Arc<Runtime>>,
    Path((pool, backend)): Path<(String, String)>,
) -> Response {
    let change = BackendChange {
        pool: pool.clone(),
        backend: backend.clone(),
        change: "removed",
        weight: None,
    };
    let edit = |config: &mut edge_config::Config| {
        let Some(p) = config.pools.iter_mut().find(|p| p.name == pool) else {
            return Err(Refusal {
                status: 404,
                message: format!("no pool {pool} in the config"),
            });
        };
        let Some(i) = p
            .backends
            .iter()
            .position(|b| b.address.to_string() == backend)
        else {
            return Err(Refusal {
                status: 404,
                message: format!("no backend {backend} in pool {pool}"),
            });
        };
        // Under the apply lock: what is checked here holds until the
        // backend is gone. Every address it has now (a name may have
        // several) must be in maintenance with nothing in flight.
        for (label, state) in running_backends(&rt, &pool, &backend) {
            let admin = state.admin_state();
            if admin != AdminState::Disabled {
                return Err(Refusal {
                    status: 409,
                    message: format!(
                        "backend {label} is {}: put it in maintenance first (POST /pools/{pool}/backends/{backend}/maintenance)",
                        admin.name()
                    ),
                });
            }
            let in_flight = state.in_flight.load(std::sync::atomic::Ordering::Relaxed);
            if in_flight > 0 {
                return Err(Refusal {
                    status: 409,
                    message: format!("backend {label} has {in_flight} requests in flight"),
                });
            }
        }
        if p.backends.len() == 1 {
            return Err(Refusal {
                status: 409,
                message: format!("{backend} is the last backend of pool {pool}"),
            });
        }
        p.backends.remove(i);
        Ok(())
    };
    match rt.edit_running(change, edit).await {
        Ok(diff) => {
            tracing::info!(%pool, %backend, "backend removed through the admin API");
            Json(BackendChanged {
                pool,
                backend,
                change: "removed",
                summary: diff.to_string(),
            })
            .into_response()
        }
        Err(e) => edit_error(e),
    }
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
    for c in rt.backend_changes() {
        out.push(
            json!({ "pool": c.pool, "backend": c.backend, "change": c.change, "weight": c.weight }),
        );
    }
    Value::Array(out)
}
