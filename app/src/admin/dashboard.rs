//! The live dashboard at the admin listener's `/` (as HAProxy's stats page
//! or Traefik's dashboard), and the JSON it polls that the other endpoints
//! do not already give: `/stats` (every Prometheus sample) and `/events`
//! (recent reloads, admin actions, warnings and errors).
//!
//! The page, its script and style are compiled into the binary and load
//! nothing from elsewhere: the `Content-Security-Policy` allows only this
//! origin. Buttons call the same token-protected endpoints as `curl` does,
//! with the token the operator types into the page (kept in the tab's
//! `sessionStorage`, never sent to any other origin).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus::proto::MetricType;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::runtime::Runtime;

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");
const ICON: &str = include_str!("assets/favicon.svg");

/// Only this origin's script, style, images and `fetch`; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the page.
#[utoipa::path(get, path = "/", tag = "dashboard", summary = "The live dashboard",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /dashboard.js`
#[utoipa::path(get, path = "/dashboard.js", tag = "dashboard", summary = "The dashboard's script",
    responses((status = 200, description = "The script", content_type = "text/javascript", body = String)))]
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard.css`
#[utoipa::path(get, path = "/dashboard.css", tag = "dashboard", summary = "The dashboard's style sheet",
    responses((status = 200, description = "The style sheet", content_type = "text/css", body = String)))]
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /favicon.svg`
#[utoipa::path(get, path = "/favicon.svg", tag = "dashboard", summary = "The dashboard's icon",
    responses((status = 200, description = "The icon", content_type = "image/svg+xml", body = String)))]
pub async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

/// `GET /stats`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// When it was read, seconds since the Unix epoch.
    pub time: f64,
    /// Every metric family by name.
    pub metrics: std::collections::BTreeMap<String, Family>,
}

/// One metric family of `GET /stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Family {
    /// `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub samples: Vec<Sample>,
}

/// One sample of `GET /stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sample {
    /// The metric's labels, name to value.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Counter or gauge value; for histograms and summaries, the sum.
    pub value: f64,
    /// Histograms and summaries: how many observations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// `GET /stats`: every metric `/metrics` has, as JSON: `{"time": unix
/// seconds, "metrics": {"name": {"type": "counter", "samples": [...]}}}`.
/// Rates are the client's to compute from two polls (as Prometheus does).
#[utoipa::path(
    get,
    path = "/stats",
    tag = "dashboard",
    summary = "Every metric of `/metrics`, as JSON",
    description = "Rates are differences between two reads, as Prometheus' `rate()`.",
    responses((status = 200, description = "The metrics", body = Stats))
)]
pub async fn stats(State(rt): State<Arc<Runtime>>) -> Response {
    let mut metrics = std::collections::BTreeMap::new();
    for family in rt.gather() {
        let kind = family.get_field_type();
        let samples: Vec<Sample> = family
            .get_metric()
            .iter()
            .map(|m| {
                let labels = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_string(), l.value().to_string()))
                    .collect();
                let (value, count) = match kind {
                    MetricType::COUNTER => (m.get_counter().get_value(), None),
                    MetricType::GAUGE => (m.get_gauge().get_value(), None),
                    // Deprecated as protobuf-specific, but still how the
                    // plain model carries an untyped value (prometheus 0.14).
                    #[allow(deprecated)]
                    MetricType::UNTYPED => (m.get_untyped().get_value(), None),
                    MetricType::HISTOGRAM => {
                        let h = m.get_histogram();
                        (h.get_sample_sum(), Some(h.get_sample_count()))
                    }
                    MetricType::SUMMARY => {
                        let s = m.get_summary();
                        (s.sample_sum(), Some(s.sample_count()))
                    }
                };
                Sample {
                    labels,
                    value: if value.is_finite() { value } else { 0.0 },
                    count,
                }
            })
            .collect();
        let kind = match kind {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::UNTYPED => "untyped",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
        };
        metrics.insert(family.name().to_string(), Family { kind, samples });
    }
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Json(Stats { time, metrics }).into_response()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events with a larger `seq` (what the previous poll saw last).
    #[serde(default)]
    after: u64,
}

/// `GET /events?after=SEQ`: recent notable log events, oldest first.
#[utoipa::path(
    get,
    path = "/events",
    tag = "dashboard",
    summary = "Recent notable log events, oldest first",
    description = "The last 200 of: every warning and error, and what edge itself logs at `info` (reloads, admin \
actions, health changes, drains); not the access log.",
    params(EventsQuery),
    responses(
        (status = 200, description = "The events", body = Vec<crate::events::Kept>),
        (status = 400, description = "`after` is not a sequence number", body = super::api::ErrorBody),
    )
)]
pub async fn events(
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match q {
        Ok(Query(q)) => Json(crate::events::since(q.after)).into_response(),
        Err(e) => (
            axum::http::StatusCode::BAD_REQUEST,
            Json(super::api::ErrorBody {
                error: format!("after: a sequence number from a previous answer ({e})"),
            }),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::{ICON, PAGE, SCRIPT, STYLE};

    #[test]
    fn the_assets_load_nothing_from_elsewhere() {
        for (name, text) in [
            ("index.html", PAGE),
            ("dashboard.js", SCRIPT),
            ("dashboard.css", STYLE),
        ] {
            // The SVG namespace is a name, not something loaded.
            let text = text.replace("\"http://www.w3.org/2000/svg\"", "");
            for needle in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!text.contains(needle), "{name} mentions {needle}");
            }
        }
        assert!(ICON.starts_with("<svg"));
        // Inline script and style would need 'unsafe-inline'.
        assert!(!PAGE.contains("<script>") && !PAGE.contains("style="));
        assert!(PAGE.contains("<script src=\"/dashboard.js\""));
    }
}
