//! `[site]` on the request path: who owns an object among the site's
//! nodes (rendezvous hashing), the `CDN-Loop` members a site reads and
//! writes (RFC 8586), and which fetched copies a non-owner keeps.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use edge_config::{HostPort, KeepCopies, ShieldFallback};
use pingora_http::RequestHeader;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::pool::Pool;

/// A request header that makes a miss of an object another node of the
/// site owns answer `421 Misdirected Request` (with the owner's name)
/// instead of fetching it: what prefill sends, so each node of a site fills
/// only what it owns. Taken off before anything goes upstream.
pub const PREFILL: &str = "edge-prefill";

/// What the request path needs of `[site]`.
#[derive(Debug)]
pub struct SiteTier {
    /// The site's name: what this node adds to `CDN-Loop` (RFC 8586).
    pub name: String,
    /// This node's name: its place on the rendezvous hash.
    pub node: String,
    /// The shield pool (index into `pools`) misses of cached routes go to.
    pub shield: Option<usize>,
    pub fallback: ShieldFallback,
    /// The peers' pool (index into `pools`, named [`edge_config::PEER_POOL`]).
    pub peers: Option<usize>,
    /// Peer address → node name (a name may resolve to several backends).
    pub peer_names: Vec<(HostPort, String)>,
    pub keep: KeepCopies,
    /// This node's own address in the peer list, when it is an IP: the
    /// source of connections to peers, so they know a peer's request.
    pub bind: Option<IpAddr>,
}

/// Where an object lives in the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// This node: it fills the object from the shield or the origin.
    Me,
    /// Backend `index` of the peers' pool.
    Peer(usize),
}

/// FNV-1a, 64 bits: a hash every node computes alike, whatever its build.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64's finalizer: spreads a node's and a key's bits over the score.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous (highest random weight) score of `node` for `key`
/// (Thaler and Ravishankar, 1998): the node with the highest score owns
/// the key, so a node leaving moves only its own keys, each to the node
/// that scores next.
pub fn score(node: &str, key: &[u8]) -> u64 {
    mix(fnv(node.as_bytes()) ^ mix(fnv(key)))
}

/// The name among `nodes` that owns `key` (ties, which need equal 64-bit
/// scores, go to the smaller name, so every node agrees).
pub fn owner_of<'a>(key: &[u8], nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes
        .into_iter()
        .map(|n| (score(n, key), n))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, n)| n)
}

impl SiteTier {
    /// The node name of a peer backend.
    pub fn peer_name(&self, address: &HostPort) -> Option<&str> {
        self.peer_names
            .iter()
            .find(|(a, _)| a == address)
            .map(|(_, n)| n.as_str())
    }

    /// The owner of `key` among this node and the peers of `peers` that
    /// may take requests now (healthy, not ejected, enabled). A peer down
    /// is as if it were not in the site: its keys go to the node that
    /// scores next for each.
    pub fn owner(&self, key: &[u8], peers: &Pool) -> Owner {
        let now = Instant::now();
        let mut best = (score(&self.node, key), self.node.as_str(), Owner::Me);
        for (i, b) in peers.backends.iter().enumerate() {
            let Some(name) = self.peer_name(&b.address) else {
                continue;
            };
            if !peers.usable(b, now) {
                continue;
            }
            let s = score(name, key);
            if s > best.0 || (s == best.0 && name < best.1) {
                best = (s, name, Owner::Peer(i));
            }
        }
        best.2
    }

    /// Whether `req` comes from another node of this site: it says so
    /// (`CDN-Loop: <site>; peer=<node>`) and comes from a peer's address
    /// (its own in the peer list; what it binds connections to peers to).
    pub fn is_peer_request(
        &self,
        req: &RequestHeader,
        client: Option<IpAddr>,
        pools: &[Arc<Pool>],
    ) -> bool {
        let (Some(ip), Some(peers)) = (client, self.peers.and_then(|i| pools.get(i))) else {
            return false;
        };
        peers.backends.iter().any(|b| b.addr.ip() == ip) && from_peer(req, &self.name)
    }
}

/// Whether a `CDN-Loop` member (`name *( ";" param )`) names `site`, and
/// whether it is a peer's (`; peer=<node>`).
fn members<'a>(req: &'a RequestHeader, site: &'a str) -> impl Iterator<Item = bool> + 'a {
    req.headers
        .get_all("cdn-loop")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(move |member| {
            let mut parts = member.split(|&b| b == b';');
            let name = parts.next()?.trim_ascii();
            if !name.eq_ignore_ascii_case(site.as_bytes()) {
                return None;
            }
            Some(parts.any(|p| {
                p.split(|&b| b == b'=')
                    .next()
                    .is_some_and(|k| k.trim_ascii().eq_ignore_ascii_case(b"peer"))
            }))
        })
}

/// Whether `req` has passed through `site` on its way out of it already
/// (RFC 8586: a `CDN-Loop` member whose name is the site's, one that is
/// not a hop between two of its nodes). Bytes, not text: a line with
/// obs-text in it (or any garbage) is still read for the names it holds,
/// as it is passed on with them.
pub fn looped(req: &RequestHeader, site: &str) -> bool {
    members(req, site).any(|peer| !peer)
}

/// Whether `req` came from another node of `site` (a member
/// `<site>; peer=<node>`): it is never sent to a peer again.
pub fn from_peer(req: &RequestHeader, site: &str) -> bool {
    members(req, site).any(|peer| peer)
}

/// The `CDN-Loop` value a request leaves with: every member it carried,
/// every line of it (a proxy must not drop one: a loop through a CDN
/// named only on a second line would go unseen), then this site's.
pub fn cdn_loop(req: &RequestHeader, site: &str, peer_of: Option<&str>) -> Vec<u8> {
    let mut value = Vec::new();
    for line in req.headers.get_all("cdn-loop") {
        let line = line.as_bytes().trim_ascii();
        if !line.is_empty() {
            value.extend_from_slice(line);
            value.extend_from_slice(b", ");
        }
    }
    value.extend_from_slice(site.as_bytes());
    if let Some(node) = peer_of {
        value.extend_from_slice(b"; peer=");
        value.extend_from_slice(node.as_bytes());
    }
    value
}

/// Keys a non-owner fetched from a peer lately: under `keep_copies =
/// "hot"`, a key fetched a second time while remembered is kept.
pub struct HotKeys {
    seen: quick_cache::sync::Cache<u128, ()>,
}

impl Default for HotKeys {
    fn default() -> Self {
        Self {
            seen: quick_cache::sync::Cache::new(64 * 1024),
        }
    }
}

impl HotKeys {
    /// Notes a fetch of `key`; true when it was fetched before.
    pub fn fetched(&self, key: u128) -> bool {
        if self.seen.get(&key).is_some() {
            return true;
        }
        self.seen.insert(key, ());
        false
    }
}

/// The share of a sample of keys each node owns, the way `owner` sees the
/// site now: this node first, then each usable peer by name.
pub fn shares(site: &SiteTier, peers: Option<&Arc<Pool>>, sample: u32) -> Vec<(String, f64)> {
    let mut counts: Vec<(String, u32)> = vec![(site.node.clone(), 0)];
    for i in 0..sample {
        let key = format!("/sample/{i}");
        let owner = match peers {
            Some(p) => site.owner(key.as_bytes(), p),
            None => Owner::Me,
        };
        let name = match (owner, peers) {
            (Owner::Peer(b), Some(p)) => p
                .backends
                .get(b)
                .and_then(|b| site.peer_name(&b.address))
                .unwrap_or("-")
                .to_string(),
            _ => site.node.clone(),
        };
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some(c) => c.1 += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
        .into_iter()
        .map(|(n, c)| (n, f64::from(c) / f64::from(sample.max(1))))
        .collect()
}

/// `edge_site_*`: traffic between the nodes of a site.
pub struct SiteMetrics {
    /// Misses sent to the owning peer, by peer.
    pub fills: IntCounterVec,
    /// Response body bytes received from peers, by peer.
    pub fill_bytes: IntCounterVec,
    /// Misses whose owner could not be reached, sent on to the next tier.
    pub fallbacks: IntCounter,
    /// Requests from other nodes of the site this node answered.
    pub served_to_peers: IntCounter,
    /// What a non-owner did with an object fetched from its owner.
    pub copies: IntCounterVec,
}

impl SiteMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let fills = IntCounterVec::new(
            Opts::new(
                "edge_site_peer_fills_total",
                "Misses sent to the node of the site that owns the object, by peer",
            ),
            &["peer"],
        )?;
        let fill_bytes = IntCounterVec::new(
            Opts::new(
                "edge_site_peer_fill_bytes_total",
                "Response body bytes received from the site's owning nodes, by peer",
            ),
            &["peer"],
        )?;
        let fallbacks = IntCounter::new(
            "edge_site_peer_fallbacks_total",
            "Misses whose owning node could not be reached, sent to the shield or origin",
        )?;
        let served_to_peers = IntCounter::new(
            "edge_site_served_to_peers_total",
            "Requests from other nodes of the site (objects this node owns)",
        )?;
        let copies = IntCounterVec::new(
            Opts::new(
                "edge_site_copies_total",
                "Objects fetched from their owner, by whether this node kept a copy",
            ),
            &["kept"],
        )?;
        registry.register(Box::new(fills.clone()))?;
        registry.register(Box::new(fill_bytes.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        registry.register(Box::new(served_to_peers.clone()))?;
        registry.register(Box::new(copies.clone()))?;
        Ok(Self {
            fills,
            fill_bytes,
            fallbacks,
            served_to_peers,
            copies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(lines: &[&[u8]]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for l in lines {
            req.append_header("cdn-loop", http::HeaderValue::from_bytes(l).unwrap())
                .unwrap();
        }
        req
    }

    #[test]
    fn cdn_loop_names_are_found_on_every_line_whatever_else_is_there() {
        assert!(looped(&with(&[b"eu"]), "eu"));
        assert!(looped(&with(&[b"foo, EU ; v=1"]), "eu"));
        assert!(looped(&with(&[b"foo", b"bar; v=1, eu"]), "eu"));
        // Bytes that are not text do not hide the names around them.
        assert!(looped(&with(&[b"caf\xe9\xff, eu"]), "eu"));
        assert!(!looped(&with(&[b"caf\xe9\xff, eus, e u, x;eu"]), "eu"));
        assert!(!looped(&with(&[]), "eu"));
    }

    #[test]
    fn a_hop_between_nodes_of_a_site_is_not_a_loop_but_is_a_peer_request() {
        let peer = with(&[b"eu; peer=eu-1"]);
        assert!(!looped(&peer, "eu"));
        assert!(from_peer(&peer, "eu"));
        let both = with(&[b"eu; peer=eu-1, shield", b"EU"]);
        assert!(looped(&both, "eu") && from_peer(&both, "eu"));
        // Another site's peer hop, or a parameter merely named like it.
        assert!(!from_peer(&with(&[b"us; peer=us-1"]), "eu"));
        assert!(!from_peer(&with(&[b"eu; peers=2, eu; x=peer"]), "eu"));
        assert!(from_peer(&with(&[b"eu ;  PEER = x"]), "eu"));
        let out = cdn_loop(&with(&[b"a", b" b ; v=1 "]), "eu", Some("eu-2"));
        assert_eq!(out, b"a, b ; v=1, eu; peer=eu-2");
        assert_eq!(cdn_loop(&with(&[]), "eu", None), b"eu");
    }

    /// Rendezvous hashing's promise: with N nodes each owns about 1/N of
    /// the keys; one node leaving moves only its keys (to the others,
    /// spread evenly), and coming back moves the same keys home.
    #[test]
    fn one_node_of_n_moves_about_one_nth_of_the_keys() {
        for n in [2usize, 3, 5, 8] {
            let names: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
            let keys: Vec<String> = (0..20_000).map(|i| format!("/title/{i}/seg.ts")).collect();
            let all = |k: &String| owner_of(k.as_bytes(), names.iter().map(String::as_str));
            let before: Vec<&str> = keys.iter().map(|k| all(k).unwrap()).collect();
            for (i, name) in names.iter().enumerate() {
                let owned = before.iter().filter(|o| **o == name.as_str()).count();
                let share = owned as f64 / keys.len() as f64;
                assert!(
                    (share - 1.0 / n as f64).abs() < 0.02,
                    "{n} nodes: node {i} owns {share}"
                );
            }
            let gone = &names[n / 2];
            let without = |k: &String| {
                owner_of(
                    k.as_bytes(),
                    names.iter().filter(|m| *m != gone).map(String::as_str),
                )
            };
            let mut moved = 0;
            let mut to = std::collections::HashMap::new();
            for (k, b) in keys.iter().zip(&before) {
                let after = without(k).unwrap();
                if after != *b {
                    assert_eq!(*b, gone.as_str(), "only the leaving node's keys move");
                    moved += 1;
                    *to.entry(after).or_insert(0usize) += 1;
                }
            }
            let share = moved as f64 / keys.len() as f64;
            assert!((share - 1.0 / n as f64).abs() < 0.02, "{n}: moved {share}");
            // Its keys spread over every remaining node.
            assert_eq!(to.len(), n - 1);
            for count in to.values() {
                let s = *count as f64 / moved as f64;
                assert!((s - 1.0 / (n - 1) as f64).abs() < 0.05, "{n}: {s}");
            }
        }
    }

    #[test]
    fn every_node_computes_the_same_owner_whatever_the_order() {
        let a = ["b", "a", "c"];
        let b = ["c", "b", "a"];
        for i in 0..1000 {
            let k = format!("k{i}");
            assert_eq!(owner_of(k.as_bytes(), a), owner_of(k.as_bytes(), b));
        }
        // Fixed values: a change of hash is a change of every site's layout.
        assert_eq!(score("node-a", b"/x"), score("node-a", b"/x"));
        assert_ne!(score("node-a", b"/x"), score("node-b", b"/x"));
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_key_is_hot_the_second_time() {
        let h = HotKeys::default();
        assert!(!h.fetched(7));
        assert!(h.fetched(7));
        assert!(!h.fetched(8));
    }
}
