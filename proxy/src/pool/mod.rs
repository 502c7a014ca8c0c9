//! Pools of backends at run time: resolved addresses, per-backend state that
//! survives reloads, and backend selection.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use edge_config::{Algorithm, HostPort};
use parking_lot::Mutex;

use crate::error::BuildError;
use crate::metrics::{BackendMetrics, ProxyMetrics};

/// Counters of one backend that outlive config generations: a reload that
/// keeps the backend keeps them.
#[derive(Debug, Default)]
pub struct BackendStats {
    pub in_flight: AtomicU64,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
}

/// Backend state by (pool, address), shared across reloads.
#[derive(Default)]
pub struct BackendRegistry {
    stats: Mutex<HashMap<(String, String), Arc<BackendStats>>>,
}

impl BackendRegistry {
    pub fn get(&self, pool: &str, address: &str) -> Arc<BackendStats> {
        self.stats
            .lock()
            .entry((pool.to_string(), address.to_string()))
            .or_default()
            .clone()
    }

    /// Drops state of backends no longer in any pool.
    pub fn retain(&self, live: &[(String, String)]) {
        self.stats.lock().retain(|k, _| live.contains(k));
    }
}

/// A backend ready to be connected to.
pub struct Backend {
    /// As configured (`host:port`).
    pub address: HostPort,
    /// `address` as text, for logs and metric labels.
    pub label: String,
    /// Resolved when the pool was built.
    pub addr: SocketAddr,
    pub weight: u32,
    pub stats: Arc<BackendStats>,
    pub metrics: BackendMetrics,
}

/// A pool at run time.
pub struct Pool {
    pub name: String,
    pub config: edge_config::Pool,
    pub backends: Vec<Backend>,
    next: AtomicUsize,
}

fn resolve(pool: &str, address: &HostPort) -> Result<SocketAddr, BuildError> {
    if let Some(ip) = address.ip() {
        return Ok(SocketAddr::new(ip, address.port));
    }
    let mut addrs = (address.host.as_str(), address.port)
        .to_socket_addrs()
        .map_err(|source| BuildError::Resolve {
            pool: pool.to_string(),
            address: address.to_string(),
            source,
        })?;
    addrs.next().ok_or_else(|| BuildError::NoAddress {
        pool: pool.to_string(),
        address: address.to_string(),
    })
}

impl Pool {
    /// Builds a pool, resolving host names (blocking).
    pub fn build(
        config: &edge_config::Pool,
        registry: &BackendRegistry,
        metrics: &ProxyMetrics,
    ) -> Result<Self, BuildError> {
        let mut backends = Vec::with_capacity(config.backends.len());
        for b in &config.backends {
            let label = b.address.to_string();
            backends.push(Backend {
                addr: resolve(&config.name, &b.address)?,
                stats: registry.get(&config.name, &label),
                metrics: metrics.backend(&config.name, &label),
                weight: b.weight,
                address: b.address.clone(),
                label,
            });
        }
        Ok(Self {
            name: config.name.clone(),
            config: config.clone(),
            backends,
            next: AtomicUsize::new(0),
        })
    }

    /// Picks a backend not in `exclude` (those already tried for this request).
    pub fn select(&self, exclude: &[usize]) -> Option<usize> {
        let n = self.backends.len();
        if n == 0 || exclude.len() >= n {
            return None;
        }
        match self.config.algorithm {
            // Until the load balancer lands every algorithm is served by round
            // robin; the config already names the intended one.
            Algorithm::RoundRobin
            | Algorithm::WeightedRoundRobin
            | Algorithm::Random
            | Algorithm::LeastRequests
            | Algorithm::P2cEwma
            | Algorithm::SourceIpHash
            | Algorithm::Cookie(_)
            | Algorithm::ConsistentHash { .. } => {
                for _ in 0..n {
                    let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
                    if !exclude.contains(&i) {
                        return Some(i);
                    }
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Pool {
        let registry = BackendRegistry::default();
        let metrics = ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
        let config = edge_config::Pool {
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
            circuit_breaker: Default::default(),
            timeouts: Default::default(),
            retry: Default::default(),
            tls: None,
        };
        Pool::build(&config, &registry, &metrics).unwrap()
    }

    #[test]
    fn round_robin_visits_each_backend_in_turn() {
        let p = pool(3);
        let picks: Vec<usize> = (0..6).filter_map(|_| p.select(&[])).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn excluded_backends_are_skipped() {
        let p = pool(3);
        for _ in 0..10 {
            assert_ne!(p.select(&[1]), Some(1));
        }
        assert_eq!(p.select(&[0, 1, 2]), None);
    }
}
