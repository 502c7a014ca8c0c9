//! Backend host names, looked up at every apply and again when each
//! answer's TTL runs out (clamped to `[resolver] min_ttl..max_ttl`), through
//! hickory-resolver: the system's name servers or `[resolver] nameservers`.
//! Every address is a backend (Envoy's `STRICT_DNS`); when the set changes,
//! the pools that use the name are rebuilt and swapped in, and backends
//! whose address stayed keep their state. A name that does not resolve
//! leaves its backend empty (down), reported in `/pools`, and is asked
//! again after `min_ttl`; the node starts anyway.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use edge_config::Config;
use edge_proxy::pool::Resolved;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The resolver of a node and its refresh task.
#[derive(Default)]
pub struct BackendNames {
    current: Mutex<Option<(edge_config::Resolver, TokioResolver)>>,
    refresh: Mutex<Option<JoinHandle<()>>>,
}

/// One round of lookups: the addresses, and when to ask again.
pub struct Lookups {
    pub resolved: Resolved,
    next: Instant,
}

fn build(cfg: &edge_config::Resolver) -> Result<TokioResolver, String> {
    let mut builder = if cfg.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("system resolver: {e}"))?
    } else {
        let servers = cfg
            .nameservers
            .iter()
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                ns
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts = builder.options_mut();
    opts.timeout = cfg.timeout;
    opts.attempts = 2;
    // The TTL decides when edge asks again; the cache must not outlive it.
    opts.positive_max_ttl = Some(cfg.max_ttl);
    opts.negative_max_ttl = Some(cfg.min_ttl);
    builder.build().map_err(|e| format!("resolver: {e}"))
}

/// The host names of a config's backends.
fn names(config: &Config) -> BTreeSet<String> {
    let peers = config.site.as_ref().and_then(edge_config::Site::peer_pool);
    config
        .pools
        .iter()
        .chain(peers.as_ref())
        .flat_map(edge_proxy::pool::Pool::host_names)
        .map(str::to_string)
        .collect()
}

impl BackendNames {
    /// The resolver for `cfg`, made anew when `cfg` changed.
    fn resolver(&self, cfg: &edge_config::Resolver) -> Result<TokioResolver, String> {
        let mut current = self.current.lock();
        if let Some((c, r)) = current.as_ref() {
            if c == cfg {
                return Ok(r.clone());
            }
        }
        let r = build(cfg)?;
        *current = Some((cfg.clone(), r.clone()));
        Ok(r)
    }

    /// Looks up every backend host name of `config`.
    pub async fn lookup(&self, config: &Config) -> Lookups {
        let cfg = &config.resolver;
        let now = Instant::now();
        let mut resolved = HashMap::new();
        let mut next = now + cfg.max_ttl;
        let names = names(config);
        if names.is_empty() {
            return Lookups { resolved, next };
        }
        let resolver = match self.resolver(cfg) {
            Ok(r) => r,
            Err(e) => {
                for n in names {
                    resolved.insert(n, Err(e.clone()));
                }
                return Lookups {
                    resolved,
                    next: now + cfg.min_ttl,
                };
            }
        };
        let lookups = names.into_iter().map(|name| {
            let resolver = resolver.clone();
            async move {
                let answer =
                    tokio::time::timeout(cfg.timeout * 3, resolver.lookup_ip(name.as_str())).await;
                (name, answer)
            }
        });
        for (name, answer) in futures::future::join_all(lookups).await {
            let (result, due) = match answer {
                Ok(Ok(ips)) => {
                    let addrs: Vec<IpAddr> = ips.iter().collect();
                    let ttl = ips
                        .valid_until()
                        .saturating_duration_since(std::time::Instant::now());
                    let due = now + ttl.clamp(cfg.min_ttl, cfg.max_ttl);
                    if addrs.is_empty() {
                        (Err("no A or AAAA record".to_string()), now + cfg.min_ttl)
                    } else {
                        (Ok(addrs), due)
                    }
                }
                Ok(Err(e)) => (Err(e.to_string()), now + cfg.min_ttl),
                Err(_) => (
                    Err(format!("no answer within {:?}", cfg.timeout * 3)),
                    now + cfg.min_ttl,
                ),
            };
            if let Err(e) = &result {
                tracing::warn!(name = %name, error = %e, "a backend name does not resolve; its backend is down until it does");
            }
            next = next.min(due);
            resolved.insert(name, result);
        }
        Lookups { resolved, next }
    }

    /// Keeps the running generation's names fresh: looks them up again when
    /// due and swaps in pools whose addresses changed. Replaces the task of
    /// the previous generation.
    pub fn keep_fresh(
        self: &Arc<Self>,
        runtime: Arc<crate::runtime::Runtime>,
        first: Lookups,
        handle: &tokio::runtime::Handle,
    ) {
        let names = self.clone();
        let mut next = first.next;
        let task = handle.spawn(async move {
            loop {
                tokio::time::sleep_until(next).await;
                let config = runtime.config();
                let round = names.lookup(&config).await;
                next = round.next.max(Instant::now() + Duration::from_secs(1));
                runtime.refresh_backends(&round.resolved).await;
            }
        });
        if let Some(old) = self.refresh.lock().replace(task) {
            old.abort();
        }
    }
}
