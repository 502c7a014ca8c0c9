//! Zones compiled from the config: records by owner name and type, geo
//! names, and the empty non-terminals (names that exist only because names
//! below them do, which answer NODATA rather than NXDOMAIN).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use edge_config::{Record as RecordConfig, RecordData, Zone as ZoneConfig};
use hickory_proto::rr::rdata::{self, HINFO, MX, NS, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, Restrict};

use crate::geo::GeoName;

/// Why a zone could not be compiled (the config validated it, so rare).
#[derive(Debug, thiserror::Error)]
#[error("zone {zone}: {what}")]
pub struct ZoneError {
    pub zone: String,
    pub what: String,
}

/// The records of one owner name.
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

    fn push(&mut self, r: Record) {
        let t = r.record_type();
        match self.sets.iter_mut().find(|(rt, _)| *rt == t) {
            Some((_, v)) => v.push(r),
            None => self.sets.push((t, vec![r])),
        }
    }
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
}

fn name(s: &str, zone: &str) -> Result<Name, ZoneError> {
    Name::from_ascii(s).map_err(|e| ZoneError {
        zone: zone.to_string(),
        what: format!("{s:?}: {e}"),
    })
}

/// CAA from its parts, through its wire form (hickory keeps the
/// constructor for arbitrary tags private).
fn caa(critical: bool, tag: &str, value: &str) -> Option<RData> {
    let mut wire = vec![if critical { 0x80 } else { 0 }, tag.len().min(255) as u8];
    wire.extend_from_slice(tag.as_bytes());
    wire.extend_from_slice(value.as_bytes());
    let len = u16::try_from(wire.len()).ok()?;
    let mut d = BinDecoder::new(&wire);
    RData::read(&mut d, RecordType::CAA, Restrict::new(len)).ok()
}

fn rdata(r: &RecordConfig, zone: &str) -> Result<RData, ZoneError> {
    Ok(match &r.data {
        RecordData::A { address } => RData::A(rdata::A(*address)),
        RecordData::Aaaa { address } => RData::AAAA(rdata::AAAA(*address)),
        RecordData::Cname { target } => RData::CNAME(rdata::CNAME(name(target, zone)?)),
        RecordData::Ns { target } => RData::NS(NS(name(target, zone)?)),
        RecordData::Txt { strings } => RData::TXT(TXT::new(strings.clone())),
        RecordData::Mx {
            preference,
            exchange,
        } => RData::MX(MX::new(*preference, name(exchange, zone)?)),
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(*priority, *weight, *port, name(target, zone)?)),
        RecordData::Caa {
            critical,
            tag,
            value,
        } => caa(*critical, tag, value).ok_or_else(|| ZoneError {
            zone: zone.to_string(),
            what: format!("CAA {tag} {value:?} does not encode"),
        })?,
    })
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
            z.ttl,
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
        let apex_node = nodes.entry(LowerName::new(&apex)).or_default();
        apex_node.push(soa.clone());
        for ns in &z.ns {
            apex_node.push(Record::from_rdata(
                apex.clone(),
                z.ttl,
                RData::NS(NS(name(ns, &z.name)?)),
            ));
        }
        for r in &z.records {
            let owner = name(&r.name, &z.name)?;
            let record = Record::from_rdata(owner.clone(), r.ttl, rdata(r, &z.name)?);
            nodes
                .entry(LowerName::new(&owner))
                .or_default()
                .push(record);
        }
        let mut geo_names = HashMap::new();
        for (n, g) in geo {
            geo_names.insert(LowerName::new(&name(&n, &z.name)?), g);
        }
        // Every ancestor of an owner name, down to the apex, exists.
        let mut empty_non_terminals = HashSet::new();
        let apex_labels = apex.num_labels();
        for owner in nodes.keys().chain(geo_names.keys()) {
            let mut n = Name::from(owner.clone());
            while n.num_labels() > apex_labels + 1 {
                n = n.base_name();
                let l = LowerName::new(&n);
                if !nodes.contains_key(&l) && !geo_names.contains_key(&l) {
                    empty_non_terminals.insert(l);
                }
            }
        }
        Ok(Zone {
            name: apex,
            label: z.name.clone(),
            index,
            soa,
            nodes,
            geo: geo_names,
            empty_non_terminals,
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

    /// The SOA for a negative answer: its TTL is the lesser of the record's
    /// and the zone's minimum (RFC 2308).
    pub fn negative_soa(&self) -> Record {
        let mut soa = self.soa.clone();
        if let RData::SOA(s) = &soa.data {
            soa.ttl = soa.ttl.min(s.minimum);
        }
        soa
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
