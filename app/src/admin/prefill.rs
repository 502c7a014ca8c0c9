//! `/cache/prefill`: start, watch and stop the node's prefill job
//! (`crate::prefill`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::api::ErrorBody;
use super::auth::Authorized;
use crate::prefill::Spec;
use crate::runtime::Runtime;

/// `POST /cache/prefill`: 202 with the job's first status, or 400 saying
/// what is wrong with the request.
#[utoipa::path(
    post,
    path = "/cache/prefill",
    tag = "cache",
    summary = "Start a prefill job (replaces a running one)",
    description = "Fills the cache ahead of demand: objects, or every segment of the chosen renditions of \
HLS and DASH manifests, inside a local time window, under a bandwidth cap; objects another node of the \
site owns are left to it. The job survives a restart (its state file).",
    security(("admin_token" = [])),
    request_body = Spec,
    responses(
        (status = 202, description = "Started: the job's status, as `GET /cache/prefill`", body = Object),
        (status = 400, description = "A field is missing or wrong", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MB", body = ErrorBody),
        (status = 401, description = "No or wrong token", content_type = "text/plain", body = String),
        (status = 403, description = "No token is configured: mutating calls are disabled", content_type = "text/plain", body = String),
        (status = 500, description = "The job could not start (its state file)", body = ErrorBody),
    )
)]
pub async fn start(
    _: Authorized,
    State(rt): State<Arc<Runtime>>,
    body: Result<Json<Spec>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let spec = match body {
        Ok(Json(s)) => s,
        Err(e) => return super::api::body_rejected(&e, "bad prefill request"),
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
#[utoipa::path(
    get,
    path = "/cache/prefill",
    tag = "cache",
    summary = "The prefill job's progress",
    description = "`{\"phase\": \"idle\"}` with no job; else its phase, objects, done, fetched, fresh, not owned, \
failed, bytes, rate, ETA and latest errors.",
    responses((status = 200, description = "The job", body = Object))
)]
pub async fn status(State(rt): State<Arc<Runtime>>) -> Response {
    Json(rt.prefill.status()).into_response()
}

/// `DELETE /cache/prefill`
#[utoipa::path(
    delete,
    path = "/cache/prefill",
    tag = "cache",
    summary = "Stop the prefill job",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Stopped: its last status", body = Object),
        (status = 401, description = "No or wrong token", content_type = "text/plain", body = String),
        (status = 403, description = "No token is configured: mutating calls are disabled", content_type = "text/plain", body = String),
        (status = 404, description = "No job", body = ErrorBody),
    )
)]
pub async fn cancel(_: Authorized, State(rt): State<Arc<Runtime>>) -> Response {
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
