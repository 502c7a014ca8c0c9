//! Country rules on routes (`geo = { allow | deny }`), by the same locator
//! the GeoDNS uses; a refused client gets 451 (RFC 7725).

use std::net::IpAddr;
use std::sync::Arc;

use edge_config::RouteGeo;

/// Where a client address is: ISO 3166-1 alpha-2, upper case.
pub type CountryLookup = Arc<dyn Fn(IpAddr) -> Option<[u8; 2]> + Send + Sync>;

/// Whether a client in `country` (`None`: unknown) is served.
pub fn admits(rule: &RouteGeo, country: Option<[u8; 2]>) -> bool {
    match country.as_ref().and_then(|c| std::str::from_utf8(c).ok()) {
        Some(c) => rule.rule.admits(c),
        None => rule.unknown_allowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_config::GeoRule;

    fn rule(r: GeoRule, unknown_allowed: bool) -> RouteGeo {
        RouteGeo {
            rule: r,
            unknown_allowed,
            body: String::new(),
        }
    }

    #[test]
    fn allow_lists_admit_only_theirs_and_deny_lists_refuse_only_theirs() {
        let allow = rule(GeoRule::Allow(vec!["DE".into(), "NL".into()]), false);
        assert!(admits(&allow, Some(*b"DE")));
        assert!(admits(&allow, Some(*b"NL")));
        assert!(!admits(&allow, Some(*b"FR")));
        assert!(!admits(&allow, None));
        let deny = rule(GeoRule::Deny(vec!["FR".into()]), true);
        assert!(!admits(&deny, Some(*b"FR")));
        assert!(admits(&deny, Some(*b"DE")));
        assert!(admits(&deny, None));
        assert!(!admits(&rule(GeoRule::Deny(vec![]), false), None));
    }
}
