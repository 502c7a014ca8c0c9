//! Why a client gets the sites it gets: where it was located, every
//! candidate site of the name with its distance, health, load and shed
//! share, and the order a steering answer uses. `/explain` and `/steer`
//! (in `app`) read this; the DNS answer itself is computed by
//! [`crate::answer::respond`], so the explanation cannot drift from it.

use std::net::IpAddr;

use hickory_proto::rr::{LowerName, Name};
use ipnet::IpNet;
use serde::Serialize;

use crate::geo::{distance_km, GeoName, Where};
use crate::health::Up;
use crate::DnsState;

/// Where a client was found.
#[derive(Debug, Clone, Serialize)]
pub struct Location {
    /// The address looked up: the ECS subnet's, else the client's.
    pub address: IpAddr,
    /// `"ecs"` or `"address"`.
    pub by: &'static str,
    /// The ECS source prefix length, if a subnet was given.
    pub source_prefix: Option<u8>,
    /// Whether the locator knows the address.
    pub found: bool,
    /// `"table"` (config prefixes and CSV) or `"mmdb"`.
    pub table: Option<&'static str>,
    /// The matching entry (network and length).
    pub entry: Option<IpNet>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub region: Option<String>,
    pub country: Option<String>,
    /// The site the entry pins the client to.
    pub pinned_site: Option<String>,
    #[serde(skip)]
    pub at: Option<Where>,
    /// The stable hash shed shares are drawn against (`% 1000`).
    pub ticket: u32,
}

/// A candidate site of a name, as the client sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub site: String,
    #[serde(skip)]
    pub index: usize,
    pub distance_km: Option<f64>,
    /// Answered now (healthy and not drained).
    pub up: bool,
    pub healthy: bool,
    pub drained: bool,
    /// Load ÷ capacity reported by its nodes.
    pub utilization: Option<f64>,
    /// Per mille of its located clients sent to the next site.
    pub shed_per_mille: u32,
    /// This client is among those it sheds.
    pub sheds_this_client: bool,
    /// In the DNS answer for this client.
    pub chosen: bool,
    /// Why it won or lost, in words.
    pub why: String,
}

/// Locates `client` (or its ECS subnet `ecs`).
pub fn locate(state: &DnsState, client: IpAddr, ecs: Option<IpNet>) -> Location {
    let (address, by, source_prefix) = match ecs {
        Some(n) if n.prefix_len() > 0 => (n.trunc().addr(), "ecs", Some(n.prefix_len())),
        Some(n) => (client, "address", Some(n.prefix_len())),
        None => (client, "address", None),
    };
    let (hash, _) = crate::answer::client_hash(
        address,
        source_prefix.filter(|_| by == "ecs").unwrap_or(128),
    );
    let found = state.locator.locate_with_source(address);
    let mut loc = Location {
        address,
        by,
        source_prefix,
        found: found.is_some(),
        table: found.as_ref().map(|(_, t)| *t),
        // The locator reads an IPv4-mapped address as the IPv4 address
        // it is: its entry's length is an IPv4 one.
        entry: found.as_ref().and_then(|(f, _)| {
            IpNet::new(address.to_canonical(), f.prefix_len)
                .ok()
                .map(|n| n.trunc())
        }),
        lat: None,
        lon: None,
        region: None,
        country: state
            .locator
            .country(address)
            .and_then(|c| std::str::from_utf8(&c).ok().map(str::to_string)),
        pinned_site: None,
        at: found.as_ref().map(|(f, _)| f.at.clone()),
        ticket: (hash % 1000) as u32,
    };
    match found.map(|(f, _)| f.at) {
        Some(Where::At { point, region }) => {
            let (lat, lon) = point.degrees();
            loc.lat = Some(lat);
            loc.lon = Some(lon);
            loc.region = region;
        }
        Some(Where::Site(i)) => {
            loc.pinned_site = state.sites.get(i).map(|s| s.name.clone());
            loc.region = state.sites.get(i).and_then(|s| s.region.clone());
        }
        None => {}
    }
    loc
}

/// The geo name `host` is (exactly, or by a wildcard of its parent), and
/// its zone's name.
pub fn geo_name<'a>(state: &'a DnsState, host: &str) -> Option<(String, &'a GeoName)> {
    let name = Name::from_ascii(host.trim_end_matches('.')).ok()?;
    let name = Name::from_ascii(format!("{name}.")).ok()?;
    let zone = state.zones.iter().find(|z| z.contains(&name))?;
    let lower = LowerName::new(&name);
    if let Some(g) = zone.geo(&lower) {
        return Some((lower.to_string(), g));
    }
    let star = Name::from_ascii("*")
        .ok()?
        .append_domain(&name.base_name())
        .ok()?;
    let lower = LowerName::new(&star);
    zone.geo(&lower).map(|g| (lower.to_string(), g))
}

/// Every candidate of `geo` (every site when `None`) for a client at
/// `loc`, best first: the sites the DNS answers with (`chosen`, in answer
/// order), then the others that are up and do not shed this client, by
/// distance, then those that shed it, then those that are down.
pub fn candidates(
    state: &DnsState,
    geo: Option<&GeoName>,
    loc: &Location,
    chosen: &[usize],
) -> Vec<Candidate> {
    let ups = crate::health::Ups::read(&state.site_states);
    let all: Vec<usize> = (0..state.sites.len()).collect();
    let list = geo.map_or(&all[..], GeoName::candidates);
    let mut out: Vec<(u8, f64, Candidate)> = list
        .iter()
        .filter_map(|&i| {
            let site = state.sites.get(i)?;
            let st = state.site_states.get(i)?;
            let distance = distance_km(&state.sites, i, loc.at.as_ref());
            let shed = ups.shed(i);
            let sheds = loc.at.is_some() && loc.ticket < shed;
            let is_chosen = chosen.contains(&i);
            let up = st.up();
            let why = if is_chosen {
                match (&loc.at, loc.pinned_site.as_deref()) {
                    (Some(Where::Site(p)), _) if *p == i => {
                        "the client's prefix is pinned to it".to_string()
                    }
                    (Some(_), _) => "nearest up site that does not shed this client".to_string(),
                    (None, _) => "the client is not located: a default site".to_string(),
                }
            } else if st.drained() {
                "drained by an operator".to_string()
            } else if !st.healthy() {
                "down: no node passes its checks".to_string()
            } else if sheds {
                format!(
                    "over its high-water mark: sheds {shed}‰ of its clients, this one among them"
                )
            } else if loc.at.is_none() {
                "the client is not located and it is not a default site".to_string()
            } else {
                "a nearer site answers".to_string()
            };
            let order = if is_chosen {
                0
            } else if !up {
                3
            } else if sheds {
                2
            } else {
                1
            };
            let rank_in = chosen.iter().position(|c| *c == i).unwrap_or(usize::MAX);
            Some((
                order,
                if order == 0 {
                    rank_in as f64
                } else {
                    distance.unwrap_or(f64::MAX)
                },
                Candidate {
                    site: site.name.clone(),
                    index: i,
                    distance_km: distance.map(|d| (d * 10.0).round() / 10.0),
                    up,
                    healthy: st.healthy(),
                    drained: st.drained(),
                    utilization: st.utilization(),
                    shed_per_mille: shed,
                    sheds_this_client: sheds,
                    chosen: is_chosen,
                    why,
                },
            ))
        })
        .collect();
    out.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.total_cmp(&b.1))
            .then(a.2.index.cmp(&b.2.index))
    });
    out.into_iter().map(|(_, _, c)| c).collect()
}

/// The sites the DNS answers `geo` with for a client at `loc`, as
/// [`crate::answer`] picks them (a weighted pick is drawn anew).
pub fn chosen(
    state: &DnsState,
    geo: &GeoName,
    loc: &Location,
    family: crate::geo::Family,
) -> (Vec<usize>, crate::geo::Pick) {
    let ups = crate::health::Ups::read(&state.site_states);
    let shedding = ups.shedding();
    let (hash, _) = crate::answer::client_hash(
        loc.address,
        loc.source_prefix.filter(|_| loc.by == "ecs").unwrap_or(128),
    );
    geo.pick_for(
        &state.sites,
        &ups,
        loc.at.as_ref(),
        family,
        state.fail_open,
        shedding.then_some(hash),
    )
}
