//! `[[rate_limit]]` and `[redis]`.

use std::time::Duration;

use toml::de::DeValue;
use toml::Spanned;

use super::fields::Choice;
use super::{Checker, ItemAt};
use crate::model::{LimitKey, LimitMode, LimitScope, RateLimit, Redis, Secret};
use crate::raw::{RawRateLimit, RawRedis};
use crate::source::join_key;

pub(super) fn rate_limit(
    ck: &mut Checker<'_>,
    item: &Spanned<DeValue<'_>>,
    path: &str,
) -> Option<(ItemAt, RateLimit)> {
    let raw: RawRateLimit = ck.deser(item)?;
    let RawRateLimit {
        name,
        key,
        rate,
        burst,
        scope,
        mode,
        exempt,
        ipv4_prefix,
        ipv6_prefix,
        max_keys,
    } = raw;
    let mut at = ItemAt::new(path, item.span()).with("name", name.span());
    let limit_name = ck.name(&name, &join_key(path, "name"));
    let mut keys = Vec::new();
    for (i, k) in key.iter().enumerate() {
        let kp = format!("{path}.key[{i}]");
        let part = match ck.word_or_part(
            k,
            &kp,
            &["client_ip", "client_prefix", "route"],
            &["header"],
        ) {
            Some(Choice::Word(w)) if w == "client_ip" => LimitKey::ClientIp,
            Some(Choice::Word(w)) if w == "client_prefix" => LimitKey::ClientPrefix,
            Some(Choice::Word(_)) => LimitKey::Route,
            Some(Choice::Part(_, h)) => {
                if !super::routes::header_name_ok(&h) {
                    ck.error(
                        k.span(),
                        kp,
                        format!("{h:?} is not a header name"),
                        Some("a header name such as \"X-Api-Key\""),
                    );
                    continue;
                }
                LimitKey::Header(h.to_ascii_lowercase())
            }
            None => continue,
        };
        if keys.contains(&part) {
            ck.error(
                k.span(),
                format!("{path}.key[{i}]"),
                "this key part is listed twice",
                None,
            );
            continue;
        }
        keys.push(part);
    }
    let rate_value = ck.rate_value(&rate, &join_key(path, "rate"));
    let scope_value = match &scope {
        Some(s) => ck.choice(
            s,
            &join_key(path, "scope"),
            &[
                ("local", LimitScope::Local),
                ("cluster", LimitScope::Cluster),
            ],
        )?,
        None => LimitScope::Local,
    };
    if let Some(s) = &scope {
        at = at.with("scope", s.span());
    }
    let mode = match &mode {
        Some(m) => ck.choice(
            m,
            &join_key(path, "mode"),
            &[
                ("enforce", LimitMode::Enforce),
                ("log_only", LimitMode::LogOnly),
            ],
        )?,
        None => LimitMode::Enforce,
    };
    let mut exempt_nets = Vec::new();
    for (i, e) in exempt.iter().enumerate() {
        if let Some(net) = ck.ip_net(e, &format!("{path}.exempt[{i}]")) {
            exempt_nets.push(net);
        }
    }
    let uses_prefix = keys.contains(&LimitKey::ClientPrefix);
    if !uses_prefix {
        let why = "only applies when `key` includes \"client_prefix\"";
        ck.not_here(&ipv4_prefix, path, "ipv4_prefix", why);
        ck.not_here(&ipv6_prefix, path, "ipv6_prefix", why);
    }
    Some((
        at,
        RateLimit {
            name: limit_name?,
            key: keys,
            rate: rate_value?,
            burst: ck.int(&burst, path, "burst", 1, 10_000_000, 1) as u32,
            scope: scope_value,
            mode,
            exempt: exempt_nets,
            ipv4_prefix: ck.int(&ipv4_prefix, path, "ipv4_prefix", 1, 32, 24) as u8,
            ipv6_prefix: ck.int(&ipv6_prefix, path, "ipv6_prefix", 1, 128, 56) as u8,
            max_keys: ck.int(&max_keys, path, "max_keys", 1, 100_000_000, 100_000) as usize,
        },
    ))
}

pub(super) fn redis(ck: &mut Checker<'_>, value: &Spanned<DeValue<'_>>) -> Option<Redis> {
    let raw: RawRedis = ck.deser(value)?;
    let RawRedis {
        url,
        timeout,
        key_prefix,
    } = raw;
    let p = "redis";
    let scheme_ok = url.get_ref().starts_with("redis://") || url.get_ref().starts_with("rediss://");
    if !scheme_ok {
        ck.error(
            url.span(),
            join_key(p, "url"),
            "not a Redis URL",
            Some("redis://host:port[/db] or rediss://…"),
        );
        return None;
    }
    Some(Redis {
        url: Secret::new(url.into_inner()),
        timeout: ck.positive_duration(&timeout, p, "timeout", Duration::from_millis(50)),
        key_prefix: key_prefix.unwrap_or_else(|| "edge:rl:".to_string()),
    })
}
