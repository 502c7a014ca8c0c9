//! `/dns/sites`: GeoDNS sites (health, drain), and draining one.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::runtime::Runtime;

/// `GET /dns/sites`
pub async fn sites(State(rt): State<Arc<Runtime>>) -> Response {
    Json(rt.dns.service.site_reports()).into_response()
}

/// `POST /dns/sites/{site}/{drain|undrain}`
pub async fn set_drain(
    State(rt): State<Arc<Runtime>>,
    Path((site, action)): Path<(String, String)>,
) -> Response {
    let drained = match action.as_str() {
        "drain" => true,
        "undrain" => false,
        other => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": format!("unknown action {other:?}: drain or undrain") })),
            )
                .into_response()
        }
    };
    if !rt.dns.service.sites.set_drained(&site, drained) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no DNS site {site:?}") })),
        )
            .into_response();
    }
    tracing::info!(%site, drained, "DNS site drain set through the admin API");
    Json(json!({ "site": site, "drained": drained })).into_response()
}
