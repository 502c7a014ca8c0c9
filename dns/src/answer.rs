//! Answering one query: the whole path from packet to packet.
//!
//! ```text
//! < 12 bytes, or a response          drop
//! does not parse                     FORMERR (id and opcode from the raw header)
//! opcode not QUERY                   NOTIMP
//! not exactly one question           FORMERR
//! EDNS version > 0                   BADVERS
//! class not IN, AXFR/IXFR            REFUSED
//! no zone of ours contains the name  REFUSED (never an open resolver)
//! ANY                                one HINFO "RFC8482" (RFC 8482)
//! geo name, A/AAAA                   the picked sites' addresses, the geo TTL,
//!                                    ECS echoed with the scope of the locator match
//! records of the type                the records (CNAMEs followed within the zone)
//! name exists, type does not         NODATA: NOERROR, SOA in authority
//! name does not exist                NXDOMAIN, SOA in authority
//! then: response rate limiting (UDP), and TC when the answer does not fit
//! the client's buffer (512, or its EDNS size up to 1232) over UDP.
//! ```

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

use crate::geo::{Family, Pick, Where};
use crate::health::SiteView;
use crate::metrics::{qtype_index, rcode_index};
use crate::rrl::{ResponseClass, Verdict};
use crate::state::DnsState;
use crate::zone::{address_record, any_answer, Zone};

/// How the query came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The UDP payload edge offers with EDNS (the DNS flag day 2020 size).
pub const EDNS_PAYLOAD: u16 = 1232;
/// CNAMEs followed within a zone, at most.
const MAX_CHAIN: usize = 8;

/// The client subnet of a query (RFC 7871).
struct Subnet {
    option: ClientSubnet,
    /// The address to locate by (masked to the source prefix).
    addr: IpAddr,
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = if len == 0 {
                0
            } else {
                u32::from(a) & (u32::MAX << (32 - u32::from(len.min(32))))
            };
            IpAddr::V4(bits.into())
        }
        IpAddr::V6(a) => {
            let bits = if len == 0 {
                0
            } else {
                u128::from(a) & (u128::MAX << (128 - u32::from(len.min(128))))
            };
            IpAddr::V6(bits.into())
        }
    }
}

/// `Err(())`: a malformed option (FORMERR).
fn client_subnet(edns: Option<&Edns>) -> Result<Option<Subnet>, ()> {
    let Some(EdnsOption::Subnet(cs)) = edns.and_then(|e| e.option(EdnsCode::Subnet)) else {
        return Ok(None);
    };
    let width = match cs.addr() {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if cs.source_prefix() > width || cs.scope_prefix() != 0 {
        return Err(());
    }
    // Bits beyond the source prefix must be zero (RFC 7871 §6).
    if mask(cs.addr(), cs.source_prefix()) != cs.addr() {
        return Err(());
    }
    Ok(Some(Subnet {
        option: *cs,
        addr: cs.addr(),
    }))
}

/// A response without records (errors), from what could be read.
fn bare(
    id: u16,
    op_code: OpCode,
    rcode: ResponseCode,
    rd: bool,
    query: Option<&Query>,
    edns: bool,
) -> Message {
    let mut m = Message::error_msg(id, op_code, rcode);
    m.metadata.recursion_desired = rd;
    if let Some(q) = query {
        m.add_query(q.clone());
    }
    if edns || rcode.high() > 0 {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        m.set_edns(e);
    }
    m
}

fn encode(m: &Message) -> Option<Vec<u8>> {
    m.to_vec().ok()
}

/// The outcome of resolving a name in a zone.
struct Resolution {
    rcode: ResponseCode,
    answers: Vec<Record>,
    negative: bool,
    /// A geo answer: the ECS scope to announce.
    geo_scope: Option<u8>,
}

fn hash_name(n: &Name) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for label in n.iter() {
        label.to_ascii_lowercase().hash(&mut h);
    }
    h.finish()
}

/// The state a query reads, and what it knows about its client.
struct Ctx<'a> {
    state: &'a DnsState,
    client: IpAddr,
    subnet: Option<&'a Subnet>,
}

impl Ctx<'_> {
    fn locate(&self) -> (Option<Where>, u8) {
        let h = &self.state.handles;
        let (addr, ecs) = match self.subnet {
            Some(s) if s.option.source_prefix() > 0 => (s.addr, true),
            _ => (self.client, false),
        };
        match self.state.locator.locate(addr) {
            Some(found) => {
                if ecs {
                    h.located_ecs.inc()
                } else {
                    h.located_address.inc()
                }
                (Some(found.at), found.prefix_len)
            }
            None => {
                if ecs {
                    h.unknown_ecs.inc()
                } else {
                    h.unknown_address.inc()
                }
                // Unknown for this whole source prefix.
                (None, self.subnet.map_or(0, |s| s.option.source_prefix()))
            }
        }
    }

    fn resolve(&self, zone: &Zone, qname: &Name, qtype: RecordType) -> Resolution {
        let mut answers = Vec::new();
        let mut name = qname.clone();
        let mut geo_scope = None;
        let nodata = |answers: Vec<Record>| Resolution {
            rcode: ResponseCode::NoError,
            negative: answers.is_empty(),
            answers,
            geo_scope: None,
        };
        for _ in 0..MAX_CHAIN {
            let lower = LowerName::new(&name);
            if let Some(g) = zone.geo(&lower) {
                let family = match qtype {
                    RecordType::A => Family::V4,
                    RecordType::AAAA => Family::V6,
                    _ => return nodata(answers),
                };
                let (at, scope) = self.locate();
                let view = SiteView(&self.state.site_states);
                let (picked, why) = g.pick(
                    &self.state.sites,
                    &view,
                    at.as_ref(),
                    family,
                    self.state.fail_open,
                );
                if picked.is_empty() && why == Pick::AllDown {
                    return Resolution {
                        rcode: ResponseCode::ServFail,
                        answers: Vec::new(),
                        negative: false,
                        geo_scope: Some(scope),
                    };
                }
                for i in picked {
                    let Some(site) = self.state.sites.get(i) else {
                        continue;
                    };
                    if let Some(c) = self.state.handles.answers.get(i) {
                        c.inc();
                    }
                    match family {
                        Family::V4 => answers.extend(
                            site.ipv4
                                .iter()
                                .map(|a| address_record(&name, g.ttl, IpAddr::V4(*a))),
                        ),
                        Family::V6 => answers.extend(
                            site.ipv6
                                .iter()
                                .map(|a| address_record(&name, g.ttl, IpAddr::V6(*a))),
                        ),
                    }
                }
                geo_scope = Some(scope);
                break;
            }
            if let Some(node) = zone.node(&lower) {
                if let Some(set) = node.get(qtype) {
                    answers.extend_from_slice(set);
                    break;
                }
                if qtype != RecordType::CNAME {
                    if let Some(cname) = node.get(RecordType::CNAME).and_then(|s| s.first()) {
                        answers.push(cname.clone());
                        let RData::CNAME(target) = &cname.data else {
                            break;
                        };
                        let target = target.0.clone();
                        if !zone.contains(&target) {
                            break;
                        }
                        name = target;
                        continue;
                    }
                }
                return nodata(answers);
            }
            if zone.is_empty_non_terminal(&lower) || !answers.is_empty() {
                return nodata(answers);
            }
            return Resolution {
                rcode: ResponseCode::NXDomain,
                answers: Vec::new(),
                negative: true,
                geo_scope: None,
            };
        }
        Resolution {
            rcode: ResponseCode::NoError,
            negative: answers.is_empty(),
            answers,
            geo_scope,
        }
    }
}

/// Answers one packet. `None`: send nothing.
pub fn respond(
    state: &DnsState,
    packet: &[u8],
    client: IpAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let op_code = OpCode::from_u8((packet[2] >> 3) & 0x0f);
    let rd = packet[2] & 0x01 != 0;
    let h = &state.handles;
    let query = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => {
            h.malformed.inc();
            h.query(None, 11, rcode_index(ResponseCode::FormErr));
            return encode(&bare(id, op_code, ResponseCode::FormErr, rd, None, false));
        }
    };
    let edns_in = query.edns.as_ref();
    let q = match (op_code, query.queries.as_slice()) {
        (OpCode::Query, [q]) => q,
        (OpCode::Query, _) => {
            h.query(None, 11, rcode_index(ResponseCode::FormErr));
            return encode(&bare(
                id,
                op_code,
                ResponseCode::FormErr,
                rd,
                None,
                edns_in.is_some(),
            ));
        }
        _ => {
            h.query(None, 11, rcode_index(ResponseCode::NotImp));
            return encode(&bare(
                id,
                op_code,
                ResponseCode::NotImp,
                rd,
                query.queries.first(),
                edns_in.is_some(),
            ));
        }
    };
    let qtype = q.query_type();
    let qt = qtype_index(qtype);
    if edns_in.is_some_and(|e| e.version() > 0) {
        h.query(None, qt, 6);
        return encode(&bare(id, op_code, ResponseCode::BADVERS, rd, Some(q), true));
    }
    let subnet = match client_subnet(edns_in) {
        Ok(s) => s,
        Err(()) => {
            h.query(None, qt, rcode_index(ResponseCode::FormErr));
            return encode(&bare(id, op_code, ResponseCode::FormErr, rd, Some(q), true));
        }
    };
    let zone = (q.query_class() == DNSClass::IN)
        .then(|| state.zones.iter().find(|z| z.contains(q.name())))
        .flatten();
    let refused = matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::OPT);
    let (zone, mut response) = match zone.filter(|_| !refused) {
        Some(zone) => {
            let ctx = Ctx {
                state,
                client,
                subnet: subnet.as_ref(),
            };
            let r = if qtype == RecordType::ANY {
                let lower = LowerName::new(q.name());
                if zone.node(&lower).is_some()
                    || zone.geo(&lower).is_some()
                    || zone.is_empty_non_terminal(&lower)
                {
                    Resolution {
                        rcode: ResponseCode::NoError,
                        answers: vec![any_answer(q.name(), 3600)],
                        negative: false,
                        geo_scope: None,
                    }
                } else {
                    ctx.resolve(zone, q.name(), RecordType::A)
                }
            } else {
                ctx.resolve(zone, q.name(), qtype)
            };
            let mut m = Message::response(id, op_code);
            m.metadata.authoritative = r.rcode != ResponseCode::ServFail;
            m.metadata.recursion_desired = rd;
            m.metadata.response_code = r.rcode;
            m.add_query(q.clone());
            if r.negative {
                m.add_authority(zone.negative_soa());
            }
            m.insert_answers(r.answers);
            if edns_in.is_some() {
                let mut e = Edns::new();
                e.set_max_payload(EDNS_PAYLOAD);
                if let Some(s) = &subnet {
                    let mut echo = s.option;
                    echo.set_scope_prefix(r.geo_scope.unwrap_or(0));
                    e.options_mut().insert(EdnsOption::Subnet(echo));
                }
                m.set_edns(e);
            }
            (Some(zone), m)
        }
        None => (
            None,
            bare(
                id,
                op_code,
                ResponseCode::Refused,
                rd,
                Some(q),
                edns_in.is_some(),
            ),
        ),
    };
    let rcode = response.metadata.response_code;
    if transport == Transport::Udp {
        if let Some(rrl) = &state.rrl {
            let kind = match rcode {
                ResponseCode::NoError if !response.answers.is_empty() => 0,
                ResponseCode::NoError => 1,
                ResponseCode::NXDomain => 2,
                _ => 3,
            };
            let name = match (kind, zone) {
                (0 | 1, _) => hash_name(q.name()),
                (_, Some(z)) => hash_name(&z.name),
                (_, None) => 0,
            };
            let class = ResponseClass {
                name,
                qtype: u16::from(qtype),
                kind,
            };
            match rrl.check(client, &class) {
                Verdict::Send => {}
                _ if rrl.log_only => h.rrl_would.inc(),
                Verdict::Drop => {
                    h.rrl_dropped.inc();
                    h.query(zone.map(|z| z.index), qt, rcode_index(rcode));
                    return None;
                }
                Verdict::Slip => {
                    h.rrl_slipped.inc();
                    response = truncated(&response);
                }
            }
        }
    }
    h.query(zone.map(|z| z.index), qt, rcode_index(rcode));
    let wire = encode(&response)?;
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => {
            usize::from(edns_in.map_or(512, |e| e.max_payload().clamp(512, EDNS_PAYLOAD)))
        }
    };
    if wire.len() > limit {
        h.truncated.inc();
        return encode(&truncated(&response));
    }
    Some(wire)
}

/// The question (and OPT) only, with TC: "ask again over TCP".
fn truncated(m: &Message) -> Message {
    let mut t = Message::response(m.metadata.id, m.metadata.op_code);
    t.metadata = m.metadata;
    t.metadata.truncation = true;
    t.add_queries(m.queries.iter().cloned());
    if let Some(e) = &m.edns {
        t.set_edns(e.clone());
    }
    t
}
