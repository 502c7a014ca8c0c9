//! A request's upstream plan: the ordered tiers a cached route's miss may
//! try (the owner of the object in the site, the shield, the route's own
//! pool), each a pool with its own timeouts and retry rules. A response
//! from any tier ends it; a tier none of whose backends can be reached
//! hands the request to the next. The request path (`service.rs`) asks
//! the plan which pool and backend come next; this file decides.

use std::sync::Arc;

use edge_config::{KeepCopies, ShieldFallback};
use pingora_http::RequestHeader;

use crate::pool::Pool;
use crate::site::{self, HotKeys, Owner};
use crate::state::ProxyState;

/// A tier of a request's upstream plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The node of the site that owns the object (peer fill).
    Owner,
    /// The site's shield pool.
    Shield,
    /// The route's own pool.
    Origin,
}

impl Tier {
    /// Toward another edge node, which has the same routes: the request
    /// goes as the client sent it (no rewrite, header edits or pool Host),
    /// and what that node adds to its answer is taken off again.
    pub fn is_edge(self) -> bool {
        self != Tier::Origin
    }
}

/// Where a request stands in its plan.
pub struct Plan {
    /// The tier the request's current pool belongs to.
    pub tier: Tier,
    /// The tiers left, in order.
    next: Vec<(Tier, Arc<Pool>)>,
    /// The owner's backend index in the peers' pool (tier `Owner`).
    pub owner: Option<usize>,
    /// The owner was looked for (once per request).
    owner_sought: bool,
    /// The primary hash of the cache key (what the owner is computed
    /// from): kept, as a request released from another's cache lock
    /// without a copy to read goes on with its cache disabled.
    pub primary: Option<[u8; 16]>,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            tier: Tier::Origin,
            next: Vec::new(),
            owner: None,
            owner_sought: false,
            primary: None,
        }
    }
}

/// A prefill (`edge-prefill`) asked for an object a peer owns: its name.
#[derive(Debug, Clone, PartialEq)]
pub struct NotOwned(pub String);

impl Plan {
    /// Whether a tier is left after the current one.
    pub fn has_next(&self) -> bool {
        !self.next.is_empty()
    }

    /// Moves to the next tier: its kind and pool.
    pub fn advance(&mut self) -> Option<(Tier, Arc<Pool>)> {
        if self.next.is_empty() {
            return None;
        }
        let (tier, pool) = self.next.remove(0);
        self.tier = tier;
        self.owner = None;
        Some((tier, pool))
    }

    /// The shield tier for a cached route's miss (`cached`): the site's
    /// shield pool (`[site].shield`) before the route's own, unless the
    /// request has been through this site already (`CDN-Loop`, RFC 8586),
    /// which breaks a shield that points back at its children, or at
    /// itself. `pool` is the request's current pool; it becomes the shield.
    pub fn choose_shield(
        &mut self,
        pool: &mut Option<Arc<Pool>>,
        state: &ProxyState,
        req: &RequestHeader,
        cached: bool,
    ) {
        let Some(site) = state.site.as_ref() else {
            return;
        };
        let Some(shield) = site.shield.and_then(|i| state.pools.get(i)) else {
            return;
        };
        if !cached
            || site::looped(req, &site.name)
            || pool.as_ref().is_none_or(|p| Arc::ptr_eq(p, shield))
        {
            return;
        }
        let origin = pool.replace(shield.clone());
        self.tier = Tier::Shield;
        if site.fallback == ShieldFallback::Origin {
            self.next.extend(origin.map(|o| (Tier::Origin, o)));
        }
    }

    /// Peer fill: a cached route's miss on a node of a site goes first to
    /// the node that owns the object (rendezvous hashing of its cache key
    /// over this node and the healthy peers), unless this node owns it or
    /// the request came from a peer already (a request is never forwarded
    /// twice). The owner fills from the shield or the origin. Once per
    /// request; a prefill for an object a peer owns is refused instead.
    pub fn choose_owner(
        &mut self,
        pool: &mut Option<Arc<Pool>>,
        state: &ProxyState,
        req: &RequestHeader,
        cached: bool,
    ) -> Result<(), NotOwned> {
        if std::mem::replace(&mut self.owner_sought, true) {
            return Ok(());
        }
        let Some(site) = state.site.as_ref() else {
            return Ok(());
        };
        let Some(peers) = site.peers.and_then(|i| state.pools.get(i)) else {
            return Ok(());
        };
        if !cached || site::from_peer(req, &site.name) {
            return Ok(());
        }
        let Some(key) = self.primary else {
            return Ok(());
        };
        let Owner::Peer(index) = site.owner(&key, peers) else {
            return Ok(());
        };
        if req.headers.contains_key(site::PREFILL) {
            return Err(NotOwned(peer_name(state, peers, index).to_string()));
        }
        let Some(current) = pool.replace(peers.clone()) else {
            return Ok(());
        };
        self.next.insert(0, (self.tier, current));
        self.tier = Tier::Owner;
        self.owner = Some(index);
        Ok(())
    }

    /// The node name of the owner this request went to (`-` if none).
    pub fn owner_name<'a>(&self, state: &'a ProxyState, pool: &'a Pool) -> &'a str {
        self.owner.map_or("-", |i| peer_name(state, pool, i))
    }

    /// Whether a non-owner keeps a copy of what the owner sent
    /// (`[site].keep_copies`; `hot`: the second fetch of a key while
    /// remembered).
    pub fn keeps_copy(&self, state: &ProxyState, hot: &HotKeys) -> bool {
        let Some(site) = state.site.as_ref() else {
            return true;
        };
        match site.keep {
            KeepCopies::Always => true,
            KeepCopies::Never => false,
            KeepCopies::Hot => self
                .primary
                .is_some_and(|key| hot.fetched(u128::from_be_bytes(key))),
        }
    }
}

/// The node name of backend `index` of the peers' pool (`-` if unknown).
fn peer_name<'a>(state: &'a ProxyState, peers: &'a Pool, index: usize) -> &'a str {
    state
        .site
        .as_ref()
        .zip(peers.backends.get(index))
        .and_then(|(site, b)| site.peer_name(&b.address))
        .unwrap_or("-")
}

/// The peer that owns a prefilled object when it is not this node, from
/// the primary hash of the object's whole key (an object served in slices
/// never goes upstream whole, so `choose_owner` never sees it).
pub fn prefill_owner(state: &ProxyState, req: &RequestHeader, primary: [u8; 16]) -> Option<String> {
    if !req.headers.contains_key(site::PREFILL) {
        return None;
    }
    let site = state.site.as_ref()?;
    let peers = site.peers.and_then(|i| state.pools.get(i))?;
    if site::from_peer(req, &site.name) {
        return None;
    }
    match site.owner(&primary, peers) {
        Owner::Me => None,
        Owner::Peer(i) => Some(peer_name(state, peers, i).to_string()),
    }
}

/// Whether serving a segment to `req` prefetches the next ones: not for
/// another node of the site (the node that asked prefetches; the owners
/// of the next segments would each prefetch further, down the whole
/// playlist), nor for a prefill (it walks its list itself, under its
/// bandwidth cap).
pub fn prefetches(state: Option<&ProxyState>, req: &RequestHeader) -> bool {
    let peer = state
        .and_then(|s| s.site.as_ref())
        .is_some_and(|site| site::from_peer(req, &site.name));
    !peer && !req.headers.contains_key(site::PREFILL)
}
