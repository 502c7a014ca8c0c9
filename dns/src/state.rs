//! One generation of the DNS service: zones, sites, locator, rate limiter,
//! built aside from a config and swapped in whole.

use std::collections::HashMap;
use std::sync::Arc;

use edge_config::{AllSitesDown, Dns, SiteHealth};

use crate::geo::{GeoName, Site};
use crate::health::{SiteState, SiteStates};
use crate::locate::{LocateError, Locator};
use crate::metrics::{DnsMetrics, Handles};
use crate::packet_cache::PacketCache;
use crate::rrl::Limiter;
use crate::zone::{Zone, ZoneError};

/// Why a `[dns]` config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Zone(#[from] ZoneError),
    #[error("dns.locator: {0}")]
    Locator(#[from] LocateError),
}

pub struct DnsState {
    /// Longest names first, so the first zone containing a name is its zone.
    pub zones: Vec<Zone>,
    pub sites: Vec<Site>,
    pub site_states: Vec<Arc<SiteState>>,
    /// Each site's checks (for the prober in `app`), by site index.
    pub site_health: Vec<Option<SiteHealth>>,
    /// Shared with the request path (routes' `geo`).
    pub locator: Arc<Locator>,
    pub rrl: Option<Limiter>,
    pub fail_open: bool,
    pub handles: Handles,
    /// TSIG keys zone transfers are signed and checked with.
    pub tsig_keys: Vec<crate::transfer::Key>,
    /// Answers of this generation kept to send again (`dns.packet_cache`).
    pub packet_cache: Option<PacketCache>,
    /// When loaded sites shed clients (`[dns.shedding]`).
    pub shedding: edge_config::Shedding,
}

impl DnsState {
    /// Builds a generation (reads locator files: blocking). Site states
    /// come from `states`, so health and drains carry over reloads.
    pub fn build(
        cfg: &Dns,
        states: &SiteStates,
        metrics: &DnsMetrics,
    ) -> Result<DnsState, BuildError> {
        let sites: Vec<Site> = cfg.sites.iter().map(Site::new).collect();
        let index: HashMap<&str, usize> = cfg
            .sites
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut zones = Vec::with_capacity(cfg.zones.len());
        for (i, z) in cfg.zones.iter().enumerate() {
            let geo = z
                .geo
                .iter()
                .map(|g| (g.name.clone(), GeoName::new(g, &index)))
                .collect();
            zones.push(Zone::new(z, i, geo)?);
        }
        zones.sort_by_key(|z| std::cmp::Reverse(z.name.num_labels()));
        let names: Vec<&str> = cfg.sites.iter().map(|s| s.name.as_str()).collect();
        let site_states = states.list(&names);
        for (state, site) in site_states.iter().zip(&cfg.sites) {
            state.set_nodes(site.health.as_ref().map_or(&[][..], |h| &h.urls[..]));
        }
        let zone_labels: Vec<&str> = cfg.zones.iter().map(|z| z.name.as_str()).collect();
        Ok(DnsState {
            zones,
            site_health: cfg.sites.iter().map(|s| s.health.clone()).collect(),
            locator: {
                let mut l = Locator::build(&cfg.locator, &index)?;
                l.set_site_countries(
                    cfg.sites
                        .iter()
                        .map(|s| s.country.as_deref().and_then(crate::locate::country_code))
                        .collect(),
                );
                Arc::new(l)
            },
            rrl: cfg.rrl.as_ref().map(Limiter::new),
            fail_open: cfg.all_sites_down == AllSitesDown::FailOpen,
            handles: metrics.handles(&zone_labels, &names),
            tsig_keys: crate::transfer::keys(&cfg.tsig_keys),
            packet_cache: (cfg.packet_cache > 0).then(|| PacketCache::new(cfg.packet_cache)),
            shedding: cfg.shedding,
            site_states,
            sites,
        })
    }

    /// An empty generation (no zones: every query is refused).
    pub fn empty(metrics: &DnsMetrics) -> DnsState {
        DnsState {
            zones: Vec::new(),
            sites: Vec::new(),
            site_states: Vec::new(),
            site_health: Vec::new(),
            locator: Arc::new(Locator::default()),
            rrl: None,
            fail_open: true,
            handles: metrics.handles(&[], &[]),
            tsig_keys: Vec::new(),
            packet_cache: None,
            shedding: edge_config::Shedding::default(),
        }
    }
}
