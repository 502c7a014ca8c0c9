//! Metrics of rate limits.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct RateLimitMetrics {
    decisions: IntCounterVec,
    redis_errors: IntCounterVec,
    fallback: IntCounterVec,
    redis_up: IntGaugeVec,
}

/// One limit's counters.
#[derive(Clone)]
pub struct LimitMetrics {
    pub allowed: IntCounter,
    pub limited: IntCounter,
    pub would_limit: IntCounter,
    pub exempt: IntCounter,
    pub redis_errors: IntCounter,
    pub fallback: IntCounter,
    pub redis_up: RedisUp,
}

/// `edge_ratelimit_redis_up{limit}`: made by a cluster-scope limit's first
/// call to Redis, so a node with only local limits has no such series (an
/// alert on `== 0` would page for every one of them).
#[derive(Clone)]
pub struct RedisUp {
    vec: IntGaugeVec,
    limit: String,
}

impl RedisUp {
    pub fn set(&self, up: bool) {
        self.vec
            .with_label_values(&[self.limit.as_str()])
            .set(i64::from(up));
    }
}

impl RateLimitMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "edge_ratelimit_decisions_total",
                "Rate limit decisions by limit and result (allowed, limited, would_limit in log-only mode, exempt)",
            ),
            &["limit", "result"],
        )?;
        let redis_errors = IntCounterVec::new(
            Opts::new(
                "edge_ratelimit_redis_errors_total",
                "Cluster-scope decisions Redis did not answer in time, by limit",
            ),
            &["limit"],
        )?;
        let fallback = IntCounterVec::new(
            Opts::new(
                "edge_ratelimit_local_fallback_total",
                "Cluster-scope decisions made locally (this node's share) because Redis was unreachable",
            ),
            &["limit"],
        )?;
        let redis_up = IntGaugeVec::new(
            Opts::new(
                "edge_ratelimit_redis_up",
                "Whether the last Redis decision of a cluster-scope limit succeeded",
            ),
            &["limit"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(redis_errors.clone()))?;
        registry.register(Box::new(fallback.clone()))?;
        registry.register(Box::new(redis_up.clone()))?;
        Ok(Self {
            decisions,
            redis_errors,
            fallback,
            redis_up,
        })
    }

    pub fn limit(&self, name: &str) -> LimitMetrics {
        let d = |r: &str| self.decisions.with_label_values(&[name, r]);
        LimitMetrics {
            allowed: d("allowed"),
            limited: d("limited"),
            would_limit: d("would_limit"),
            exempt: d("exempt"),
            redis_errors: self.redis_errors.with_label_values(&[name]),
            fallback: self.fallback.with_label_values(&[name]),
            redis_up: RedisUp {
                vec: self.redis_up.clone(),
                limit: name.to_string(),
            },
        }
    }
}
