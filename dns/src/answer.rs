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

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

use crate::geo::{Family, GeoName, Pick, Where};
use crate::health::Ups;
use crate::metrics::{qtype_index, rcode_index, Handles};
use crate::packet_cache::Keep;
use crate::rrl::{ResponseClass, Verdict};
use crate::state::DnsState;
use crate::zone::{address_record, any_answer, Found, Labels, Zone};

/// How the query came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The UDP payload edge offers with EDNS (the DNS flag day 2020 size).
pub const EDNS_PAYLOAD: u16 = 1232;
/// CNAMEs and DNAMEs followed within a zone, at most (loops stop at the
/// first repeat before that).
const MAX_CHAIN: usize = 16;

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

/// `Err(())`: a malformed option (FORMERR). `packet` is the query as
/// received: the option's address length is checked there.
fn client_subnet(edns: Option<&Edns>, packet: &[u8]) -> Result<Option<Subnet>, ()> {
    let Some(EdnsOption::Subnet(cs)) = edns.and_then(|e| e.option(EdnsCode::Subnet)) else {
        return Ok(None);
    };
    // RFC 7871 §6: ADDRESS is exactly as many octets as SOURCE
    // PREFIX-LENGTH needs (a parser that pads hides more, so: the wire).
    if !ecs_octets_exact(packet) {
        return Err(());
    }
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

/// Skips a (possibly compressed) name at `at`; the offset after it.
fn skip_name(p: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *p.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l if l & 0xc0 == 0 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
}

/// Whether every client-subnet option of the query's OPT record carries
/// exactly ceil(source prefix / 8) address octets. A query that the parser
/// took is well formed enough to walk.
fn ecs_octets_exact(p: &[u8]) -> bool {
    let count = |i: usize| {
        p.get(i..i + 2)
            .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    };
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let mut at = 12;
    for _ in 0..qd {
        let Some(next) = skip_name(p, at) else {
            return true;
        };
        at = next + 4;
    }
    for i in 0..an + ns + ar {
        let Some(next) = skip_name(p, at) else {
            return true;
        };
        let Some(fixed) = p.get(next..next + 10) else {
            return true;
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = next + 10;
        if rtype == 41 && i >= an + ns {
            let mut o = data;
            while o + 4 <= data + rdlen && o + 4 <= p.len() {
                let code = u16::from_be_bytes([p[o], p[o + 1]]);
                let olen = usize::from(u16::from_be_bytes([p[o + 2], p[o + 3]]));
                if code == 8 && olen >= 4 {
                    let source = p.get(o + 6).copied().unwrap_or(0);
                    if olen - 4 != usize::from(source).div_ceil(8) {
                        return false;
                    }
                }
                o += 4 + olen;
            }
        }
        at = data + rdlen;
    }
    true
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
#[derive(Default)]
struct Resolution {
    rcode: ResponseCode,
    /// AA: clear for a referral (and for SERVFAIL).
    authoritative: bool,
    answers: Vec<Record>,
    /// NXDOMAIN or NODATA: the zone's SOA goes in authority (RFC 2308).
    negative: bool,
    /// A referral's NS set (RFC 1034 §4.3.2 step 3b).
    referral: Vec<Record>,
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

/// How a client was located (for the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Located {
    Ecs,
    Address,
    UnknownEcs,
    UnknownAddress,
}

/// What an answer counts as in the metrics: counted for every answer
/// (sent, or dropped by rate limiting), made now or taken from the packet
/// cache.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    zone: Option<usize>,
    qtype: usize,
    rcode: usize,
    located: Option<Located>,
    /// Sites answered with (geo answers).
    sites: Vec<usize>,
    truncated: bool,
    malformed: bool,
}

impl Tally {
    /// How many sites the answer counts (for the packet cache's weight).
    pub fn sites_len(&self) -> usize {
        self.sites.len()
    }

    fn new(zone: Option<usize>, qtype: usize, rcode: ResponseCode) -> Tally {
        Tally {
            zone,
            qtype,
            rcode: rcode_index(rcode),
            ..Tally::default()
        }
    }

    fn count(&self, h: &Handles) {
        h.query(self.zone, self.qtype, self.rcode);
        if self.malformed {
            h.malformed.inc();
        }
        if self.truncated {
            h.truncated.inc();
        }
        match self.located {
            Some(Located::Ecs) => h.located_ecs.inc(),
            Some(Located::Address) => h.located_address.inc(),
            Some(Located::UnknownEcs) => h.unknown_ecs.inc(),
            Some(Located::UnknownAddress) => h.unknown_address.inc(),
            None => {}
        }
        for &i in &self.sites {
            if let Some(c) = h.answers.get(i) {
                c.inc();
            }
        }
    }
}

/// What resolving learnt besides the records: how the client was located,
/// which sites answered, and whether the answer may be cached.
#[derive(Default)]
struct Notes {
    located: Option<Located>,
    sites: Vec<usize>,
    keep: Keep,
    /// A geo answer: the site health it was picked with.
    ups: Option<Ups>,
}

/// The state a query reads, and what it knows about its client.
struct Ctx<'a> {
    state: &'a DnsState,
    client: IpAddr,
    subnet: Option<&'a Subnet>,
    notes: RefCell<Notes>,
}

/// A stable hash of a client subnet (`addr`/`len`; a width beyond the
/// family's is the whole address) and the prefix length it stands for:
/// which clients a shedding site moves (`hash % 1000` below the share).
pub fn client_hash(addr: IpAddr, len: u8) -> (u64, u8) {
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let len = len.min(width);
    let net = ipnet::IpNet::new(addr, len).map_or(addr, |n| n.trunc().addr());
    let bytes = match net {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in bytes.iter().chain(std::iter::once(&len)) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01B3);
    }
    // splitmix64's finalizer: the low digits of FNV-1a alone are poorly mixed.
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (h ^ (h >> 31), len)
}

/// The TTL of geo answers while a site sheds clients (seconds).
const SHEDDING_TTL: u32 = 5;

impl Ctx<'_> {
    /// A stable hash of the client (its ECS subnet, else its address) and
    /// the prefix length it stands for.
    fn client_key(&self) -> (u64, u8) {
        let (addr, len) = match self.subnet {
            Some(s) if s.option.source_prefix() > 0 => (s.addr, s.option.source_prefix()),
            _ => (self.client, 128),
        };
        client_hash(addr, len)
    }

    fn locate(&self) -> (Option<Where>, u8) {
        let (addr, ecs) = match self.subnet {
            Some(s) if s.option.source_prefix() > 0 => (s.addr, true),
            _ => (self.client, false),
        };
        let mut notes = self.notes.borrow_mut();
        // Located by the address the query came from: a cached answer is
        // this client's only.
        notes.keep.per_client |= !ecs;
        let source = self.subnet.map_or(0, |s| s.option.source_prefix());
        // RFC 7871 §7.2.1: the scope covers what decided the answer, and
        // no less than any entry inside the client's subnet that could
        // decide it differently; a /0 subnet gets scope 0.
        let inside = if ecs {
            self.state.locator.longest_within(addr, source)
        } else {
            0
        };
        match self.state.locator.locate(addr) {
            Some(found) => {
                notes.located = Some(if ecs { Located::Ecs } else { Located::Address });
                (Some(found.at), found.prefix_len.max(inside))
            }
            None => {
                notes.located = Some(if ecs {
                    Located::UnknownEcs
                } else {
                    Located::UnknownAddress
                });
                // Unknown for this whole source prefix.
                (None, source.max(inside))
            }
        }
    }

    /// A geo name's answer for `qtype` at `owner` (the name asked, in its
    /// case). A family the picked sites do not have is NODATA.
    fn geo_answer(&self, g: &GeoName, owner: &Name, qtype: RecordType, r: &mut Resolution) -> bool {
        let family = match qtype {
            RecordType::A => Family::V4,
            RecordType::AAAA => Family::V6,
            _ => return false,
        };
        let (at, scope) = self.locate();
        // Health read once: the pick and a packet-cache entry see the same.
        let ups = Ups::read(&self.state.site_states);
        let shedding = ups.shedding();
        let (client, _) = self.client_key();
        let (picked, why) = g.pick_for(
            &self.state.sites,
            &ups,
            at.as_ref(),
            family,
            self.state.fail_open,
            shedding.then_some(client),
        );
        // While a site sheds, the answer depends on the client's own
        // subnet (RFC 7871 §7.2.1), and it is kept briefly so clients
        // follow the share as it moves.
        // A /0 source (RFC 7871 §7.1.2: no subnet given) is answered
        // for the resolver's own address, scope 0, whatever decided it:
        // a wider scope would not fit an option of the other family.
        let source = self.subnet.map_or(0, |s| s.option.source_prefix());
        r.geo_scope = Some(match source {
            0 => 0,
            _ if shedding => scope.max(source),
            _ => scope,
        });
        let ttl = if shedding {
            g.ttl.min(SHEDDING_TTL)
        } else {
            g.ttl
        };
        {
            let mut notes = self.notes.borrow_mut();
            notes.ups = Some(ups);
            // A weighted pick is drawn per query: not one to repeat.
            notes.keep.no |= g.draws_at_random();
            notes.sites.extend(picked.iter().copied());
        }
        if picked.is_empty() && why == Pick::AllDown {
            r.rcode = ResponseCode::ServFail;
            r.authoritative = false;
            r.answers.clear();
            return true;
        }
        let before = r.answers.len();
        for i in picked {
            let Some(site) = self.state.sites.get(i) else {
                continue;
            };
            match family {
                Family::V4 => r.answers.extend(
                    site.ipv4
                        .iter()
                        .map(|a| address_record(owner, ttl, IpAddr::V4(*a))),
                ),
                Family::V6 => r.answers.extend(
                    site.ipv6
                        .iter()
                        .map(|a| address_record(owner, ttl, IpAddr::V6(*a))),
                ),
            }
        }
        r.answers.len() > before
    }

    /// RFC 1034 §4.3.2 for one zone: delegations, DNAME (RFC 6672), exact
    /// names, CNAME chains within the zone (RFC 6604 rcodes), wildcards
    /// (RFC 4592), empty non-terminals, negative answers (RFC 2308).
    fn resolve(&self, zone: &Zone, qname: &Name, qtype: RecordType) -> Resolution {
        let mut r = Resolution {
            authoritative: true,
            ..Resolution::default()
        };
        let mut name = qname.clone();
        // Names a chain has been at: only kept once a CNAME or DNAME is
        // followed (the common answer allocates nothing for it).
        let mut seen: Vec<LowerName> = Vec::new();
        for step in 0..MAX_CHAIN {
            let lower = LowerName::new(&name);
            if step > 0 {
                if seen.contains(&lower) {
                    // A CNAME loop: what was found so far, once.
                    return r;
                }
                seen.push(lower.clone());
            }
            // Below a zone cut: a referral; DS at the cut is the parent's
            // (this zone's) data (RFC 4035 §3.1.4.1).
            if let Some(cut) = zone.cut_above(&name) {
                let at_cut = LowerName::new(&cut) == lower;
                if !(at_cut && qtype == RecordType::DS) {
                    if let Some(ns) = zone
                        .node(&LowerName::new(&cut))
                        .and_then(|n| n.get(RecordType::NS))
                    {
                        r.referral = ns.to_vec();
                    }
                    r.authoritative = !r.answers.is_empty();
                    return r;
                }
            }
            if let Some((dname, target)) = zone.dname_above(&name) {
                r.answers.push(dname.clone());
                // The owner's labels replaced by the DNAME target.
                let keep = usize::from(name.labels().saturating_sub(dname.name.labels()));
                let prefix: Vec<&[u8]> = name.iter().take(keep).collect();
                let synthesized = Name::from_labels(prefix).and_then(|p| p.append_domain(&target));
                let Ok(mut synthesized) = synthesized else {
                    // Longer than a name may be (RFC 6672 §2.2).
                    r.rcode = ResponseCode::YXDomain;
                    return r;
                };
                synthesized.set_fqdn(true);
                r.answers.push(Record::from_rdata(
                    name.clone(),
                    dname.ttl,
                    RData::CNAME(rdata::CNAME(synthesized.clone())),
                ));
                // A CNAME asked for is the synthesized one (RFC 6672 §3.2);
                // a target below the DNAME's own owner would synthesize
                // forever: one step is the answer.
                if !zone.contains(&synthesized)
                    || qtype == RecordType::CNAME
                    || dname.name.zone_of(&synthesized)
                {
                    return r;
                }
                seen.push(lower);
                name = synthesized;
                continue;
            }
            // A wildcard's records answer as the name asked (RFC 4592 §3.4).
            let node = match zone.find(&lower) {
                Found::Node(n) | Found::Wildcard(n) => n,
                Found::Geo(g) | Found::WildcardGeo(g) => {
                    if !self.geo_answer(g, &name, qtype, &mut r) && r.rcode == ResponseCode::NoError
                    {
                        r.negative = true;
                    }
                    return r;
                }
                Found::EmptyNonTerminal => {
                    r.negative = true;
                    return r;
                }
                Found::Nothing => {
                    // RFC 6604: the rcode is the last name's, after a chain too.
                    r.rcode = ResponseCode::NXDomain;
                    r.negative = true;
                    return r;
                }
            };
            // Owner names in the query's case (and a wildcard's expanded);
            // most are that already.
            let at = |set: &[Record]| -> Vec<Record> {
                set.iter()
                    .map(|rec| {
                        let mut rec = rec.clone();
                        if !rec.name.eq_case(&name) {
                            rec.name = name.clone();
                        }
                        rec
                    })
                    .collect()
            };
            if let Some(set) = node.get(qtype) {
                r.answers.extend(at(set));
                return r;
            }
            if qtype != RecordType::CNAME {
                if let Some(cname) = node.get(RecordType::CNAME).and_then(|s| s.first()) {
                    r.answers.extend(at(std::slice::from_ref(cname)));
                    let RData::CNAME(target) = &cname.data else {
                        return r;
                    };
                    if !zone.contains(&target.0) {
                        return r;
                    }
                    seen.push(lower);
                    name = target.0.clone();
                    continue;
                }
            }
            r.negative = true;
            return r;
        }
        r
    }
}

/// QTYPE ANY (RFC 8482): a name with records gets one HINFO "RFC8482"
/// with the lowest TTL of its records (its CNAME alone if it has one, not
/// followed); a wildcard's match the same; an empty non-terminal NODATA;
/// nothing NXDOMAIN.
fn any(zone: &Zone, qname: &Name) -> Resolution {
    let mut r = Resolution {
        authoritative: true,
        ..Resolution::default()
    };
    let node = match zone.find(&LowerName::new(qname)) {
        Found::Node(n) | Found::Wildcard(n) => Some(n),
        Found::Geo(g) | Found::WildcardGeo(g) => {
            r.answers.push(any_answer(qname, g.ttl));
            return r;
        }
        Found::EmptyNonTerminal => None,
        Found::Nothing => {
            r.rcode = ResponseCode::NXDomain;
            r.negative = true;
            return r;
        }
    };
    match node {
        Some(n) if !n.is_empty() => {
            if let Some(cname) = n.get(RecordType::CNAME).and_then(|s| s.first()) {
                let mut c = cname.clone();
                c.name = qname.clone();
                r.answers.push(c);
            } else {
                r.answers.push(any_answer(qname, n.min_ttl()));
            }
        }
        _ => r.negative = true,
    }
    r
}

/// RFC 1034 §4.3.2 step 6 / RFC 2181 §5.4.1: the A and AAAA records, held in
/// the zone, of the names that NS, MX and SRV records (answers and a
/// referral's NS) point at, each once, none already in the answer.
fn additional(zone: &Zone, r: &Resolution) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    for rec in r.answers.iter().chain(&r.referral) {
        let target = match &rec.data {
            RData::NS(ns) => &ns.0,
            RData::MX(mx) => &mx.exchange,
            RData::SRV(srv) => &srv.target,
            _ => continue,
        };
        if target.is_root() || !zone.contains(target) {
            continue;
        }
        for a in zone.addresses(target) {
            if !out.contains(a) && !r.answers.contains(a) {
                out.push(a.clone());
            }
        }
    }
    out
}

/// Answers one packet. `None`: send nothing. A query answered before is
/// answered from the packet cache (see [`crate::packet_cache`]).
pub fn respond(
    state: &DnsState,
    packet: &[u8],
    client: IpAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    if crate::transfer::is_transfer(packet) {
        return crate::transfer::respond(state, packet, client, transport)
            .into_iter()
            .next();
    }
    match &state.packet_cache {
        Some(cache) => {
            let entry = match cache.get(packet, client, transport, &state.site_states) {
                Some(e) => {
                    state.handles.packet_cache_hit.inc();
                    e
                }
                None => {
                    state.handles.packet_cache_miss.inc();
                    let made = make(state, packet, client, transport)?;
                    cache.put(
                        packet, client, transport, made.keep, made.ups, made.wire, made.tally,
                        made.class,
                    )
                }
            };
            send(
                state,
                packet,
                client,
                transport,
                &entry.wire,
                &entry.tally,
                entry.class,
            )
        }
        None => {
            let made = make(state, packet, client, transport)?;
            send(
                state,
                packet,
                client,
                transport,
                &made.wire,
                &made.tally,
                made.class,
            )
        }
    }
}

/// Counts an answer, applies response rate limiting (UDP), and gives it
/// the query's ID.
fn send(
    state: &DnsState,
    packet: &[u8],
    client: IpAddr,
    transport: Transport,
    wire: &[u8],
    tally: &Tally,
    class: Option<ResponseClass>,
) -> Option<Vec<u8>> {
    let h = &state.handles;
    tally.count(h);
    let mut out = None;
    if let (Transport::Udp, Some(rrl), Some(class)) = (transport, &state.rrl, class) {
        match rrl.check(client, &class) {
            Verdict::Send => {}
            _ if rrl.log_only => h.rrl_would.inc(),
            Verdict::Drop => {
                h.rrl_dropped.inc();
                return None;
            }
            Verdict::Slip => {
                h.rrl_slipped.inc();
                out = Some(encode(&truncated(&Message::from_vec(wire).ok()?))?);
            }
        }
    }
    let mut out = out.unwrap_or_else(|| wire.to_vec());
    if let (Some(id), Some(to)) = (packet.get(..2), out.get_mut(..2)) {
        to.copy_from_slice(id);
    }
    Some(out)
}

/// An answer made for one query, and what it counts as.
struct Made {
    wire: Vec<u8>,
    tally: Tally,
    class: Option<ResponseClass>,
    keep: Keep,
    ups: Option<Ups>,
}

impl Made {
    fn new(m: &Message, tally: Tally) -> Option<Made> {
        Some(Made {
            wire: encode(m)?,
            tally,
            class: None,
            keep: Keep::default(),
            ups: None,
        })
    }
}

/// Makes the answer to one query (a query, not a response; not a transfer).
fn make(state: &DnsState, packet: &[u8], client: IpAddr, transport: Transport) -> Option<Made> {
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let op_code = OpCode::from_u8((packet[2] >> 3) & 0x0f);
    let rd = packet[2] & 0x01 != 0;
    let query = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => {
            let mut tally = Tally::new(None, 11, ResponseCode::FormErr);
            tally.malformed = true;
            return Made::new(
                &bare(id, op_code, ResponseCode::FormErr, rd, None, false),
                tally,
            );
        }
    };
    let edns_in = query.edns.as_ref();
    let q = match (op_code, query.queries.as_slice()) {
        (OpCode::Query, [q]) => q,
        (OpCode::Query, _) => {
            return Made::new(
                &bare(
                    id,
                    op_code,
                    ResponseCode::FormErr,
                    rd,
                    None,
                    edns_in.is_some(),
                ),
                Tally::new(None, 11, ResponseCode::FormErr),
            );
        }
        _ => {
            return Made::new(
                &bare(
                    id,
                    op_code,
                    ResponseCode::NotImp,
                    rd,
                    query.queries.first(),
                    edns_in.is_some(),
                ),
                Tally::new(None, 11, ResponseCode::NotImp),
            );
        }
    };
    let qtype = q.query_type();
    let qt = qtype_index(qtype);
    if edns_in.is_some_and(|e| e.version() > 0) {
        return Made::new(
            &bare(id, op_code, ResponseCode::BADVERS, rd, Some(q), true),
            Tally::new(None, qt, ResponseCode::BADVERS),
        );
    }
    let subnet = match client_subnet(edns_in, packet) {
        Ok(s) => s,
        Err(()) => {
            return Made::new(
                &bare(id, op_code, ResponseCode::FormErr, rd, Some(q), true),
                Tally::new(None, qt, ResponseCode::FormErr),
            );
        }
    };
    // QCLASS ANY is answered as IN (the only class here); others REFUSED.
    let zone = matches!(q.query_class(), DNSClass::IN | DNSClass::ANY)
        .then(|| state.zones.iter().find(|z| z.contains(q.name())))
        .flatten();
    let refused = matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::OPT);
    let mut additional_records = Vec::new();
    let mut notes = Notes::default();
    let (zone, mut response) = match zone.filter(|_| !refused) {
        Some(zone) => {
            let ctx = Ctx {
                state,
                client,
                subnet: subnet.as_ref(),
                notes: RefCell::default(),
            };
            let r = if qtype == RecordType::ANY && zone.cut_above(q.name()).is_none() {
                any(zone, q.name())
            } else {
                let t = if qtype == RecordType::ANY {
                    RecordType::A
                } else {
                    qtype
                };
                ctx.resolve(zone, q.name(), t)
            };
            notes = ctx.notes.into_inner();
            let mut m = Message::response(id, op_code);
            // RFC 6895 §3.2: an answer to QCLASS ANY is not authoritative
            // (it cannot speak for every class).
            m.metadata.authoritative = r.authoritative
                && r.rcode != ResponseCode::ServFail
                && q.query_class() != DNSClass::ANY;
            m.metadata.recursion_desired = rd;
            m.metadata.response_code = r.rcode;
            m.add_query(q.clone());
            if r.negative {
                m.add_authority(zone.negative_soa());
            }
            additional_records = additional(zone, &r);
            m.add_authorities(r.referral);
            m.add_answers(r.answers);
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
    // RFC 3225 §3: the DO bit is copied into the response.
    if let (Some(e), true) = (
        response.edns.as_mut(),
        edns_in.is_some_and(|e| e.flags().dnssec_ok),
    ) {
        e.set_dnssec_ok(true);
    }
    let rcode = response.metadata.response_code;
    let mut tally = Tally::new(zone.map(|z| z.index), qt, rcode);
    tally.located = notes.located;
    tally.sites = notes.sites;
    let class = state.rrl.as_ref().map(|_| {
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
        ResponseClass {
            name,
            qtype: u16::from(qtype),
            kind,
        }
    });
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => {
            usize::from(edns_in.map_or(512, |e| e.max_payload().clamp(512, EDNS_PAYLOAD)))
        }
    };
    let wire = fit(&response, additional_records, limit, &mut tally)?;
    Some(Made {
        wire,
        tally,
        class,
        keep: notes.keep,
        ups: notes.ups,
    })
}

/// The response's wire form within `limit` bytes. Additional data goes
/// only where it fits: it is dropped before the answer is truncated
/// (RFC 2181 §9), except a referral's glue, without which the referral is
/// useless (RFC 9471): then TC.
fn fit(
    response: &Message,
    additional_records: Vec<Record>,
    limit: usize,
    tally: &mut Tally,
) -> Option<Vec<u8>> {
    if !additional_records.is_empty() {
        let bare_wire = encode(response)?;
        let referral = response.answers.is_empty()
            && response
                .authorities
                .iter()
                .any(|a| a.record_type() == RecordType::NS);
        let mut with = response.clone();
        with.add_additionals(additional_records.clone());
        let wire = encode(&with)?;
        if wire.len() <= limit {
            return Some(wire);
        }
        // As many as fit, in order; a referral none of whose glue fits
        // is truncated (RFC 9471).
        let mut fitting = response.clone();
        for a in additional_records {
            let mut next = fitting.clone();
            next.add_additional(a);
            match encode(&next) {
                Some(w) if w.len() <= limit => fitting = next,
                _ => break,
            }
        }
        if referral && fitting.additionals.is_empty() {
            tally.truncated = true;
            return encode(&truncated(response));
        }
        if bare_wire.len() <= limit {
            return encode(&fitting);
        }
    }
    let wire = encode(response)?;
    if wire.len() > limit {
        tally.truncated = true;
        return encode(&truncated(response));
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
