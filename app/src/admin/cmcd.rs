//! `GET /cmcd`: what the players behind each client prefix report (CTA-5004
//! Common Media Client Data): requests, buffer starvations per 1,000
//! requests, measured throughput and bitrate (kbps, weighted means), and
//! the playback sessions of the last 5 minutes. The steering loop reads it.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::runtime::Runtime;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// Prefixes listed, most requests first (default 100, at most 10,000).
    limit: Option<usize>,
}

/// `GET /cmcd[?limit=N]`
#[utoipa::path(
    get,
    path = "/cmcd",
    tag = "site",
    summary = "What players report (CMCD), per client prefix",
    description = "CTA-5004 Common Media Client Data: per client prefix, requests, buffer starvations per 1,000 \
requests, measured throughput and bitrate (kbps, weighted means); the playback sessions of the last 5 minutes.",
    params(Params),
    responses((status = 200, description = "`{\"site\", \"sessions\", \"requests\", \"buffer_starvations\", \"prefixes\": [...]}`", body = Object))
)]
pub async fn view(State(rt): State<Arc<Runtime>>, Query(p): Query<Params>) -> Json<Value> {
    let limit = p.limit.unwrap_or(100).min(10_000);
    let cmcd = &rt.proxy.metrics.video.cmcd;
    rt.proxy.qoe.count_sessions(cmcd);
    let site = rt.proxy.state().site_label.clone();
    Json(json!({
        "site": &*site,
        "sessions": cmcd.sessions.with_label_values(&[&*site]).get(),
        "requests": cmcd.requests.with_label_values(&[&*site]).get(),
        "buffer_starvations": cmcd.starvations.with_label_values(&[&*site]).get(),
        "prefixes": rt.proxy.qoe.top(limit),
    }))
}
