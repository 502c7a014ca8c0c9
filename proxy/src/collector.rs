//! Gauges of backend state, read fresh at every scrape (no per-request cost).

use std::sync::{Arc, Weak};
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, Opts};

use crate::pool::{AdminState, BreakerPhase};
use crate::state::Proxy;

/// Exposes every backend's health, ejection, breaker, admin state, in-flight
/// requests, latency and effective weight.
pub struct PoolCollector {
    proxy: Weak<Proxy>,
    descs: Vec<Desc>,
}

fn gauge(name: &str, help: &str) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), &["pool", "backend"]).unwrap_or_else(|_| {
        // Names and labels here are constants; this cannot fail.
        GaugeVec::new(Opts::new("edge_invalid", "invalid"), &["pool", "backend"])
            .expect("constant metric")
    })
}

/// One series per state, 1 for the one in force (as node_exporter's
/// `node_systemd_unit_state` and kube-state-metrics do): alert rules read
/// `{state="open"} == 1`, not a number to decode.
fn state_gauge(name: &str, help: &str) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), &["pool", "backend", "state"]).expect("constant metric")
}

/// Sets `family`'s series for every state of `states`, 1 for `now`.
fn set_state(family: &GaugeVec, labels: [&str; 2], states: &[&str], now: &str) {
    for state in states {
        family
            .with_label_values(&[labels[0], labels[1], state])
            .set(if *state == now { 1.0 } else { 0.0 });
    }
}

const BREAKER_STATES: [&str; 3] = ["closed", "half_open", "open"];
const ADMIN_STATES: [&str; 3] = ["enabled", "draining", "disabled"];

struct Families {
    /// Addresses a backend host name has now (0: it does not resolve).
    names: GaugeVec,
    healthy: GaugeVec,
    usable: GaugeVec,
    ejected: GaugeVec,
    breaker: GaugeVec,
    admin: GaugeVec,
    in_flight: GaugeVec,
    ewma: GaugeVec,
    weight: GaugeVec,
    requests: IntCounterVec,
}

fn families() -> Families {
    Families {
        names: GaugeVec::new(
            Opts::new(
                "edge_backend_name_addresses",
                "Addresses a backend host name resolves to now (0: none, the backend is down)",
            ),
            &["pool", "name"],
        )
        .expect("constant metric"),
        healthy: gauge(
            "edge_backend_healthy",
            "1 if active health checks pass (or none are configured)",
        ),
        usable: gauge(
            "edge_backend_usable",
            "1 if new requests may go to the backend now",
        ),
        ejected: gauge(
            "edge_backend_ejected",
            "1 while outlier detection has the backend ejected",
        ),
        breaker: state_gauge(
            "edge_backend_breaker_state",
            "Circuit breaker: 1 for the state it is in (closed, half_open, open), 0 for the others",
        ),
        admin: state_gauge(
            "edge_backend_admin_state",
            "Set by the admin API: 1 for the state (enabled, draining, disabled), 0 for the others",
        ),
        in_flight: gauge(
            "edge_backend_in_flight_requests",
            "Requests in flight to the backend",
        ),
        ewma: gauge(
            "edge_backend_latency_ewma_seconds",
            "Peak-EWMA upstream latency",
        ),
        weight: gauge("edge_backend_effective_weight", "Weight selection uses now"),
        requests: IntCounterVec::new(
            Opts::new(
                "edge_backend_requests_total",
                "Attempts sent to the backend",
            ),
            &["pool", "backend"],
        )
        .expect("constant metric"),
    }
}

impl PoolCollector {
    pub fn new(proxy: &Arc<Proxy>) -> Self {
        let f = families();
        let mut descs = Vec::new();
        for c in [
            &f.names,
            &f.healthy,
            &f.usable,
            &f.ejected,
            &f.breaker,
            &f.admin,
            &f.in_flight,
            &f.ewma,
            &f.weight,
        ] {
            descs.extend(c.desc().into_iter().cloned());
        }
        descs.extend(f.requests.desc().into_iter().cloned());
        Self {
            proxy: Arc::downgrade(proxy),
            descs,
        }
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(proxy) = self.proxy.upgrade() else {
            return Vec::new();
        };
        let f = families();
        let now = Instant::now();
        let state = proxy.state();
        for pool in &state.pools {
            for n in &pool.names {
                f.names
                    .with_label_values(&[pool.name.as_str(), n.address.to_string().as_str()])
                    .set(n.addrs.len() as f64);
            }
            for b in &pool.backends {
                let labels = [pool.name.as_str(), b.label.as_str()];
                let s = &b.state;
                let flag = |v: bool| if v { 1.0 } else { 0.0 };
                f.healthy
                    .with_label_values(&labels)
                    .set(flag(s.is_healthy()));
                f.usable
                    .with_label_values(&labels)
                    .set(flag(pool.usable(b, now)));
                f.ejected
                    .with_label_values(&labels)
                    .set(flag(s.is_ejected(now)));
                let breaker = match s.breaker_phase(now) {
                    BreakerPhase::Closed => "closed",
                    BreakerPhase::HalfOpen { .. } => "half_open",
                    BreakerPhase::Open { .. } => "open",
                };
                set_state(&f.breaker, labels, &BREAKER_STATES, breaker);
                let admin = match s.admin_state() {
                    AdminState::Enabled => "enabled",
                    AdminState::Draining => "draining",
                    AdminState::Disabled => "disabled",
                };
                set_state(&f.admin, labels, &ADMIN_STATES, admin);
                f.in_flight
                    .with_label_values(&labels)
                    .set(s.in_flight.load(std::sync::atomic::Ordering::Relaxed) as f64);
                if let Some(ms) = s.ewma_ms(now) {
                    f.ewma.with_label_values(&labels).set(ms / 1000.0);
                }
                f.weight
                    .with_label_values(&labels)
                    .set(f64::from(pool.effective_weight(b)));
                f.requests
                    .with_label_values(&labels)
                    .inc_by(s.requests.load(std::sync::atomic::Ordering::Relaxed));
            }
        }
        let mut out = Vec::new();
        for c in [
            &f.names,
            &f.healthy,
            &f.usable,
            &f.ejected,
            &f.breaker,
            &f.admin,
            &f.in_flight,
            &f.ewma,
            &f.weight,
        ] {
            out.extend(c.collect());
        }
        out.extend(f.requests.collect());
        out
    }
}
