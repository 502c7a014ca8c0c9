//! `[[pool]]` and the policies a route may also set (timeouts, retry).

use std::time::Duration;

use toml::de::DeValue;
use toml::Spanned;

use super::fields::Choice;
use super::{Checker, ItemAt};
use crate::model::{
    Algorithm, Backend, CircuitBreaker, HashKey, HealthCheck, HealthCheckKind, HostPort,
    LoadFeedback, OutlierDetection, Pool, ProxyProtocol, Retry, RetryOn, StatusRange, StickyCookie,
    Timeouts, UpstreamTls,
};
use crate::raw::{
    RawBreaker, RawHealthCheck, RawOutlier, RawPool, RawRetry, RawTimeouts, RawUpstreamTls,
};
use crate::source::join_key;

pub(super) fn pool(
    ck: &mut Checker<'_>,
    item: &Spanned<DeValue<'_>>,
    path: &str,
) -> Option<(ItemAt, Pool)> {
    let raw: RawPool = ck.deser(item)?;
    let RawPool {
        name,
        algorithm,
        hash_key,
        sticky_cookie,
        load_feedback,
        host,
        panic_mode,
        proxy_protocol,
        max_connections_per_backend,
        backends,
        health_check,
        outlier_detection,
        circuit_breaker,
        timeouts,
        retry,
        tls,
    } = raw;
    let at = ItemAt::new(path, item.span()).with("name", name.span());
    let pool_name = ck.name(&name, &join_key(path, "name"));

    let algorithm_name = algorithm
        .as_ref()
        .map_or("round_robin".to_string(), |a| a.get_ref().clone());
    let algorithm = match algorithm_name.as_str() {
        "round_robin" => Some(Algorithm::RoundRobin),
        "weighted_round_robin" => Some(Algorithm::WeightedRoundRobin),
        "random" => Some(Algorithm::Random),
        "least_requests" | "least_conn" | "least_connections" => Some(Algorithm::LeastRequests),
        "p2c_ewma" => Some(Algorithm::P2cEwma),
        "source_ip_hash" => Some(Algorithm::SourceIpHash),
        "cookie" => {
            let (name, ttl) = match &sticky_cookie {
                Some(c) => {
                    let cp = join_key(path, "sticky_cookie");
                    let name = c.get_ref().name.as_ref().map(|n| n.get_ref().clone());
                    if let Some(n) = &c.get_ref().name {
                        if !cookie_name_ok(n.get_ref()) {
                            ck.error(
                                n.span(),
                                join_key(&cp, "name"),
                                format!("{:?} is not a cookie name", n.get_ref()),
                                Some("a token: letters, digits and !#$%&'*+-.^_`|~"),
                            );
                        }
                    }
                    (name, ck.opt_duration(&c.get_ref().ttl, &cp, "ttl"))
                }
                None => (None, None),
            };
            Some(Algorithm::Cookie(StickyCookie {
                name: name.unwrap_or_else(|| "EDGE_BACKEND".to_string()),
                ttl,
            }))
        }
        "consistent_hash" => {
            let key = match &hash_key {
                None => Some(HashKey::Uri),
                Some(k) => ck
                    .word_or_part(
                        k,
                        &join_key(path, "hash_key"),
                        &["uri", "path", "client_ip"],
                        &["header", "cookie", "query"],
                    )
                    .map(|choice| match choice {
                        Choice::Word(w) if w == "path" => HashKey::Path,
                        Choice::Word(w) if w == "client_ip" => HashKey::ClientIp,
                        Choice::Word(_) => HashKey::Uri,
                        Choice::Part("header", h) => HashKey::Header(h.to_ascii_lowercase()),
                        Choice::Part("cookie", c) => HashKey::Cookie(c),
                        Choice::Part(_, q) => HashKey::Query(q),
                    }),
            };
            let key = key?;
            Some(Algorithm::ConsistentHash { key })
        }
        other => {
            let span = ck.span_or(&algorithm, &item.span());
            let names: Vec<String> = Algorithm::NAMES
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect();
            ck.error(
                span,
                join_key(path, "algorithm"),
                format!("unknown algorithm {other:?}"),
                Some(&format!("one of {}", names.join(", "))),
            );
            None
        }
    };
    if !matches!(algorithm, Some(Algorithm::ConsistentHash { .. }) | None) {
        ck.not_here(
            &hash_key,
            path,
            "hash_key",
            "only applies to algorithm = \"consistent_hash\"",
        );
    }
    if !matches!(algorithm, Some(Algorithm::Cookie(_)) | None) {
        ck.not_here(
            &sticky_cookie,
            path,
            "sticky_cookie",
            "only applies to algorithm = \"cookie\"",
        );
    }

    let mut out_backends: Vec<Backend> = Vec::new();
    if backends.is_empty() {
        ck.error(
            item.span(),
            join_key(path, "backends"),
            "a pool needs at least one backend",
            Some("backends = [{ address = \"10.0.0.1:8080\" }]"),
        );
    }
    for (i, b) in backends.into_iter().enumerate() {
        let bp = format!("{path}.backends[{i}]");
        let b = b.into_inner();
        let address = match HostPort::parse(b.address.get_ref()) {
            Ok(a) => Some(a),
            Err(e) => {
                ck.error(
                    b.address.span(),
                    join_key(&bp, "address"),
                    e,
                    Some("host:port, such as \"10.0.0.1:8080\", \"[2001:db8::1]:80\" or \"origin.example.com:443\""),
                );
                None
            }
        };
        let weight = match &b.weight {
            Some(w) => ck.int_value(w, &join_key(&bp, "weight"), 1, 1_000_000),
            None => Some(1),
        };
        if let (Some(address), Some(weight)) = (address, weight) {
            if out_backends.iter().any(|o| o.address == address) {
                ck.error(
                    b.address.span(),
                    join_key(&bp, "address"),
                    format!("backend {address} is listed twice in this pool"),
                    None,
                );
                continue;
            }
            out_backends.push(Backend {
                address,
                weight: weight as u32,
            });
        }
    }

    let load_feedback = load_feedback.map(|lf| {
        let lp = join_key(path, "load_feedback");
        let span = lf.span();
        let lf = lf.into_inner();
        let header = lf.header.map(|h| h.into_inner().to_ascii_lowercase());
        let from_health_check = lf.from_health_check.unwrap_or(false);
        if header.is_none() && !from_health_check {
            ck.error(
                span,
                lp.clone(),
                "load feedback needs a source",
                Some("`header = \"X-Backend-Load\"` and/or `from_health_check = true`"),
            );
        }
        LoadFeedback {
            header,
            from_health_check,
            min_weight_percent: ck.int(
                &lf.min_weight_percent,
                &lp,
                "min_weight_percent",
                1,
                100,
                10,
            ) as u8,
        }
    });

    let proxy_protocol = proxy_protocol.and_then(|v| {
        ck.choice(
            &v,
            &join_key(path, "proxy_protocol"),
            &[("v1", ProxyProtocol::V1), ("v2", ProxyProtocol::V2)],
        )
    });
    let health_check = health_check.and_then(|h| health(ck, &join_key(path, "health_check"), h));
    if let (Some(h), Some(lf)) = (&health_check, &load_feedback) {
        if lf.from_health_check && !matches!(h.kind, HealthCheckKind::Http { .. }) {
            ck.error(
                item.span(),
                join_key(path, "load_feedback.from_health_check"),
                "load feedback from the health check needs an HTTP health check",
                None,
            );
        }
    }
    if let Some(lf) = &load_feedback {
        if lf.from_health_check && health_check.is_none() {
            ck.error(
                item.span(),
                join_key(path, "load_feedback.from_health_check"),
                "load feedback from the health check needs a [pool.health_check]",
                None,
            );
        }
    }
    // Passive health is on by default: a dead backend is taken out at once.
    let outlier_detection = Some(match outlier_detection {
        Some(o) => outlier(ck, &join_key(path, "outlier_detection"), o.into_inner()),
        None => OutlierDetection::default(),
    });
    let circuit_breaker = circuit_breaker
        .map(|b| breaker(ck, &join_key(path, "circuit_breaker"), b.into_inner()))
        .unwrap_or_default();
    let timeouts = timeouts
        .map(|t| {
            self::timeouts(
                ck,
                &join_key(path, "timeouts"),
                t.into_inner(),
                &Timeouts::default(),
            )
        })
        .unwrap_or_default();
    let retry = retry
        .map(|r| self::retry(ck, &join_key(path, "retry"), r, &Retry::default()))
        .unwrap_or_default();
    let tls = tls.map(|t| upstream_tls(ck, &join_key(path, "tls"), t.into_inner()));
    let host = host.and_then(|h| {
        let ok = super::fields::dns_name_ok(h.get_ref())
            || h.get_ref().parse::<std::net::IpAddr>().is_ok();
        if ok {
            Some(h.into_inner())
        } else {
            ck.error(
                h.span(),
                join_key(path, "host"),
                format!("{:?} is not a host name", h.get_ref()),
                Some("a host name such as \"origin.example.com\""),
            );
            None
        }
    });

    Some((
        at,
        Pool {
            name: pool_name?,
            algorithm: algorithm?,
            backends: out_backends,
            host,
            panic_mode: panic_mode.unwrap_or(false),
            proxy_protocol,
            max_connections_per_backend: ck.int(
                &max_connections_per_backend,
                path,
                "max_connections_per_backend",
                0,
                10_000_000,
                0,
            ) as usize,
            load_feedback,
            health_check,
            outlier_detection,
            circuit_breaker,
            timeouts,
            retry,
            tls,
        },
    ))
}

pub(super) fn cookie_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

pub(super) fn health(
    ck: &mut Checker<'_>,
    p: &str,
    raw: Spanned<RawHealthCheck>,
) -> Option<HealthCheck> {
    let span = raw.span();
    let RawHealthCheck {
        kind,
        path,
        host,
        expect_status,
        body_contains,
        interval,
        timeout,
        rise,
        fall,
    } = raw.into_inner();
    let is_http = match &kind {
        Some(k) => ck.choice(k, &join_key(p, "kind"), &[("http", true), ("tcp", false)])?,
        None => true,
    };
    let kind = if is_http {
        let path_value = path.map_or("/".to_string(), |pv| {
            if !pv.get_ref().starts_with('/') {
                ck.error(
                    pv.span(),
                    join_key(p, "path"),
                    format!("{:?} does not start with '/'", pv.get_ref()),
                    Some("a path such as \"/healthz\""),
                );
            }
            pv.into_inner()
        });
        let expect_status = expect_status
            .and_then(|s| ck.status_range(&s, &join_key(p, "expect_status")))
            .unwrap_or(StatusRange { min: 200, max: 399 });
        HealthCheckKind::Http {
            path: path_value,
            host: host.map(Spanned::into_inner),
            expect_status,
            body_contains: body_contains.map(Spanned::into_inner),
        }
    } else {
        let why = "only applies to HTTP health checks";
        ck.not_here(&path, p, "path", why);
        ck.not_here(&host, p, "host", why);
        ck.not_here(&expect_status, p, "expect_status", why);
        ck.not_here(&body_contains, p, "body_contains", why);
        HealthCheckKind::Tcp
    };
    let interval = ck.positive_duration(&interval, p, "interval", Duration::from_secs(5));
    let timeout =
        ck.positive_duration(&timeout, p, "timeout", Duration::from_secs(2).min(interval));
    if timeout > interval {
        ck.error(
            span,
            join_key(p, "timeout"),
            "the health check timeout is longer than its interval",
            Some("timeout ≤ interval"),
        );
    }
    Some(HealthCheck {
        kind,
        interval,
        timeout,
        rise: ck.int(&rise, p, "rise", 1, 100, 2) as u32,
        fall: ck.int(&fall, p, "fall", 1, 100, 3) as u32,
    })
}

fn outlier(ck: &mut Checker<'_>, p: &str, raw: RawOutlier) -> OutlierDetection {
    let RawOutlier {
        consecutive_5xx,
        consecutive_gateway_errors,
        consecutive_connect_failures,
        failure_percentage,
        failure_percentage_min_requests,
        interval,
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent,
    } = raw;
    let none_set = consecutive_5xx.is_none()
        && consecutive_gateway_errors.is_none()
        && consecutive_connect_failures.is_none()
        && failure_percentage.is_none();
    let base = ck.positive_duration(
        &base_ejection_time,
        p,
        "base_ejection_time",
        Duration::from_secs(30),
    );
    let max = ck.positive_duration(
        &max_ejection_time,
        p,
        "max_ejection_time",
        Duration::from_secs(300).max(base),
    );
    if max < base {
        let span = max_ejection_time.as_ref().map_or(0..0, |m| m.span());
        ck.error(
            span,
            join_key(p, "max_ejection_time"),
            "shorter than base_ejection_time",
            Some("max_ejection_time ≥ base_ejection_time"),
        );
    }
    OutlierDetection {
        // Envoy's default when nothing is chosen: five 5xx in a row.
        consecutive_5xx: ck
            .opt_int(&consecutive_5xx, p, "consecutive_5xx", 1, 1_000_000)
            .map(|n| n as u32)
            .or(if none_set { Some(5) } else { None }),
        consecutive_gateway_errors: ck
            .opt_int(
                &consecutive_gateway_errors,
                p,
                "consecutive_gateway_errors",
                1,
                1_000_000,
            )
            .map(|n| n as u32),
        consecutive_connect_failures: ck
            .opt_int(
                &consecutive_connect_failures,
                p,
                "consecutive_connect_failures",
                1,
                1_000_000,
            )
            .map(|n| n as u32)
            .or(if none_set { Some(1) } else { None }),
        failure_percentage: ck
            .opt_int(&failure_percentage, p, "failure_percentage", 1, 100)
            .map(|n| n as u8),
        failure_percentage_min_requests: ck.int(
            &failure_percentage_min_requests,
            p,
            "failure_percentage_min_requests",
            1,
            1_000_000,
            20,
        ) as u32,
        interval: ck.positive_duration(&interval, p, "interval", Duration::from_secs(10)),
        base_ejection_time: base,
        max_ejection_time: max,
        max_ejection_percent: ck.int(&max_ejection_percent, p, "max_ejection_percent", 0, 100, 50)
            as u8,
    }
}

fn breaker(ck: &mut Checker<'_>, p: &str, raw: RawBreaker) -> CircuitBreaker {
    let d = CircuitBreaker::default();
    let RawBreaker {
        max_connections,
        max_pending,
        max_requests,
        max_retries,
        consecutive_failures,
        failure_rate,
        min_requests,
        window,
        open_for,
        half_open_probes,
    } = raw;
    let limit = |ck: &mut Checker<'_>, v: &Option<Spanned<i64>>, key: &str| {
        ck.int(v, p, key, 0, 100_000_000, 0) as usize
    };
    CircuitBreaker {
        max_connections: limit(ck, &max_connections, "max_connections"),
        max_pending: limit(ck, &max_pending, "max_pending"),
        max_requests: limit(ck, &max_requests, "max_requests"),
        max_retries: limit(ck, &max_retries, "max_retries"),
        consecutive_failures: ck
            .opt_int(
                &consecutive_failures,
                p,
                "consecutive_failures",
                1,
                1_000_000,
            )
            .map(|n| n as u32),
        failure_rate: ck
            .opt_int(&failure_rate, p, "failure_rate", 1, 100)
            .map(|n| n as u8),
        min_requests: ck.int(
            &min_requests,
            p,
            "min_requests",
            1,
            1_000_000,
            d.min_requests as i64,
        ) as u32,
        window: ck.positive_duration(&window, p, "window", d.window),
        open_for: ck.positive_duration(&open_for, p, "open_for", d.open_for),
        half_open_probes: ck.int(
            &half_open_probes,
            p,
            "half_open_probes",
            1,
            1000,
            d.half_open_probes as i64,
        ) as u32,
    }
}

/// Timeouts; `base` supplies what the table leaves out (the pool's, for a route).
pub(super) fn timeouts(
    ck: &mut Checker<'_>,
    p: &str,
    raw: RawTimeouts,
    base: &Timeouts,
) -> Timeouts {
    let RawTimeouts {
        connect,
        first_byte,
        idle,
        total,
    } = raw;
    Timeouts {
        connect: ck.positive_duration(&connect, p, "connect", base.connect),
        first_byte: ck.positive_duration(&first_byte, p, "first_byte", base.first_byte),
        idle: ck.positive_duration(&idle, p, "idle", base.idle),
        total: match &total {
            Some(_) => Some(ck.positive_duration(&total, p, "total", Duration::from_secs(60))),
            None => base.total,
        },
    }
}

pub(super) fn retry(ck: &mut Checker<'_>, p: &str, raw: Spanned<RawRetry>, base: &Retry) -> Retry {
    let RawRetry {
        attempts,
        on,
        backoff,
        max_backoff,
        budget_percent,
        min_concurrent_retries,
        non_idempotent,
    } = raw.into_inner();
    let on = match on {
        Some(list) => {
            let mut out = Vec::new();
            for (i, item) in list.iter().enumerate() {
                let choice = ck.choice(
                    item,
                    &format!("{p}.on[{i}]"),
                    &[
                        ("connect_failure", RetryOn::ConnectFailure),
                        ("reset", RetryOn::Reset),
                        ("timeout", RetryOn::Timeout),
                        ("gateway_error", RetryOn::GatewayError),
                        ("5xx", RetryOn::ServerError),
                    ],
                );
                if let Some(c) = choice {
                    if !out.contains(&c) {
                        out.push(c);
                    }
                }
            }
            out
        }
        None => base.on.clone(),
    };
    let backoff_value = ck.duration(&backoff, p, "backoff", base.backoff);
    let max_backoff_value = ck.duration(
        &max_backoff,
        p,
        "max_backoff",
        base.max_backoff.max(backoff_value),
    );
    if max_backoff_value < backoff_value {
        let span = max_backoff.as_ref().map_or(0..0, |m| m.span());
        ck.error(
            span,
            join_key(p, "max_backoff"),
            "shorter than backoff",
            Some("max_backoff ≥ backoff"),
        );
    }
    Retry {
        attempts: ck.int(&attempts, p, "attempts", 0, 10, base.attempts as i64) as u32,
        on,
        backoff: backoff_value,
        max_backoff: max_backoff_value,
        budget_percent: ck.int(
            &budget_percent,
            p,
            "budget_percent",
            0,
            100,
            base.budget_percent as i64,
        ) as u8,
        min_concurrent_retries: ck.int(
            &min_concurrent_retries,
            p,
            "min_concurrent_retries",
            0,
            1_000_000,
            base.min_concurrent_retries as i64,
        ) as u32,
        non_idempotent: non_idempotent.unwrap_or(base.non_idempotent),
    }
}

fn upstream_tls(ck: &mut Checker<'_>, p: &str, raw: RawUpstreamTls) -> UpstreamTls {
    let RawUpstreamTls {
        sni,
        ca_file,
        verify,
    } = raw;
    UpstreamTls {
        sni: sni.map(Spanned::into_inner),
        ca_file: ca_file.map(|f| ck.existing_file(&f, &join_key(p, "ca_file"), "CA file")),
        verify: verify.unwrap_or(true),
    }
}

/// `[resolver]`.
pub(super) fn resolver(
    ck: &mut Checker<'_>,
    value: &toml::Spanned<toml::de::DeValue<'_>>,
) -> crate::model::Resolver {
    let d = crate::model::Resolver::default();
    let Some(raw) = ck.deser::<crate::raw::RawResolver>(value) else {
        return d;
    };
    let crate::raw::RawResolver {
        nameservers,
        min_ttl,
        max_ttl,
        timeout,
    } = raw;
    let p = "resolver";
    let nameservers = nameservers
        .iter()
        .enumerate()
        .filter_map(|(i, n)| ck.socket_addr(n, &format!("{p}.nameservers[{i}]")))
        .collect();
    let min_ttl = ck.positive_duration(&min_ttl, p, "min_ttl", d.min_ttl);
    let max_ttl = ck.positive_duration(&max_ttl, p, "max_ttl", d.max_ttl.max(min_ttl));
    if max_ttl < min_ttl {
        ck.error(
            value.span(),
            join_key(p, "max_ttl"),
            "shorter than min_ttl",
            Some("max_ttl ≥ min_ttl"),
        );
    }
    crate::model::Resolver {
        nameservers,
        min_ttl,
        max_ttl,
        timeout: ck.positive_duration(&timeout, p, "timeout", d.timeout),
    }
}
