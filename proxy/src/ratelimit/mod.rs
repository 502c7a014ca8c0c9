//! Rate limits (`[[rate_limit]]`): GCRA with governor, keyed by client IP or
//! prefix, route, header values or a combination; exempt networks; a bounded
//! key store; log-only mode; and cluster scope counted in Redis with a local
//! fallback when Redis cannot answer in time.
//!
//! Cluster fallback: while Redis is unreachable each node enforces its share
//! of the limit (rate and burst divided by the number of nodes in `[site]`,
//! itself plus its peers), so the site as a whole stays within the limit
//! if the node count is right, and traffic is never held waiting on Redis
//! for longer than `[redis] timeout`. After a failure Redis is skipped for
//! [`REDIS_RETRY`] before being tried again.

pub mod metrics;
pub mod redis;
mod store;

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_config::units::Rate;
use edge_config::{Config, LimitKey, LimitMode, LimitScope, RateLimit};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};
use http::HeaderMap;
use ipnet::IpNet;
use parking_lot::Mutex;

use self::metrics::{LimitMetrics, RateLimitMetrics};
use self::redis::{Endpoint, RedisClient};
use self::store::{key_hash, BoundedStore, SharedStore};

/// How long Redis is left alone after it failed to answer.
pub const REDIS_RETRY: Duration = Duration::from_secs(1);

/// The GCRA quota for `rate` with `burst` requests allowed at once.
pub fn quota(rate: &Rate, burst: u32) -> Option<Quota> {
    let interval = interval(rate)?;
    Some(Quota::with_period(interval)?.allow_burst(NonZeroU32::new(burst.max(1))?))
}

/// Time per request at `rate`.
fn interval(rate: &Rate) -> Option<Duration> {
    if rate.count == 0 {
        return None;
    }
    let nanos = rate.per.as_nanos() / u128::from(rate.count);
    Some(Duration::from_nanos(u64::try_from(nanos).ok()?.max(1)))
}

/// A keyed governor limiter and a handle on its store (for its size).
type Keyed = (
    RateLimiter<u64, SharedStore, DefaultClock, StateInformationMiddleware>,
    Arc<BoundedStore>,
);

fn keyed(quota: Quota, max_keys: usize) -> Keyed {
    let refill = quota.replenish_interval() * quota.burst_size().get();
    let store = Arc::new(BoundedStore::new(
        max_keys,
        refill.max(Duration::from_secs(1)),
    ));
    let limiter: RateLimiter<u64, SharedStore, DefaultClock> =
        RateLimiter::new(quota, SharedStore(store.clone()), DefaultClock::default());
    let limiter = limiter.with_middleware::<StateInformationMiddleware>();
    (limiter, store)
}

/// What a limit decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests allowed at once (the burst).
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// When refused: until the next request would pass.
    pub retry_after: Duration,
    /// False in log-only mode: report, do not refuse.
    pub enforce: bool,
}

impl Decision {
    /// `RateLimit-*` headers (and `Retry-After` when refused), whole seconds rounded up.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let secs = |d: Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
        let mut h = vec![
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", secs(self.reset).to_string()),
        ];
        if !self.allowed {
            h.push(("retry-after", secs(self.retry_after).max(1).to_string()));
        }
        h
    }
}

/// What a key is made of, for one request.
pub struct KeyInput<'a> {
    pub client: Option<IpAddr>,
    pub route: &'a str,
    pub headers: &'a HeaderMap,
}

struct Cluster {
    redis: Arc<RedisClient>,
    prefix: String,
    /// This node's share of the limit, used while Redis is unreachable.
    fallback: Keyed,
    down_until: Mutex<Option<Instant>>,
    nodes: u32,
}

/// One `[[rate_limit]]` at run time.
pub struct Limiter {
    pub config: RateLimit,
    local: Keyed,
    interval: Duration,
    cluster: Option<Cluster>,
    metrics: LimitMetrics,
}

fn masked(ip: IpAddr, v4: u8, v6: u8) -> String {
    let len = if ip.is_ipv4() { v4 } else { v6 };
    IpNet::new(ip, len).map_or_else(|_| ip.to_string(), |n| n.trunc().to_string())
}

impl Limiter {
    fn build(
        config: &RateLimit,
        redis: Option<&Arc<RedisClient>>,
        redis_prefix: &str,
        nodes: u32,
        metrics: &RateLimitMetrics,
    ) -> Option<Self> {
        let quota = quota(&config.rate, config.burst)?;
        let interval = interval(&config.rate)?;
        let cluster = match (config.scope, redis) {
            (LimitScope::Cluster, Some(redis)) => {
                let share = Rate {
                    count: (config.rate.count / u64::from(nodes)).max(1),
                    per: config.rate.per,
                };
                let share_quota = self::quota(&share, (config.burst / nodes).max(1))?;
                Some(Cluster {
                    redis: redis.clone(),
                    prefix: format!("{redis_prefix}{}:", config.name),
                    fallback: keyed(share_quota, config.max_keys),
                    down_until: Mutex::new(None),
                    nodes,
                })
            }
            _ => None,
        };
        Some(Self {
            config: config.clone(),
            local: keyed(quota, config.max_keys),
            interval,
            cluster,
            metrics: metrics.limit(&config.name),
        })
    }

    /// The request's key, or `None` when its client is exempt.
    pub fn key(&self, input: &KeyInput<'_>) -> Option<String> {
        if let Some(ip) = input.client {
            if self.config.exempt.iter().any(|n| n.contains(&ip)) {
                return None;
            }
        }
        let mut key = String::new();
        for (i, part) in self.config.key.iter().enumerate() {
            if i > 0 {
                key.push('|');
            }
            match part {
                LimitKey::ClientIp => {
                    key.push_str(&input.client.map_or_else(|| "-".into(), |ip| ip.to_string()))
                }
                LimitKey::ClientPrefix => key.push_str(&input.client.map_or_else(
                    || "-".into(),
                    |ip| masked(ip, self.config.ipv4_prefix, self.config.ipv6_prefix),
                )),
                LimitKey::Route => key.push_str(input.route),
                LimitKey::Header(name) => key.push_str(
                    input
                        .headers
                        .get(name.as_str())
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-"),
                ),
            }
        }
        Some(key)
    }

    fn local_decision(&self, limiter: &Keyed, key: &str) -> Decision {
        let (limiter, _) = limiter;
        match limiter.check_key(&key_hash(key)) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let quota = snapshot.quota();
                let (per, burst) = (quota.replenish_interval(), quota.burst_size().get());
                Decision {
                    allowed: true,
                    limit: burst,
                    remaining,
                    reset: per * (burst - remaining.min(burst)),
                    retry_after: Duration::ZERO,
                    enforce: true,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let quota = not_until.quota();
                let (per, burst) = (quota.replenish_interval(), quota.burst_size().get());
                Decision {
                    allowed: false,
                    limit: burst,
                    remaining: 0,
                    reset: wait + per * burst.saturating_sub(1),
                    retry_after: wait,
                    enforce: true,
                }
            }
        }
    }

    async fn cluster_decision(&self, cluster: &Cluster, key: &str) -> Decision {
        let skip = cluster
            .down_until
            .lock()
            .is_some_and(|until| Instant::now() < until);
        if !skip {
            let redis_key = format!("{}{key}", cluster.prefix);
            match cluster
                .redis
                .decide(&redis_key, self.interval, self.config.burst)
                .await
            {
                Ok(d) => {
                    if cluster.down_until.lock().take().is_some() {
                        tracing::info!(limit = %self.config.name, redis = %cluster.redis.endpoint().address, "Redis answers again: cluster-wide counting resumed");
                    }
                    self.metrics.redis_up.set(true);
                    return Decision {
                        allowed: d.allowed,
                        limit: self.config.burst,
                        remaining: d.remaining,
                        reset: d.reset,
                        retry_after: d.retry_after,
                        enforce: true,
                    };
                }
                Err(e) => {
                    cluster.redis.reset();
                    self.metrics.redis_errors.inc();
                    self.metrics.redis_up.set(false);
                    let was_up = cluster
                        .down_until
                        .lock()
                        .replace(Instant::now() + REDIS_RETRY)
                        .is_none();
                    if was_up {
                        tracing::warn!(limit = %self.config.name, redis = %cluster.redis.endpoint().address, error = %e, nodes = cluster.nodes, "Redis unreachable: counting this node's share of the limit locally");
                    }
                }
            }
        }
        self.metrics.fallback.inc();
        self.local_decision(&cluster.fallback, key)
    }

    /// Decides for one request; `None` when the client is exempt.
    pub async fn check(&self, input: &KeyInput<'_>) -> Option<Decision> {
        let Some(key) = self.key(input) else {
            self.metrics.exempt.inc();
            return None;
        };
        let mut d = match &self.cluster {
            Some(c) => self.cluster_decision(c, &key).await,
            None => self.local_decision(&self.local, &key),
        };
        d.enforce = self.config.mode == LimitMode::Enforce;
        match (d.allowed, d.enforce) {
            (true, _) => self.metrics.allowed.inc(),
            (false, true) => self.metrics.limited.inc(),
            (false, false) => {
                self.metrics.would_limit.inc();
                tracing::info!(limit = %self.config.name, key = %key, "rate limit exceeded (log only: let through)");
            }
        }
        Some(d)
    }

    /// Keys tracked now (locally, and in the fallback share of a cluster limit).
    pub fn keys(&self) -> usize {
        self.local.1.len() + self.cluster.as_ref().map_or(0, |c| c.fallback.1.len())
    }
}

/// The limiters of a config, reused across reloads while their definition
/// (and Redis) stays the same, so counts survive a reload.
#[derive(Default)]
pub struct Limiters {
    by_name: HashMap<String, Arc<Limiter>>,
}

impl Limiters {
    pub fn get(&self, name: &str) -> Option<&Arc<Limiter>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Limiter>> {
        self.by_name.values()
    }

    /// Builds the limiters of `config`, keeping those of `previous` whose
    /// definition did not change.
    pub fn build(
        config: &Config,
        previous: &Limiters,
        redis: Option<&Arc<RedisClient>>,
        metrics: &RateLimitMetrics,
    ) -> Result<Self, String> {
        let nodes = config
            .site
            .as_ref()
            .map_or(1, |s| s.other_peers().count() as u32 + 1);
        let prefix = config
            .redis
            .as_ref()
            .map_or_else(String::new, |r| r.key_prefix.clone());
        let mut by_name = HashMap::new();
        for rl in &config.rate_limits {
            let same_redis = |l: &Limiter| match (&l.cluster, redis) {
                (Some(c), Some(r)) => Arc::ptr_eq(&c.redis, r),
                (None, _) => rl.scope == LimitScope::Local,
                _ => false,
            };
            if let Some(old) = previous.by_name.get(&rl.name) {
                if old.config == *rl && same_redis(old) {
                    by_name.insert(rl.name.clone(), old.clone());
                    continue;
                }
            }
            let limiter = Limiter::build(rl, redis, &prefix, nodes, metrics).ok_or_else(|| {
                format!(
                    "rate_limit {}: rate {} is too fine to count",
                    rl.name, rl.rate
                )
            })?;
            by_name.insert(rl.name.clone(), Arc::new(limiter));
        }
        Ok(Self { by_name })
    }
}

/// The Redis client for `[redis]`, reusing `previous` if it points at the same place.
pub fn redis_client(
    config: &Config,
    previous: Option<&Arc<RedisClient>>,
) -> Result<Option<Arc<RedisClient>>, String> {
    let Some(r) = &config.redis else {
        return Ok(None);
    };
    let endpoint = Endpoint::parse(r.url.expose()).map_err(|e| format!("redis.url: {e}"))?;
    if let Some(p) = previous {
        if *p.endpoint() == endpoint && p.timeout() == r.timeout {
            return Ok(Some(p.clone()));
        }
    }
    Ok(Some(Arc::new(
        RedisClient::new(r.url.expose(), endpoint, r.timeout)
            .map_err(|e| format!("redis.url: {e}"))?,
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn limit(key: Vec<LimitKey>, max_keys: usize) -> RateLimit {
        RateLimit {
            name: "t".into(),
            key,
            rate: Rate {
                count: 10,
                per: Duration::from_secs(1),
            },
            burst: 5,
            scope: LimitScope::Local,
            mode: LimitMode::Enforce,
            exempt: vec!["10.0.0.0/8".parse().unwrap()],
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            max_keys,
        }
    }

    fn limiter(config: RateLimit) -> Limiter {
        let registry = prometheus::Registry::new();
        let metrics = RateLimitMetrics::new(&registry).unwrap();
        Limiter::build(&config, None, "", 1, &metrics).unwrap()
    }

    #[tokio::test]
    async fn memory_stays_bounded_over_100_000_distinct_keys() {
        let l = limiter(limit(vec![LimitKey::Header("x-api-key".into())], 5_000));
        let mut headers = HeaderMap::new();
        for i in 0..100_000 {
            headers.insert("x-api-key", i.to_string().parse().unwrap());
            let input = KeyInput {
                client: None,
                route: "r",
                headers: &headers,
            };
            assert!(l.check(&input).await.unwrap().allowed);
        }
        assert!(l.keys() <= 5_008, "{} keys held", l.keys());
    }

    #[tokio::test]
    async fn keys_combine_parts_and_prefixes_and_exempt_networks_pass() {
        let l = limiter(limit(vec![LimitKey::ClientPrefix, LimitKey::Route], 100));
        let headers = HeaderMap::new();
        let input = |ip: &str| KeyInput {
            client: Some(ip.parse().unwrap()),
            route: "api",
            headers: &headers,
        };
        assert_eq!(l.key(&input("192.0.2.77")).unwrap(), "192.0.2.0/24|api");
        assert_eq!(
            l.key(&input("2001:db8:1:2:3::1")).unwrap(),
            "2001:db8:1::/56|api"
        );
        assert_eq!(l.key(&input("10.1.2.3")), None);
        // One /24 shares a bucket of 5.
        let mut passed = 0;
        for last in 0..20 {
            if l.check(&input(&format!("192.0.2.{last}")))
                .await
                .unwrap()
                .allowed
            {
                passed += 1;
            }
        }
        assert_eq!(passed, 5);
    }

    #[test]
    fn headers_round_seconds_up() {
        let d = Decision {
            allowed: false,
            limit: 5,
            remaining: 0,
            reset: Duration::from_millis(1_200),
            retry_after: Duration::from_millis(100),
            enforce: true,
        };
        let h = d.headers();
        assert!(h.contains(&("ratelimit-reset", "2".into())));
        assert!(h.contains(&("retry-after", "1".into())));
    }
}
