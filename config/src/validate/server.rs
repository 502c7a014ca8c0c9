//! `[server]`, `[admin]`, `[site]`.

use toml::de::DeValue;
use toml::Spanned;

use super::Checker;
use std::time::Duration;

use crate::model::{
    AccessLogFormat, Admin, AdminToken, Capacity, DigestSettings, HostPort, KeepCopies, LogFormat,
    Otlp, Peer, Secret, Server, ShieldFallback, Site, Timeouts,
};
use crate::raw::{RawAdmin, RawOtlp, RawServer, RawSite};
use crate::source::join_key;
use crate::units::Scalar;

pub(super) fn server(ck: &mut Checker<'_>, value: Option<&Spanned<DeValue<'_>>>) -> Server {
    let defaults = Server::default();
    let Some(value) = value else { return defaults };
    let Some(raw) = ck.deser::<RawServer>(value) else {
        return defaults;
    };
    let RawServer {
        threads,
        grace_period,
        shutdown_delay,
        log_format,
        access_log,
        access_log_format,
        upstream_keepalive,
        work_stealing,
        fast_paths,
        otlp,
    } = raw;
    let p = "server";
    let otlp = otlp.and_then(|o| otlp_settings(ck, &join_key(p, "otlp"), o));
    let log_format = log_format
        .and_then(|v| {
            ck.choice(
                &v,
                &join_key(p, "log_format"),
                &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            )
        })
        .unwrap_or(defaults.log_format);
    let access_log_format = access_log_format.and_then(|f| {
        let key = join_key(p, "access_log_format");
        if log_format == LogFormat::Json {
            ck.error(
                f.span(),
                key,
                "a template is for text logs; JSON lines carry every field by name",
                Some("log_format = \"text\", or no access_log_format"),
            );
            return None;
        }
        match AccessLogFormat::parse(f.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                ck.error(f.span(), key, e, Some(&AccessLogFormat::expected()));
                None
            }
        }
    });
    Server {
        threads: ck.int(&threads, p, "threads", 1, 1024, defaults.threads as i64) as usize,
        grace_period: ck.duration(&grace_period, p, "grace_period", defaults.grace_period),
        shutdown_delay: ck.duration(
            &shutdown_delay,
            p,
            "shutdown_delay",
            defaults.shutdown_delay,
        ),
        log_format,
        access_log: access_log.unwrap_or(defaults.access_log),
        access_log_format,
        upstream_keepalive: ck.int(
            &upstream_keepalive,
            p,
            "upstream_keepalive",
            0,
            1_000_000,
            defaults.upstream_keepalive as i64,
        ) as usize,
        work_stealing: work_stealing.unwrap_or(defaults.work_stealing),
        fast_paths: fast_paths.unwrap_or(defaults.fast_paths),
        otlp,
    }
}

/// `server.otlp`: an http(s) endpoint, a ratio in [0, 1], headers that are
/// valid HTTP field names and values (RFC 9110 §5.1, §5.5).
fn otlp_settings(ck: &mut Checker<'_>, p: &str, raw: Spanned<RawOtlp>) -> Option<Otlp> {
    let raw = raw.into_inner();
    let mut ok = true;
    match url::Url::parse(raw.endpoint.get_ref()) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            ok = false;
            ck.error(
                raw.endpoint.span(),
                join_key(p, "endpoint"),
                "an endpoint URL with a user name or password",
                Some("credentials in headers, such as headers = { authorization = \"Basic …\" } (they are shown redacted)"),
            );
        }
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
        _ => {
            ok = false;
            ck.error(
                raw.endpoint.span(),
                join_key(p, "endpoint"),
                format!("{:?} is not an http or https URL", raw.endpoint.get_ref()),
                Some("the collector's OTLP/HTTP traces URL, such as \"http://127.0.0.1:4318/v1/traces\""),
            );
        }
    }
    let sample_ratio = match &raw.sample_ratio {
        None => 1.0,
        Some(v) => {
            let value = match v.get_ref() {
                Scalar::Int(i) => Some(*i as f64),
                Scalar::Float(f) => Some(*f),
                _ => None,
            };
            match value {
                Some(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    ok = false;
                    ck.error(
                        v.span(),
                        join_key(p, "sample_ratio"),
                        "not a ratio from 0 to 1",
                        Some("a number such as 0.01 (one new trace in a hundred), 0 or 1"),
                    );
                    1.0
                }
            }
        }
    };
    let service_name = match &raw.service_name {
        Some(n) if n.get_ref().trim().is_empty() => {
            ok = false;
            ck.error(
                n.span(),
                join_key(p, "service_name"),
                "an empty name",
                Some("a name such as \"edge\""),
            );
            String::new()
        }
        Some(n) => n.get_ref().clone(),
        None => "edge".to_string(),
    };
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let key = join_key(&join_key(p, "headers"), name);
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let value_ok = value
            .get_ref()
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
        if !name_ok {
            ok = false;
            ck.error(
                value.span(),
                key,
                format!("{name:?} is not an HTTP field name"),
                Some("letters, digits and !#$%&'*+-.^_`|~"),
            );
        } else if !value_ok {
            ok = false;
            ck.error(
                value.span(),
                key,
                "the value holds a control character or a byte outside ASCII",
                Some("visible ASCII, spaces and tabs"),
            );
        } else if headers
            .iter()
            .any(|(n, _): &(String, Secret)| n.eq_ignore_ascii_case(name))
        {
            ok = false;
            ck.error(
                value.span(),
                key,
                format!("{name:?} is set twice (field names are case-insensitive)"),
                Some("each header once"),
            );
        } else {
            headers.push((
                name.to_ascii_lowercase(),
                Secret::new(value.get_ref().clone()),
            ));
        }
    }
    let timeout = match &raw.timeout {
        Some(_) => ck.positive_duration(&raw.timeout, p, "timeout", Duration::from_secs(10)),
        None => Duration::from_secs(10),
    };
    let ca = raw
        .ca
        .as_ref()
        .map(|c| ck.existing_file(c, &join_key(p, "ca"), "CA certificate file"));
    ok.then(|| Otlp {
        endpoint: raw.endpoint.into_inner(),
        service_name,
        sample_ratio,
        headers,
        timeout,
        ca,
    })
}

pub(super) fn admin(ck: &mut Checker<'_>, value: Option<&Spanned<DeValue<'_>>>) -> Admin {
    let defaults = Admin::default();
    let Some(value) = value else { return defaults };
    let Some(raw) = ck.deser::<RawAdmin>(value) else {
        return defaults;
    };
    let RawAdmin {
        listen,
        token,
        token_env,
        allow_remote,
    } = raw;
    let p = "admin";
    let listen_addr = listen
        .as_ref()
        .and_then(|l| ck.socket_addr(l, &join_key(p, "listen")))
        .unwrap_or(defaults.listen);
    let token = match (token, token_env) {
        (Some(_), Some(e)) => {
            ck.error(
                e.span(),
                join_key(p, "token_env"),
                "set either `token` or `token_env`, not both",
                None,
            );
            None
        }
        (Some(t), None) => {
            if t.get_ref().len() < 16 {
                ck.error(
                    t.span(),
                    join_key(p, "token"),
                    "the admin token is too short to be a secret",
                    Some("at least 16 characters"),
                );
                None
            } else {
                Some(AdminToken::Value(Secret::new(t.into_inner())))
            }
        }
        (None, Some(e)) => {
            let name = e.get_ref();
            let ok = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if ok {
                Some(AdminToken::Env(name.clone()))
            } else {
                ck.error(
                    e.span(),
                    join_key(p, "token_env"),
                    format!("{name:?} is not an environment variable name"),
                    Some("a name such as \"EDGE_ADMIN_TOKEN\""),
                );
                None
            }
        }
        (None, None) => None,
    };
    let allow_remote = allow_remote.unwrap_or(false);
    if !listen_addr.ip().is_loopback() {
        let span = listen.as_ref().map_or(value.span(), |l| l.span());
        if !allow_remote {
            ck.error(
                span.clone(),
                join_key(p, "listen"),
                format!(
                    "the admin API would listen on {listen_addr}, beyond loopback; set `allow_remote = true` to mean it"
                ),
                Some("a loopback address such as \"127.0.0.1:9901\""),
            );
        } else if token.is_none() {
            ck.error(
                span,
                join_key(p, "listen"),
                "an admin API reachable beyond loopback needs a `token` or `token_env`",
                None,
            );
        }
    }
    Admin {
        listen: listen_addr,
        token,
    }
}

pub(super) fn site(ck: &mut Checker<'_>, value: &Spanned<DeValue<'_>>) -> Option<Site> {
    let raw = ck.deser::<RawSite>(value)?;
    let RawSite {
        name,
        node,
        peer,
        shield,
        shield_fallback,
        keep_copies,
        health_check,
        timeouts,
        capacity,
        url,
        digest,
    } = raw;
    let p = "site";
    let name = ck.name(&name, &join_key(p, "name"))?;
    let node = match node {
        Some(n) => ck.name(&n, &join_key(p, "node"))?,
        None => hostname().unwrap_or_else(|| format!("{name}-node")),
    };
    let mut peers = Vec::new();
    for (i, raw_peer) in peer.into_iter().enumerate() {
        let pp = format!("site.peer[{i}]");
        let raw_peer = raw_peer.into_inner();
        let peer_name = ck.name(&raw_peer.name, &join_key(&pp, "name"));
        let address = match HostPort::parse(raw_peer.address.get_ref()) {
            Ok(a) => Some(a),
            Err(e) => {
                ck.error(
                    raw_peer.address.span(),
                    join_key(&pp, "address"),
                    e,
                    Some("the peer's HTTP listener, host:port, such as \"10.0.0.2:8080\" or \"edge-1.edge:8080\""),
                );
                None
            }
        };
        let admin = raw_peer
            .admin
            .as_ref()
            .map(|a| match HostPort::parse(a.get_ref()) {
                Ok(h) => Some(h),
                Err(e) => {
                    ck.error(
                        a.span(),
                        join_key(&pp, "admin"),
                        e,
                        Some("the peer's admin API, host:port, such as \"10.0.0.2:9901\""),
                    );
                    None
                }
            });
        let admin_ok = !matches!(admin, Some(None));
        let admin = admin.flatten();
        if let (Some(peer_name), Some(address), true) = (peer_name, address, admin_ok) {
            if peers.iter().any(|p: &Peer| p.name == peer_name) {
                ck.error(
                    raw_peer.name.span(),
                    join_key(&pp, "name"),
                    format!("peer `{peer_name}` is listed twice"),
                    None,
                );
            } else if peers.iter().any(|p: &Peer| p.address == address) {
                ck.error(
                    raw_peer.address.span(),
                    join_key(&pp, "address"),
                    format!("{address} is listed for two peers"),
                    Some("each node's own HTTP listener"),
                );
            }
            peers.push(Peer {
                name: peer_name,
                address,
                admin,
            });
        }
    }
    let shield_fallback = match shield_fallback {
        Some(v) => ck
            .choice(
                &v,
                &join_key(p, "shield_fallback"),
                &[
                    ("origin", ShieldFallback::Origin),
                    ("fail", ShieldFallback::Fail),
                ],
            )
            .unwrap_or(ShieldFallback::Origin),
        None => ShieldFallback::Origin,
    };
    let keep_copies = match keep_copies {
        Some(v) => ck
            .choice(
                &v,
                &join_key(p, "keep_copies"),
                &[
                    ("hot", KeepCopies::Hot),
                    ("never", KeepCopies::Never),
                    ("always", KeepCopies::Always),
                ],
            )
            .unwrap_or(KeepCopies::Hot),
        None => KeepCopies::Hot,
    };
    let health_check =
        health_check.and_then(|h| super::pools::health(ck, &join_key(p, "health_check"), h));
    let peer_defaults = Timeouts {
        connect: Duration::from_secs(1),
        ..Timeouts::default()
    };
    let timeouts = match timeouts {
        Some(t) => {
            super::pools::timeouts(ck, &join_key(p, "timeouts"), t.into_inner(), &peer_defaults)
        }
        None => peer_defaults,
    };
    let capacity = capacity.map_or_else(Capacity::default, |c| {
        let c = c.into_inner();
        let cp = join_key(p, "capacity");
        let egress_bits = c
            .egress
            .and_then(|e| match crate::units::parse_bit_rate(e.get_ref()) {
                Ok(b) => Some(b),
                Err(why) => {
                    ck.error(
                        e.span(),
                        join_key(&cp, "egress"),
                        why,
                        Some("a bit rate such as \"10 Gbit/s\""),
                    );
                    None
                }
            });
        let connections = c.connections.and_then(|n| {
            let v = *n.get_ref();
            if (1..=100_000_000).contains(&v) {
                Some(v as u64)
            } else {
                ck.error(
                    n.span(),
                    join_key(&cp, "connections"),
                    format!("{v} is out of range"),
                    Some("1 to 100000000"),
                );
                None
            }
        });
        Capacity {
            egress_bits,
            connections,
        }
    });
    let url = url.and_then(|u| match node_url(u.get_ref()) {
        Ok(v) => Some(v),
        Err(why) => {
            ck.error(
                u.span(),
                join_key(p, "url"),
                why,
                Some("the node's base URL, such as \"https://edge-1.lon.example.net\" or \"http://10.0.0.2:8080\""),
            );
            None
        }
    });
    let digest = digest.map_or_else(DigestSettings::default, |d| {
        let d = d.into_inner();
        let dp = join_key(p, "digest");
        let defaults = DigestSettings::default();
        let refresh = ck.duration(&d.refresh, &dp, "refresh", defaults.refresh);
        if refresh < Duration::from_secs(1) {
            if let Some(r) = &d.refresh {
                ck.error(
                    r.span(),
                    join_key(&dp, "refresh"),
                    "shorter than 1s",
                    Some("a duration of at least 1s, such as \"5s\""),
                );
            }
        }
        DigestSettings {
            min_size: ck.size(&d.min_size, &dp, "min_size", defaults.min_size),
            refresh: refresh.max(Duration::from_secs(1)),
        }
    });
    Some(Site {
        name,
        node,
        peers,
        shield: shield.map(Spanned::into_inner),
        shield_fallback,
        keep_copies,
        health_check,
        timeouts,
        capacity,
        url,
        digest,
    })
}

/// A node's base URL: `http` or `https`, a host (and port), no path,
/// query or user part; returned without a trailing `/`.
fn node_url(text: &str) -> Result<String, String> {
    let u = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("scheme `{}` is not http or https", u.scheme()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("has a user part".into());
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
        return Err("has a path, query or fragment".into());
    }
    Ok(u.as_str().trim_end_matches('/').to_string())
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
}
