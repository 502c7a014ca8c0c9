//! `/pools`: what the pools are doing, and operator overrides of backends.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edge_proxy::pool::AdminState;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::runtime::Runtime;

pub async fn list(State(rt): State<Arc<Runtime>>) -> Response {
    let state = rt.proxy.state();
    let pools: Vec<_> = state.pools.iter().map(|p| p.report()).collect();
    Json(pools).into_response()
}

fn not_found(pool: &str, backend: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("no backend {backend} in pool {pool}") })),
    )
        .into_response()
}

pub async fn set_state(
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
    Json(json!({ "pool": pool, "backend": backend, "admin": target })).into_response()
}

#[derive(Deserialize)]
pub struct WeightBody {
    weight: u32,
}

pub async fn set_weight(
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
    Json(json!({ "pool": pool, "backend": backend, "weight": weight })).into_response()
}

pub async fn clear_weight(
    State(rt): State<Arc<Runtime>>,
    Path((pool, backend)): Path<(String, String)>,
) -> Response {
    let Some(state) = rt.proxy.backend(&pool, &backend) else {
        return not_found(&pool, &backend);
    };
    state.set_weight_override(None);
    Json(json!({ "pool": pool, "backend": backend, "weight": null })).into_response()
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
