//! Site state: health (a site is up while any of its nodes passes its
//! checks, with rise/fall) and the admin's drain. Kept by site name across
//! reloads. The probes themselves run in `app`, which owns HTTP probing;
//! they report here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

/// One probed node of a site.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeHealth {
    pub url: String,
    pub up: bool,
    #[serde(skip)]
    successes: u32,
    #[serde(skip)]
    failures: u32,
    pub last_error: Option<String>,
    /// What the node's `/site/state` said of its load ÷ capacity.
    pub utilization: Option<f64>,
}

/// When a site sheds clients to the next nearest one (the nodes'
/// `/site/state` utilization, load ÷ capacity): above `high_water` the
/// shed share grows by a step per poll; it shrinks by a step only below
/// `low_water`, and holds in between (hysteresis: a steady load gives
/// steady answers). `[dns.shedding]`; 0.9, 0.75 and 10% by default.
pub use edge_config::Shedding;

/// A site's state.
#[derive(Debug)]
pub struct SiteState {
    drained: AtomicBool,
    healthy: AtomicBool,
    nodes: Mutex<Vec<NodeHealth>>,
    /// Per mille of the site's clients answered with the next site.
    shed: AtomicU32,
    /// When the shed share was last stepped.
    steered: Mutex<Option<Instant>>,
}

impl Default for SiteState {
    fn default() -> Self {
        Self {
            drained: AtomicBool::new(false),
            // Up until checks say otherwise: a start must not withdraw every site.
            healthy: AtomicBool::new(true),
            nodes: Mutex::new(Vec::new()),
            shed: AtomicU32::new(0),
            steered: Mutex::new(None),
        }
    }
}

impl SiteState {
    /// Answered now: not drained, and healthy.
    pub fn up(&self) -> bool {
        !self.drained.load(Ordering::Relaxed) && self.healthy.load(Ordering::Relaxed)
    }

    pub fn drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The nodes to probe. A URL that was probed before keeps its state
    /// (a reload must not bring a down node back); a new one starts up.
    pub fn set_nodes(&self, urls: &[String]) {
        let mut nodes = self.nodes.lock();
        if nodes.iter().map(|n| &n.url).eq(urls.iter()) {
            return;
        }
        let old = std::mem::take(&mut *nodes);
        *nodes = urls
            .iter()
            .map(|u| {
                old.iter()
                    .find(|n| &n.url == u)
                    .cloned()
                    .unwrap_or_else(|| NodeHealth {
                        url: u.clone(),
                        up: true,
                        successes: 0,
                        failures: 0,
                        last_error: None,
                        utilization: None,
                    })
            })
            .collect();
        let healthy = nodes.is_empty() || nodes.iter().any(|n| n.up);
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// One probe result of node `i`. Returns the site's new health when it changed.
    pub fn report(
        &self,
        i: usize,
        passed: bool,
        rise: u32,
        fall: u32,
        error: Option<String>,
    ) -> Option<bool> {
        let mut nodes = self.nodes.lock();
        let node = nodes.get_mut(i)?;
        if passed {
            node.successes += 1;
            node.failures = 0;
            node.last_error = None;
            if !node.up && node.successes >= rise.max(1) {
                node.up = true;
            }
        } else {
            node.failures += 1;
            node.successes = 0;
            node.last_error = error;
            if node.up && node.failures >= fall.max(1) {
                node.up = false;
            }
        }
        let healthy = nodes.is_empty() || nodes.iter().any(|n| n.up);
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        (was != healthy).then_some(healthy)
    }

    pub fn nodes(&self) -> Vec<NodeHealth> {
        self.nodes.lock().clone()
    }

    /// Per mille of this site's clients answered with the next site now.
    pub fn shed(&self) -> u32 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Steps the shed share from the utilization the nodes report, at most
    /// once per `interval` (see [`Shedding`]). Returns the new share when
    /// it changed.
    pub fn steer(&self, interval: Duration, marks: &Shedding) -> Option<u32> {
        {
            let mut at = self.steered.lock();
            if at.is_some_and(|t| t.elapsed() < interval) {
                return None;
            }
            *at = Some(Instant::now());
        }
        let before = self.shed();
        let after = next_shed(before, self.utilization(), marks);
        (after != before).then(|| {
            self.shed.store(after, Ordering::Relaxed);
            after
        })
    }

    /// Node `i`'s last reported utilization (load ÷ capacity).
    pub fn set_utilization(&self, i: usize, utilization: Option<f64>) {
        if let Some(n) = self.nodes.lock().get_mut(i) {
            n.utilization = utilization;
        }
    }

    /// The site's utilization: the mean of its up nodes' reports (`None`
    /// when none reports one).
    pub fn utilization(&self) -> Option<f64> {
        let nodes = self.nodes.lock();
        let reported: Vec<f64> = nodes
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| n.utilization)
            .collect();
        (!reported.is_empty()).then(|| reported.iter().sum::<f64>() / reported.len() as f64)
    }
}

/// The shed share after one step at `utilization` (`None`: no node says).
pub fn next_shed(shed: u32, utilization: Option<f64>, marks: &Shedding) -> u32 {
    let step = marks.step_per_mille;
    match utilization {
        Some(u) if u > marks.high_water => (shed + step).min(1000),
        Some(u) if u < marks.low_water => shed.saturating_sub(step),
        Some(_) => shed,
        None => 0,
    }
}

/// Every site's state, by name.
#[derive(Debug, Default)]
pub struct SiteStates {
    by_name: RwLock<HashMap<String, Arc<SiteState>>>,
}

impl SiteStates {
    /// The state of `name`, created if new.
    pub fn get(&self, name: &str) -> Arc<SiteState> {
        if let Some(s) = self.by_name.read().get(name) {
            return s.clone();
        }
        self.by_name
            .write()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    pub fn find(&self, name: &str) -> Option<Arc<SiteState>> {
        self.by_name.read().get(name).cloned()
    }

    /// Drains (or undrains) a site. Returns false if there is no such site.
    pub fn set_drained(&self, name: &str, drained: bool) -> bool {
        match self.find(name) {
            Some(s) => {
                s.drained.store(drained, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Forgets sites no longer configured.
    pub fn retain(&self, names: &[&str]) {
        self.by_name
            .write()
            .retain(|k, _| names.contains(&k.as_str()));
    }

    /// The states of `names`, in order (created if new).
    pub fn list(&self, names: &[&str]) -> Vec<Arc<SiteState>> {
        names.iter().map(|n| self.get(n)).collect()
    }
}

/// Site states in the order of a generation's sites, as a query reads them.
#[derive(Debug, Clone, Copy)]
pub struct SiteView<'a>(pub &'a [Arc<SiteState>]);

/// Whether site `i` (in a generation's order) is answered.
pub trait Up {
    fn up(&self, i: usize) -> bool;
    /// Per mille of site `i`'s clients sent to the next site.
    fn shed(&self, _i: usize) -> u32 {
        0
    }
}

impl Up for SiteView<'_> {
    fn up(&self, i: usize) -> bool {
        self.0.get(i).is_some_and(|s| s.up())
    }

    fn shed(&self, i: usize) -> u32 {
        self.0.get(i).map_or(0, |s| s.shed())
    }
}

/// Which sites are up, one bit each, read once: an answer picked from it
/// depends on nothing else about health, so a packet-cache entry made from
/// it holds exactly while [`Ups::holds`] (reading the live states while
/// picking and again when keeping the answer could keep an answer made
/// before a change as if made after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ups {
    bits: Box<[u64]>,
    /// Each site's shed share, per mille (empty when none sheds).
    shed: Box<[u16]>,
}

impl Ups {
    pub fn read(sites: &[Arc<SiteState>]) -> Ups {
        let mut bits = vec![0u64; sites.len().div_ceil(64)];
        for (i, s) in sites.iter().enumerate() {
            if s.up() {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        let shed: Vec<u16> = sites.iter().map(|s| s.shed() as u16).collect();
        let shed = if shed.iter().all(|s| *s == 0) {
            Box::default()
        } else {
            shed.into_boxed_slice()
        };
        Ups {
            bits: bits.into_boxed_slice(),
            shed,
        }
    }

    /// Whether `sites` are up, and shed, as they were read.
    pub fn holds(&self, sites: &[Arc<SiteState>]) -> bool {
        self.bits.len() == sites.len().div_ceil(64)
            && sites.iter().enumerate().all(|(i, s)| {
                (self.bits[i / 64] >> (i % 64)) & 1 == u64::from(s.up())
                    && u32::from(self.shed.get(i).copied().unwrap_or(0)) == s.shed()
            })
    }

    /// Whether some site sheds clients.
    pub fn shedding(&self) -> bool {
        !self.shed.is_empty()
    }
}

impl Up for Ups {
    fn up(&self, i: usize) -> bool {
        self.bits
            .get(i / 64)
            .is_some_and(|w| (w >> (i % 64)) & 1 == 1)
    }

    fn shed(&self, i: usize) -> u32 {
        u32::from(self.shed.get(i).copied().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_shed_share_steps_up_above_high_water_and_down_below_low_water() {
        assert_eq!(next_shed(0, Some(1.5), &D), 100);
        assert_eq!(next_shed(950, Some(0.95), &D), 1000);
        assert_eq!(next_shed(1000, Some(3.0), &D), 1000);
        // Between the marks it holds: a steady load, steady answers.
        assert_eq!(next_shed(300, Some(0.8), &D), 300);
        assert_eq!(next_shed(0, Some(0.85), &D), 0);
        assert_eq!(next_shed(300, Some(0.5), &D), 200);
        assert_eq!(next_shed(50, Some(0.1), &D), 0);
        // No report: nothing to shed for.
        assert_eq!(next_shed(700, None, &D), 0);
        // Configured marks and step.
        let m = Shedding {
            high_water: 1.2,
            low_water: 0.5,
            step_per_mille: 250,
        };
        assert_eq!(next_shed(0, Some(1.1), &m), 0);
        assert_eq!(next_shed(0, Some(1.3), &m), 250);
        assert_eq!(next_shed(900, Some(1.3), &m), 1000);
        assert_eq!(next_shed(500, Some(0.6), &m), 500);
        assert_eq!(next_shed(500, Some(0.4), &m), 250);
    }

    #[test]
    fn a_shedding_site_steps_once_per_interval_from_its_up_nodes() {
        let s = SiteState::default();
        s.set_nodes(&["a".to_string(), "b".to_string()]);
        s.set_utilization(0, Some(2.0));
        s.set_utilization(1, Some(1.0));
        assert_eq!(s.utilization(), Some(1.5));
        assert_eq!(s.steer(Duration::from_secs(3600), &D), Some(100));
        assert_eq!(
            s.steer(Duration::from_secs(3600), &D),
            None,
            "once per interval"
        );
        assert_eq!(s.steer(Duration::ZERO, &D), Some(200));
        let ups = Ups::read(&[Arc::new(SiteState::default()), Arc::new(s)]);
        assert!(ups.shedding());
        assert_eq!((ups.shed(0), ups.shed(1)), (0, 200));
    }

    use super::*;

    const D: Shedding = Shedding {
        high_water: 0.9,
        low_water: 0.75,
        step_per_mille: 100,
    };

    #[test]
    fn a_site_is_up_while_any_node_passes() {
        let s = SiteState::default();
        s.set_nodes(&["http://a/".into(), "http://b/".into()]);
        assert!(s.up());
        assert_eq!(s.report(0, false, 2, 2, Some("refused".into())), None);
        assert_eq!(s.report(0, false, 2, 2, None), None, "b is still up");
        assert_eq!(s.report(1, false, 2, 2, None), None);
        assert_eq!(
            s.report(1, false, 2, 2, None),
            Some(false),
            "both down after fall=2"
        );
        assert!(!s.up());
        assert_eq!(s.report(1, true, 2, 2, None), None);
        assert_eq!(
            s.report(1, true, 2, 2, None),
            Some(true),
            "back after rise=2"
        );
        s.drained.store(true, Ordering::Relaxed);
        assert!(!s.up() && s.healthy());
    }

    #[test]
    fn a_changed_url_list_keeps_the_state_of_the_urls_it_kept() {
        let site = SiteState::default();
        let (a, b, c) = (
            "http://a/h".to_string(),
            "http://b/h".to_string(),
            "http://c/h".to_string(),
        );
        site.set_nodes(&[a.clone(), b.clone()]);
        for i in 0..2 {
            for _ in 0..3 {
                site.report(i, false, 2, 2, Some("refused".into()));
            }
        }
        assert!(!site.healthy());
        // b stays (down), c is new (up): healthy through c only.
        site.set_nodes(&[b.clone(), c.clone()]);
        let nodes = site.nodes();
        assert_eq!((nodes[0].url.as_str(), nodes[0].up), (b.as_str(), false));
        assert_eq!((nodes[1].url.as_str(), nodes[1].up), (c.as_str(), true));
        assert!(site.healthy());
        // Only b: down, as it was.
        site.set_nodes(std::slice::from_ref(&b));
        assert!(!site.healthy());
        let _ = a;
    }
}
