//! Checks across sections: unique names, ports claimed twice, references to
//! pools and rate limits that must exist.

use std::net::SocketAddr;

use super::{Checker, Document, ItemAt};
use crate::model::{
    Algorithm, Config, HashKey, LimitScope, Listener, ListenerKind, Pool, RateLimit, Route,
    RouteAction,
};

pub(super) fn check(
    ck: &mut Checker<'_>,
    doc: &Document<'_>,
    listeners: &[(ItemAt, Listener)],
    pools: &[(ItemAt, Pool)],
    routes: &[(ItemAt, Route)],
    rate_limits: &[(ItemAt, RateLimit)],
    config: &Config,
) {
    unique(
        ck,
        listeners.iter().map(|(at, l)| (at, l.name.as_str())),
        "listener",
    );
    unique(
        ck,
        pools.iter().map(|(at, p)| (at, p.name.as_str())),
        "pool",
    );
    acme(ck, listeners);
    unique(
        ck,
        routes.iter().map(|(at, r)| (at, r.name.as_str())),
        "route",
    );
    unique(
        ck,
        rate_limits.iter().map(|(at, r)| (at, r.name.as_str())),
        "rate limit",
    );

    ports(ck, listeners, config);

    let pool_exists = |name: &str| pools.iter().any(|(_, p)| p.name == name);
    let pool_names = || -> String {
        let names: Vec<String> = pools
            .iter()
            .map(|(_, p)| format!("\"{}\"", p.name))
            .collect();
        if names.is_empty() {
            "a pool defined in [[pool]] (there are none)".into()
        } else {
            format!("one of {}", names.join(", "))
        }
    };
    for (at, l) in listeners {
        if let ListenerKind::Tcp(tcp) = &l.kind {
            if !pool_exists(&tcp.pool) {
                let (span, path) = at.key("pool");
                ck.error(
                    span,
                    path,
                    format!("unknown pool {:?}", tcp.pool),
                    Some(&pool_names()),
                );
            }
            let algorithm = pools
                .iter()
                .find(|(_, p)| p.name == tcp.pool)
                .map(|(_, p)| &p.algorithm);
            let l4 = |a: &Algorithm| match a {
                Algorithm::Cookie(_) => false,
                Algorithm::ConsistentHash { key } => *key == HashKey::ClientIp,
                _ => true,
            };
            if let Some(a) = algorithm.filter(|a| !l4(a)) {
                let (span, path) = at.key("pool");
                ck.error(
                    span,
                    path,
                    format!(
                        "pool {:?} balances by {}, which needs HTTP requests; a tcp listener sees only connections",
                        tcp.pool,
                        a.name()
                    ),
                    Some("a pool whose algorithm is round_robin, weighted_round_robin, random, least_connections, p2c_ewma, source_ip_hash or consistent_hash on client_ip"),
                );
            }
        }
    }
    for (at, r) in routes {
        if let RouteAction::Proxy { pool } = &r.action {
            if !pool_exists(pool) {
                let (span, path) = at.key("pool");
                ck.error(
                    span,
                    path,
                    format!("unknown pool {pool:?}"),
                    Some(&pool_names()),
                );
            }
        }
        for (i, name) in r.matcher.listeners.iter().enumerate() {
            if !listeners.iter().any(|(_, l)| &l.name == name) {
                let (span, path) = at.key(&format!("match.listeners[{i}]"));
                let names: Vec<String> = listeners
                    .iter()
                    .map(|(_, l)| format!("\"{}\"", l.name))
                    .collect();
                ck.error(
                    span,
                    path,
                    format!("unknown listener {name:?}"),
                    Some(&format!("one of {}", names.join(", "))),
                );
            }
        }
        let sites = config.dns.as_ref().map_or(0, |d| d.sites.len());
        if matches!(r.action, RouteAction::Steer { .. }) && sites == 0 {
            let (span, path) = at.key("steer");
            ck.error(
                span,
                path,
                "a steer route ranks the [[dns.site]]s, and there are none",
                Some("[[dns.site]]s with a health URL that is each node's /site/state"),
            );
        }
        let locator = config.dns.as_ref().map(|d| &d.locator);
        let located =
            locator.is_some_and(|l| !l.cidrs.is_empty() || l.csv.is_some() || l.mmdb.is_some());
        if r.geo.is_some() && !located {
            let (span, path) = at.key("geo");
            ck.error(
                span,
                path,
                "a country rule needs a client's country, and [dns.locator] has no table",
                Some("[dns.locator] with `cidr` entries (each `country = \"..\"`), a `csv` file or an `mmdb` database"),
            );
        }
        for (i, limit) in r.rate_limits.iter().enumerate() {
            if !rate_limits.iter().any(|(_, l)| &l.name == limit) {
                let (span, path) = at.key(&format!("rate_limits[{i}]"));
                let names: Vec<String> = rate_limits
                    .iter()
                    .map(|(_, l)| format!("\"{}\"", l.name))
                    .collect();
                ck.error(
                    span,
                    path,
                    format!("unknown rate limit {limit:?}"),
                    Some(&if names.is_empty() {
                        "a [[rate_limit]] name (there are none)".to_string()
                    } else {
                        format!("one of {}", names.join(", "))
                    }),
                );
            }
        }
    }
    if let Some(site) = &config.site {
        if let Some(shield) = &site.shield {
            if !pool_exists(shield) {
                // The `shield` value itself, else the section.
                let site = doc.get("site");
                let span = site
                    .and_then(|v| match v.get_ref() {
                        toml::de::DeValue::Table(t) => t.get("shield").map(|s| s.span()),
                        _ => None,
                    })
                    .or_else(|| site.map(|v| v.span()))
                    .unwrap_or(0..0);
                ck.error(
                    span,
                    "site.shield",
                    format!("unknown pool {shield:?}"),
                    Some(&pool_names()),
                );
            }
        }
    }
    if config.redis.is_none() {
        for (at, l) in rate_limits {
            if l.scope == LimitScope::Cluster {
                let (span, path) = at.key("scope");
                ck.error(
                    span,
                    path,
                    "a cluster-scope limit is counted in Redis, and there is no [redis] section",
                    Some("[redis] url = \"redis://127.0.0.1:6379\""),
                );
            }
        }
    }
    let has_dns_listener = listeners
        .iter()
        .any(|(_, l)| matches!(l.kind, ListenerKind::Dns));
    match (&config.dns, has_dns_listener) {
        // A [dns] with no zones is only a locator (for routes' `geo`).
        (Some(d), false) if !d.zones.is_empty() => {
            let span = doc.get("dns").map_or(0..0, |v| v.span());
            ck.error(
                span,
                "dns",
                "a [dns] section is served by a listener with kind = \"dns\", and there is none",
                Some("[[listener]] kind = \"dns\" address = \"0.0.0.0:53\""),
            );
        }
        (None, true) => {
            for (at, l) in listeners {
                if matches!(l.kind, ListenerKind::Dns) {
                    ck.error(
                        at.span.clone(),
                        at.path.clone(),
                        "a dns listener needs a [dns] section with zones to serve",
                        None,
                    );
                }
            }
        }
        _ => {}
    }
}

fn unique<'a>(
    ck: &mut Checker<'_>,
    items: impl Iterator<Item = (&'a ItemAt, &'a str)>,
    what: &str,
) {
    let mut seen: Vec<(&str, &ItemAt)> = Vec::new();
    for (at, name) in items {
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
            let (span, path) = at.key("name");
            ck.error(
                span,
                path,
                format!("{what} name {name:?} is already used by {}", first.path),
                Some(&format!("a unique {what} name")),
            );
        } else {
            seen.push((name, at));
        }
    }
}

/// Two sockets collide when they share a port and an address (the
/// unspecified address overlaps every address of its family).
fn collide(a: &SocketAddr, b: &SocketAddr) -> bool {
    if a.port() == 0 || b.port() == 0 || a.port() != b.port() {
        return false;
    }
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}

/// `tls.acme`: `http-01` is answered by an `http` listener, so one must
/// exist; a name is obtained by one listener only (two would each order
/// the same certificate).
fn acme(ck: &mut Checker<'_>, listeners: &[(ItemAt, Listener)]) {
    let has_http = listeners
        .iter()
        .any(|(_, l)| matches!(l.kind, ListenerKind::Http(_)));
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (at, l) in listeners {
        let ListenerKind::Https(h) = &l.kind else {
            continue;
        };
        let Some(acme) = &h.acme else { continue };
        let path = format!("{}.tls.acme", at.path);
        if acme.challenge == crate::model::AcmeChallenge::Http01 && !has_http {
            ck.error(
                at.span.clone(),
                format!("{path}.challenge"),
                "challenge \"http-01\" is answered on an http listener, and there is none",
                Some("an [[listener]] with kind = \"http\" on port 80, or challenge = \"tls-alpn-01\""),
            );
        }
        for d in &acme.domains {
            if let Some((_, other)) = seen.iter().find(|(name, _)| name == d) {
                ck.error(
                    at.span.clone(),
                    format!("{path}.domains"),
                    format!("{d:?} is already obtained by listener {other:?}"),
                    Some("each name in one listener's tls.acme"),
                );
            } else {
                seen.push((d, &l.name));
            }
        }
    }
}

fn ports(ck: &mut Checker<'_>, listeners: &[(ItemAt, Listener)], config: &Config) {
    for (i, (at, l)) in listeners.iter().enumerate() {
        if let Some((first_at, first)) = listeners[..i]
            .iter()
            .find(|(_, o)| collide(&o.address, &l.address))
        {
            let (span, path) = at.key("address");
            ck.error(
                span,
                path,
                format!(
                    "port {} is already claimed by {} ({})",
                    l.address.port(),
                    first_at.path,
                    first.address
                ),
                Some("a port no other listener uses"),
            );
        }
        if collide(&config.admin.listen, &l.address) {
            let (span, path) = at.key("address");
            ck.error(
                span,
                path,
                format!(
                    "port {} is already claimed by admin.listen ({})",
                    l.address.port(),
                    config.admin.listen
                ),
                Some("a port no other listener uses"),
            );
        }
    }
}
