//! `/cache/prefill`: start, watch and stop the node's prefill job
//! (`crate::prefill`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::prefill::Spec;
use crate::runtime::Runtime;

/// `POST /cache/prefill`: 202 with the job's first status, or 400 saying
/// what is wrong with the request.
pub async fn start(
    State(rt): State<Arc<Runtime>>,
    body: Result<Json<Spec>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let spec = match body {
        Ok(Json(s)) => s,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("bad prefill request: {e}") })),
            )
                .into_response()
        }
    };
    if let Err(e) = spec.check() {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": e }))).into_response();
    }
    if let Err(e) = rt.prefill.start(&rt, spec, 0) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e })),
        )
            .into_response();
    }
    (StatusCode::ACCEPTED, Json(rt.prefill.status())).into_response()
}

/// `GET /cache/prefill`
pub async fn status(State(rt): State<Arc<Runtime>>) -> Response {
    Json(rt.prefill.status()).into_response()
}

/// `DELETE /cache/prefill`
pub async fn cancel(State(rt): State<Arc<Runtime>>) -> Response {
    if rt.prefill.cancel(&rt) {
        Json(rt.prefill.status()).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no prefill job" })),
        )
            .into_response()
    }
}
