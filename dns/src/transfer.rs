//! Zone transfers out (RFC 5936 AXFR; RFC 1995 IXFR answered in full) and
//! their TSIG signatures (RFC 8945), and NOTIFY to secondaries (RFC 1996).
//!
//! ```text
//! not one of our zone apexes        NOTAUTH (REFUSED outside our zones)
//! zone without `transfer`, or the
//!   client outside `allow`          REFUSED
//! a key required and the query not
//!   signed with it / bad signature  NOTAUTH, TSIG error BADKEY / BADSIG / BADTIME
//! over UDP                          IXFR: the SOA alone (ask again over TCP);
//!                                   AXFR: REFUSED
//! IXFR with the client's serial
//!   not older than ours             the SOA alone (up to date)
//! otherwise, over TCP               SOA, every record, SOA, in messages of at
//!                                   most MESSAGE_BYTES; each signed when the
//!                                   query was (the first as a response, the
//!                                   next with the prior MAC and the timers)
//! ```
//!
//! A geo name is transferred as its default answer: the addresses of its
//! `default_sites` (or of all its candidate sites), whatever their health.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use edge_config::TsigKey;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{make_tsig_record, TsigAlgorithm, TsigError, TSIG};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType, TSigResponseContext, TSigner};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::answer::Transport;
use crate::state::DnsState;
use crate::zone::Zone;

/// An AXFR message holds at most this many bytes of records (BIND's and
/// Knot's messages are of this order; a message may be 65,535).
pub const MESSAGE_BYTES: usize = 16_000;
/// Seconds a TSIG time may be off (RFC 8945 §5.2.3 recommends 300).
const FUDGE: u16 = 300;

/// A compiled TSIG key.
#[derive(Clone)]
pub struct Key {
    pub name: Name,
    signer: TSigner,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("name", &self.name).finish()
    }
}

/// TSIG keys from the config (validated there).
pub fn keys(config: &[TsigKey]) -> Vec<Key> {
    config
        .iter()
        .filter_map(|k| {
            let name = Name::from_ascii(&k.name).ok()?;
            let secret = base64::engine::general_purpose::STANDARD
                .decode(k.secret.expose())
                .ok()?;
            let algorithm = match k.algorithm.as_str() {
                "hmac-sha384" => TsigAlgorithm::HmacSha384,
                "hmac-sha512" => TsigAlgorithm::HmacSha512,
                _ => TsigAlgorithm::HmacSha256,
            };
            let signer = TSigner::new(secret, algorithm, name.clone(), FUDGE).ok()?;
            Some(Key { name, signer })
        })
        .collect()
}

/// Whether `packet` asks for a zone transfer (AXFR or IXFR), read from the
/// wire without parsing the whole message.
pub fn is_transfer(packet: &[u8]) -> bool {
    // A query (QR clear, opcode QUERY) with one question.
    if packet.len() < 12 || packet[2] & 0xf8 != 0 || packet[4..6] != [0, 1] {
        return false;
    }
    let mut at = 12;
    while let Some(&len) = packet.get(at) {
        if len == 0 {
            at += 1;
            break;
        }
        if len & 0xc0 != 0 {
            return false;
        }
        at += 1 + usize::from(len);
    }
    matches!(packet.get(at..at + 2), Some([0, 252]) | Some([0, 251]))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// How the answer is signed.
enum Signing {
    None,
    /// Signed with `key`; the MAC of what was signed last.
    With {
        key: Key,
        prior_mac: Vec<u8>,
        time: u64,
    },
}

/// A response head: the query's id, AA on success, the question when
/// asked for, an OPT when the query had one.
fn header(id: u16, query: &Query, rcode: ResponseCode, question: bool, edns: bool) -> Message {
    let mut m = Message::response(id, OpCode::Query);
    if edns {
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(crate::answer::EDNS_PAYLOAD);
        m.set_edns(e);
    }
    m.metadata.message_type = MessageType::Response;
    m.metadata.authoritative = rcode == ResponseCode::NoError;
    m.metadata.response_code = rcode;
    if question {
        m.add_query(query.clone());
    }
    m
}

/// An unsigned error, or one with the TSIG error the RFC asks for.
fn refuse(
    id: u16,
    query: &Query,
    rcode: ResponseCode,
    tsig: Option<TSigResponseContext>,
    edns: bool,
) -> Vec<u8> {
    let mut m = header(id, query, rcode, true, edns);
    m.metadata.authoritative = false;
    let Ok(bytes) = m.to_vec() else {
        return Vec::new();
    };
    match tsig.and_then(|t| t.sign(&bytes).ok()) {
        Some(record) => {
            m.set_signature(record);
            m.to_vec().unwrap_or(bytes)
        }
        None => bytes,
    }
}

/// Encodes `m`, signing it as `signing` says; the MAC goes on for the next.
fn finish(m: &mut Message, signing: &mut Signing, first: bool) -> Option<Vec<u8>> {
    let bytes = m.to_vec().ok()?;
    let Signing::With {
        key,
        prior_mac,
        time,
    } = signing
    else {
        return Some(bytes);
    };
    let (record, mac) = if first {
        let ctx = TSigResponseContext::new(
            m.metadata.id,
            *time,
            key.signer.clone(),
            prior_mac.clone(),
            None,
        );
        let record = ctx.sign(&bytes).ok()?;
        let mac = record.data.mac.clone();
        (record, mac)
    } else {
        // RFC 8945 §5.3.1: the prior MAC, the message, the timers.
        let mut tbs = Vec::with_capacity(prior_mac.len() + bytes.len() + 10);
        tbs.extend_from_slice(&u16::try_from(prior_mac.len()).ok()?.to_be_bytes());
        tbs.extend_from_slice(prior_mac);
        tbs.extend_from_slice(&bytes);
        tbs.extend_from_slice(&((*time >> 32) as u16).to_be_bytes());
        tbs.extend_from_slice(&(*time as u32).to_be_bytes());
        tbs.extend_from_slice(&FUDGE.to_be_bytes());
        let mac = key.signer.sign(&tbs).ok()?;
        let tsig = TSIG::new(
            key.signer.algorithm().clone(),
            *time,
            FUDGE,
            mac.clone(),
            m.metadata.id,
            None,
            Vec::new(),
        );
        (Box::new(make_tsig_record(key.name.clone(), tsig)), mac)
    };
    *prior_mac = mac;
    m.set_signature(record);
    m.to_vec().ok()
}

/// The records of a zone transfer, SOA first and last.
fn records(state: &DnsState, zone: &Zone) -> Vec<Record> {
    let soa = zone.soa().clone();
    let mut out = vec![soa.clone()];
    out.extend(
        zone.all_records()
            .filter(|r| r.record_type() != RecordType::SOA)
            .cloned(),
    );
    for (name, g) in zone.geo_names() {
        let owner = Name::from(name.clone());
        for i in g.default_answer() {
            let Some(site) = state.sites.get(i) else {
                continue;
            };
            out.extend(
                site.ipv4
                    .iter()
                    .map(|a| crate::zone::address_record(&owner, g.ttl, IpAddr::V4(*a))),
            );
            out.extend(
                site.ipv6
                    .iter()
                    .map(|a| crate::zone::address_record(&owner, g.ttl, IpAddr::V6(*a))),
            );
        }
    }
    out.push(soa);
    out
}

/// The client's serial of an IXFR query (its authority SOA).
fn client_serial(query: &Message) -> Option<u32> {
    query.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    })
}

/// RFC 1982: whether serial `a` is older than `b`.
fn serial_older(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

/// Answers a transfer query: the messages to send, in order.
pub fn respond(
    state: &DnsState,
    packet: &[u8],
    client: IpAddr,
    transport: Transport,
) -> Vec<Vec<u8>> {
    let Ok(query) = Message::from_vec(packet) else {
        return Vec::new();
    };
    let id = query.metadata.id;
    let edns = query.edns.is_some();
    let Some(q) = query.queries.first().filter(|_| query.queries.len() == 1) else {
        return Vec::new();
    };
    let qtype = q.query_type();
    let lower = LowerName::new(q.name());
    let Some(zone) = state.zones.iter().find(|z| z.contains(q.name())) else {
        return vec![refuse(id, q, ResponseCode::Refused, None, edns)];
    };
    if LowerName::new(&zone.name) != lower {
        return vec![refuse(id, q, ResponseCode::NotAuth, None, edns)];
    }
    let Some(transfer) = zone.transfer() else {
        return vec![refuse(id, q, ResponseCode::Refused, None, edns)];
    };
    if qtype == RecordType::AXFR && transport == Transport::Udp {
        // RFC 5936 §4.2: AXFR is not defined over UDP.
        return vec![refuse(id, q, ResponseCode::NotImp, None, edns)];
    }
    if !transfer.allow.iter().any(|n| n.contains(&client)) {
        return vec![refuse(id, q, ResponseCode::Refused, None, edns)];
    }
    // TSIG: a signed query is verified and answered signed; a zone that
    // names a key takes nothing else.
    let time = now();
    let mut signing = Signing::None;
    if let Some(sig) = query.signature() {
        // RFC 8945 §5.2.1: a key we do not have, or have with another
        // algorithm, is BADKEY.
        let Some(key) = state
            .tsig_keys
            .iter()
            .find(|k| k.name == sig.name && *k.signer.algorithm() == sig.data.algorithm)
        else {
            let ctx = TSigResponseContext::unknown_key(id, time, sig.name.clone());
            return vec![refuse(id, q, ResponseCode::NotAuth, Some(ctx), edns)];
        };
        match key.signer.verify_message_byte(packet, None, true) {
            Ok((mac, _, range)) => {
                if !range.contains(&time) {
                    let ctx = TSigResponseContext::new(
                        id,
                        time,
                        key.signer.clone(),
                        mac,
                        Some(TsigError::BadTime),
                    );
                    return vec![refuse(id, q, ResponseCode::NotAuth, Some(ctx), edns)];
                }
                signing = Signing::With {
                    key: key.clone(),
                    prior_mac: mac,
                    time,
                };
            }
            Err(_) => {
                let ctx = TSigResponseContext::bad_signature(id, time, key.signer.clone());
                return vec![refuse(id, q, ResponseCode::NotAuth, Some(ctx), edns)];
            }
        }
    }
    if let Some(required) = &transfer.key {
        let signed_with = match &signing {
            Signing::With { key, .. } => Some(key.name.to_ascii().to_ascii_lowercase()),
            Signing::None => None,
        };
        if signed_with.as_deref() != Some(required.as_str()) {
            return vec![refuse(id, q, ResponseCode::NotAuth, None, edns)];
        }
    }
    let soa_only = |signing: &mut Signing| -> Vec<Vec<u8>> {
        let mut m = header(id, q, ResponseCode::NoError, true, edns);
        m.add_answer(zone.soa().clone());
        finish(&mut m, signing, true).into_iter().collect()
    };
    let ours = match &zone.soa().data {
        RData::SOA(s) => s.serial,
        _ => 0,
    };
    if qtype == RecordType::IXFR {
        let up_to_date = client_serial(&query).is_some_and(|theirs| !serial_older(theirs, ours));
        if up_to_date || transport == Transport::Udp {
            return soa_only(&mut signing);
        }
    } else if transport == Transport::Udp {
        return vec![refuse(id, q, ResponseCode::Refused, None, edns)];
    }
    // The full zone, split into messages.
    let all = records(state, zone);
    let mut out = Vec::new();
    let mut m = header(id, q, ResponseCode::NoError, true, edns);
    let mut size = 0usize;
    for r in all {
        let mut buf = Vec::new();
        let len = {
            let mut enc = BinEncoder::new(&mut buf);
            r.emit(&mut enc).map(|()| buf.len()).unwrap_or(0)
        };
        if size + len > MESSAGE_BYTES && !m.answers.is_empty() {
            let first = out.is_empty();
            match finish(&mut m, &mut signing, first) {
                Some(bytes) => out.push(bytes),
                None => return Vec::new(),
            }
            m = header(id, q, ResponseCode::NoError, false, edns);
            size = 0;
        }
        size += len;
        m.add_answer(r);
    }
    let first = out.is_empty();
    match finish(&mut m, &mut signing, first) {
        Some(bytes) => out.push(bytes),
        None => return Vec::new(),
    }
    out
}

/// A NOTIFY (RFC 1996 §3.7) for `zone`: opcode NOTIFY, AA, the SOA asked
/// and in the answer.
pub fn notify_message(zone: &Zone, id: u16) -> Option<Vec<u8>> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.op_code = OpCode::Notify;
    m.metadata.authoritative = true;
    m.add_query(Query::query(zone.name.clone(), RecordType::SOA));
    m.add_answer(zone.soa().clone());
    m.to_vec().ok()
}

/// The NOTIFYs a new generation calls for: zones with `notify` targets
/// whose SOA serial differs from the old generation's (or that are new).
pub fn notifications(old: &DnsState, new: &DnsState) -> Vec<(String, Vec<u8>, Vec<SocketAddr>)> {
    let serial = |z: &Zone| match &z.soa().data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    };
    new.zones
        .iter()
        .filter_map(|z| {
            let targets = z
                .transfer()
                .map(|t| t.notify.clone())
                .filter(|t| !t.is_empty())?;
            let before = old.zones.iter().find(|o| o.name == z.name).and_then(serial);
            if before.is_some() && before == serial(z) {
                return None;
            }
            let id = fastrand::u16(..);
            Some((z.label.clone(), notify_message(z, id)?, targets))
        })
        .collect()
}

/// Sends NOTIFY for `zone` to each of `targets` over UDP,
/// retrying (1, 2, 4, 8 s) until each answers; logs those that never do.
pub async fn notify(zone_name: String, message: Vec<u8>, targets: Vec<SocketAddr>) {
    for target in targets {
        let local: SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(socket) = tokio::net::UdpSocket::bind(local).await else {
            continue;
        };
        let mut acked = false;
        for attempt in 0..5u32 {
            if socket.send_to(&message, target).await.is_err() {
                break;
            }
            let mut buf = [0u8; 512];
            let wait = Duration::from_secs(1 << attempt.min(3));
            if let Ok(Ok((n, from))) = tokio::time::timeout(wait, socket.recv_from(&mut buf)).await
            {
                // The answer to this NOTIFY: same id, QR set.
                if from == target && n >= 12 && buf[..2] == message[..2] && buf[2] & 0x80 != 0 {
                    acked = true;
                    break;
                }
            }
        }
        if acked {
            tracing::info!(zone = %zone_name, secondary = %target, "NOTIFY acknowledged");
        } else {
            tracing::warn!(zone = %zone_name, secondary = %target, "NOTIFY not acknowledged after 5 tries");
        }
    }
}

/// Writes a message for TCP: two length octets first.
pub fn framed(message: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(message.len()).ok()?;
    let mut out = Vec::with_capacity(message.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Some(out)
}
