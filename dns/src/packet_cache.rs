//! Answers kept ready to send again (PowerDNS's packet cache): a query
//! whose bytes (all but the ID) were answered before gets that answer's
//! bytes with its own ID, without being parsed, looked up or encoded.
//!
//! What an answer depends on is all in the key or checked on a hit:
//! - the query's bytes after the ID: flags, the question in its case, the
//!   EDNS buffer size, the DO bit, the client subnet (RFC 7871);
//! - the transport (UDP answers are truncated to the client's buffer);
//! - the client's address, only for geo answers located by it (no ECS, or
//!   ECS /0): a first entry says "per client" and the answer is under a
//!   second key that includes the address;
//! - the zones, sites and locator: the cache belongs to one generation
//!   ([`crate::DnsState`]) and a reload starts an empty one;
//! - site health and drains: a geo answer keeps which sites were up when
//!   it was made, and is made again when that changed.
//!
//! Not cached: zone transfers, weighted picks (random per query), queries
//! longer than [`MAX_QUERY`] bytes. Response rate limiting and metrics run
//! on every answer, cached or not.

use std::net::IpAddr;
use std::sync::Arc;

use crate::answer::{Tally, Transport};
use crate::health::{SiteState, Ups};
use crate::rrl::ResponseClass;

/// Queries longer than this (bytes) are answered without the cache.
pub const MAX_QUERY: usize = 512;
/// Transport byte, address length, an IPv6 address.
const KEY_HEAD: usize = 2 + 16;

/// One answer, as sent (with the first asker's ID) and what it counts as.
#[derive(Debug)]
pub struct Entry {
    pub wire: Box<[u8]>,
    pub tally: Tally,
    /// What response rate limiting counts it as (when RRL is on).
    pub class: Option<ResponseClass>,
    /// For geo answers: which sites were up when it was picked.
    ups: Option<Ups>,
}

#[derive(Clone)]
enum Slot {
    Answer(Arc<Entry>),
    /// The answer depends on the client's address: see the second key.
    PerClient,
}

/// How an answer may be kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    pub no: bool,
    /// Located by the client's address.
    pub per_client: bool,
}

/// An entry's weight: its key and answer bytes, and what holding them
/// costs besides (the table slot, the `Arc`, the entry's fields).
#[derive(Clone)]
struct Bytes;

/// Bytes an entry costs beyond its key and answer.
const OVERHEAD: u64 = 128;

impl quick_cache::Weighter<Box<[u8]>, Slot> for Bytes {
    fn weight(&self, key: &Box<[u8]>, slot: &Slot) -> u64 {
        let answer = match slot {
            Slot::Answer(e) => e.wire.len() + e.tally.sites_len() * 8,
            Slot::PerClient => 0,
        };
        (key.len() + answer) as u64 + OVERHEAD
    }
}

pub struct PacketCache {
    slots: quick_cache::sync::Cache<Box<[u8]>, Slot, Bytes>,
}

/// A key: transport, the client's address when it matters, the query
/// after its ID. `None` when the query is too long to keep.
fn key<'b>(
    buf: &'b mut [u8; KEY_HEAD + MAX_QUERY],
    packet: &[u8],
    transport: Transport,
    client: Option<IpAddr>,
) -> Option<&'b [u8]> {
    let rest = packet.get(2..)?;
    if rest.len() > MAX_QUERY {
        return None;
    }
    buf[0] = match transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    };
    let head = match client {
        None => {
            buf[1] = 0;
            2
        }
        Some(IpAddr::V4(a)) => {
            buf[1] = 4;
            buf[2..6].copy_from_slice(&a.octets());
            6
        }
        Some(IpAddr::V6(a)) => {
            buf[1] = 16;
            buf[2..18].copy_from_slice(&a.octets());
            18
        }
    };
    buf[head..head + rest.len()].copy_from_slice(rest);
    Some(&buf[..head + rest.len()])
}

impl PacketCache {
    /// A cache of at most `bytes` of keys and answers (a UDP answer of
    /// 100 bytes costs about 300 with its key; a 64 KiB TCP answer its
    /// size: memory is bounded by bytes, not by a count of entries).
    pub fn new(bytes: u64) -> PacketCache {
        let estimated = usize::try_from(bytes / 300).unwrap_or(usize::MAX).max(16);
        PacketCache {
            slots: quick_cache::sync::Cache::with_weighter(estimated, bytes.max(1), Bytes),
        }
    }

    /// Bytes held now (keys, answers and overhead).
    pub fn weight(&self) -> u64 {
        self.slots.weight()
    }

    /// The answer kept for this query, if it still holds.
    pub fn get(
        &self,
        packet: &[u8],
        client: IpAddr,
        transport: Transport,
        sites: &[Arc<SiteState>],
    ) -> Option<Arc<Entry>> {
        let mut buf = [0u8; KEY_HEAD + MAX_QUERY];
        let entry = match self.slots.get(key(&mut buf, packet, transport, None)?)? {
            Slot::Answer(e) => e,
            Slot::PerClient => {
                match self
                    .slots
                    .get(key(&mut buf, packet, transport, Some(client))?)?
                {
                    Slot::Answer(e) => e,
                    Slot::PerClient => return None,
                }
            }
        };
        match &entry.ups {
            Some(was) if !was.holds(sites) => None,
            _ => Some(entry),
        }
    }

    /// Keeps `wire` as the answer to this query (a geo answer with the
    /// site health `ups` it was picked with); returns it, shared.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        packet: &[u8],
        client: IpAddr,
        transport: Transport,
        keep: Keep,
        ups: Option<Ups>,
        wire: Vec<u8>,
        tally: Tally,
        class: Option<ResponseClass>,
    ) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            wire: wire.into_boxed_slice(),
            tally,
            class,
            ups,
        });
        if keep.no {
            return entry;
        }
        let mut buf = [0u8; KEY_HEAD + MAX_QUERY];
        if keep.per_client {
            if let Some(k) = key(&mut buf, packet, transport, None) {
                self.slots.insert(k.into(), Slot::PerClient);
            }
            if let Some(k) = key(&mut buf, packet, transport, Some(client)) {
                self.slots.insert(k.into(), Slot::Answer(entry.clone()));
            }
        } else if let Some(k) = key(&mut buf, packet, transport, None) {
            self.slots.insert(k.into(), Slot::Answer(entry.clone()));
        }
        entry
    }

    /// Answers kept now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::SiteStates;

    /// An answer picked with one site health and kept after it changed
    /// (another thread drained a site meanwhile) is not served as if
    /// picked with the new one: the entry holds the health it was picked
    /// with, not the health when it was kept.
    #[test]
    fn an_entry_holds_the_health_it_was_picked_with() {
        let states = SiteStates::default();
        let sites = states.list(&["a", "b"]);
        let cache = PacketCache::new(1 << 20);
        let packet = [0u8, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        let client: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0; 4]));
        let keep = Keep::default();
        let picked_with = Ups::read(&sites);
        // The drain lands between the pick and the put.
        states.set_drained("a", true);
        cache.put(
            &packet,
            client,
            Transport::Udp,
            keep,
            Some(picked_with),
            vec![0; 12],
            Tally::default(),
            None,
        );
        assert!(cache.get(&packet, client, Transport::Udp, &sites).is_none());
        // Back as it was picked: the entry holds again.
        states.set_drained("a", false);
        assert!(cache.get(&packet, client, Transport::Udp, &sites).is_some());
        // Picked now, kept now: holds.
        states.set_drained("b", true);
        cache.put(
            &packet,
            client,
            Transport::Udp,
            keep,
            Some(Ups::read(&sites)),
            vec![0; 12],
            Tally::default(),
            None,
        );
        assert!(cache.get(&packet, client, Transport::Udp, &sites).is_some());
    }

    /// Memory is bounded by bytes: 2,000 answers of 1 KiB (different
    /// queries) into a cache of 64 KiB hold at most 64 KiB, and a 64 KiB
    /// TCP-sized answer never pushes it over.
    #[test]
    fn the_cache_holds_at_most_its_bytes() {
        let states = SiteStates::default();
        let sites = states.list(&[]);
        let cache = PacketCache::new(64 << 10);
        let client: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0; 4]));
        for i in 0..2000u16 {
            let mut packet = vec![0u8, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            packet.extend_from_slice(&i.to_be_bytes());
            cache.put(
                &packet,
                client,
                Transport::Tcp,
                Keep::default(),
                None,
                vec![0; 1024],
                Tally::default(),
                None,
            );
            assert!(cache.weight() <= 64 << 10, "{} bytes", cache.weight());
        }
        assert!(!cache.is_empty());
        let big = [9u8, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7];
        cache.put(
            &big,
            client,
            Transport::Tcp,
            Keep::default(),
            None,
            vec![0; 65535],
            Tally::default(),
            None,
        );
        assert!(cache.weight() <= 64 << 10);
        let _ = sites;
    }
}
