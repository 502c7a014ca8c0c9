//! edge's GeoDNS: an authoritative server for the zones of the config that
//! answers geo names with the nearest site that is up.
//!
//! - [`answer`]: one query, packet to packet (zones, geo, ECS, RRL, TC).
//! - [`zone`]: zones compiled for lookup; [`geo`]: sites and picking;
//!   [`locate`]: client location by prefix (config, CSV, MaxMind).
//! - [`health`]: site states (health reported by `app`'s probes, drains).
//! - [`packet_cache`]: answers kept to send again.
//! - [`rrl`]: response rate limiting. [`server`]: UDP and TCP loops.
//! - [`DnsService`]: the current generation behind `ArcSwap`, swapped on
//!   reload; site states outlive generations.
//!
//! Wire format is hickory-proto's. hickory-server's `Server` is not used:
//! it spawns a task per UDP query and builds answers through `Catalog`,
//! which cannot rate-limit a response, set an ECS scope or decide TC the
//! way this needs; the loops here answer inline.

pub mod answer;
pub mod explain;
pub mod geo;
pub mod health;
pub mod locate;
pub mod metrics;
pub mod packet_cache;
pub mod rrl;
pub mod server;
pub mod state;
pub mod transfer;
pub mod zone;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use edge_config::Dns;
use serde::Serialize;

pub use answer::Transport;
use health::{NodeHealth, SiteStates};
use metrics::{DnsMetrics, SiteCollector};
pub use server::{BoundDns, DnsListener, ReadyDns};
pub use state::{BuildError, DnsState};

/// The DNS service of a node.
pub struct DnsService {
    state: ArcSwap<DnsState>,
    pub sites: SiteStates,
    metrics: DnsMetrics,
}

/// A site as the admin API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SiteReport {
    pub name: String,
    /// Answered now: healthy and not drained.
    pub up: bool,
    pub healthy: bool,
    pub drained: bool,
    pub region: Option<String>,
    pub country: Option<String>,
    pub weight: u32,
    pub capacity: u32,
    /// Load ÷ capacity, the mean of what the up nodes' `/site/state` said.
    pub utilization: Option<f64>,
    /// Per mille of the site's clients answered with the next site.
    pub shed_per_mille: u32,
    pub nodes: Vec<NodeHealth>,
}

impl DnsService {
    /// An empty service (refuses everything) with its metrics in `registry`.
    pub fn new(registry: &prometheus::Registry) -> Result<Arc<Self>, prometheus::Error> {
        let metrics = DnsMetrics::new(registry)?;
        let service = Arc::new(Self {
            state: ArcSwap::from_pointee(DnsState::empty(&metrics)),
            sites: SiteStates::default(),
            metrics,
        });
        let weak = Arc::downgrade(&service);
        registry.register(Box::new(SiteCollector::new(Arc::new(move || {
            weak.upgrade().map_or_else(Vec::new, |s| {
                let st = s.state();
                st.sites
                    .iter()
                    .map(|x| x.name.clone())
                    .zip(st.site_states.iter().cloned())
                    .collect()
            })
        }))?))?;
        Ok(service)
    }

    /// Builds a generation for `cfg` without installing it (blocking: it
    /// reads locator files). No `[dns]`: a generation that refuses all.
    pub fn build(&self, cfg: Option<&Dns>) -> Result<DnsState, BuildError> {
        match cfg {
            Some(c) => DnsState::build(c, &self.sites, &self.metrics),
            None => Ok(DnsState::empty(&self.metrics)),
        }
    }

    /// Makes `state` current; forgets sites it no longer has.
    pub fn install(&self, state: DnsState) {
        let names: Vec<&str> = state.sites.iter().map(|s| s.name.as_str()).collect();
        self.sites.retain(&names);
        self.state.store(Arc::new(state));
    }

    pub fn state(&self) -> Arc<DnsState> {
        self.state.load_full()
    }

    /// Answers one query (see [`answer::respond`]).
    pub fn respond(&self, packet: &[u8], client: IpAddr, transport: Transport) -> Option<Vec<u8>> {
        answer::respond(&self.state.load(), packet, client, transport)
    }

    /// Answers one query over TCP: a zone transfer is several messages
    /// (see [`transfer::respond`]).
    pub fn respond_tcp(&self, packet: &[u8], client: IpAddr) -> Vec<Vec<u8>> {
        let state = self.state.load();
        if transfer::is_transfer(packet) {
            return transfer::respond(&state, packet, client, Transport::Tcp);
        }
        answer::respond(&state, packet, client, Transport::Tcp)
            .into_iter()
            .collect()
    }

    pub(crate) fn observe(&self, started: Instant) {
        self.metrics
            .seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// A thread's own copy of the answer-time histogram (see
    /// [`DnsService::observe_batch`]).
    pub(crate) fn local_seconds(&self) -> prometheus::local::LocalHistogram {
        self.metrics.seconds.local()
    }

    /// Records the time of a batch of `n` answers, per answer, in `local`,
    /// then adds it to the shared histogram (a few atomic adds a batch,
    /// not three per answer).
    pub(crate) fn observe_batch(
        local: &prometheus::local::LocalHistogram,
        started: Instant,
        n: usize,
    ) {
        if n > 0 {
            let each = started.elapsed().as_secs_f64() / n as f64;
            for _ in 0..n {
                local.observe(each);
            }
            local.flush();
        }
    }

    pub fn site_reports(&self) -> Vec<SiteReport> {
        let st = self.state();
        st.sites
            .iter()
            .zip(&st.site_states)
            .map(|(site, s)| SiteReport {
                name: site.name.clone(),
                up: s.up(),
                healthy: s.healthy(),
                drained: s.drained(),
                region: site.region.clone(),
                country: site.country.clone(),
                weight: site.weight,
                capacity: site.capacity,
                utilization: s.utilization(),
                shed_per_mille: s.shed(),
                nodes: s.nodes(),
            })
            .collect()
    }
}
