//! Steering on a GeoDNS node: what its probes learn of each site's nodes
//! beyond health (name, base URL, digest of held objects), and the ranking
//! that `steer` routes and `/explain` give (see [`edge_proxy::steer`]).
//!
//! Order: the client's sites as [`edge_dns::explain::candidates`] ranks
//! them (the DNS answer's first, then nearest up sites that do not shed
//! the client); within a site, up nodes whose digest holds the object
//! (the owner first among them), then the owner (rendezvous hashing of
//! the object's primary key over the names of the site's up nodes) if it
//! does not hold it; its up nodes in order when none is named. A site
//! whose nodes are unknown (no `/site/state` probe) is named by its first
//! address.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use edge_cache::digest::Digest;
use edge_dns::DnsService;
use edge_proxy::steer::{SteerAnswer, SteerQuery, SteerTarget, Steerer};
use ipnet::IpNet;
use parking_lot::RwLock;
use serde::Serialize;

/// What a node's `/site/state` said of itself, and its digest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeInfo {
    pub name: Option<String>,
    pub url: Option<String>,
    #[serde(skip)]
    pub digest: Option<Arc<Digest>>,
    pub digest_generation: Option<u64>,
    pub digest_keys: Option<u64>,
    pub digest_bytes: Option<usize>,
    /// Seconds since the digest was fetched.
    #[serde(skip)]
    pub digest_fetched: Option<Instant>,
    pub digest_error: Option<String>,
    /// When the last fetch failed (no new one for a while: see [`Nodes::saw`]).
    #[serde(skip)]
    pub digest_failed: Option<Instant>,
}

/// Probed nodes by health URL.
#[derive(Default)]
pub struct Nodes {
    by_url: RwLock<HashMap<String, NodeInfo>>,
}

impl Nodes {
    pub fn get(&self, health_url: &str) -> Option<NodeInfo> {
        self.by_url.read().get(health_url).cloned()
    }

    /// What a passing `/site/state` said: name and URL; whether its digest
    /// (of generation `generation`) must be fetched: a generation not held,
    /// and no fetch failed within `retry` (a node that fails or stalls
    /// every fetch is not read from back to back, whatever generations it
    /// announces).
    pub fn saw(
        &self,
        health_url: &str,
        name: Option<String>,
        url: Option<String>,
        generation: Option<u64>,
        retry: std::time::Duration,
    ) -> bool {
        let mut map = self.by_url.write();
        let info = map.entry(health_url.to_string()).or_default();
        info.name = name;
        info.url = url;
        match generation {
            Some(g) => {
                info.digest_generation != Some(g)
                    && info.digest_failed.is_none_or(|t| t.elapsed() >= retry)
            }
            None => {
                info.digest = None;
                info.digest_generation = None;
                false
            }
        }
    }

    /// A digest fetched (or why it could not be).
    pub fn fetched(&self, health_url: &str, result: Result<(u64, Digest), String>) {
        let mut map = self.by_url.write();
        let info = map.entry(health_url.to_string()).or_default();
        match result {
            Ok((generation, d)) => {
                info.digest_keys = Some(d.keys());
                info.digest_bytes = Some(d.bytes().len());
                info.digest = Some(Arc::new(d));
                info.digest_generation = Some(generation);
                info.digest_fetched = Some(Instant::now());
                info.digest_error = None;
                info.digest_failed = None;
            }
            Err(e) => {
                info.digest_error = Some(e);
                info.digest_failed = Some(Instant::now());
            }
        }
    }

    /// Forgets nodes no site probes any more.
    pub fn retain(&self, urls: &[String]) {
        self.by_url.write().retain(|u, _| urls.contains(u));
    }
}

/// Largest digest fetched (64 MiB: the largest a node builds).
const MAX_DIGEST: usize = 64 << 20;

/// `GET /site/digest` from the node whose state is at `authority` + `path`
/// (`…/site/state` → `…/site/digest`).
pub async fn fetch_digest(
    addr: std::net::SocketAddr,
    host: &str,
    state_path: &str,
) -> Result<(u64, Digest), String> {
    use http_body_util::{BodyExt, Empty, Limited};
    let path = format!(
        "{}/site/digest",
        state_path.strip_suffix("/site/state").unwrap_or("")
    );
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let request = hyper::Request::get(path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "edge-steering")
        .body(Empty::<hyper::body::Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(format!("{path}: status {}", response.status()));
    }
    let number = |name: &str| -> Result<u64, String> {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("{path}: no number in {name}"))
    };
    let generation = number("edge-digest-generation")?;
    let hashes = number("edge-digest-hashes")?;
    let keys = number("edge-digest-keys")?;
    let hashes = u32::try_from(hashes).map_err(|_| format!("{path}: {hashes} hashes"))?;
    // A length no digest has is refused before its body is read.
    if let Some(length) = response.headers().get(hyper::header::CONTENT_LENGTH) {
        let length: u64 = length
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("{path}: a bad Content-Length"))?;
        if length > MAX_DIGEST as u64 || !length.is_multiple_of(8) || length < 128 {
            return Err(format!(
                "{path}: a digest of {length} bytes: expected a multiple of 8 from 128 to 64 MiB"
            ));
        }
    }
    let body = Limited::new(response.into_body(), MAX_DIGEST)
        .collect()
        .await
        .map_err(|e| format!("{path}: {e}"))?
        .to_bytes();
    let digest =
        Digest::from_parts(Vec::from(body), hashes, keys).map_err(|e| format!("{path}: {e}"))?;
    Ok((generation, digest))
}

/// One node of a site as the ranking sees it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub health_url: String,
    pub name: Option<String>,
    pub url: Option<String>,
    pub up: bool,
    pub utilization: Option<f64>,
    /// The digest says it holds the object (`None`: no digest).
    pub holds: Option<bool>,
    pub owner: bool,
    pub digest_generation: Option<u64>,
    pub digest_age_seconds: Option<f64>,
    /// Why the last fetch of its digest failed (the previous one is kept).
    pub digest_error: Option<String>,
}

/// The nodes of site `i` of the current DNS state, with the object's owner
/// and whether each holds it.
pub fn site_nodes(
    dns: &DnsService,
    nodes: &Nodes,
    site: usize,
    object: &str,
    primary: &[u8; 16],
) -> Vec<NodeView> {
    let state = dns.state();
    let Some(st) = state.site_states.get(site) else {
        return Vec::new();
    };
    let mut views: Vec<NodeView> = st
        .nodes()
        .into_iter()
        .map(|h| {
            let info = nodes.get(&h.url).unwrap_or_default();
            NodeView {
                up: h.up,
                utilization: h.utilization,
                holds: info.digest.as_ref().map(|d| d.contains(object)),
                owner: false,
                name: info.name,
                url: info.url,
                digest_generation: info.digest_generation,
                digest_age_seconds: info.digest_fetched.map(|t| t.elapsed().as_secs_f64()),
                digest_error: info.digest_error,
                health_url: h.url,
            }
        })
        .collect();
    let owner = edge_proxy::site::owner_of(
        primary,
        views
            .iter()
            .filter(|v| v.up)
            .filter_map(|v| v.name.as_deref()),
    )
    .map(str::to_string);
    for v in &mut views {
        v.owner = v.up && owner.is_some() && v.name == owner;
    }
    views
}

/// The steering of a GeoDNS node.
pub struct Steering {
    pub dns: Arc<DnsService>,
    pub nodes: Arc<Nodes>,
}

/// A site's base URL when its nodes are unknown: its first address.
fn site_base(state: &edge_dns::DnsState, i: usize, v6: bool) -> Option<String> {
    let s = state.sites.get(i)?;
    let v4 = s.ipv4.first().map(|a| a.to_string());
    let v6a = s.ipv6.first().map(|a| format!("[{a}]"));
    let host = if v6 { v6a.or(v4) } else { v4.or(v6a) }?;
    Some(format!("http://{host}"))
}

impl Steering {
    /// The ranking for `q`, with the client's location as JSON.
    pub fn rank(&self, q: &SteerQuery<'_>, ecs: Option<IpNet>) -> SteerAnswer {
        let state = self.dns.state();
        let loc = edge_dns::explain::locate(&state, q.client, ecs);
        let geo = edge_dns::explain::geo_name(&state, q.host);
        let family = if loc.address.is_ipv4() {
            edge_dns::geo::Family::V4
        } else {
            edge_dns::geo::Family::V6
        };
        let chosen = geo
            .as_ref()
            .map(|(_, g)| edge_dns::explain::chosen(&state, g, &loc, family).0)
            .unwrap_or_default();
        let candidates =
            edge_dns::explain::candidates(&state, geo.as_ref().map(|(_, g)| *g), &loc, &chosen);
        let mut targets = Vec::new();
        for c in candidates.iter().filter(|c| c.up && !c.sheds_this_client) {
            let nodes = site_nodes(&self.dns, &self.nodes, c.index, q.object, &q.primary);
            let known: Vec<&NodeView> = nodes.iter().filter(|n| n.up && n.url.is_some()).collect();
            if known.is_empty() {
                if let Some(base) = site_base(&state, c.index, q.client.is_ipv6()) {
                    targets.push(SteerTarget {
                        url: format!("{base}{}", q.path_and_query),
                        site: c.site.clone(),
                        node: None,
                        holds: false,
                        owner: false,
                        distance_km: c.distance_km,
                        utilization: c.utilization,
                    });
                }
                continue;
            }
            let mut ranked: Vec<&NodeView> = known
                .iter()
                .copied()
                .filter(|n| n.holds == Some(true) || n.owner)
                .collect();
            // Holders first, the owner first among equals.
            ranked.sort_by_key(|n| (n.holds != Some(true), !n.owner));
            if ranked.is_empty() {
                // No holder and no owner (nodes that say no name: no
                // `[site]`): the site still serves; its up nodes, in order.
                ranked = known;
            }
            for n in ranked {
                targets.push(SteerTarget {
                    url: format!("{}{}", n.url.as_deref().unwrap_or(""), q.path_and_query),
                    site: c.site.clone(),
                    node: n.name.clone(),
                    holds: n.holds == Some(true),
                    owner: n.owner,
                    distance_km: c.distance_km,
                    utilization: n.utilization,
                });
            }
        }
        SteerAnswer {
            targets,
            location: serde_json::to_value(&loc).unwrap_or_default(),
        }
    }
}

impl Steerer for Steering {
    fn steer(&self, q: &SteerQuery<'_>) -> SteerAnswer {
        self.rank(q, None)
    }
}
