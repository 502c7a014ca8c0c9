//! State of one backend that outlives config generations: a reload that keeps
//! a backend keeps its in-flight count, latency, health, ejection and breaker.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use edge_config::{CircuitBreaker, OutlierDetection};
use parking_lot::Mutex;
use serde::Serialize;

/// What an operator set through the admin API (until the next reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    Enabled,
    /// No new requests; in-flight ones finish.
    Draining,
    /// Out of selection entirely.
    Disabled,
}

impl AdminState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => AdminState::Draining,
            2 => AdminState::Disabled,
            _ => AdminState::Enabled,
        }
    }
}

/// How one attempt against a backend ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500.
    Success,
    /// A 5xx other than 502, 503, 504.
    ServerError,
    /// Reset, read timeout, or 502/503/504.
    GatewayError,
    /// The connection was refused or timed out: the backend never saw the
    /// request. Counts as a gateway error too.
    ConnectFailure,
}

/// Latency as a peak-sensitive moving average (Finagle's peak EWMA): a slow
/// sample raises it at once, fast ones lower it over `DECAY`.
#[derive(Debug)]
struct Ewma {
    nanos: f64,
    stamp: Instant,
    seeded: bool,
}

const DECAY: Duration = Duration::from_secs(10);

impl Ewma {
    fn observe(&mut self, sample: Duration, now: Instant) {
        let s = sample.as_nanos() as f64;
        if !self.seeded || s > self.nanos {
            self.nanos = s;
            self.seeded = true;
        } else {
            let w = self.weight(now);
            self.nanos = self.nanos * w + s * (1.0 - w);
        }
        self.stamp = now;
    }

    fn weight(&self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.stamp).as_secs_f64();
        (-dt / DECAY.as_secs_f64()).exp()
    }

    /// The average, decaying while no samples arrive so an avoided backend
    /// is tried again.
    fn get(&self, now: Instant) -> Option<f64> {
        self.seeded.then(|| self.nanos * self.weight(now))
    }
}

#[derive(Debug)]
struct Health {
    passes: u32,
    fails: u32,
    last_error: Option<String>,
    checked: bool,
}

#[derive(Debug)]
struct Outlier {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_connect: u32,
    window_start: Instant,
    window_total: u32,
    window_failed: u32,
    ejected_until: Option<Instant>,
    /// Ejections in a row; the next ejection lasts base × this.
    multiplier: u32,
    /// When the multiplier last went down (one step per healthy interval).
    decayed_at: Instant,
}

/// A backend's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BreakerPhase {
    Closed,
    Open { until: Instant },
    HalfOpen { probes_in_flight: u32, passed: u32 },
}

#[derive(Debug)]
struct Breaker {
    phase: BreakerPhase,
    consecutive_failures: u32,
    window_start: Instant,
    window_total: u32,
    window_failed: u32,
}

/// What recording an outcome asks the pool to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Outlier detection wants this backend ejected (the pool decides, by its cap).
    pub eject: bool,
    pub breaker_opened: bool,
    pub breaker_closed: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub struct BackendState {
    pub in_flight: AtomicU64,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    pub ejections: AtomicU64,
    healthy: AtomicBool,
    /// Last load reported by the backend, 0–100; 255: none.
    load: AtomicU8,
    admin: AtomicU8,
    /// 0: the configured weight.
    weight_override: AtomicU32,
    ewma: Mutex<Ewma>,
    health: Mutex<Health>,
    outlier: Mutex<Outlier>,
    breaker: Mutex<Breaker>,
}

impl Default for BackendState {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            load: AtomicU8::new(255),
            admin: AtomicU8::new(0),
            weight_override: AtomicU32::new(0),
            ewma: Mutex::new(Ewma {
                nanos: 0.0,
                stamp: now,
                seeded: false,
            }),
            health: Mutex::new(Health {
                passes: 0,
                fails: 0,
                last_error: None,
                checked: false,
            }),
            outlier: Mutex::new(Outlier {
                consecutive_5xx: 0,
                consecutive_gateway: 0,
                consecutive_connect: 0,
                window_start: now,
                window_total: 0,
                window_failed: 0,
                ejected_until: None,
                multiplier: 0,
                decayed_at: now,
            }),
            breaker: Mutex::new(Breaker {
                phase: BreakerPhase::Closed,
                consecutive_failures: 0,
                window_start: now,
                window_total: 0,
                window_failed: 0,
            }),
        }
    }
}

/// Bumped whenever an admin override changes a backend's weight: selectors
/// rebuild their weight tables when it moves (rare: an operator's action).
static WEIGHTS_EPOCH: AtomicU64 = AtomicU64::new(0);

/// See [`WEIGHTS_EPOCH`].
pub fn weights_epoch() -> u64 {
    WEIGHTS_EPOCH.load(Ordering::Acquire)
}

impl BackendState {
    // --- admin ---

    pub fn admin_state(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    pub fn set_admin_state(&self, s: AdminState) {
        self.admin.store(s as u8, Ordering::Relaxed);
    }

    pub fn weight_override(&self) -> Option<u32> {
        match self.weight_override.load(Ordering::Relaxed) {
            0 => None,
            w => Some(w),
        }
    }

    pub fn set_weight_override(&self, w: Option<u32>) {
        let w = w.unwrap_or(0);
        if self.weight_override.swap(w, Ordering::Relaxed) != w {
            WEIGHTS_EPOCH.fetch_add(1, Ordering::Release);
        }
    }

    /// Forgets what the admin API set (a reload does this).
    pub fn clear_overrides(&self) {
        self.set_admin_state(AdminState::Enabled);
        self.set_weight_override(None);
    }

    // --- load feedback ---

    pub fn load(&self) -> Option<u8> {
        match self.load.load(Ordering::Relaxed) {
            255 => None,
            l => Some(l.min(100)),
        }
    }

    pub fn report_load(&self, load: u8) {
        self.load.store(load.min(100), Ordering::Relaxed);
    }

    // --- latency ---

    /// Feeds a latency `sample` taken at `now` (the clock read the caller
    /// measured it with) into the peak EWMA.
    pub fn observe_latency(&self, sample: Duration, now: Instant) {
        self.ewma.lock().observe(sample, now);
    }

    /// Peak-EWMA latency in milliseconds, if any sample was seen.
    pub fn ewma_ms(&self, now: Instant) -> Option<f64> {
        self.ewma.lock().get(now).map(|n| n / 1e6)
    }

    // --- active health ---

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records one health check; returns the new state if it changed.
    pub fn health_report(
        &self,
        passed: bool,
        rise: u32,
        fall: u32,
        error: Option<String>,
    ) -> Option<bool> {
        let mut h = self.health.lock();
        h.checked = true;
        h.last_error = error;
        let up = self.healthy.load(Ordering::Relaxed);
        if passed {
            h.passes += 1;
            h.fails = 0;
            if !up && h.passes >= rise {
                self.healthy.store(true, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            h.fails += 1;
            h.passes = 0;
            if up && h.fails >= fall {
                self.healthy.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }

    pub fn last_health_error(&self) -> Option<String> {
        self.health.lock().last_error.clone()
    }

    /// Back to "up, never checked" (the pool lost its health check).
    pub fn reset_health(&self) {
        let mut h = self.health.lock();
        *h = Health {
            passes: 0,
            fails: 0,
            last_error: None,
            checked: false,
        };
        self.healthy.store(true, Ordering::Relaxed);
    }

    // --- outlier ejection ---

    pub fn ejected_until(&self, now: Instant) -> Option<Instant> {
        self.outlier.lock().ejected_until.filter(|t| *t > now)
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until(now).is_some()
    }

    /// Ejects for base × (times in a row), capped; returns how long.
    pub fn eject(&self, now: Instant, policy: &OutlierDetection) -> Duration {
        let mut o = self.outlier.lock();
        o.multiplier = o.multiplier.saturating_add(1);
        let d = (policy.base_ejection_time * o.multiplier).min(policy.max_ejection_time);
        o.ejected_until = Some(now + d);
        o.consecutive_5xx = 0;
        o.consecutive_gateway = 0;
        o.consecutive_connect = 0;
        o.window_total = 0;
        o.window_failed = 0;
        o.window_start = now;
        o.decayed_at = now + d;
        self.ejections.fetch_add(1, Ordering::Relaxed);
        d
    }

    // --- breaker ---

    pub fn breaker_phase(&self, now: Instant) -> BreakerPhase {
        let mut b = self.breaker.lock();
        if let BreakerPhase::Open { until } = b.phase {
            if now >= until {
                b.phase = BreakerPhase::HalfOpen {
                    probes_in_flight: 0,
                    passed: 0,
                };
            }
        }
        b.phase
    }

    /// Whether a new request may go to this backend now (does not take a probe slot).
    pub fn breaker_allows(&self, now: Instant, policy: &CircuitBreaker) -> bool {
        match self.breaker_phase(now) {
            BreakerPhase::Closed => true,
            BreakerPhase::Open { .. } => false,
            BreakerPhase::HalfOpen {
                probes_in_flight,
                passed,
            } => probes_in_flight + passed < policy.half_open_probes,
        }
    }

    /// Takes a slot for a request; false if the breaker refuses it. Returns
    /// (admitted, is_probe).
    pub fn breaker_admit(&self, now: Instant, policy: &CircuitBreaker) -> (bool, bool) {
        let _ = self.breaker_phase(now);
        let mut b = self.breaker.lock();
        match &mut b.phase {
            BreakerPhase::Closed => (true, false),
            BreakerPhase::Open { .. } => (false, false),
            BreakerPhase::HalfOpen {
                probes_in_flight,
                passed,
            } => {
                if *probes_in_flight + *passed < policy.half_open_probes {
                    *probes_in_flight += 1;
                    (true, true)
                } else {
                    (false, false)
                }
            }
        }
    }

    /// Gives back a probe slot of a request that ended without an outcome.
    pub fn breaker_release_probe(&self) {
        let mut b = self.breaker.lock();
        if let BreakerPhase::HalfOpen {
            probes_in_flight, ..
        } = &mut b.phase
        {
            *probes_in_flight = probes_in_flight.saturating_sub(1);
        }
    }

    // --- outcomes ---

    /// Records how an attempt ended, feeding outlier detection and the breaker.
    pub fn record(
        &self,
        outcome: Outcome,
        was_probe: bool,
        now: Instant,
        outlier: Option<&OutlierDetection>,
        breaker: &CircuitBreaker,
    ) -> Verdict {
        let failed = outcome != Outcome::Success;
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let mut verdict = Verdict::default();
        if let Some(policy) = outlier {
            verdict.eject = self.record_outlier(outcome, now, policy);
        }
        let (opened, closed) = self.record_breaker(failed, was_probe, now, breaker);
        verdict.breaker_opened = opened;
        verdict.breaker_closed = closed;
        verdict
    }

    fn record_outlier(&self, outcome: Outcome, now: Instant, policy: &OutlierDetection) -> bool {
        let mut o = self.outlier.lock();
        if o.ejected_until.is_some_and(|t| t > now) {
            return false;
        }
        // A backend that stays in for a whole interval earns back one step.
        if o.multiplier > 0 && now.saturating_duration_since(o.decayed_at) >= policy.interval {
            o.multiplier -= 1;
            o.decayed_at = now;
        }
        match outcome {
            Outcome::Success => {
                o.consecutive_5xx = 0;
                o.consecutive_gateway = 0;
                o.consecutive_connect = 0;
            }
            Outcome::ServerError => {
                o.consecutive_5xx += 1;
                o.consecutive_gateway = 0;
                o.consecutive_connect = 0;
            }
            Outcome::GatewayError => {
                o.consecutive_5xx += 1;
                o.consecutive_gateway += 1;
                o.consecutive_connect = 0;
            }
            Outcome::ConnectFailure => {
                o.consecutive_5xx += 1;
                o.consecutive_gateway += 1;
                o.consecutive_connect += 1;
            }
        }
        if now.saturating_duration_since(o.window_start) >= policy.interval {
            o.window_start = now;
            o.window_total = 0;
            o.window_failed = 0;
        }
        o.window_total += 1;
        if outcome != Outcome::Success {
            o.window_failed += 1;
        }
        let by_5xx = policy
            .consecutive_5xx
            .is_some_and(|n| o.consecutive_5xx >= n);
        let by_gateway = policy
            .consecutive_gateway_errors
            .is_some_and(|n| o.consecutive_gateway >= n);
        let by_connect = policy
            .consecutive_connect_failures
            .is_some_and(|n| o.consecutive_connect >= n);
        let by_rate = policy.failure_percentage.is_some_and(|pct| {
            o.window_total >= policy.failure_percentage_min_requests
                && o.window_failed * 100 >= u32::from(pct) * o.window_total
        });
        by_5xx || by_gateway || by_connect || by_rate
    }

    fn record_breaker(
        &self,
        failed: bool,
        was_probe: bool,
        now: Instant,
        policy: &CircuitBreaker,
    ) -> (bool, bool) {
        if policy.consecutive_failures.is_none() && policy.failure_rate.is_none() {
            return (false, false);
        }
        let _ = self.breaker_phase(now);
        let mut b = self.breaker.lock();
        match b.phase {
            BreakerPhase::HalfOpen {
                probes_in_flight,
                passed,
            } => {
                if !was_probe {
                    return (false, false);
                }
                if failed {
                    b.phase = BreakerPhase::Open {
                        until: now + policy.open_for,
                    };
                    return (true, false);
                }
                let passed = passed + 1;
                if passed >= policy.half_open_probes {
                    *b = Breaker {
                        phase: BreakerPhase::Closed,
                        consecutive_failures: 0,
                        window_start: now,
                        window_total: 0,
                        window_failed: 0,
                    };
                    return (false, true);
                }
                b.phase = BreakerPhase::HalfOpen {
                    probes_in_flight: probes_in_flight.saturating_sub(1),
                    passed,
                };
                (false, false)
            }
            BreakerPhase::Open { .. } => (false, false),
            BreakerPhase::Closed => {
                if now.saturating_duration_since(b.window_start) >= policy.window {
                    b.window_start = now;
                    b.window_total = 0;
                    b.window_failed = 0;
                }
                b.window_total += 1;
                if failed {
                    b.window_failed += 1;
                    b.consecutive_failures += 1;
                } else {
                    b.consecutive_failures = 0;
                }
                let by_streak = policy
                    .consecutive_failures
                    .is_some_and(|n| b.consecutive_failures >= n);
                let by_rate = policy.failure_rate.is_some_and(|pct| {
                    b.window_total >= policy.min_requests
                        && b.window_failed * 100 >= u32::from(pct) * b.window_total
                });
                if by_streak || by_rate {
                    b.phase = BreakerPhase::Open {
                        until: now + policy.open_for,
                    };
                    return (true, false);
                }
                (false, false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(consecutive: u32) -> CircuitBreaker {
        CircuitBreaker {
            consecutive_failures: Some(consecutive),
            open_for: Duration::from_secs(5),
            half_open_probes: 2,
            ..CircuitBreaker::default()
        }
    }

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let s = BackendState::default();
        let p = breaker(3);
        let t0 = Instant::now();
        for _ in 0..2 {
            s.record(Outcome::GatewayError, false, t0, None, &p);
        }
        assert_eq!(s.breaker_phase(t0), BreakerPhase::Closed);
        let v = s.record(Outcome::GatewayError, false, t0, None, &p);
        assert!(v.breaker_opened);
        assert!(!s.breaker_allows(t0, &p));
        let t1 = t0 + Duration::from_secs(5);
        assert!(matches!(s.breaker_phase(t1), BreakerPhase::HalfOpen { .. }));
        assert_eq!(s.breaker_admit(t1, &p), (true, true));
        assert_eq!(s.breaker_admit(t1, &p), (true, true));
        assert_eq!(s.breaker_admit(t1, &p), (false, false), "only two probes");
        s.record(Outcome::Success, true, t1, None, &p);
        let v = s.record(Outcome::Success, true, t1, None, &p);
        assert!(v.breaker_closed);
        assert_eq!(s.breaker_phase(t1), BreakerPhase::Closed);
    }

    #[test]
    fn a_failed_probe_opens_again() {
        let s = BackendState::default();
        let p = breaker(1);
        let t0 = Instant::now();
        s.record(Outcome::GatewayError, false, t0, None, &p);
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(s.breaker_admit(t1, &p), (true, true));
        let v = s.record(Outcome::GatewayError, true, t1, None, &p);
        assert!(v.breaker_opened);
        assert!(matches!(s.breaker_phase(t1), BreakerPhase::Open { .. }));
    }

    #[test]
    fn one_refused_connection_ejects_with_the_defaults() {
        let s = BackendState::default();
        let p = OutlierDetection::default();
        let t0 = Instant::now();
        let v = s.record(
            Outcome::ConnectFailure,
            false,
            t0,
            Some(&p),
            &CircuitBreaker::default(),
        );
        assert!(v.eject, "a backend that refuses connections is out at once");
        let s = BackendState::default();
        for i in 1..5 {
            let v = s.record(
                Outcome::GatewayError,
                false,
                t0,
                Some(&p),
                &CircuitBreaker::default(),
            );
            assert!(!v.eject, "gateway error {i}");
        }
        let v = s.record(
            Outcome::GatewayError,
            false,
            t0,
            Some(&p),
            &CircuitBreaker::default(),
        );
        assert!(v.eject, "the fifth gateway error in a row");
    }

    fn outlier() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: Some(3),
            consecutive_gateway_errors: None,
            consecutive_connect_failures: None,
            failure_percentage: None,
            failure_percentage_min_requests: 10,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn consecutive_5xx_asks_for_ejection_and_ejections_grow() {
        let s = BackendState::default();
        let p = outlier();
        let b = CircuitBreaker::default();
        let t0 = Instant::now();
        assert!(
            !s.record(Outcome::ServerError, false, t0, Some(&p), &b)
                .eject
        );
        assert!(
            !s.record(Outcome::Success, false, t0, Some(&p), &b).eject,
            "a success resets"
        );
        for _ in 0..2 {
            assert!(
                !s.record(Outcome::ServerError, false, t0, Some(&p), &b)
                    .eject
            );
        }
        assert!(
            s.record(Outcome::GatewayError, false, t0, Some(&p), &b)
                .eject
        );
        assert_eq!(s.eject(t0, &p), Duration::from_secs(30));
        assert!(s.is_ejected(t0 + Duration::from_secs(29)));
        assert!(!s.is_ejected(t0 + Duration::from_secs(30)));
        assert_eq!(
            s.eject(t0 + Duration::from_secs(31), &p),
            Duration::from_secs(60),
            "second time: twice as long"
        );
    }

    #[test]
    fn failure_percentage_needs_enough_requests() {
        let s = BackendState::default();
        let p = OutlierDetection {
            consecutive_5xx: None,
            failure_percentage: Some(50),
            ..outlier()
        };
        let b = CircuitBreaker::default();
        let t = Instant::now();
        let mut asked = false;
        for i in 0..10 {
            let o = if i % 2 == 0 {
                Outcome::ServerError
            } else {
                Outcome::Success
            };
            asked |= s.record(o, false, t, Some(&p), &b).eject;
            if i < 9 {
                assert!(!asked, "not before 10 requests");
            }
        }
        assert!(asked);
    }

    #[test]
    fn health_needs_rise_and_fall_in_a_row() {
        let s = BackendState::default();
        assert!(s.is_healthy());
        assert_eq!(s.health_report(false, 2, 2, None), None);
        assert_eq!(
            s.health_report(true, 2, 2, None),
            None,
            "a pass breaks the streak"
        );
        assert_eq!(s.health_report(false, 2, 2, None), None);
        assert_eq!(
            s.health_report(false, 2, 2, Some("refused".into())),
            Some(false)
        );
        assert_eq!(s.health_report(true, 2, 2, None), None);
        assert_eq!(s.health_report(true, 2, 2, None), Some(true));
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let mut e = Ewma {
            nanos: 0.0,
            stamp: Instant::now(),
            seeded: false,
        };
        let t = Instant::now();
        e.observe(Duration::from_millis(10), t);
        e.observe(Duration::from_millis(100), t);
        assert!(
            (e.get(t).unwrap() - 100e6).abs() < 1.0,
            "a peak is taken at once"
        );
        e.observe(Duration::from_millis(10), t + Duration::from_secs(10));
        let v = e.get(t + Duration::from_secs(10)).unwrap();
        assert!(v < 100e6 && v > 10e6, "{v}");
    }
}
