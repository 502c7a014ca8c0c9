//! `/dns/sites`: GeoDNS sites (health, drain), and draining one.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edge_dns::SiteReport;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::api::ErrorBody;
use super::auth::Authorized;

use crate::runtime::Runtime;

/// `GET /dns/sites`
#[utoipa::path(
    get,
    path = "/dns/sites",
    tag = "dns",
    summary = "GeoDNS sites",
    description = "Every site of the GeoDNS config: up (healthy and not drained), its nodes' health checks, \
utilization and the share of clients shed to the next site. Empty when the node serves no DNS.",
    responses((status = 200, description = "The sites", body = Vec<SiteReport>))
)]
pub async fn sites(State(rt): State<Arc<Runtime>>) -> Response {
    Json(rt.dns.service.site_reports()).into_response()
}

/// A site's drain as set.
#[derive(Debug, Serialize, ToSchema)]
pub struct DrainSet {
    pub site: String,
    pub drained: bool,
}

/// `POST /dns/sites/{site}/{drain|undrain}`
#[utoipa::path(
    post,
    path = "/dns/sites/{site}/{action}",
    tag = "dns",
    summary = "Withdraw a site from DNS answers, or return it",
    description = "A drained site gets no new answers (clients go to the next nearest site); lasts until the next reload.",
    security(("admin_token" = [])),
    params(
        ("site" = String, Path, description = "The site's name"),
        ("action" = String, Path, description = "`drain` or `undrain`"),
    ),
    responses(
        (status = 200, description = "Set", body = DrainSet),
        (status = 401, description = "No or wrong token", content_type = "text/plain", body = String),
        (status = 403, description = "No token is configured: mutating calls are disabled", content_type = "text/plain", body = String),
        (status = 404, description = "No such site or action", body = ErrorBody),
    )
)]
pub async fn set_drain(
    _: Authorized,
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
    Json(DrainSet { site, drained }).into_response()
}
