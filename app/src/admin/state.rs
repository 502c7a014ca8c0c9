//! `GET /site/state`: what this node can tell a steering loop about itself,
//! as the proxy sees it (not as a probe from outside would):
//!
//! - `serving`: ready, and some pool a route proxies to has a usable
//!   backend (`why` says what is missing otherwise);
//! - `health`: readiness and, per pool a route uses, backends, usable ones,
//!   ejected ones;
//! - `load`: egress bits/s, requests/s, CPU cores busy (rates since the
//!   previous reading), client connections open now;
//! - `capacity` (`[site] capacity`) and `utilization`: the larger of egress
//!   ÷ egress capacity and connections ÷ connection capacity (`null`
//!   without a capacity);
//! - `qoe`: the players' reports (CMCD) for the 20 busiest client prefixes.
//!
//! The GeoDNS side reads it when a site's health URL is this endpoint.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::Json;
use edge_proxy::route::Action;
use prometheus::core::Collector;
use serde_json::{json, Value};

use crate::runtime::Runtime;

/// Client connections open now, every listener.
fn connections(rt: &Runtime) -> u64 {
    rt.proxy
        .metrics
        .connections_open
        .collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_gauge().get_value().max(0.0) as u64)
        .sum()
}

/// `GET /site/state`
pub async fn view(State(rt): State<Arc<Runtime>>) -> Json<Value> {
    let state = rt.proxy.state();
    let config = rt.config();
    let ready = rt.is_ready();
    let mut used: Vec<usize> = state
        .routes
        .iter()
        .filter_map(|r| match r.action {
            Action::Proxy { pool } => Some(pool),
            _ => None,
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    let pools: Vec<Value> = used
        .iter()
        .filter_map(|i| state.pools.get(*i))
        .map(|p| {
            let report = p.report();
            json!({
                "name": report.name,
                "backends": report.backends.len(),
                "usable": report.backends.iter().filter(|b| b.usable).count(),
                "ejected": report.backends.iter().filter(|b| b.ejected).count(),
            })
        })
        .collect();
    let any_usable = pools.iter().any(|p| p["usable"].as_u64().unwrap_or(0) > 0);
    let why = if !ready {
        Some("not ready (starting or draining)")
    } else if !pools.is_empty() && !any_usable {
        Some("no usable backend in any pool")
    } else {
        None
    };
    let rates = rt.proxy.load.rates();
    let open = connections(&rt);
    let capacity = config.site.as_ref().map(|s| s.capacity).unwrap_or_default();
    let utilization = [
        capacity
            .egress_bits
            .map(|c| rates.egress_bits_per_second / c as f64),
        capacity.connections.map(|c| open as f64 / c as f64),
    ]
    .into_iter()
    .flatten()
    .reduce(f64::max);
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Json(json!({
        "site": config.site.as_ref().map(|s| s.name.clone()),
        "node": config.site.as_ref().map(|s| s.node.clone()),
        "generation": state.generation,
        "time": time,
        "serving": why.is_none(),
        "why": why,
        "health": { "ready": ready, "pools": pools },
        "load": {
            "egress_bits_per_second": rates.egress_bits_per_second,
            "requests_per_second": rates.requests_per_second,
            "cpu_cores": rates.cpu_cores,
            "connections": open,
        },
        "capacity": {
            "egress_bits_per_second": capacity.egress_bits,
            "connections": capacity.connections,
        },
        "utilization": utilization,
        "qoe": rt.proxy.qoe.top(20),
    }))
}
