//! Zones compiled from the config: records by owner name and type (any
//! type; data decoded from the wire form the config scanned), geo names,
//! the empty non-terminals (names that exist only because names below them
//! do, which answer NODATA rather than NXDOMAIN), delegation points (NS
//! below the apex, RFC 1034 §4.2.1) and wildcard owners (RFC 4592).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use edge_config::{Record as RecordConfig, Zone as ZoneConfig};
use hickory_proto::rr::rdata::{self, HINFO, NS, NULL, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, Restrict};

use crate::geo::GeoName;

/// Why a zone could not be compiled (the config validated it, so rare).
#[derive(Debug, thiserror::Error)]
#[error("zone {zone}: {what}")]
pub struct ZoneError {
    pub zone: String,
    pub what: String,
}

/// The records of one owner name, by type.
#[derive(Debug, Default, Clone)]
pub struct Node {
    sets: Vec<(RecordType, Vec<Record>)>,
}

impl Node {
    pub fn get(&self, t: RecordType) -> Option<&[Record]> {
        self.sets
            .iter()
            .find(|(rt, _)| *rt == t)
            .map(|(_, r)| r.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The lowest TTL of the records here.
    pub fn min_ttl(&self) -> u32 {
        self.sets
            .iter()
            .flat_map(|(_, v)| v.iter().map(|r| r.ttl))
            .min()
            .unwrap_or(0)
    }

    fn push(&mut self, r: Record) {
        let t = r.record_type();
        match self.sets.iter_mut().find(|(rt, _)| *rt == t) {
            Some((_, v)) => {
                if !v.iter().any(|o| o.data == r.data) {
                    v.push(r)
                }
            }
            None => self.sets.push((t, vec![r])),
        }
    }
}

/// What a name is in a zone.
pub enum Found<'a> {
    /// Records at the name.
    Node(&'a Node),
    /// A geo name.
    Geo(&'a GeoName),
    /// Exists only because names below it do: NODATA.
    EmptyNonTerminal,
    /// Records of the wildcard `*.<closest encloser>` (RFC 4592 §3.3.1).
    Wildcard(&'a Node),
    /// A geo name that is a wildcard.
    WildcardGeo(&'a GeoName),
    /// Nothing: NXDOMAIN.
    Nothing,
}

/// A compiled zone.
#[derive(Debug)]
pub struct Zone {
    pub name: Name,
    /// The zone name as configured (metric label).
    pub label: String,
    pub index: usize,
    soa: Record,
    nodes: HashMap<LowerName, Node>,
    geo: HashMap<LowerName, GeoName>,
    empty_non_terminals: HashSet<LowerName>,
    /// Delegation points: names below the apex that own NS records.
    cuts: HashSet<LowerName>,
    /// Whether any owner is a wildcard (skips the search when none is).
    wildcards: bool,
    /// Owners of DNAME records.
    dnames: HashSet<LowerName>,
    transfer: Option<edge_config::Transfer>,
}

/// Label counts that include a leading `*` (hickory's `num_labels` leaves
/// it out, as RRSIG counts).
pub trait Labels {
    fn labels(&self) -> u8;
}

impl Labels for Name {
    fn labels(&self) -> u8 {
        u8::try_from(self.iter().count()).unwrap_or(u8::MAX)
    }
}

fn name(s: &str, zone: &str) -> Result<Name, ZoneError> {
    Name::from_ascii(s).map_err(|e| ZoneError {
        zone: zone.to_string(),
        what: format!("{s:?}: {e}"),
    })
}

/// A record from its wire form; data hickory cannot decode is served as
/// the bytes it is (RFC 3597).
fn decode(r: &RecordConfig, zone: &str) -> Result<Record, ZoneError> {
    let err = |what: String| ZoneError {
        zone: zone.to_string(),
        what,
    };
    let owner = Name::read(&mut BinDecoder::new(&r.wire.owner))
        .map_err(|e| err(format!("{}: {e}", r.name)))?;
    let rtype = RecordType::from(r.wire.rtype);
    let len =
        u16::try_from(r.wire.rdata.len()).map_err(|_| err(format!("{}: data too long", r.name)))?;
    let mut d = BinDecoder::new(&r.wire.rdata);
    let data = match RData::read(&mut d, rtype, Restrict::new(len)) {
        Ok(data) if d.is_empty() => data,
        _ => RData::Unknown {
            code: rtype,
            rdata: NULL::with(r.wire.rdata.clone()),
        },
    };
    Ok(Record::from_rdata(owner, r.ttl, data))
}

impl Zone {
    /// `geo` maps this zone's geo names to their compiled form.
    pub fn new(
        z: &ZoneConfig,
        index: usize,
        geo: HashMap<String, GeoName>,
    ) -> Result<Zone, ZoneError> {
        let apex = name(&z.name, &z.name)?;
        let soa = Record::from_rdata(
            apex.clone(),
            z.soa.ttl,
            RData::SOA(SOA::new(
                name(&z.soa.mname, &z.name)?,
                name(&z.soa.rname, &z.name)?,
                z.soa.serial,
                i32::try_from(z.soa.refresh).unwrap_or(i32::MAX),
                i32::try_from(z.soa.retry).unwrap_or(i32::MAX),
                i32::try_from(z.soa.expire).unwrap_or(i32::MAX),
                z.soa.minimum,
            )),
        );
        let mut nodes: HashMap<LowerName, Node> = HashMap::new();
        nodes
            .entry(LowerName::new(&apex))
            .or_default()
            .push(soa.clone());
        let apex_lower = LowerName::new(&apex);
        let mut cuts = HashSet::new();
        let mut dnames = HashSet::new();
        for r in &z.records {
            let record = decode(r, &z.name)?;
            let owner = LowerName::new(&record.name);
            match record.record_type() {
                RecordType::NS if owner != apex_lower => {
                    cuts.insert(owner.clone());
                }
                RecordType::DNAME => {
                    dnames.insert(owner.clone());
                }
                _ => {}
            }
            nodes.entry(owner).or_default().push(record);
        }
        // `ns` names not among the apex NS records (a zone file's keep
        // their TTL): the zone's TTL; the set gets its lowest.
        let apex_node = nodes.entry(apex_lower.clone()).or_default();
        for ns in &z.ns {
            apex_node.push(Record::from_rdata(
                apex.clone(),
                z.ttl,
                RData::NS(NS(name(ns, &z.name)?)),
            ));
        }
        if let Some((_, set)) = apex_node
            .sets
            .iter_mut()
            .find(|(t, _)| *t == RecordType::NS)
        {
            let min = set.iter().map(|r| r.ttl).min().unwrap_or(z.ttl);
            for r in set.iter_mut() {
                r.ttl = min;
            }
        }
        let mut geo_names = HashMap::new();
        for (n, g) in geo {
            geo_names.insert(LowerName::new(&name(&n, &z.name)?), g);
        }
        // Every ancestor of an owner name, down to the apex, exists.
        let mut empty_non_terminals = HashSet::new();
        let apex_labels = apex.labels();
        for owner in nodes.keys().chain(geo_names.keys()) {
            let mut n = Name::from(owner.clone());
            while n.labels() > apex_labels + 1 {
                n = n.base_name();
                let l = LowerName::new(&n);
                if !nodes.contains_key(&l) && !geo_names.contains_key(&l) {
                    empty_non_terminals.insert(l);
                }
            }
        }
        let wildcards = nodes
            .keys()
            .chain(geo_names.keys())
            .any(|n| n.is_wildcard());
        Ok(Zone {
            name: apex,
            label: z.name.clone(),
            index,
            soa,
            nodes,
            geo: geo_names,
            empty_non_terminals,
            cuts,
            wildcards,
            dnames,
            transfer: z.transfer.clone(),
        })
    }

    pub fn contains(&self, n: &Name) -> bool {
        self.name.zone_of(n)
    }

    pub fn node(&self, n: &LowerName) -> Option<&Node> {
        self.nodes.get(n)
    }

    pub fn geo(&self, n: &LowerName) -> Option<&GeoName> {
        self.geo.get(n)
    }

    pub fn is_empty_non_terminal(&self, n: &LowerName) -> bool {
        self.empty_non_terminals.contains(n)
    }

    fn exists(&self, n: &LowerName) -> bool {
        self.nodes.contains_key(n)
            || self.geo.contains_key(n)
            || self.empty_non_terminals.contains(n)
    }

    /// The delegation point at or above `n` (the highest: a cut occludes
    /// what is below it), if `n` is not in this zone's authority.
    pub fn cut_above(&self, n: &Name) -> Option<Name> {
        if self.cuts.is_empty() {
            return None;
        }
        let apex_labels = self.name.labels();
        let labels = n.labels();
        (apex_labels + 1..=labels).find_map(|keep| {
            let candidate = n.trim_to(usize::from(keep));
            self.cuts
                .contains(&LowerName::new(&candidate))
                .then_some(candidate)
        })
    }

    /// The DNAME strictly above `n` and its target (RFC 6672 §2.2: a DNAME
    /// redirects the names below its owner, not the owner itself).
    pub fn dname_above(&self, n: &Name) -> Option<(&Record, Name)> {
        if self.dnames.is_empty() {
            return None;
        }
        let apex_labels = self.name.labels();
        (apex_labels..n.labels()).find_map(|keep| {
            let candidate = LowerName::new(&n.trim_to(usize::from(keep)));
            if !self.dnames.contains(&candidate) {
                return None;
            }
            let record = self
                .nodes
                .get(&candidate)
                .and_then(|node| node.get(RecordType::DNAME))
                .and_then(|s| s.first())?;
            // hickory has no DNAME type: its data is the target's wire form.
            let RData::Unknown { rdata, .. } = &record.data else {
                return None;
            };
            let target = Name::read(&mut BinDecoder::new(&rdata.anything)).ok()?;
            Some((record, target))
        })
    }

    /// What `n` is here, wildcards applied (RFC 4592 §3.3.1: only when `n`
    /// does not exist, from the closest encloser's `*` child).
    pub fn find(&self, n: &LowerName) -> Found<'_> {
        if let Some(g) = self.geo.get(n) {
            return Found::Geo(g);
        }
        if let Some(node) = self.nodes.get(n) {
            return Found::Node(node);
        }
        if self.empty_non_terminals.contains(n) {
            return Found::EmptyNonTerminal;
        }
        if !self.wildcards {
            return Found::Nothing;
        }
        let name = Name::from(n.clone());
        let apex_labels = self.name.labels();
        // The closest encloser: the longest ancestor that exists.
        let mut keep = name.labels();
        while keep > apex_labels {
            keep -= 1;
            let encloser = name.trim_to(usize::from(keep));
            if self.exists(&LowerName::new(&encloser)) || keep == apex_labels {
                let Ok(star) = encloser.prepend_label("*") else {
                    return Found::Nothing;
                };
                let star = LowerName::new(&star);
                if let Some(g) = self.geo.get(&star) {
                    return Found::WildcardGeo(g);
                }
                return match self.nodes.get(&star) {
                    Some(node) => Found::Wildcard(node),
                    None => Found::Nothing,
                };
            }
        }
        Found::Nothing
    }

    /// Who may transfer this zone, if anyone.
    pub fn transfer(&self) -> Option<&edge_config::Transfer> {
        self.transfer.as_ref()
    }

    /// Every record, by owner name (the apex first, then in name order).
    pub fn all_records(&self) -> impl Iterator<Item = &Record> {
        let mut names: Vec<&LowerName> = self.nodes.keys().collect();
        names.sort_by_key(|n| {
            (
                n.to_string() != self.name.to_ascii().to_ascii_lowercase(),
                n.to_string(),
            )
        });
        names
            .into_iter()
            .filter_map(|n| self.nodes.get(n))
            .flat_map(|node| node.sets.iter().flat_map(|(_, v)| v.iter()))
    }

    /// The geo names, in name order.
    pub fn geo_names(&self) -> Vec<(&LowerName, &GeoName)> {
        let mut v: Vec<(&LowerName, &GeoName)> = self.geo.iter().collect();
        v.sort_by_key(|(n, _)| n.to_string());
        v
    }

    /// The apex SOA, as an answer.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// The SOA for a negative answer: its TTL is the lesser of the record's
    /// and the zone's minimum (RFC 2308 §3).
    pub fn negative_soa(&self) -> Record {
        let mut soa = self.soa.clone();
        if let RData::SOA(s) = &soa.data {
            soa.ttl = soa.ttl.min(s.minimum);
        }
        soa
    }

    /// A and AAAA records of `n` held in this zone (glue and additional
    /// data; geo names and wildcards are not looked at).
    pub fn addresses(&self, n: &Name) -> impl Iterator<Item = &Record> {
        let node = self.nodes.get(&LowerName::new(n));
        [RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter_map(move |t| node.and_then(|nd| nd.get(t)))
            .flatten()
    }
}

/// An address record for a geo answer.
pub fn address_record(owner: &Name, ttl: u32, addr: IpAddr) -> Record {
    let data = match addr {
        IpAddr::V4(a) => RData::A(rdata::A(a)),
        IpAddr::V6(a) => RData::AAAA(rdata::AAAA(a)),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

/// RFC 8482's answer to ANY.
pub fn any_answer(owner: &Name, ttl: u32) -> Record {
    Record::from_rdata(
        owner.clone(),
        ttl,
        RData::HINFO(HINFO::new("RFC8482".into(), String::new())),
    )
}
