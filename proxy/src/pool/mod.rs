//! Pools of backends at run time: resolved addresses, per-backend state that
//! survives reloads, which backends are usable, selection, limits and the
//! retry budget.

pub mod health;
pub mod peer;
pub mod report;
mod select;
pub mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_config::{Algorithm, HostPort, Retry};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::BuildError;
use crate::metrics::{BackendMetrics, PoolMetrics, ProxyMetrics};
pub use select::{Selector, View};
pub use state::{AdminState, BackendState, BreakerPhase, Outcome};

/// Per-pool counters that outlive config generations (for the retry budget).
#[derive(Debug, Default)]
pub struct PoolCounters {
    /// Requests of this pool being served now.
    pub active: AtomicU64,
    /// Retry attempts in flight now.
    pub retries: AtomicU64,
}

/// State by (pool, address) and by pool, shared across reloads.
#[derive(Default)]
pub struct BackendRegistry {
    backends: Mutex<HashMap<(String, String), Arc<BackendState>>>,
    pools: Mutex<HashMap<String, Arc<PoolCounters>>>,
}

impl BackendRegistry {
    pub fn get(&self, pool: &str, address: &str) -> Arc<BackendState> {
        self.backends
            .lock()
            .entry((pool.to_string(), address.to_string()))
            .or_default()
            .clone()
    }

    pub fn pool(&self, pool: &str) -> Arc<PoolCounters> {
        self.pools
            .lock()
            .entry(pool.to_string())
            .or_default()
            .clone()
    }

    /// Drops state of backends no longer in any pool (a host name's address
    /// went away); the rest keep everything.
    pub fn retain_backends(&self, live: &[(String, String)]) {
        self.backends.lock().retain(|k, _| live.contains(k));
    }

    /// Drops state of backends no longer in any pool, and clears admin
    /// overrides of the rest (they last until the next reload).
    pub fn retain(&self, live: &[(String, String)]) {
        let mut backends = self.backends.lock();
        backends.retain(|k, _| live.contains(k));
        for s in backends.values() {
            s.clear_overrides();
        }
        let pools: Vec<&String> = live.iter().map(|(p, _)| p).collect();
        self.pools.lock().retain(|k, _| pools.contains(&k));
    }
}

/// A backend ready to be connected to.
pub struct Backend {
    /// As configured (`host:port`).
    pub address: HostPort,
    /// `address` as text, for logs, metric labels and the admin API.
    pub label: String,
    /// Resolved when the pool was built.
    pub addr: SocketAddr,
    pub weight: u32,
    pub state: Arc<BackendState>,
    pub metrics: BackendMetrics,
    /// Counters of TCP (L4) connections to this backend.
    pub tcp: crate::tcp::metrics::BackendCounters,
    /// Value of the sticky cookie that names this backend (not its address).
    pub sticky_id: String,
    /// `addr` as a plain-HTTP peer, for the HTTP/1 shortcut's pooled
    /// connections.
    pub plain: peer::PlainPeer,
}

/// Why no backend could be chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Unavailable {
    /// Every backend is down, ejected, drained or disabled.
    NoneUp,
    /// The usable ones are behind open breakers; try again after this.
    BreakersOpen { retry_after: Duration },
    /// All usable backends were tried already for this request.
    AllTried,
}

/// A choice of backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    pub index: usize,
    /// A half-open breaker's probe: its outcome decides the breaker.
    pub probe: bool,
    /// Chosen in panic mode (ignoring health).
    pub panic: bool,
}

/// Pool-wide limits of the circuit breaker.
struct Limits {
    requests: Option<Arc<Semaphore>>,
    max_pending: usize,
    pending: AtomicUsize,
}

/// Why a request was refused by the pool's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// `max_requests` in flight and `max_pending` waiting already.
    Pending,
    /// Waited as long as allowed for a slot.
    Timeout,
}

/// A pool at run time.
pub struct Pool {
    pub name: String,
    pub config: edge_config::Pool,
    pub backends: Vec<Backend>,
    pub counters: Arc<PoolCounters>,
    pub metrics: PoolMetrics,
    selector: Selector,
    limits: Limits,
    /// Trust anchors for TLS to backends (`tls.ca_file`), as pingora wants them.
    pub ca: Option<Arc<pingora_core::protocols::tls::CaType>>,
    /// Backends named by host name: what each resolved to.
    pub names: Vec<NameStatus>,
    /// Backend index by sticky-cookie value.
    sticky: HashMap<String, usize>,
}

/// A pool's backends as its selector sees them during one pick.
struct Live<'a> {
    pool: &'a Pool,
    exclude: &'a [usize],
    now: Instant,
    panic: bool,
}

impl select::Candidates for Live<'_> {
    fn len(&self) -> usize {
        self.pool.backends.len()
    }

    fn base_weight(&self, i: usize) -> u32 {
        let b = &self.pool.backends[i];
        b.state.weight_override().unwrap_or(b.weight)
    }

    fn weight(&self, i: usize) -> u32 {
        let b = &self.pool.backends[i];
        let ok = !self.exclude.contains(&i)
            && if self.panic {
                b.state.admin_state() == AdminState::Enabled
            } else {
                self.pool.usable(b, self.now)
            };
        if ok {
            self.pool.effective_weight(b)
        } else {
            0
        }
    }

    fn in_flight(&self, i: usize) -> u64 {
        self.pool.backends[i]
            .state
            .in_flight
            .load(Ordering::Relaxed)
    }

    fn ewma_ms(&self, i: usize) -> Option<f64> {
        self.pool.backends[i].state.ewma_ms(self.now)
    }

    fn weights_epoch(&self) -> u64 {
        state::weights_epoch()
    }
}

/// Addresses of backend host names, as looked up (`[resolver]`): by host,
/// the addresses, or why there are none.
pub type Resolved = HashMap<String, Result<Vec<std::net::IpAddr>, String>>;

/// What became of a backend named by host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameStatus {
    /// As configured (`host:port`).
    pub address: HostPort,
    /// The addresses it has now (one backend each).
    pub addrs: Vec<std::net::IpAddr>,
    /// Why it has none, when it has none.
    pub error: Option<String>,
}

fn sticky_id(pool: &str, address: &str) -> String {
    let h = format!("{pool}/{address}")
        .bytes()
        .fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        });
    format!("{h:016x}")
}

fn load_ca(
    pool: &str,
    path: &std::path::Path,
) -> Result<Arc<pingora_core::protocols::tls::CaType>, BuildError> {
    let err = |why: String| BuildError::Certificate {
        listener: format!("pool {pool}"),
        path: path.to_path_buf(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| err(format!("not PEM: {e}")))?;
        // Checked by rustls first: pingora's parser panics on bad DER.
        let mut store = rustls::RootCertStore::empty();
        store
            .add(cert.clone())
            .map_err(|e| err(format!("not a CA certificate: {e}")))?;
        out.push(pingora_core::utils::tls::WrappedX509::new(
            cert.to_vec(),
            pingora_core::utils::tls::parse_x509,
        ));
    }
    if out.is_empty() {
        return Err(err("no CERTIFICATE in the file".into()));
    }
    Ok(Arc::from(out.into_boxed_slice()))
}

impl Pool {
    /// Builds a pool. A backend named by an IP literal is one backend; one
    /// named by host name is one backend per address `resolved` has for it
    /// (none while it does not resolve: it is reported in `names`).
    pub fn build(
        config: &edge_config::Pool,
        registry: &BackendRegistry,
        metrics: &ProxyMetrics,
        resolved: &Resolved,
    ) -> Result<Self, BuildError> {
        let mut backends = Vec::with_capacity(config.backends.len());
        let mut names = Vec::new();
        let mut add = |b: &edge_config::Backend, addr: SocketAddr, label: String| {
            backends.push(Backend {
                addr,
                plain: peer::PlainPeer::new(addr),
                state: registry.get(&config.name, &label),
                metrics: metrics.backend(&config.name, &label),
                tcp: metrics.tcp.backend(&config.name, &label),
                sticky_id: sticky_id(&config.name, &label),
                weight: b.weight,
                address: b.address.clone(),
                label,
            });
        };
        for b in &config.backends {
            if let Some(ip) = b.address.ip() {
                add(
                    b,
                    SocketAddr::new(ip, b.address.port),
                    b.address.to_string(),
                );
                continue;
            }
            let (mut addrs, error) = match resolved.get(&b.address.host) {
                Some(Ok(a)) => (a.clone(), None),
                Some(Err(e)) => (Vec::new(), Some(e.clone())),
                None => (Vec::new(), Some("not looked up yet".to_string())),
            };
            addrs.sort_unstable();
            addrs.dedup();
            for ip in &addrs {
                let label = format!("{}@{ip}", b.address);
                add(b, SocketAddr::new(*ip, b.address.port), label);
            }
            names.push(NameStatus {
                address: b.address.clone(),
                addrs,
                error,
            });
        }
        let addrs: Vec<(SocketAddr, u32)> = backends.iter().map(|b| (b.addr, b.weight)).collect();
        let cb = &config.circuit_breaker;
        let max_requests = match (cb.max_requests, cb.max_connections) {
            (0, 0) => None,
            (0, c) | (c, 0) => Some(c),
            (r, c) => Some(r.min(c)),
        };
        let ca = match config.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
            Some(path) => Some(load_ca(&config.name, path)?),
            None => None,
        };
        if config.health_check.is_none() {
            for b in &backends {
                b.state.reset_health();
            }
        }
        Ok(Self {
            name: config.name.clone(),
            selector: Selector::new(&config.algorithm, &addrs),
            counters: registry.pool(&config.name),
            metrics: metrics.pool(&config.name),
            limits: Limits {
                requests: max_requests.map(|n| Arc::new(Semaphore::new(n))),
                max_pending: cb.max_pending,
                pending: AtomicUsize::new(0),
            },
            config: config.clone(),
            sticky: backends
                .iter()
                .enumerate()
                .map(|(i, b)| (b.sticky_id.clone(), i))
                .collect(),
            backends,
            ca,
            names,
        })
    }

    /// The host names of this pool's backends (to look up).
    pub fn host_names(config: &edge_config::Pool) -> impl Iterator<Item = &str> {
        config
            .backends
            .iter()
            .filter(|b| b.address.ip().is_none())
            .map(|b| b.address.host.as_str())
    }

    /// The weight selection uses now: the configured one (or the admin's
    /// override), reduced by the load the backend reports.
    pub fn effective_weight(&self, b: &Backend) -> u32 {
        let w = b.state.weight_override().unwrap_or(b.weight);
        if w == 0 {
            return 0;
        }
        match (&self.config.load_feedback, b.state.load()) {
            (Some(lf), Some(load)) => {
                let keep = u32::from(100 - load).max(u32::from(lf.min_weight_percent));
                (w * keep / 100).max(1)
            }
            _ => w,
        }
    }

    /// Whether new requests may go to a backend now.
    pub fn usable(&self, b: &Backend, now: Instant) -> bool {
        let cap = self.config.max_connections_per_backend as u64;
        b.state.admin_state() == AdminState::Enabled
            && b.state.is_healthy()
            && !b.state.is_ejected(now)
            && (cap == 0 || b.state.in_flight.load(Ordering::Relaxed) < cap)
            && b.state.breaker_allows(now, &self.config.circuit_breaker)
    }

    /// The pool's backends as a selector sees them now: those in `exclude`
    /// are unusable; in `panic`, every enabled backend is usable.
    fn candidates<'a>(&'a self, exclude: &'a [usize], now: Instant, panic: bool) -> Live<'a> {
        Live {
            pool: self,
            exclude,
            now,
            panic,
        }
    }

    /// Picks a backend not in `exclude`. `sticky` is a sticky-cookie value;
    /// `key` the hash input of ring algorithms.
    pub fn select(
        &self,
        exclude: &[usize],
        sticky: Option<&str>,
        key: Option<&[u8]>,
    ) -> Result<Pick, Unavailable> {
        self.select_at(Instant::now(), exclude, sticky, key)
    }

    /// [`Self::select`] as of `now` (a clock read the caller made a moment
    /// before: breakers, ejections and slow start are judged at it).
    pub fn select_at(
        &self,
        now: Instant,
        exclude: &[usize],
        sticky: Option<&str>,
        key: Option<&[u8]>,
    ) -> Result<Pick, Unavailable> {
        if let Some(id) = sticky {
            if let Some(&i) = self.sticky.get(id) {
                if !exclude.contains(&i) && self.usable(&self.backends[i], now) {
                    let (admitted, probe) = self.backends[i]
                        .state
                        .breaker_admit(now, &self.config.circuit_breaker);
                    if admitted {
                        return Ok(Pick {
                            index: i,
                            probe,
                            panic: false,
                        });
                    }
                }
            }
        }
        let mut excluded: Vec<usize> = exclude.to_vec();
        // A half-open breaker may run out of probe slots between the look and
        // the admit: try again without that backend.
        for _ in 0..=self.backends.len() {
            let Some(i) = self
                .selector
                .pick(&self.candidates(&excluded, now, false), key)
            else {
                break;
            };
            let (admitted, probe) = self.backends[i]
                .state
                .breaker_admit(now, &self.config.circuit_breaker);
            if admitted {
                return Ok(Pick {
                    index: i,
                    probe,
                    panic: false,
                });
            }
            excluded.push(i);
        }
        if self.config.panic_mode {
            if let Some(i) = self
                .selector
                .pick(&self.candidates(exclude, now, true), key)
            {
                return Ok(Pick {
                    index: i,
                    probe: false,
                    panic: true,
                });
            }
        }
        Err(self.why_unavailable(exclude, now))
    }

    fn why_unavailable(&self, exclude: &[usize], now: Instant) -> Unavailable {
        let up: Vec<&Backend> = self
            .backends
            .iter()
            .filter(|b| {
                b.state.admin_state() == AdminState::Enabled
                    && b.state.is_healthy()
                    && !b.state.is_ejected(now)
            })
            .collect();
        if up.is_empty() {
            return Unavailable::NoneUp;
        }
        let open: Vec<Duration> = up
            .iter()
            .filter_map(|b| match b.state.breaker_phase(now) {
                BreakerPhase::Open { until } => Some(until.saturating_duration_since(now)),
                BreakerPhase::HalfOpen { .. } => Some(Duration::from_secs(1)),
                BreakerPhase::Closed => None,
            })
            .collect();
        if !exclude.is_empty() && open.len() < up.len() {
            return Unavailable::AllTried;
        }
        match open.iter().min() {
            Some(d) => Unavailable::BreakersOpen { retry_after: *d },
            None => Unavailable::AllTried,
        }
    }

    /// Ejects a backend unless that would put more than
    /// `max_ejection_percent` of the pool out (one may always go).
    pub fn try_eject(&self, index: usize) -> Option<Duration> {
        let policy = self.config.outlier_detection.as_ref()?;
        if policy.max_ejection_percent == 0 {
            return None;
        }
        let now = Instant::now();
        let ejected = self
            .backends
            .iter()
            .filter(|b| b.state.is_ejected(now))
            .count();
        let allowed = (self.backends.len() * usize::from(policy.max_ejection_percent) / 100).max(1);
        if ejected >= allowed {
            return None;
        }
        Some(self.backends.get(index)?.state.eject(now, policy))
    }

    /// Records how an attempt on a backend ended: feeds outlier detection
    /// (ejecting when it says so) and the backend's breaker.
    pub fn record_outcome(&self, index: usize, outcome: state::Outcome, probe: bool) {
        self.record_outcome_at(index, outcome, probe, Instant::now());
    }

    /// [`Self::record_outcome`] as of `now` (when the outcome was seen).
    pub fn record_outcome_at(
        &self,
        index: usize,
        outcome: state::Outcome,
        probe: bool,
        now: Instant,
    ) {
        let Some(b) = self.backends.get(index) else {
            return;
        };
        let verdict = b.state.record(
            outcome,
            probe,
            now,
            self.config.outlier_detection.as_ref(),
            &self.config.circuit_breaker,
        );
        if verdict.eject {
            if let Some(d) = self.try_eject(index) {
                b.metrics.ejections.inc();
                tracing::warn!(pool = %self.name, backend = %b.label, duration = ?d, "backend ejected by outlier detection");
            }
        }
        if verdict.breaker_opened {
            tracing::warn!(pool = %self.name, backend = %b.label, "circuit breaker opened");
        }
        if verdict.breaker_closed {
            tracing::info!(pool = %self.name, backend = %b.label, "circuit breaker closed");
        }
    }

    /// Waits for a request slot (`max_requests`), queueing at most
    /// `max_pending` requests for up to `wait`.
    pub async fn admit(&self, wait: Duration) -> Result<Option<OwnedSemaphorePermit>, Overflow> {
        let Some(sem) = &self.limits.requests else {
            return Ok(None);
        };
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(Some(p));
        }
        if self.limits.pending.fetch_add(1, Ordering::AcqRel) >= self.limits.max_pending {
            self.limits.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(Overflow::Pending);
        }
        let permit = tokio::time::timeout(wait, sem.clone().acquire_owned()).await;
        self.limits.pending.fetch_sub(1, Ordering::AcqRel);
        match permit {
            Ok(Ok(p)) => Ok(Some(p)),
            _ => Err(Overflow::Timeout),
        }
    }

    /// Whether the retry budget allows one more retry now: retries in flight
    /// below `budget_percent` of active requests (at least
    /// `min_concurrent_retries`), and below the breaker's `max_retries`.
    pub fn retry_budget_allows(&self, policy: &Retry) -> bool {
        let active = self.counters.active.load(Ordering::Relaxed);
        let retries = self.counters.retries.load(Ordering::Relaxed);
        let budget = (active * u64::from(policy.budget_percent) / 100)
            .max(u64::from(policy.min_concurrent_retries));
        let cap = self.config.circuit_breaker.max_retries as u64;
        retries < budget && (cap == 0 || retries < cap)
    }

    /// Whether the pool looks strained: a backend failing its health
    /// checks, ejected or with its breaker not closed, retries in flight,
    /// or requests queueing for a slot. Optional work (prefetch) waits then.
    pub fn struggling(&self) -> bool {
        let now = Instant::now();
        self.backends.iter().any(|b| {
            !b.state.is_healthy()
                || b.state.is_ejected(now)
                || b.state.breaker_phase(now) != BreakerPhase::Closed
        }) || self.counters.retries.load(Ordering::Relaxed) > 0
            || self.limits.pending.load(Ordering::Relaxed) > 0
    }

    pub fn uses_cookie(&self) -> Option<&edge_config::StickyCookie> {
        match &self.config.algorithm {
            Algorithm::Cookie(c) => Some(c),
            _ => None,
        }
    }

    pub fn backend_by_label(&self, label: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.label == label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_config::CircuitBreaker;

    fn pool(n: usize, tweak: impl FnOnce(&mut edge_config::Pool)) -> Pool {
        let registry = BackendRegistry::default();
        let metrics = ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
        let mut config = edge_config::Pool {
            name: "p".into(),
            algorithm: Algorithm::RoundRobin,
            backends: (0..n)
                .map(|i| edge_config::Backend {
                    address: HostPort::parse(&format!("127.0.0.1:{}", 9000 + i)).unwrap(),
                    weight: 1,
                })
                .collect(),
            host: None,
            panic_mode: false,
            proxy_protocol: None,
            max_connections_per_backend: 0,
            load_feedback: None,
            health_check: None,
            outlier_detection: None,
            circuit_breaker: CircuitBreaker::default(),
            timeouts: Default::default(),
            retry: Default::default(),
            tls: None,
        };
        tweak(&mut config);
        Pool::build(&config, &registry, &metrics, &Resolved::new()).unwrap()
    }

    #[test]
    fn round_robin_visits_each_backend_and_skips_tried_ones() {
        let p = pool(3, |_| {});
        let picks: Vec<usize> = (0..6)
            .map(|_| p.select(&[], None, None).unwrap().index)
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        for _ in 0..10 {
            assert_ne!(p.select(&[1], None, None).unwrap().index, 1);
        }
        assert_eq!(p.select(&[0, 1, 2], None, None), Err(Unavailable::AllTried));
    }

    #[test]
    fn backend_state_survives_a_rebuild_that_keeps_the_backend() {
        let registry = BackendRegistry::default();
        let metrics = ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
        let first = pool(2, |_| {});
        let config = first.config.clone();
        let a = Pool::build(&config, &registry, &metrics, &Resolved::new()).unwrap();
        a.backends[0].state.in_flight.store(7, Ordering::Relaxed);
        a.backends[0]
            .state
            .observe_latency(Duration::from_millis(40), Instant::now());
        let mut changed = config.clone();
        changed.backends.truncate(1);
        let b = Pool::build(&changed, &registry, &metrics, &Resolved::new()).unwrap();
        assert!(Arc::ptr_eq(&a.backends[0].state, &b.backends[0].state));
        assert_eq!(b.backends[0].state.in_flight.load(Ordering::Relaxed), 7);
        assert!(b.backends[0].state.ewma_ms(Instant::now()).is_some());
    }

    #[test]
    fn down_drained_and_disabled_backends_get_nothing() {
        let p = pool(3, |_| {});
        p.backends[0].state.set_admin_state(AdminState::Draining);
        p.backends[1].state.set_admin_state(AdminState::Disabled);
        for _ in 0..10 {
            assert_eq!(p.select(&[], None, None).unwrap().index, 2);
        }
        p.backends[2].state.health_report(false, 1, 1, None);
        assert_eq!(p.select(&[], None, None), Err(Unavailable::NoneUp));
    }

    #[test]
    fn panic_mode_sends_to_all_when_none_is_up() {
        let p = pool(2, |c| c.panic_mode = true);
        for b in &p.backends {
            b.state.health_report(false, 1, 1, None);
        }
        let pick = p.select(&[], None, None).unwrap();
        assert!(pick.panic);
    }

    #[test]
    fn open_breakers_say_when_to_come_back() {
        let p = pool(1, |c| {
            c.circuit_breaker.consecutive_failures = Some(1);
            c.circuit_breaker.open_for = Duration::from_secs(7);
        });
        let b = &p.backends[0];
        b.state.record(
            Outcome::GatewayError,
            false,
            Instant::now(),
            None,
            &p.config.circuit_breaker,
        );
        match p.select(&[], None, None) {
            Err(Unavailable::BreakersOpen { retry_after }) => {
                assert!(retry_after <= Duration::from_secs(7))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn load_feedback_shifts_weight_away() {
        let p = pool(2, |c| {
            c.load_feedback = Some(edge_config::LoadFeedback {
                header: Some("x-backend-load".into()),
                from_health_check: false,
                min_weight_percent: 10,
            });
            for b in &mut c.backends {
                b.weight = 100;
            }
        });
        p.backends[0].state.report_load(80);
        assert_eq!(p.effective_weight(&p.backends[0]), 20);
        p.backends[0].state.report_load(100);
        assert_eq!(
            p.effective_weight(&p.backends[0]),
            10,
            "never below min_weight_percent"
        );
        assert_eq!(p.effective_weight(&p.backends[1]), 100);
    }

    #[test]
    fn at_most_max_ejection_percent_are_ejected_but_always_one() {
        let p = pool(4, |c| {
            c.outlier_detection = Some(edge_config::OutlierDetection {
                consecutive_5xx: Some(1),
                consecutive_gateway_errors: None,
                consecutive_connect_failures: None,
                failure_percentage: None,
                failure_percentage_min_requests: 10,
                interval: Duration::from_secs(10),
                base_ejection_time: Duration::from_secs(30),
                max_ejection_time: Duration::from_secs(300),
                max_ejection_percent: 50,
            })
        });
        assert!(p.try_eject(0).is_some());
        assert!(p.try_eject(1).is_some());
        assert!(p.try_eject(2).is_none(), "half the pool is out already");
        let small = pool(1, |c| {
            c.outlier_detection = p.config.outlier_detection.clone()
        });
        assert!(
            small.try_eject(0).is_some(),
            "one backend may always be ejected"
        );
    }

    #[test]
    fn retry_budget_is_a_share_of_active_requests_with_a_floor() {
        let p = pool(2, |_| {});
        let policy = Retry {
            budget_percent: 20,
            min_concurrent_retries: 2,
            ..Retry::default()
        };
        p.counters.active.store(100, Ordering::Relaxed);
        p.counters.retries.store(19, Ordering::Relaxed);
        assert!(p.retry_budget_allows(&policy));
        p.counters.retries.store(20, Ordering::Relaxed);
        assert!(!p.retry_budget_allows(&policy));
        p.counters.active.store(1, Ordering::Relaxed);
        p.counters.retries.store(1, Ordering::Relaxed);
        assert!(p.retry_budget_allows(&policy), "the floor");
    }

    #[tokio::test]
    async fn requests_beyond_the_limit_queue_then_overflow() {
        let p = pool(1, |c| {
            c.circuit_breaker.max_requests = 1;
            c.circuit_breaker.max_pending = 1;
        });
        let first = p.admit(Duration::from_secs(1)).await.unwrap();
        assert!(first.is_some());
        let p = Arc::new(p);
        let waiting = {
            let p = p.clone();
            tokio::spawn(async move { p.admit(Duration::from_secs(5)).await.map(|x| x.is_some()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            p.admit(Duration::from_secs(1)).await.err(),
            Some(Overflow::Pending)
        );
        drop(first);
        assert_eq!(waiting.await.unwrap(), Ok(true));
    }
}
