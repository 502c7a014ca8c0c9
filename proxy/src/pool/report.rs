//! What the admin API shows of pools and backends.

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use super::{AdminState, BreakerPhase, Pool};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PoolReport {
    pub name: String,
    /// `round_robin`, `weighted_round_robin`, `random`, `least_requests`,
    /// `p2c_ewma`, `source_ip_hash`, `cookie` or `consistent_hash`.
    pub algorithm: &'static str,
    /// When every backend is down or ejected, requests go to all of them
    /// anyway (Envoy's panic mode) instead of a 503.
    pub panic_mode: bool,
    /// Whether an active health check is configured.
    pub health_checked: bool,
    /// Requests in progress on the pool now.
    pub active_requests: u64,
    /// Retries in progress now (what the retry budget limits).
    pub retries_in_flight: u64,
    pub backends: Vec<BackendReport>,
    /// Backends named by host name: the addresses each has now.
    pub names: Vec<NameReport>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NameReport {
    pub address: String,
    pub addresses: Vec<String>,
    /// Why it has none (it is down until it resolves).
    pub error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackendReport {
    /// As configured (`host:port`, or `name:port@address` for a backend
    /// named by host name); the admin calls name a backend by it.
    pub address: String,
    /// The socket address connected to.
    pub resolved: String,
    /// As configured.
    pub weight: u32,
    /// What selection uses now (admin override, load feedback).
    pub effective_weight: u32,
    pub weight_override: Option<u32>,
    pub admin: AdminState,
    /// New requests may go here now.
    pub usable: bool,
    /// The active health check's verdict (true when none is configured).
    pub healthy: bool,
    /// Why the last health check failed.
    pub health_error: Option<String>,
    /// Ejected by outlier detection (passive health) now.
    pub ejected: bool,
    /// Milliseconds until the ejection ends.
    pub ejected_for_ms: Option<u128>,
    /// Ejections since the backend appeared (they lengthen each time).
    pub ejections: u64,
    /// Circuit breaker: `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// While open: milliseconds until a trial request is let through.
    pub breaker_retry_in_ms: Option<u128>,
    /// Requests in progress on it now.
    pub in_flight: u64,
    /// Requests sent to it since it appeared.
    pub requests: u64,
    /// Attempts that ended in a connect failure, a reset, a timeout or a 5xx.
    pub failures: u64,
    /// Peak-EWMA response latency in milliseconds, if it has answered.
    pub ewma_ms: Option<f64>,
    /// The load it reports (percent, `load_feedback`), if any.
    pub load: Option<u8>,
}

impl Pool {
    pub fn report(&self) -> PoolReport {
        let now = Instant::now();
        PoolReport {
            name: self.name.clone(),
            algorithm: self.config.algorithm.name(),
            panic_mode: self.config.panic_mode,
            health_checked: self.config.health_check.is_some(),
            active_requests: self.counters.active.load(Ordering::Relaxed),
            retries_in_flight: self.counters.retries.load(Ordering::Relaxed),
            names: self
                .names
                .iter()
                .map(|n| NameReport {
                    address: n.address.to_string(),
                    addresses: n.addrs.iter().map(|ip| ip.to_string()).collect(),
                    error: n.error.clone(),
                })
                .collect(),
            backends: self
                .backends
                .iter()
                .map(|b| {
                    let s = &b.state;
                    let (breaker, retry_in) = match s.breaker_phase(now) {
                        BreakerPhase::Closed => ("closed", None),
                        BreakerPhase::Open { until } => (
                            "open",
                            Some(until.saturating_duration_since(now).as_millis()),
                        ),
                        BreakerPhase::HalfOpen { .. } => ("half_open", None),
                    };
                    let ejected_until = s.ejected_until(now);
                    BackendReport {
                        address: b.label.clone(),
                        resolved: b.addr.to_string(),
                        weight: b.weight,
                        effective_weight: self.effective_weight(b),
                        weight_override: s.weight_override(),
                        admin: s.admin_state(),
                        usable: self.usable(b, now),
                        healthy: s.is_healthy(),
                        health_error: s.last_health_error(),
                        ejected: ejected_until.is_some(),
                        ejected_for_ms: ejected_until
                            .map(|t| t.saturating_duration_since(now).as_millis()),
                        ejections: s.ejections.load(Ordering::Relaxed),
                        breaker,
                        breaker_retry_in_ms: retry_in,
                        in_flight: s.in_flight.load(Ordering::Relaxed),
                        requests: s.requests.load(Ordering::Relaxed),
                        failures: s.failures.load(Ordering::Relaxed),
                        ewma_ms: s.ewma_ms(now).map(|m| (m * 1000.0).round() / 1000.0),
                        load: s.load(),
                    }
                })
                .collect(),
        }
    }
}

impl AdminState {
    /// As the admin API writes it: `enabled`, `draining`, `disabled`.
    pub fn name(self) -> &'static str {
        match self {
            AdminState::Enabled => "enabled",
            AdminState::Draining => "draining",
            AdminState::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            // HAProxy's runtime API words too: `ready`, `maint`.
            "enable" | "enabled" | "ready" => Some(AdminState::Enabled),
            "drain" | "draining" => Some(AdminState::Draining),
            "disable" | "disabled" | "maintenance" | "maint" => Some(AdminState::Disabled),
            _ => None,
        }
    }
}
