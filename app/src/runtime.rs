//! The node at run time. Startup, SIGHUP and `POST /reload` all go through one
//! [`Runtime::apply`]: diff against the running config, build the changed
//! parts aside (routes, pools, TLS, new sockets), and only if all of that
//! succeeds swap them in. On any error the running config stays, untouched.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use edge_cache::{CacheMetrics, EdgeStorage, TierCollector};
use edge_config::{Config, ConfigDiff, Diagnostics, Listener, ListenerKind, Secret};
use edge_proxy::caching::CacheRuntime;
use edge_proxy::collector::PoolCollector;
use edge_proxy::listen::{
    BoundListener, ConnectionHandler, HttpHandler, ListenerControl, TlsSettings,
};
use edge_proxy::pool::health::{self, HealthChecks};
use edge_proxy::tcp::TcpHandler;
use edge_proxy::{BuildError, EdgeProxy, Proxy};
use pingora_core::server::configuration::ServerConf;
use prometheus::{Gauge, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Why a config could not be applied. The running config is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the config is invalid:\n{0}")]
    Invalid(Diagnostics),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("{0}")]
    Environment(String),
    #[error("the node was started without a config file, so there is nothing to reload")]
    NoSource,
    #[error("internal error while applying: {0}")]
    Internal(String),
    #[error("dns: {0}")]
    Dns(#[from] edge_dns::BuildError),
    /// A reload that would take away what keeps the node serving or
    /// reachable, which the file does not say it means to.
    #[error("{0}")]
    Refused(String),
}

/// What a reload may not take away unless the new file says so: every
/// listener, route or DNS zone (a file cut short loses them: `listener = []`
/// says it on purpose), and the admin token (removed by a restart, not a
/// reload, so that a bad file cannot lock the operator out).
fn reload_guard(old: &Config, new: &Config) -> Result<(), ApplyError> {
    let emptied = |had: bool, has: bool, declared: bool| had && !has && !declared;
    let zones = |c: &Config| c.dns.as_ref().is_some_and(|d| !d.zones.is_empty());
    let mut why = Vec::new();
    if emptied(
        !old.listeners.is_empty(),
        !new.listeners.is_empty(),
        new.declared.listeners,
    ) {
        why.push("it has no listeners (write `listener = []` to mean it)");
    }
    if emptied(
        !old.routes.is_empty(),
        !new.routes.is_empty(),
        new.declared.routes,
    ) {
        why.push("it has no routes (write `route = []` to mean it)");
    }
    if emptied(zones(old), zones(new), new.declared.dns_zones) {
        why.push("it has no DNS zones (write `zone = []` under [dns] to mean it)");
    }
    if old.admin.token.is_some() && new.admin.token.is_none() {
        why.push("it has no admin token and the running node has one (a restart removes it)");
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(ApplyError::Refused(format!(
            "reload refused, the running config stays: {}",
            why.join("; ")
        )))
    }
}

struct RuntimeMetrics {
    reloads: IntCounterVec,
    generation: IntGauge,
    last_success: Gauge,
}

impl RuntimeMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let build_info = IntGaugeVec::new(
            Opts::new("edge_build_info", "Build information; always 1"),
            &["version", "commit"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("EDGE_GIT_COMMIT")])
            .set(1);
        let reloads = IntCounterVec::new(
            Opts::new(
                "edge_config_reloads_total",
                "Config applications by result (startup included)",
            ),
            &["result"],
        )?;
        let generation = IntGauge::new(
            "edge_config_generation",
            "How many configs have been applied",
        )?;
        let last_success = Gauge::new(
            "edge_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config application",
        )?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(generation.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        Ok(Self {
            reloads,
            generation,
            last_success,
        })
    }
}

/// Prints a bound socket the way `edge-testkit` and operators read it.
pub fn announce(kind: &str, name: &str, addr: SocketAddr) {
    crate::out::listening(kind, name, addr);
}

/// A backend added to or removed from a pool through the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendChange {
    pub pool: String,
    /// As configured: `host:port`.
    pub backend: String,
    /// `added` or `removed`.
    pub change: &'static str,
    /// An added backend's weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// Why an edit of the running config was refused before it was applied.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status that says it: 404, 409, 422.
    pub status: u16,
    pub message: String,
}

#[derive(Debug)]
pub enum EditError {
    Refused(Refusal),
    Apply(ApplyError),
}

/// Everything that lives as long as the node.
pub struct Runtime {
    config: ArcSwap<Config>,
    source: Option<PathBuf>,
    pub proxy: Arc<Proxy>,
    pub listeners: Arc<ListenerControl>,
    server_conf: Arc<ServerConf>,
    pub registry: Registry,
    metrics: RuntimeMetrics,
    apply_lock: tokio::sync::Mutex<()>,
    /// Backends added or removed through the admin API since the config
    /// file was last applied (a reload from the file forgets them).
    backend_changes: parking_lot::Mutex<Vec<BackendChange>>,
    ready: AtomicBool,
    /// The admin token, resolved (from the environment if so configured) at apply.
    admin_token: ArcSwap<Option<Secret>>,
    /// Active health checks of the running generation.
    health: parking_lot::Mutex<HealthChecks>,
    /// HTTP handlers by listener name.
    http_handlers: parking_lot::Mutex<HashMap<String, Arc<HttpHandler>>>,
    /// The DNS service, its listeners and site probes.
    pub dns: crate::dns::DnsNode,
    /// Backend host names and their refresh.
    names: Arc<crate::names::BackendNames>,
    /// This runtime, for tasks it starts that outlive a call.
    me: std::sync::Weak<Runtime>,
    /// Sockets handed over at start (binary upgrade, socket activation),
    /// until listeners claim them.
    inherited: parking_lot::Mutex<crate::handover::Inherited>,
    /// Binary upgrades from this process.
    pub upgrader: crate::upgrade::Upgrader,
    /// The scheduled prefill job.
    pub prefill: crate::prefill::Prefill,
    /// This node's digest of held objects (`GET /site/digest`).
    pub digest: crate::digest::NodeDigest,
    /// `tls.acme` certificates and their order tasks.
    acme: Arc<crate::acme::AcmeManager>,
    /// `server.otlp`: request spans sent to a collector.
    otlp: crate::otlp::OtlpExport,
    /// Heap allocations, in `alloc-stats` builds.
    heap: crate::heap_stats::HeapMetrics,
}

/// A listener's connection handler, and the HTTP one behind it if any (to
/// renew its certificates in place).
struct Handler {
    dyn_handler: Arc<dyn ConnectionHandler>,
    http: Option<Arc<HttpHandler>>,
}

/// What one apply does to the cache.
enum CacheChange {
    None,
    /// The first apply: the cache, opened.
    Open(Arc<CacheRuntime>),
    /// New settings, readied.
    Configure(edge_cache::PreparedCache),
}

/// What one apply does to the listeners, decided before anything changes.
struct ListenerPlan {
    /// Sockets to start (new listeners, or ones whose address moved).
    bind: Vec<(Listener, BoundListener, Handler)>,
    /// Same socket, new settings.
    replace: Vec<(String, Handler)>,
    /// Same settings; certificate files read again (they may have been renewed).
    renew: Vec<(String, TlsSettings)>,
    /// Stop accepting.
    remove: Vec<String>,
    /// New or moved `dns` listeners, bound.
    dns_bind: Vec<edge_dns::BoundDns>,
    /// `dns` listeners to stop (removed or moved).
    dns_remove: Vec<String>,
    /// The `tls.acme` slot of every https listener that has one.
    acme: Vec<Arc<edge_proxy::listen::acme::AcmeSlot>>,
}

/// What building listener handlers needs.
struct Build<'a> {
    proxy: &'a Arc<Proxy>,
    conf: &'a Arc<ServerConf>,
    acme: &'a crate::acme::AcmeManager,
}

impl Build<'_> {
    /// An https listener's TLS settings, with its `tls.acme` slot (also
    /// recorded in `plan`, to start its task at commit).
    fn tls(
        &self,
        name: &str,
        https: &edge_config::HttpsListener,
        slots: &mut Vec<Arc<edge_proxy::listen::acme::AcmeSlot>>,
    ) -> Result<TlsSettings, BuildError> {
        let slot = match &https.acme {
            Some(acme) => {
                let slot = self.acme.slot(name, acme)?;
                slots.push(slot.clone());
                Some(slot)
            }
            None => None,
        };
        TlsSettings::build(name, https, slot)
    }
}

impl Runtime {
    /// A node with nothing applied yet (no listeners; every request 404s).
    pub fn new(
        server_conf: Arc<ServerConf>,
        source: Option<PathBuf>,
    ) -> Result<Arc<Self>, BuildError> {
        let registry = Registry::new();
        let proxy = Proxy::new(&registry)?;
        let metrics = RuntimeMetrics::new(&registry)?;
        registry.register(Box::new(PoolCollector::new(&proxy)))?;
        // process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_fds, process_start_time_seconds, …
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let dns = crate::dns::DnsNode::new(&registry)?;
        let prefill = crate::prefill::Prefill::new(&registry)?;
        let digest = crate::digest::NodeDigest::new(&registry)?;
        let otlp = crate::otlp::OtlpExport::new(&registry)?;
        let heap = crate::heap_stats::HeapMetrics::new(&registry)?;
        let _ = proxy.steerer.set(Arc::new(crate::steering::Steering {
            dns: dns.service.clone(),
            nodes: dns.nodes.clone(),
        }));
        Ok(Arc::new_cyclic(|me| Self {
            prefill,
            digest,
            dns,
            names: Arc::new(crate::names::BackendNames::default()),
            me: me.clone(),
            config: ArcSwap::from_pointee(Config::empty()),
            source,
            listeners: ListenerControl::new(proxy.metrics.clone()),
            proxy,
            server_conf,
            registry,
            metrics,
            apply_lock: tokio::sync::Mutex::new(()),
            backend_changes: parking_lot::Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
            admin_token: ArcSwap::from_pointee(None),
            health: parking_lot::Mutex::new(HealthChecks::default()),
            http_handlers: parking_lot::Mutex::new(HashMap::new()),
            inherited: parking_lot::Mutex::new(crate::handover::Inherited::default()),
            upgrader: crate::upgrade::Upgrader::default(),
            acme: Arc::default(),
            otlp,
            heap,
        }))
    }

    /// Gives the runtime sockets to use before binding new ones (see
    /// [`crate::handover`]).
    pub fn inherit(&self, inherited: crate::handover::Inherited) {
        *self.inherited.lock() = inherited;
    }

    /// The inherited socket for the admin API at `addr`, if any.
    pub fn take_inherited_admin(&self, addr: SocketAddr) -> Option<std::net::TcpListener> {
        self.inherited.lock().take_tcp(crate::handover::ADMIN, addr)
    }

    /// Closes inherited sockets nothing claimed and, when this process
    /// replaces another, tells it that this one serves.
    pub fn started(&self) {
        let mut inherited = self.inherited.lock();
        inherited.close_unclaimed();
        inherited.report_ready();
    }

    /// The config file this node was started with.
    pub fn source(&self) -> Option<&std::path::Path> {
        self.source.as_deref()
    }

    /// Holds config applications off while the guard lives.
    pub async fn hold_applies(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.apply_lock.lock().await
    }

    /// What an upgrade's new process would refuse or what a reload would
    /// refuse in the config file as it is now: its diagnostics, or the
    /// reload guard's reason. Checked before an upgrade starts anything.
    pub fn check_source(&self) -> Result<(), String> {
        let Some(path) = self.source() else {
            return Err("no config file".to_string());
        };
        let new =
            edge_config::load(path).map_err(|d| format!("the config file is not valid:\n{d}"))?;
        reload_guard(&self.config(), &new).map_err(|e| e.to_string())
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn admin_token(&self) -> Option<Secret> {
        (*self.admin_token.load_full()).clone()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Reads the config file again and applies it.
    pub async fn reload(&self) -> Result<ConfigDiff, ApplyError> {
        let path = self.source.clone().ok_or(ApplyError::NoSource)?;
        let loaded = tokio::task::spawn_blocking(move || edge_config::load(&path))
            .await
            .map_err(|e| ApplyError::Internal(e.to_string()))?;
        match loaded {
            Ok(config) => {
                let _one_at_a_time = self.apply_lock.lock().await;
                let diff = self.apply_unlocked(config, false).await?;
                // The file is the config again: runtime backend changes go.
                self.backend_changes.lock().clear();
                Ok(diff)
            }
            Err(diags) => {
                self.metrics.reloads.with_label_values(&["invalid"]).inc();
                Err(ApplyError::Invalid(diags))
            }
        }
    }

    /// Makes `new` the running config, or changes nothing.
    pub async fn apply(&self, new: Config) -> Result<ConfigDiff, ApplyError> {
        let _one_at_a_time = self.apply_lock.lock().await;
        self.apply_unlocked(new, false).await
    }

    /// A change the admin API makes to the running config (HAProxy's
    /// `add server` / `del server`): `edit` changes a copy of the config in
    /// force, which is then applied as a reload is (all or nothing). Kept
    /// until the config file is next applied; listed by [`Self::backend_changes`].
    /// `edit` runs under the apply lock: checks of running state made there
    /// hold until the change is in place.
    pub async fn edit_running(
        &self,
        change: BackendChange,
        edit: impl FnOnce(&mut Config) -> Result<(), Refusal>,
    ) -> Result<ConfigDiff, EditError> {
        let _one_at_a_time = self.apply_lock.lock().await;
        let mut config = (*self.config.load_full()).clone();
        edit(&mut config).map_err(EditError::Refused)?;
        // Other backends' drains, maintenance and weights stay.
        let diff = self
            .apply_unlocked(config, true)
            .await
            .map_err(EditError::Apply)?;
        // One entry per backend, the latest: removing what the API added
        // leaves nothing to list.
        let mut changes = self.backend_changes.lock();
        let same = |c: &BackendChange| c.pool == change.pool && c.backend == change.backend;
        if let Some(i) = changes.iter().position(same) {
            let before = changes.remove(i);
            if before.change == "added" && change.change == "removed" {
                return Ok(diff);
            }
        }
        changes.push(change);
        Ok(diff)
    }

    /// Backends added or removed through the admin API, oldest first.
    pub fn backend_changes(&self) -> Vec<BackendChange> {
        self.backend_changes.lock().clone()
    }

    async fn apply_unlocked(
        &self,
        mut new: Config,
        keep_overrides: bool,
    ) -> Result<ConfigDiff, ApplyError> {
        if new.source.is_none() {
            new.source = self.source.clone();
        }
        let old = self.config.load_full();
        let diff = ConfigDiff::between(&old, &new);
        let result = match reload_guard(&old, &new) {
            Ok(()) => self.apply_locked(&old, new, &diff, keep_overrides).await,
            Err(e) => Err(e),
        };
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics.reloads.with_label_values(&[label]).inc();
        result.map(|()| diff)
    }

    async fn apply_locked(
        &self,
        old: &Arc<Config>,
        new: Config,
        diff: &ConfigDiff,
        keep_overrides: bool,
    ) -> Result<(), ApplyError> {
        let admin_token = match &new.admin.token {
            Some(t) => Some(t.resolve().map_err(ApplyError::Environment)?),
            None => None,
        };
        // Backend host names first (their addresses are backends), then the
        // rest aside: may block (certificate files, bind).
        let lookups = self.names.lookup(&new).await;
        let resolved = lookups.resolved.clone();
        let proxy = self.proxy.clone();
        let conf = self.server_conf.clone();
        let old_for_plan = old.clone();
        let new = Arc::new(new);
        let new_for_build = new.clone();
        let mut inherited = std::mem::take(&mut *self.inherited.lock());
        let acme = self.acme.clone();
        let (built, inherited) = tokio::task::spawn_blocking(move || {
            let built = (|| -> Result<_, BuildError> {
                let state = proxy.build(&new_for_build, &resolved)?;
                let plan = plan_listeners(
                    &old_for_plan,
                    &new_for_build,
                    &Build {
                        proxy: &proxy,
                        conf: &conf,
                        acme: &acme,
                    },
                    &mut inherited,
                )?;
                Ok((state, plan))
            })();
            (built, inherited)
        })
        .await
        .map_err(|e| ApplyError::Internal(e.to_string()))?;
        *self.inherited.lock() = inherited;
        let (mut state, plan) = built?;
        let dns_service = self.dns.service.clone();
        let dns_config = new.dns.clone();
        let dns_state = tokio::task::spawn_blocking(move || dns_service.build(dns_config.as_ref()))
            .await
            .map_err(|e| ApplyError::Internal(e.to_string()))??;
        // Routes' `geo` rules read the same locator as the GeoDNS.
        let locator = dns_state.locator.clone();
        state.countries = Some(Arc::new(move |ip| locator.country(ip)));
        // The cache is made once, at the first apply (its disk tier is
        // read back then); later applies resize it, a new disk path being
        // opened here, aside.
        let cache_change = match self.proxy.cache() {
            None => CacheChange::Open(self.open_cache(&new).await?),
            Some(cache) if diff.cache => {
                let cache = cache.clone();
                let settings = new.cache.clone();
                let prepared = tokio::task::spawn_blocking(move || cache.prepare(&settings))
                    .await
                    .map_err(|e| ApplyError::Internal(e.to_string()))?
                    .map_err(|e| {
                        let dir = new
                            .cache
                            .disk
                            .as_ref()
                            .map_or_else(String::new, |d| d.path.display().to_string());
                        ApplyError::Environment(format!("cannot open the disk cache at {dir}: {e}"))
                    })?;
                CacheChange::Configure(prepared)
            }
            Some(_) => CacheChange::None,
        };
        let dns_threads = new.dns.as_ref().map_or(1, |d| d.threads);
        let dns_ready = self
            .dns
            .prepare(plan.dns_bind, dns_threads)
            .map_err(|e| ApplyError::Environment(format!("dns listeners: {e}")))?;

        let expiries = edge_proxy::listen::tls::expiries(&new);
        let otlp_change = self
            .otlp
            .prepare(new.server.otlp.as_ref())
            .map_err(ApplyError::Environment)?;
        // Commit: nothing below can fail.
        self.proxy.install(state, &new, keep_overrides);
        let expiry = &self.proxy.metrics.certificate_expiry;
        expiry.reset();
        for (listener, path, not_after) in expiries {
            expiry
                .with_label_values(&[&listener, &path])
                .set(not_after as f64);
        }
        self.acme.commit(plan.acme, &self.proxy);
        self.otlp.commit(otlp_change, &self.proxy);
        match cache_change {
            CacheChange::Open(cache) => self.proxy.set_cache(cache),
            CacheChange::Configure(prepared) => {
                if let Some(cache) = self.proxy.cache() {
                    cache.commit(&new.cache, prepared);
                }
            }
            CacheChange::None => {}
        }
        let checks = health::spawn(&self.proxy.state(), &tokio::runtime::Handle::current());
        *self.health.lock() = checks;
        if let Some(me) = self.me.upgrade() {
            self.names
                .keep_fresh(me, lookups, &tokio::runtime::Handle::current());
        }
        let mut http_handlers = self.http_handlers.lock();
        for name in &plan.remove {
            self.listeners.remove(name);
            http_handlers.remove(name);
        }
        for (name, handler) in plan.replace {
            self.listeners.replace_handler(&name, handler.dyn_handler);
            match handler.http {
                Some(h) => http_handlers.insert(name, h),
                None => http_handlers.remove(&name),
            };
        }
        for (name, tls) in plan.renew {
            if let Some(h) = http_handlers.get(&name) {
                h.set_tls(Some(tls));
            }
        }
        for (listener, bound, handler) in plan.bind {
            let addr = bound.local_addr;
            let max = match &listener.kind {
                ListenerKind::Tcp(t) => t.max_connections,
                kind => kind.http().map_or(10_000, |h| h.max_connections),
            };
            self.listeners.add(bound, handler.dyn_handler, max);
            match handler.http {
                Some(h) => http_handlers.insert(listener.name.clone(), h),
                None => http_handlers.remove(&listener.name),
            };
            announce(listener.kind_name(), &listener.name, addr);
        }
        drop(http_handlers);
        for (name, addr) in self.dns.commit(dns_state, &plan.dns_remove, dns_ready) {
            announce("dns", &name, addr);
        }
        self.dns.start_probes(&tokio::runtime::Handle::current());
        self.config.store(new);
        self.admin_token.store(Arc::new(admin_token));
        self.metrics.generation.inc();
        self.metrics.last_success.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        // The first apply is the start itself: nothing to restart for.
        let first = self.metrics.generation.get() == 1;
        for why in diff.restart_required.iter().filter(|_| !first) {
            tracing::warn!(change = %why, "this change takes effect after a restart");
        }
        Ok(())
    }

    /// New addresses for backend host names: the pools that use them are
    /// rebuilt and swapped in (one at a time with applies).
    pub async fn refresh_backends(&self, resolved: &edge_proxy::pool::Resolved) {
        let _one_at_a_time = self.apply_lock.lock().await;
        match self.proxy.refresh_names(resolved) {
            Ok(true) => {
                tracing::info!("backend addresses changed; pools rebuilt");
                let checks = health::spawn(&self.proxy.state(), &tokio::runtime::Handle::current());
                *self.health.lock() = checks;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "backend addresses changed but the pools could not be rebuilt")
            }
        }
    }

    async fn open_cache(&self, config: &Config) -> Result<Arc<CacheRuntime>, ApplyError> {
        let metrics = Arc::new(
            CacheMetrics::new(&self.registry).map_err(|e| ApplyError::Internal(e.to_string()))?,
        );
        let settings = config.cache.clone();
        let storage = tokio::task::spawn_blocking(move || EdgeStorage::open(&settings, metrics))
            .await
            .map_err(|e| ApplyError::Internal(e.to_string()))?
            .map_err(|e| {
                let dir = config
                    .cache
                    .disk
                    .as_ref()
                    .map_or_else(String::new, |d| d.path.display().to_string());
                ApplyError::Environment(format!("cannot open the disk cache at {dir}: {e}"))
            })?;
        let collector =
            TierCollector::new(storage).map_err(|e| ApplyError::Internal(e.to_string()))?;
        self.registry
            .register(Box::new(collector))
            .map_err(|e| ApplyError::Internal(e.to_string()))?;
        Ok(Arc::new(CacheRuntime::new(storage)))
    }

    /// The Prometheus text exposition of every metric.
    /// Every metric family, as `/metrics` and `/stats` show them.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.proxy
            .qoe
            .count_sessions(&self.proxy.metrics.video.cmcd);
        self.heap.update();
        self.registry.gather()
    }

    pub fn metrics_text(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode(&self.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// A listener's connection handler (its certificates loaded).
fn handler_for(
    listener: &Listener,
    build: &Build<'_>,
    slots: &mut Vec<Arc<edge_proxy::listen::acme::AcmeSlot>>,
) -> Result<Handler, BuildError> {
    let (proxy, conf) = (build.proxy, build.conf);
    let metrics = proxy.metrics.listener(&listener.name);
    let http = |h: Arc<HttpHandler>| Handler {
        dyn_handler: h.clone(),
        http: Some(h),
    };
    match &listener.kind {
        ListenerKind::Http(l) => {
            let edge = EdgeProxy::new(proxy.clone(), &listener.name, false, l);
            Ok(http(HttpHandler::new(
                &listener.name,
                edge,
                conf,
                l,
                None,
                metrics,
            )))
        }
        ListenerKind::Https(https) => {
            let tls = build.tls(&listener.name, https, slots)?;
            let edge = EdgeProxy::new(proxy.clone(), &listener.name, true, &https.http);
            Ok(http(HttpHandler::new(
                &listener.name,
                edge,
                conf,
                &https.http,
                Some(tls),
                metrics,
            )))
        }
        ListenerKind::Tcp(t) => Ok(Handler {
            dyn_handler: TcpHandler::new(&listener.name, t, proxy.clone()),
            http: None,
        }),
        // DNS listeners are served by the DNS node (see `plan_listeners`).
        ListenerKind::Dns => Err(BuildError::Bind {
            listener: listener.name.clone(),
            address: listener.address,
            source: std::io::Error::other("unsupported listener kind"),
        }),
    }
}

/// Decides and prepares listener changes: binds new sockets and builds
/// handlers, so that committing cannot fail.
fn plan_listeners(
    old: &Config,
    new: &Config,
    build: &Build<'_>,
    inherited: &mut crate::handover::Inherited,
) -> Result<ListenerPlan, BuildError> {
    let old_by_name: HashMap<&str, &Listener> =
        old.listeners.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut plan = ListenerPlan {
        bind: Vec::new(),
        replace: Vec::new(),
        renew: Vec::new(),
        remove: Vec::new(),
        dns_bind: Vec::new(),
        dns_remove: Vec::new(),
        acme: Vec::new(),
    };
    let udp_sockets = new.dns.as_ref().map_or(1, |d| d.threads);
    for l in &new.listeners {
        let old = old_by_name.get(l.name.as_str());
        let was_dns = old.is_some_and(|o| matches!(o.kind, ListenerKind::Dns));
        if matches!(l.kind, ListenerKind::Dns) {
            if was_dns && old.is_some_and(|o| o.address == l.address) {
                continue;
            }
            if was_dns {
                plan.dns_remove.push(l.name.clone());
            } else if old.is_some() {
                plan.remove.push(l.name.clone());
            }
            let bound = match inherited.take_tcp(&l.name, l.address) {
                Some(tcp) => {
                    let udp = match tcp.local_addr() {
                        Ok(a) => inherited.take_udp(a),
                        Err(_) => Vec::new(),
                    };
                    edge_dns::BoundDns::from_std(&l.name, tcp, udp, udp_sockets)
                }
                None => {
                    inherited.note_new(&l.name, l.address);
                    edge_dns::BoundDns::bind(&l.name, l.address, udp_sockets)
                }
            }
            .map_err(|source| BuildError::Bind {
                listener: l.name.clone(),
                address: l.address,
                source,
            })?;
            plan.dns_bind.push(bound);
            continue;
        }
        if was_dns {
            plan.dns_remove.push(l.name.clone());
        }
        match old.filter(|_| !was_dns) {
            Some(o) if o.address == l.address => {
                if *o != l {
                    let handler = handler_for(l, build, &mut plan.acme)?;
                    plan.replace.push((l.name.clone(), handler));
                } else if let ListenerKind::Https(https) = &l.kind {
                    let tls = build.tls(&l.name, https, &mut plan.acme)?;
                    plan.renew.push((l.name.clone(), tls));
                }
            }
            // New, or moved: the new socket is bound before the old one closes.
            _ => {
                let bound = match inherited.take_tcp(&l.name, l.address) {
                    Some(socket) => BoundListener::from_std(&l.name, socket)?,
                    None => {
                        inherited.note_new(&l.name, l.address);
                        BoundListener::bind(&l.name, l.address)?
                    }
                };
                let handler = handler_for(l, build, &mut plan.acme)?;
                plan.bind.push((l.clone(), bound, handler));
            }
        }
    }
    for o in &old.listeners {
        if !new.listeners.iter().any(|l| l.name == o.name) {
            match o.kind {
                ListenerKind::Dns => plan.dns_remove.push(o.name.clone()),
                _ => plan.remove.push(o.name.clone()),
            }
        }
    }
    Ok(plan)
}
