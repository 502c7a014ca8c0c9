//! `[[route]]`: matches, actions and per-route policies.

use toml::de::DeValue;
use toml::Spanned;

use super::pools;
use super::{Checker, ItemAt};
use crate::model::{
    Bypass, ClientDirectives, HeaderOps, HostMatch, IgnoreQuery, PathMatch, PathRewrite, Pool,
    Retry, Route, RouteAction, RouteCache, RouteMatch, Timeouts, ValueCondition, ValueMatch,
};
use crate::raw::{RawHeaderOps, RawIgnoreQuery, RawMatch, RawRoute, RawRouteCache, RawValueMatch};
use crate::source::join_key;

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

pub(super) fn route(
    ck: &mut Checker<'_>,
    item: &Spanned<DeValue<'_>>,
    path: &str,
    pools: &[(ItemAt, Pool)],
) -> Option<(ItemAt, Route)> {
    let raw: RawRoute = ck.deser(item)?;
    let RawRoute {
        name,
        priority,
        pool,
        redirect,
        respond,
        steer,
        matcher,
        strip_prefix,
        rewrite_path,
        request_headers,
        response_headers,
        timeouts,
        retry,
        cache,
        rate_limits,
        max_body,
        auth,
        geo,
        cmcd,
    } = raw;
    let index = path
        .trim_start_matches("route[")
        .trim_end_matches(']')
        .to_string();
    let mut at = ItemAt::new(path, item.span());
    let route_name = match &name {
        Some(n) => {
            at = at.with("name", n.span());
            ck.name(n, &join_key(path, "name"))
        }
        None => Some(format!("route-{index}")),
    };

    let actions = [
        pool.is_some(),
        redirect.is_some(),
        respond.is_some(),
        steer.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if actions != 1 {
        ck.error(
            item.span(),
            path,
            if actions == 0 {
                "a route needs an action".to_string()
            } else {
                "a route has more than one action".to_string()
            },
            Some("exactly one of `pool`, `redirect`, `respond`, `steer`"),
        );
    }
    let base_pool = pool
        .as_ref()
        .and_then(|p| pools.iter().find(|(_, pl)| &pl.name == p.get_ref()))
        .map(|(_, p)| p);
    let action = if let Some(p) = &pool {
        at = at.with("pool", p.span());
        Some(RouteAction::Proxy {
            pool: p.get_ref().clone(),
        })
    } else if let Some(r) = redirect {
        let rp = join_key(path, "redirect");
        let span = r.span();
        let r = r.into_inner();
        let status = match &r.status {
            Some(s) => {
                let v = *s.get_ref();
                if [301, 302, 303, 307, 308].contains(&v) {
                    Some(v as u16)
                } else {
                    ck.error(
                        s.span(),
                        join_key(&rp, "status"),
                        format!("{v} is not a redirect status"),
                        Some("301, 302, 303, 307 or 308"),
                    );
                    None
                }
            }
            None => Some(if r.to.is_none() { 301 } else { 302 }),
        };
        if r.to.is_none() && r.scheme.is_none() {
            ck.error(
                span,
                rp.clone(),
                "a redirect needs a target",
                Some("`to = \"https://{host}{path_and_query}\"` or `scheme = \"https\"`"),
            );
        }
        let scheme = r.scheme.and_then(|s| {
            ck.choice(
                &s,
                &join_key(&rp, "scheme"),
                &[("https", "https".to_string()), ("http", "http".to_string())],
            )
        });
        let to = r.to.map(|t| {
            check_template(ck, &t, &join_key(&rp, "to"));
            t.into_inner()
        });
        status.map(|status| RouteAction::Redirect { to, scheme, status })
    } else if let Some(r) = respond {
        let rp = join_key(path, "respond");
        let r = r.into_inner();
        let status = ck.int_value(&r.status, &join_key(&rp, "status"), 100, 599);
        status.map(|status| RouteAction::Respond {
            status: status as u16,
            body: r.body.unwrap_or_default(),
            content_type: r
                .content_type
                .map(Spanned::into_inner)
                .unwrap_or_else(|| "text/plain; charset=utf-8".to_string()),
        })
    } else if let Some(st) = steer {
        at = at.with("steer", st.span());
        ck.choice(
            &st,
            &join_key(path, "steer"),
            &[("list", false), ("redirect", true)],
        )
        .map(|redirect| RouteAction::Steer { redirect })
    } else {
        None
    };

    if let Some(m) = &matcher {
        for (i, l) in m.get_ref().listeners.iter().flatten().enumerate() {
            at = at.with(format!("match.listeners[{i}]"), l.span());
        }
    }
    let matcher = matcher
        .map(|m| route_match(ck, &join_key(path, "match"), m.into_inner()))
        .unwrap_or_default();

    let path_rewrite = match (strip_prefix, rewrite_path) {
        (Some(_), Some(r)) => {
            ck.error(
                r.span(),
                join_key(path, "rewrite_path"),
                "`strip_prefix` and `rewrite_path` cannot both be set",
                None,
            );
            None
        }
        (Some(s), None) => slash(ck, &s, &join_key(path, "strip_prefix"))
            .then(|| PathRewrite::StripPrefix(s.into_inner())),
        (None, Some(r)) => slash(ck, &r, &join_key(path, "rewrite_path"))
            .then(|| PathRewrite::Replace(r.into_inner())),
        (None, None) => None,
    };

    let base_timeouts = base_pool.map_or_else(Timeouts::default, |p| p.timeouts.clone());
    let base_retry = base_pool.map_or_else(Retry::default, |p| p.retry.clone());
    let route_timeouts = timeouts.map(|t| {
        pools::timeouts(
            ck,
            &join_key(path, "timeouts"),
            t.into_inner(),
            &base_timeouts,
        )
    });
    let route_retry = retry.map(|r| pools::retry(ck, &join_key(path, "retry"), r, &base_retry));

    let request_headers = request_headers
        .map(|h| header_ops(ck, &join_key(path, "request_headers"), h.into_inner()))
        .unwrap_or_default();
    let response_headers = response_headers
        .map(|h| header_ops(ck, &join_key(path, "response_headers"), h.into_inner()))
        .unwrap_or_default();
    let cache = cache
        .map(|c| route_cache(ck, &join_key(path, "cache"), c.into_inner()))
        .unwrap_or_default();
    if cache.enabled && !matches!(action, Some(RouteAction::Proxy { .. }) | None) {
        ck.error(
            item.span(),
            join_key(path, "cache"),
            "only a route with a `pool` can cache",
            None,
        );
    }
    let mut limit_names = Vec::new();
    for (i, l) in rate_limits.iter().enumerate() {
        at = at.with(format!("rate_limits[{i}]"), l.span());
        limit_names.push(l.get_ref().clone());
    }
    let max_body = max_body.and_then(|m| ck.size_value(&m, &join_key(path, "max_body")));
    let auth = auth.and_then(|a| super::video::url_auth(ck, &join_key(path, "auth"), a));
    if let Some(g) = &geo {
        at = at.with("geo", g.span());
    }
    let geo = geo.and_then(|g| super::video::route_geo(ck, &join_key(path, "geo"), g));
    let cmcd = cmcd
        .map(|c| super::video::cmcd(c.into_inner()))
        .unwrap_or_default();

    Some((
        at,
        Route {
            name: route_name?,
            priority: priority.map_or(0, |p| *p.get_ref()),
            matcher,
            action: action?,
            path_rewrite,
            request_headers,
            response_headers,
            timeouts: route_timeouts,
            retry: route_retry,
            cache,
            rate_limits: limit_names,
            max_body,
            auth,
            geo,
            cmcd,
        },
    ))
}

fn slash(ck: &mut Checker<'_>, v: &Spanned<String>, path: &str) -> bool {
    if v.get_ref().starts_with('/') {
        true
    } else {
        ck.error(
            v.span(),
            path,
            format!("{:?} does not start with '/'", v.get_ref()),
            Some("a path such as \"/api\""),
        );
        false
    }
}

fn check_template(ck: &mut Checker<'_>, t: &Spanned<String>, path: &str) {
    const VARS: &[&str] = &["scheme", "host", "path", "query", "path_and_query"];
    let mut rest = t.get_ref().as_str();
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            ck.error(t.span(), path, "a `{` without its `}`", None);
            return;
        };
        let var = &rest[open + 1..open + close];
        if !VARS.contains(&var) {
            ck.error(
                t.span(),
                path,
                format!("unknown variable {{{var}}}"),
                Some("{scheme}, {host}, {path}, {query} or {path_and_query}"),
            );
        }
        rest = &rest[open + close + 1..];
    }
}

fn route_match(ck: &mut Checker<'_>, p: &str, raw: RawMatch) -> RouteMatch {
    let RawMatch {
        listeners,
        host,
        path_prefix,
        path_exact,
        path_regex,
        methods,
        headers,
        cookies,
        query,
    } = raw;
    let mut hosts = Vec::new();
    if let Some(h) = host {
        for name in &h.get_ref().0 {
            let lower = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(suffix) = lower.strip_prefix("*.") {
                if super::fields::dns_name_ok(suffix) && !suffix.contains('*') {
                    hosts.push(HostMatch::Suffix(format!(".{suffix}")));
                    continue;
                }
            } else if (super::fields::dns_name_ok(&lower) && !lower.contains('*'))
                || lower.parse::<std::net::IpAddr>().is_ok()
            {
                hosts.push(HostMatch::Exact(lower));
                continue;
            }
            ck.error(
                h.span(),
                join_key(p, "host"),
                format!("{name:?} is not a host name"),
                Some(
                    "a host such as \"video.example.com\" or a wildcard such as \"*.example.com\"",
                ),
            );
        }
    }
    let path_kinds = [&path_prefix, &path_exact, &path_regex]
        .iter()
        .filter(|x| x.is_some())
        .count();
    let path = if path_kinds > 1 {
        let span = path_regex
            .as_ref()
            .or(path_exact.as_ref())
            .map_or(0..0, |s| s.span());
        ck.error(
            span,
            p,
            "more than one path condition",
            Some("one of `path_prefix`, `path_exact`, `path_regex`"),
        );
        None
    } else if let Some(v) = path_prefix {
        slash(ck, &v, &join_key(p, "path_prefix")).then(|| PathMatch::Prefix(v.into_inner()))
    } else if let Some(v) = path_exact {
        slash(ck, &v, &join_key(p, "path_exact")).then(|| PathMatch::Exact(v.into_inner()))
    } else if let Some(v) = path_regex {
        ck.regex(&v, &join_key(p, "path_regex"))
            .map(PathMatch::Regex)
    } else {
        None
    };
    let mut method_list = Vec::new();
    for (i, m) in methods.unwrap_or_default().iter().enumerate() {
        let upper = m.get_ref().to_ascii_uppercase();
        if METHODS.contains(&upper.as_str()) {
            method_list.push(upper);
        } else {
            ck.error(
                m.span(),
                format!("{p}.methods[{i}]"),
                format!("unknown method {:?}", m.get_ref()),
                Some(&METHODS.join(", ")),
            );
        }
    }
    RouteMatch {
        listeners: listeners
            .unwrap_or_default()
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
        hosts,
        path,
        methods: method_list,
        headers: value_matches(ck, &join_key(p, "headers"), headers, true),
        cookies: value_matches(ck, &join_key(p, "cookies"), cookies, false),
        query: value_matches(ck, &join_key(p, "query"), query, false),
    }
}

fn value_matches(
    ck: &mut Checker<'_>,
    p: &str,
    raw: Vec<Spanned<RawValueMatch>>,
    header: bool,
) -> Vec<ValueMatch> {
    let mut out = Vec::new();
    for (i, m) in raw.into_iter().enumerate() {
        let mp = format!("{p}[{i}]");
        let span = m.span();
        let m = m.into_inner();
        let name_ok = if header {
            header_name_ok(m.name.get_ref())
        } else {
            !m.name.get_ref().is_empty()
        };
        if !name_ok {
            ck.error(
                m.name.span(),
                join_key(&mp, "name"),
                format!("{:?} is not a valid name", m.name.get_ref()),
                Some(if header {
                    "a header name"
                } else {
                    "a non-empty name"
                }),
            );
            continue;
        }
        let conditions = [m.equals.is_some(), m.regex.is_some(), m.present.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if conditions > 1 {
            ck.error(
                span,
                mp,
                "more than one condition",
                Some("one of `equals`, `regex`, `present`"),
            );
            continue;
        }
        let condition = if let Some(e) = m.equals {
            Some(ValueCondition::Equals(e.into_inner()))
        } else if let Some(r) = m.regex {
            ck.regex(&r, &join_key(&mp, "regex"))
                .map(ValueCondition::Regex)
        } else if let Some(present) = m.present {
            Some(if *present.get_ref() {
                ValueCondition::Present
            } else {
                ValueCondition::Absent
            })
        } else {
            Some(ValueCondition::Present)
        };
        if let Some(condition) = condition {
            let name = if header {
                m.name.into_inner().to_ascii_lowercase()
            } else {
                m.name.into_inner()
            };
            out.push(ValueMatch { name, condition });
        }
    }
    out
}

pub(super) fn header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

fn header_value_ok(value: &str) -> bool {
    value
        .chars()
        .all(|c| c == '\t' || (c >= ' ' && c != '\x7f'))
}

fn header_ops(ck: &mut Checker<'_>, p: &str, raw: RawHeaderOps) -> HeaderOps {
    let RawHeaderOps { add, set, remove } = raw;
    let mut ops = HeaderOps::default();
    for (kind, map, out) in [("add", add, &mut ops.add), ("set", set, &mut ops.set)] {
        for (name, value) in map {
            let kp = join_key(&join_key(p, kind), &name);
            if !header_name_ok(&name) {
                ck.error(
                    value.span(),
                    kp,
                    format!("{name:?} is not a header name"),
                    Some("a header name such as \"X-Edge\""),
                );
                continue;
            }
            if !header_value_ok(value.get_ref()) {
                ck.error(
                    value.span(),
                    kp,
                    "a header value cannot hold control characters or line breaks",
                    None,
                );
                continue;
            }
            out.push((name.to_ascii_lowercase(), value.into_inner()));
        }
    }
    for (i, name) in remove.into_iter().enumerate() {
        if header_name_ok(name.get_ref()) {
            ops.remove.push(name.into_inner().to_ascii_lowercase());
        } else {
            ck.error(
                name.span(),
                format!("{p}.remove[{i}]"),
                format!("{:?} is not a header name", name.get_ref()),
                Some("a header name"),
            );
        }
    }
    ops
}

fn route_cache(ck: &mut Checker<'_>, p: &str, raw: RawRouteCache) -> RouteCache {
    let RawRouteCache {
        enabled,
        ttl,
        ignore_query,
        key_headers,
        stale_while_revalidate,
        stale_if_error,
        store_set_cookie,
        store_authorization,
        slice,
        prefetch,
        bypass,
        client_directives,
        trusted_clients,
        vary_normalize,
        accept_encoding,
    } = raw;
    let d = RouteCache::default();
    let client_directives = match client_directives.as_ref().map(|s| s.get_ref().as_str()) {
        None => d.client_directives,
        Some("all") => ClientDirectives::All,
        Some("trusted") => ClientDirectives::Trusted,
        Some("none") => ClientDirectives::None,
        Some(other) => {
            let span = client_directives
                .as_ref()
                .map(|s| s.span())
                .unwrap_or_default();
            ck.error(
                span,
                format!("{p}.client_directives"),
                format!("{other:?} is not a choice"),
                Some("\"all\", \"trusted\" or \"none\""),
            );
            d.client_directives
        }
    };
    let trusted_clients = trusted_clients
        .iter()
        .enumerate()
        .filter_map(|(i, n)| ck.ip_net(n, &format!("{p}.trusted_clients[{i}]")))
        .collect();
    let vary_normalize = match vary_normalize {
        Some(list) => super::cache::header_names(ck, &format!("{p}.vary_normalize"), list),
        None => d.vary_normalize,
    };
    let accept_encoding =
        super::cache::header_names(ck, &format!("{p}.accept_encoding"), accept_encoding);
    let bypass = bypass
        .into_iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let parsed = match b.get_ref().split_once(':') {
                Some(("header", n)) if header_name_ok(n) => {
                    Some(Bypass::Header(n.to_ascii_lowercase()))
                }
                Some(("cookie", n)) if !n.is_empty() => Some(Bypass::Cookie(n.to_string())),
                Some(("query", n)) if !n.is_empty() => Some(Bypass::Query(n.to_string())),
                _ => None,
            };
            if parsed.is_none() {
                ck.error(
                    b.span(),
                    format!("{p}.bypass[{i}]"),
                    format!("{:?} is not a bypass condition", b.get_ref()),
                    Some("\"header:<name>\", \"cookie:<name>\" or \"query:<name>\""),
                );
            }
            parsed
        })
        .collect();
    let mut headers = Vec::new();
    for (i, h) in key_headers.into_iter().enumerate() {
        if header_name_ok(h.get_ref()) {
            headers.push(h.into_inner().to_ascii_lowercase());
        } else {
            ck.error(
                h.span(),
                format!("{p}.key_headers[{i}]"),
                format!("{:?} is not a header name", h.get_ref()),
                Some("a header name"),
            );
        }
    }
    RouteCache {
        // A [route.cache] table turns caching on unless it says otherwise.
        enabled: enabled.unwrap_or(true),
        ttl: ck.opt_duration(&ttl, p, "ttl"),
        ignore_query: match ignore_query.map(Spanned::into_inner) {
            None | Some(RawIgnoreQuery::All(false)) => IgnoreQuery::None,
            Some(RawIgnoreQuery::All(true)) => IgnoreQuery::All,
            Some(RawIgnoreQuery::Names(names)) => IgnoreQuery::Names(names),
        },
        key_headers: headers,
        stale_while_revalidate: ck.opt_duration(
            &stale_while_revalidate,
            p,
            "stale_while_revalidate",
        ),
        stale_if_error: ck.opt_duration(&stale_if_error, p, "stale_if_error"),
        store_set_cookie: store_set_cookie.unwrap_or(false),
        store_authorization: store_authorization.unwrap_or(false),
        slice: slice.unwrap_or(true),
        prefetch: ck
            .opt_int(&prefetch, p, "prefetch", 0, 32)
            .map(|n| n as u32),
        bypass,
        client_directives,
        trusted_clients,
        vary_normalize,
        accept_encoding,
    }
}
