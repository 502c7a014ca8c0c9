//! The proxy's hot state: one config generation of routes and pools, built
//! aside and swapped in whole. A request holds the generation it started with
//! until it ends, so a reload never changes a request halfway.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use edge_config::Config;

use crate::caching::CacheRuntime;
use crate::error::BuildError;
use crate::metrics::{ProxyMetrics, RouteMetrics};
use crate::pool::{BackendRegistry, Pool, Resolved};
use crate::ratelimit::redis::RedisClient;
use crate::ratelimit::{redis_client, Limiters};
use crate::route::RouteTable;

/// One generation of routes and pools.
pub struct ProxyState {
    pub generation: u64,
    pub routes: Arc<RouteTable>,
    pub pools: Vec<Arc<Pool>>,
    pub limits: Arc<Limiters>,
    pub redis: Option<Arc<RedisClient>>,
    /// `[site]`: this node's site and its shield tier.
    pub site: Option<Arc<SiteTier>>,
    /// Clients' countries, from the GeoDNS locator (routes' `geo`); set
    /// by the node when it builds its DNS side.
    pub countries: Option<crate::video::geo::CountryLookup>,
    /// The site's name for per-site metrics (`none` without `[site]`).
    pub site_label: Arc<str>,
}

pub use crate::site::SiteTier;

impl ProxyState {
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// The long-lived proxy: the current state, metrics, and what outlives reloads.
pub struct Proxy {
    state: ArcSwap<ProxyState>,
    generation: AtomicU64,
    pub metrics: Arc<ProxyMetrics>,
    /// Counters for requests no route matched.
    pub unmatched: RouteMetrics,
    pub backends: BackendRegistry,
    access_log: AtomicBool,
    /// `server.fast_paths`.
    fast_paths: AtomicBool,
    /// `server.access_log_format`: the text access line as a template.
    access_log_format: arc_swap::ArcSwapOption<edge_config::AccessLogFormat>,
    cache: OnceLock<Arc<CacheRuntime>>,
    /// Objects lately fetched from the site's owners (`keep_copies = "hot"`).
    pub hot: crate::site::HotKeys,
    /// The node is shutting down: every answer closes its connection.
    closing: AtomicBool,
    /// Upstream errors, counted and logged once per kind per interval.
    pub errors: crate::errlog::ErrorLog,
    /// Ranks nodes for `steer` routes (set once by the node; without it
    /// a steering route answers 503).
    pub steerer: OnceLock<Arc<dyn crate::steer::Steerer>>,
    /// Players' quality by client prefix and sessions (CMCD).
    pub qoe: crate::video::cmcd::QoeTable,
    /// What the node serves now (`GET /site/state`).
    pub load: crate::load::Load,
    /// `http-01` answers of open ACME orders (`tls.acme`).
    pub acme_http01: crate::listen::acme::Http01Answers,
    /// `server.otlp`: where sampled requests' spans go.
    tracing: arc_swap::ArcSwapOption<crate::spans::Tracing>,
    /// Whether `tracing` holds a sink: every request asks, nearly always
    /// for none, and a flag is one load where the swap's read is about 45
    /// instructions (`benches/callgrind`, issue 17).
    tracing_on: AtomicBool,
}

impl Proxy {
    /// An empty proxy (no routes: every request gets 404) whose metrics are
    /// registered in `registry`.
    pub fn new(registry: &prometheus::Registry) -> Result<Arc<Self>, BuildError> {
        let metrics = Arc::new(ProxyMetrics::new(registry)?);
        let empty = ProxyState {
            generation: 0,
            routes: Arc::new(RouteTable::compile(&[], |_| None, &metrics)?),
            pools: Vec::new(),
            limits: Arc::new(Limiters::default()),
            redis: None,
            site: None,
            countries: None,
            site_label: Arc::from("none"),
        };
        Ok(Arc::new(Self {
            state: ArcSwap::from_pointee(empty),
            generation: AtomicU64::new(0),
            unmatched: metrics.route("-", "-"),
            metrics,
            backends: BackendRegistry::default(),
            access_log: AtomicBool::new(true),
            fast_paths: AtomicBool::new(true),
            access_log_format: arc_swap::ArcSwapOption::empty(),
            closing: AtomicBool::new(false),
            errors: crate::errlog::ErrorLog::default(),
            cache: OnceLock::new(),
            hot: crate::site::HotKeys::default(),
            qoe: crate::video::cmcd::QoeTable::default(),
            steerer: OnceLock::new(),
            load: crate::load::Load::default(),
            acme_http01: Default::default(),
            tracing: arc_swap::ArcSwapOption::empty(),
            tracing_on: AtomicBool::new(false),
        }))
    }

    /// Builds the state for `config` without installing it. Resolves backend
    /// host names, so it may block.
    /// Builds a generation; `resolved` has the addresses of backend host
    /// names (see `[resolver]`).
    pub fn build(&self, config: &Config, resolved: &Resolved) -> Result<ProxyState, BuildError> {
        let mut pools = Vec::with_capacity(config.pools.len());
        for p in &config.pools {
            pools.push(Arc::new(Pool::build(
                p,
                &self.backends,
                &self.metrics,
                resolved,
            )?));
        }
        let routes = RouteTable::compile(
            &config.routes,
            |name| pools.iter().position(|p| p.name == name),
            &self.metrics,
        )?;
        let current = self.state();
        let redis = redis_client(config, current.redis.as_ref()).map_err(BuildError::RateLimit)?;
        let limits = Limiters::build(
            config,
            &current.limits,
            redis.as_ref(),
            &self.metrics.ratelimit,
        )
        .map_err(BuildError::RateLimit)?;
        let site = config.site.as_ref().map(|s| {
            let peers = s.peer_pool().map(|p| {
                Pool::build(&p, &self.backends, &self.metrics, resolved).map(|p| {
                    pools.push(Arc::new(p));
                    pools.len() - 1
                })
            });
            let peers = peers.transpose()?;
            Ok::<_, BuildError>(Arc::new(SiteTier {
                name: s.name.clone(),
                node: s.node.clone(),
                shield: s
                    .shield
                    .as_ref()
                    .and_then(|name| pools.iter().position(|p| &p.name == name)),
                fallback: s.shield_fallback,
                peers,
                peer_names: s
                    .other_peers()
                    .map(|p| (p.address.clone(), p.name.clone()))
                    .collect(),
                keep: s.keep_copies,
                bind: s
                    .own_entry()
                    .and_then(|p| p.address.ip())
                    .filter(|ip| !ip.is_unspecified()),
            }))
        });
        let site = site.transpose()?;
        Ok(ProxyState {
            generation: self.generation.load(Ordering::Relaxed) + 1,
            routes: Arc::new(routes),
            pools,
            limits: Arc::new(limits),
            redis,
            site_label: Arc::from(config.site.as_ref().map_or("none", |s| s.name.as_str())),
            site,
            countries: None,
        })
    }

    /// Rebuilds the pools whose host names now resolve to other addresses
    /// and makes the result current (the rest of the generation is shared).
    /// Backends whose address stayed keep their state. Returns whether
    /// anything changed.
    pub fn refresh_names(&self, resolved: &Resolved) -> Result<bool, BuildError> {
        let current = self.state();
        let mut pools = current.pools.clone();
        let mut changed = false;
        for p in pools.iter_mut() {
            if p.names.is_empty() {
                continue;
            }
            let fresh = Pool::build(&p.config, &self.backends, &self.metrics, resolved)?;
            if fresh.names != p.names {
                *p = Arc::new(fresh);
                changed = true;
            }
        }
        if !changed {
            return Ok(false);
        }
        let live: Vec<(String, String)> = pools
            .iter()
            .flat_map(|p| p.backends.iter().map(|b| (p.name.clone(), b.label.clone())))
            .collect();
        self.state.store(Arc::new(ProxyState {
            generation: current.generation,
            routes: current.routes.clone(),
            pools,
            limits: current.limits.clone(),
            redis: current.redis.clone(),
            site: current.site.clone(),
            countries: current.countries.clone(),
            site_label: current.site_label.clone(),
        }));
        self.backends.retain_backends(&live);
        Ok(true)
    }

    /// Makes `state` current. Requests already running keep theirs.
    /// Admin overrides (drain, disable, weight) end here, as a reload
    /// ends them, unless `keep_overrides` (an admin API edit of the running
    /// config: adding a backend must not undo another's maintenance).
    pub fn install(&self, state: ProxyState, config: &Config, keep_overrides: bool) {
        self.generation.store(state.generation, Ordering::Relaxed);
        let live: Vec<(String, String)> = state
            .pools
            .iter()
            .flat_map(|p| p.backends.iter().map(|b| (p.name.clone(), b.label.clone())))
            .collect();
        self.state.store(Arc::new(state));
        if keep_overrides {
            self.backends.retain_backends(&live);
        } else {
            self.backends.retain(&live);
        }
        self.access_log
            .store(config.server.access_log, Ordering::Relaxed);
        self.fast_paths
            .store(config.server.fast_paths, Ordering::Relaxed);
        self.access_log_format
            .store(config.server.access_log_format.clone().map(Arc::new));
    }

    /// A backend's shared state by pool name and address label.
    pub fn backend(&self, pool: &str, label: &str) -> Option<Arc<crate::pool::BackendState>> {
        let state = self.state();
        let pool = state.pool(pool)?;
        pool.backend_by_label(label).map(|b| b.state.clone())
    }

    pub fn state(&self) -> Arc<ProxyState> {
        self.state.load_full()
    }

    /// [`Self::state`] without a count taken on it (`arc_swap`'s guard):
    /// for a look that ends before the caller waits on anything.
    pub fn state_now(&self) -> arc_swap::Guard<Arc<ProxyState>> {
        self.state.load()
    }

    /// Gives the proxy its cache (once per node).
    pub fn set_cache(&self, cache: Arc<CacheRuntime>) {
        let _ = self.cache.set(cache);
    }

    pub fn cache(&self) -> Option<&Arc<CacheRuntime>> {
        self.cache.get()
    }

    pub fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    /// `server.fast_paths`: whether the HTTP/1 fast paths may answer.
    pub fn fast_paths(&self) -> bool {
        self.fast_paths.load(Ordering::Relaxed)
    }

    /// The access line's template, when the config has one.
    pub fn access_log_format(&self) -> Option<Arc<edge_config::AccessLogFormat>> {
        self.access_log_format.load_full()
    }

    /// `server.otlp`, when spans are exported.
    pub fn tracing(&self) -> Option<Arc<crate::spans::Tracing>> {
        if !self.tracing_on.load(Ordering::Acquire) {
            return None;
        }
        self.tracing.load_full()
    }

    /// Starts (or, with `None`, stops) handing spans to a sink. A request
    /// under way as it changes sees the sink before or after.
    pub fn set_tracing(&self, tracing: Option<crate::spans::Tracing>) {
        let on = tracing.is_some();
        if !on {
            self.tracing_on.store(false, Ordering::Release);
        }
        self.tracing.store(tracing.map(Arc::new));
        if on {
            self.tracing_on.store(true, Ordering::Release);
        }
    }

    /// From now on every HTTP/1 answer says `Connection: close` (a node
    /// shutting down sends clients elsewhere, connection by connection).
    pub fn set_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}
