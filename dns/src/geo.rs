//! Sites and picking the ones to answer with: nearest by great-circle
//! distance, weighted among the nearest, or an explicit failover order per
//! region; only sites that are up, with a default set for clients whose
//! location is unknown.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use edge_config::{DnsSite, GeoPolicy, GeoRecord};

use crate::health::Up;

const EARTH_KM: f64 = 6371.0;

/// A site, ready for distance sums.
#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    lat: f64,
    lon: f64,
    cos_lat: f64,
    pub region: Option<String>,
    pub country: Option<String>,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
    pub weight: u32,
    pub capacity: u32,
}

impl Site {
    pub fn new(s: &DnsSite) -> Site {
        let (lat, lon) = (s.lat.to_radians(), s.lon.to_radians());
        Site {
            name: s.name.clone(),
            lat,
            lon,
            cos_lat: lat.cos(),
            region: s.region.clone(),
            country: s.country.clone(),
            ipv4: s.ipv4.clone(),
            ipv6: s.ipv6.clone(),
            weight: s.weight,
            capacity: s.capacity,
        }
    }

    /// Great-circle distance (haversine) to a point given in radians.
    fn km_to(&self, p: &Point) -> f64 {
        let dlat = p.lat - self.lat;
        let dlon = p.lon - self.lon;
        let a = (dlat / 2.0).sin().powi(2) + self.cos_lat * p.cos_lat * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_KM * a.sqrt().min(1.0).asin()
    }

    fn has(&self, family: Family) -> bool {
        match family {
            Family::V4 => !self.ipv4.is_empty(),
            Family::V6 => !self.ipv6.is_empty(),
        }
    }
}

/// Kilometres from site `i` to where a client is (a client pinned to a
/// site is at that site); `None` when unknown.
pub fn distance_km(sites: &[Site], i: usize, at: Option<&Where>) -> Option<f64> {
    let site = sites.get(i)?;
    let point = match at? {
        Where::At { point, .. } => *point,
        Where::Site(j) => {
            let s = sites.get(*j)?;
            Point {
                lat: s.lat,
                lon: s.lon,
                cos_lat: s.cos_lat,
            }
        }
    };
    Some(site.km_to(&point))
}

/// A location on the globe, in radians.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    lat: f64,
    lon: f64,
    cos_lat: f64,
}

impl Point {
    /// (latitude, longitude) in degrees.
    pub fn degrees(&self) -> (f64, f64) {
        (self.lat.to_degrees(), self.lon.to_degrees())
    }

    pub fn from_degrees(lat: f64, lon: f64) -> Point {
        let lat = lat.to_radians();
        Point {
            lat,
            lon: lon.to_radians(),
            cos_lat: lat.cos(),
        }
    }
}

/// Where a client is.
#[derive(Debug, Clone, PartialEq)]
pub enum Where {
    At {
        point: Point,
        region: Option<String>,
    },
    /// Pinned to a site (by index).
    Site(usize),
}

/// Address family of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Nearest(usize),
    Weighted(usize),
    Failover,
}

/// A geo name, compiled: candidate sites by index.
#[derive(Debug, Clone)]
pub struct GeoName {
    pub ttl: u32,
    candidates: Vec<usize>,
    defaults: Vec<usize>,
    policy: Policy,
    failover: HashMap<String, Vec<usize>>,
}

/// Why the answer holds the sites it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Chosen for the client's location.
    Located,
    /// The client's location is unknown: the default sites.
    Default,
    /// No candidate is up; every candidate is answered (fail open).
    AllDown,
    /// No candidate has an address of the family asked: NODATA.
    NoFamily,
}

impl GeoName {
    /// `index` maps a site name to its index (validated by the config).
    pub fn new(g: &GeoRecord, index: &HashMap<&str, usize>) -> GeoName {
        let ids = |names: &[String]| -> Vec<usize> {
            names
                .iter()
                .filter_map(|n| index.get(n.as_str()).copied())
                .collect()
        };
        let candidates = if g.sites.is_empty() {
            let mut all: Vec<usize> = index.values().copied().collect();
            all.sort_unstable();
            all
        } else {
            ids(&g.sites)
        };
        GeoName {
            ttl: g.ttl,
            defaults: ids(&g.default_sites),
            policy: match g.policy {
                GeoPolicy::Nearest { count } => Policy::Nearest(count.max(1) as usize),
                GeoPolicy::Weighted { among } => Policy::Weighted(among.max(1) as usize),
                GeoPolicy::Failover => Policy::Failover,
            },
            failover: g
                .failover
                .iter()
                .map(|(r, s)| (r.clone(), ids(s)))
                .collect(),
            candidates,
        }
    }

    /// The candidate sites (by index), in config order.
    pub fn candidates(&self) -> &[usize] {
        &self.candidates
    }

    /// The sites answered to clients whose location is unknown (empty: every candidate).
    pub fn defaults(&self) -> &[usize] {
        &self.defaults
    }

    /// The policy, as the config names it.
    pub fn policy_name(&self) -> &'static str {
        match self.policy {
            Policy::Nearest(_) => "nearest",
            Policy::Weighted(_) => "weighted",
            Policy::Failover => "failover",
        }
    }

    /// Whether the answer is drawn at random per query (weighted among
    /// more than one site).
    pub fn draws_at_random(&self) -> bool {
        matches!(self.policy, Policy::Weighted(k) if k > 1)
    }

    /// The sites of the answer for an unknown client, whatever their
    /// health: the default sites, or every candidate (zone transfers).
    pub fn default_answer(&self) -> Vec<usize> {
        if self.defaults.is_empty() {
            self.candidates.clone()
        } else {
            self.defaults.clone()
        }
    }

    /// The sites to answer with, best first; empty when no site has an
    /// address of `family`, or none is up and `fail_open` is false.
    pub fn pick(
        &self,
        sites: &[Site],
        health: &impl Up,
        at: Option<&Where>,
        family: Family,
        fail_open: bool,
    ) -> (Vec<usize>, Pick) {
        self.pick_for(sites, health, at, family, fail_open, None)
    }

    /// [`GeoName::pick`] for a client whose stable hash is `client`: a
    /// located client whose nearest site sheds it (`client % 1000` below
    /// the site's shed share, per mille) gets the nearest site that does
    /// not, so the same clients move while the share holds.
    pub fn pick_for(
        &self,
        sites: &[Site],
        health: &impl Up,
        at: Option<&Where>,
        family: Family,
        fail_open: bool,
        client: Option<u64>,
    ) -> (Vec<usize>, Pick) {
        let usable: Vec<usize> = self
            .candidates
            .iter()
            .copied()
            .filter(|&i| sites.get(i).is_some_and(|s| s.has(family)) && health.up(i))
            .collect();
        if usable.is_empty() {
            let with_family: Vec<usize> = self
                .candidates
                .iter()
                .copied()
                .filter(|&i| sites.get(i).is_some_and(|s| s.has(family)))
                .collect();
            if with_family.is_empty() {
                return (Vec::new(), Pick::NoFamily);
            }
            let answer = if fail_open { with_family } else { Vec::new() };
            return (answer, Pick::AllDown);
        }
        let point = match at {
            Some(Where::At { point, .. }) => Some(*point),
            Some(Where::Site(i)) => {
                if usable.contains(i) {
                    return (vec![*i], Pick::Located);
                }
                // Pinned to a site that cannot answer: nearest to it instead.
                sites.get(*i).map(|s| Point {
                    lat: s.lat,
                    lon: s.lon,
                    cos_lat: s.cos_lat,
                })
            }
            None => None,
        };
        let Some(point) = point else {
            let defaults: Vec<usize> = self
                .defaults
                .iter()
                .copied()
                .filter(|i| usable.contains(i))
                .collect();
            let answer = if defaults.is_empty() {
                usable
            } else {
                defaults
            };
            return (answer, Pick::Default);
        };
        let mut by_distance: Vec<(f64, usize)> = usable
            .iter()
            .map(|&i| (sites[i].km_to(&point), i))
            .collect();
        by_distance.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let nearest = by_distance.iter().map(|(_, i)| *i);
        let chosen = match self.policy {
            Policy::Nearest(n) => nearest.take(n).collect(),
            Policy::Weighted(k) => {
                let pool: Vec<usize> = nearest.take(k).collect();
                vec![weighted_pick(sites, &pool)]
            }
            Policy::Failover => {
                let region = match at {
                    Some(Where::At { region, .. }) => region.clone(),
                    Some(Where::Site(i)) => sites.get(*i).and_then(|s| s.region.clone()),
                    None => None,
                };
                let order = region.as_ref().and_then(|r| self.failover.get(r));
                match order.and_then(|o| o.iter().copied().find(|i| usable.contains(i))) {
                    Some(i) => vec![i],
                    None => nearest.take(1).collect(),
                }
            }
        };
        let chosen = match client {
            Some(h) if !matches!(self.policy, Policy::Weighted(_)) => {
                shed(chosen, &by_distance, health, h)
            }
            _ => chosen,
        };
        (chosen, Pick::Located)
    }
}

/// Moves a client off each chosen site that sheds it to the nearest usable
/// site that is neither chosen nor shedding it; a site no other can
/// replace stays.
fn shed(
    mut chosen: Vec<usize>,
    by_distance: &[(f64, usize)],
    health: &impl Up,
    client: u64,
) -> Vec<usize> {
    let ticket = (client % 1000) as u32;
    for j in 0..chosen.len() {
        if ticket >= health.shed(chosen[j]) {
            continue;
        }
        let spare = by_distance
            .iter()
            .map(|(_, k)| *k)
            .find(|k| !chosen.contains(k) && ticket >= health.shed(*k));
        if let Some(k) = spare {
            chosen[j] = k;
        }
    }
    chosen
}

/// One of `pool`, with probability proportional to weight (a zero weight is never picked
/// unless all are zero).
fn weighted_pick(sites: &[Site], pool: &[usize]) -> usize {
    let total: u64 = pool.iter().map(|&i| u64::from(sites[i].weight)).sum();
    if total == 0 {
        return pool[fastrand::usize(..pool.len())];
    }
    let mut ticket = fastrand::u64(..total);
    for &i in pool {
        let w = u64::from(sites[i].weight);
        if ticket < w {
            return i;
        }
        ticket -= w;
    }
    pool[pool.len() - 1]
}

#[cfg(test)]
mod tests {

    /// Every site up; site 0 sheds `share` per mille.
    struct Shedding(u32);

    impl Up for Shedding {
        fn up(&self, _i: usize) -> bool {
            true
        }
        fn shed(&self, i: usize) -> u32 {
            if i == 0 {
                self.0
            } else {
                0
            }
        }
    }

    #[test]
    fn a_shedding_site_sends_its_share_of_clients_to_the_next_nearest() {
        let cfg: Vec<DnsSite> = vec![
            site("ams", 52.37, 4.90, "eu", 1),
            site("fra", 50.11, 8.68, "eu", 1),
            site("nyc", 40.71, -74.01, "us", 1),
        ];
        let sites: Vec<Site> = cfg.iter().map(Site::new).collect();
        let index: HashMap<&str, usize> = cfg
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let g = GeoName::new(
            &GeoRecord {
                name: "v".into(),
                policy: GeoPolicy::Nearest { count: 1 },
                ttl: 20,
                sites: Vec::new(),
                default_sites: Vec::new(),
                failover: Default::default(),
            },
            &index,
        );
        let paris = Where::At {
            point: Point::from_degrees(48.85, 2.35),
            region: None,
        };
        for share in [0u32, 250, 700, 1000] {
            let moved = (0..10_000u64)
                .map(|n| n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (n >> 7))
                .filter(|h| {
                    let (p, _) = g.pick_for(
                        &sites,
                        &Shedding(share),
                        Some(&paris),
                        Family::V4,
                        true,
                        Some(*h),
                    );
                    assert!(p == [0] || p == [1], "{p:?}");
                    p == [1]
                })
                .count();
            let expect = share as usize * 10;
            assert!(
                moved.abs_diff(expect) <= 250,
                "share {share}: {moved} of 10000 moved"
            );
        }
        // The same client stays where it is sent while the share holds.
        let h = 123_456_789;
        let first = g.pick_for(
            &sites,
            &Shedding(500),
            Some(&paris),
            Family::V4,
            true,
            Some(h),
        );
        for _ in 0..10 {
            assert_eq!(
                g.pick_for(
                    &sites,
                    &Shedding(500),
                    Some(&paris),
                    Family::V4,
                    true,
                    Some(h)
                ),
                first
            );
        }
        // Without a client key (zone transfers, tests): no shedding.
        assert_eq!(
            g.pick(&sites, &Shedding(1000), Some(&paris), Family::V4, true)
                .0,
            [0]
        );
    }
    use super::*;
    use crate::health::{SiteStates, SiteView};

    fn site(name: &str, lat: f64, lon: f64, region: &str, weight: u32) -> DnsSite {
        DnsSite {
            name: name.into(),
            lat,
            lon,
            region: Some(region.into()),
            country: None,
            ipv4: vec![Ipv4Addr::new(192, 0, 2, weight as u8)],
            ipv6: if name == "sin" {
                Vec::new()
            } else {
                vec![Ipv6Addr::LOCALHOST]
            },
            weight,
            capacity: 100,
            health: None,
        }
    }

    fn world() -> (Vec<Site>, HashMap<&'static str, usize>) {
        let raw = [
            site("ams", 52.37, 4.90, "eu", 1),
            site("nyc", 40.71, -74.01, "us", 2),
            site("sin", 1.35, 103.82, "ap", 3),
        ];
        let index = HashMap::from([("ams", 0), ("nyc", 1), ("sin", 2)]);
        (raw.iter().map(Site::new).collect(), index)
    }

    fn geo(policy: GeoPolicy, defaults: &[&str], failover: &[(&str, &[&str])]) -> GeoRecord {
        GeoRecord {
            name: "video.cdn.example.".into(),
            sites: Vec::new(),
            policy,
            ttl: 30,
            default_sites: defaults.iter().map(|s| s.to_string()).collect(),
            failover: failover
                .iter()
                .map(|(r, s)| (r.to_string(), s.iter().map(|x| x.to_string()).collect()))
                .collect(),
        }
    }

    fn at(lat: f64, lon: f64, region: Option<&str>) -> Where {
        Where::At {
            point: Point::from_degrees(lat, lon),
            region: region.map(str::to_string),
        }
    }

    #[test]
    fn the_nearest_up_site_wins() {
        let (sites, index) = world();
        let states = SiteStates::default();
        let list = states.list(&["ams", "nyc", "sin"]);
        let view = SiteView(&list);
        let g = GeoName::new(&geo(GeoPolicy::Nearest { count: 1 }, &["ams"], &[]), &index);
        let paris = at(48.85, 2.35, None);
        let tokyo = at(35.68, 139.69, None);
        assert_eq!(g.pick(&sites, &view, Some(&paris), Family::V4, true).0, [0]);
        assert_eq!(g.pick(&sites, &view, Some(&tokyo), Family::V4, true).0, [2]);
        // Singapore has no IPv6: Tokyo's AAAA goes to the next nearest
        // (Amsterdam, 9,300 km, before New York, 10,800 km).
        assert_eq!(g.pick(&sites, &view, Some(&tokyo), Family::V6, true).0, [0]);
        assert_eq!(
            g.pick(&sites, &view, None, Family::V4, true),
            (vec![0], Pick::Default)
        );
        states.set_drained("ams", true);
        assert_eq!(g.pick(&sites, &view, Some(&paris), Family::V4, true).0, [1]);
        let two = GeoName::new(&geo(GeoPolicy::Nearest { count: 2 }, &[], &[]), &index);
        assert_eq!(
            two.pick(&sites, &view, Some(&tokyo), Family::V4, true).0,
            [2, 1]
        );
        assert_eq!(
            two.pick(&sites, &view, None, Family::V4, true).0,
            [1, 2],
            "no default: all up"
        );
    }

    #[test]
    fn all_down_fails_open_or_not() {
        let (sites, index) = world();
        let states = SiteStates::default();
        let list = states.list(&["ams", "nyc", "sin"]);
        for s in ["ams", "nyc", "sin"] {
            states.set_drained(s, true);
        }
        let view = SiteView(&list);
        let g = GeoName::new(&geo(GeoPolicy::Nearest { count: 1 }, &[], &[]), &index);
        let p = at(0.0, 0.0, None);
        assert_eq!(
            g.pick(&sites, &view, Some(&p), Family::V4, true),
            (vec![0, 1, 2], Pick::AllDown)
        );
        assert_eq!(
            g.pick(&sites, &view, Some(&p), Family::V4, false),
            (vec![], Pick::AllDown)
        );
    }

    #[test]
    fn failover_follows_the_region_list_and_weighted_stays_near() {
        let (sites, index) = world();
        let states = SiteStates::default();
        let list = states.list(&["ams", "nyc", "sin"]);
        let view = SiteView(&list);
        let g = GeoName::new(
            &geo(GeoPolicy::Failover, &[], &[("eu", &["nyc", "ams"])]),
            &index,
        );
        assert_eq!(
            g.pick(
                &sites,
                &view,
                Some(&at(48.0, 2.0, Some("eu"))),
                Family::V4,
                true
            )
            .0,
            [1]
        );
        assert_eq!(
            g.pick(
                &sites,
                &view,
                Some(&at(48.0, 2.0, Some("xx"))),
                Family::V4,
                true
            )
            .0,
            [0]
        );
        assert_eq!(
            g.pick(&sites, &view, Some(&Where::Site(2)), Family::V4, true)
                .0,
            [2]
        );
        let w = GeoName::new(&geo(GeoPolicy::Weighted { among: 2 }, &[], &[]), &index);
        let mut seen = [0; 3];
        for _ in 0..3000 {
            let (s, _) = w.pick(
                &sites,
                &view,
                Some(&at(45.0, -30.0, None)),
                Family::V4,
                true,
            );
            seen[s[0]] += 1;
        }
        assert_eq!(seen[2], 0, "Singapore is not among the 2 nearest");
        assert!(seen[1] > seen[0], "nyc weighs 2, ams 1: {seen:?}");
    }
}
