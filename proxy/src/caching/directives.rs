//! Request `Cache-Control` directives (RFC 9111 §5.2.1), as the route's
//! `client_directives` allows:
//!
//! ```text
//! only-if-cached  nothing stored is acceptable: 504, the origin untouched
//! max-stale[=N]   a stale response (up to N s past its lifetime) is served as is,
//!                 unless the origin forbade stale (no-cache, must-revalidate,
//!                 proxy-revalidate, s-maxage)
//! no-store        the response to this request is not stored
//! no-cache        revalidate before using what is stored       } trusted clients
//! max-age=N       only a response at most N s old is used      } only, by default:
//! min-fresh=N     only one fresh for N s more is used          } they add origin load
//! ```

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use edge_config::{ClientDirectives, RouteCache};
use pingora_cache::cache_control::{CacheControl, DirectiveKey};
use pingora_cache::{CacheMeta, ForcedFreshness};
use pingora_http::RequestHeader;

/// The directives of one request that edge honours.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestDirectives {
    pub only_if_cached: bool,
    /// `Some(u64::MAX)`: any staleness.
    pub max_stale: Option<u64>,
    pub no_store: bool,
    pub no_cache: bool,
    pub max_age: Option<u64>,
    pub min_fresh: Option<u64>,
}

fn seconds(cc: &CacheControl, name: &str) -> Option<u64> {
    let v = cc
        .directives
        .get(&DirectiveKey::from_lowercase(name))?
        .as_ref()?;
    v.parse_as_delta_seconds().ok().map(u64::from)
}

impl RequestDirectives {
    /// Reads `req`'s directives; `client` is its address (for
    /// `trusted_clients`).
    pub fn of(req: &RequestHeader, route: &RouteCache, client: Option<IpAddr>) -> Self {
        if route.client_directives == ClientDirectives::None {
            return Self::default();
        }
        // Most requests carry none: asked with the typed name first
        // (pingora's lookup by `&str` parses the name each time, about 200
        // instructions per RAM hit).
        // Walked for, not probed: `names::values` (issue 17).
        if crate::names::values(&req.headers, http::header::CACHE_CONTROL)
            .next()
            .is_none()
        {
            return Self::default();
        }
        let Some(cc) = CacheControl::from_req_headers(req) else {
            return Self::default();
        };
        let trusted = match route.client_directives {
            ClientDirectives::All => true,
            ClientDirectives::Trusted => {
                client.is_some_and(|ip| route.trusted_clients.iter().any(|n| n.contains(&ip)))
            }
            ClientDirectives::None => false,
        };
        let max_stale = if cc.has_key("max-stale") {
            // A value that is not delta-seconds is no limit at all.
            Some(seconds(&cc, "max-stale").unwrap_or(u64::MAX))
        } else {
            None
        };
        let mut d = Self {
            only_if_cached: cc.only_if_cached(),
            max_stale,
            no_store: cc.no_store(),
            ..Self::default()
        };
        if trusted {
            d.no_cache = cc.has_key("no-cache");
            d.max_age = seconds(&cc, "max-age");
            d.min_fresh = seconds(&cc, "min-fresh");
        }
        d
    }

    /// Whether a stored response may need revalidation because of this
    /// request even when fresh (the fast path must not answer).
    pub fn may_force_revalidation(&self) -> bool {
        self.no_cache || self.max_age.is_some() || self.min_fresh.is_some()
    }

    /// What these directives do to a stored response (`meta`, fresh or
    /// not); `origin_allows_stale` is false when the stored response
    /// forbids serving it stale.
    pub fn on_hit(
        &self,
        meta: &CacheMeta,
        is_fresh: bool,
        origin_allows_stale: bool,
        now: SystemTime,
    ) -> Option<ForcedFreshness> {
        // Sub-second: `max-age=0` (a browser's reload) takes only an age of 0.
        let age = now.duration_since(meta.epoch()).unwrap_or_default();
        let fresh_for = meta
            .fresh_until()
            .duration_since(now)
            .map_or(0, |d| d.as_secs());
        if self.no_cache
            || self.max_age.is_some_and(|m| age > Duration::from_secs(m))
            || (is_fresh && self.min_fresh.is_some_and(|m| fresh_for < m))
        {
            return Some(ForcedFreshness::ForceExpired);
        }
        if !is_fresh && origin_allows_stale {
            let stale_for = now
                .duration_since(meta.fresh_until())
                .map_or(0, |d| d.as_secs());
            if self.max_stale.is_some_and(|m| stale_for <= m) {
                return Some(ForcedFreshness::ForceFresh);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cc: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        r.insert_header("cache-control", cc).unwrap();
        r
    }

    fn route(mode: ClientDirectives, trusted: &[&str]) -> RouteCache {
        RouteCache {
            enabled: true,
            client_directives: mode,
            trusted_clients: trusted.iter().map(|n| n.parse().unwrap()).collect(),
            ..RouteCache::default()
        }
    }

    #[test]
    fn untrusted_clients_cannot_add_origin_load() {
        let r = route(ClientDirectives::Trusted, &["10.0.0.0/8"]);
        let outsider = Some("192.0.2.1".parse().unwrap());
        let insider = Some("10.1.2.3".parse().unwrap());
        let all = "no-cache, max-age=0, min-fresh=5, only-if-cached, no-store, max-stale=9";
        let d = RequestDirectives::of(&req(all), &r, outsider);
        assert_eq!(
            d,
            RequestDirectives {
                only_if_cached: true,
                max_stale: Some(9),
                no_store: true,
                ..Default::default()
            }
        );
        let d = RequestDirectives::of(&req(all), &r, insider);
        assert!(d.no_cache && d.max_age == Some(0) && d.min_fresh == Some(5));
        let d = RequestDirectives::of(&req(all), &route(ClientDirectives::All, &[]), outsider);
        assert!(d.no_cache);
        let d = RequestDirectives::of(&req(all), &route(ClientDirectives::None, &[]), insider);
        assert_eq!(d, RequestDirectives::default());
        let d = RequestDirectives::of(&req("max-stale"), &r, outsider);
        assert_eq!(d.max_stale, Some(u64::MAX));
        let d = RequestDirectives::of(
            &req("max-age=abc, MAX-AGE=5"),
            &route(ClientDirectives::All, &[]),
            None,
        );
        assert!(!d.may_force_revalidation() || d.max_age.is_some());
    }

    #[test]
    fn hits_follow_age_freshness_and_staleness() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut meta = CacheMeta::new(
            now + Duration::from_secs(10),
            now - Duration::from_secs(50),
            0,
            0,
            pingora_http::ResponseHeader::build(200, None).unwrap(),
        );
        meta.set_epoch_override(now - Duration::from_secs(50));
        let d = |s: &str| RequestDirectives::of(&req(s), &route(ClientDirectives::All, &[]), None);
        assert_eq!(d("max-age=60").on_hit(&meta, true, true, now), None);
        assert_eq!(
            d("max-age=49").on_hit(&meta, true, true, now),
            Some(ForcedFreshness::ForceExpired)
        );
        assert_eq!(
            d("min-fresh=11").on_hit(&meta, true, true, now),
            Some(ForcedFreshness::ForceExpired)
        );
        assert_eq!(d("min-fresh=10").on_hit(&meta, true, true, now), None);
        let later = now + Duration::from_secs(40);
        assert_eq!(
            d("max-stale=30").on_hit(&meta, false, true, later),
            Some(ForcedFreshness::ForceFresh)
        );
        assert_eq!(d("max-stale=29").on_hit(&meta, false, true, later), None);
        assert_eq!(d("max-stale").on_hit(&meta, false, false, later), None);
    }
}
