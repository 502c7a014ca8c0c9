//! `[[listener]]`: dispatched on `kind` by hand, so the kind's own table is
//! deserialized with its spans intact.

use std::net::SocketAddr;

use toml::de::DeValue;
use toml::Spanned;

use super::{Checker, ItemAt};
use crate::model::{
    Certificate, EscapedSlashes, HttpLimits, HttpListener, HttpsListener, Listener, ListenerKind,
    TcpListener,
};
use crate::raw::{
    RawDnsListener, RawHttpLimits, RawHttpListener, RawHttpsListener, RawTcpListener,
};
use crate::source::join_key;

const KINDS: &str = "one of \"http\", \"https\", \"tcp\", \"dns\"";

pub(super) fn listener(
    ck: &mut Checker<'_>,
    item: &Spanned<DeValue<'_>>,
    path: &str,
) -> Option<(ItemAt, Listener)> {
    let DeValue::Table(table) = item.get_ref() else {
        return None;
    };
    let Some(kind) = table.get("kind") else {
        ck.error(
            item.span(),
            join_key(path, "kind"),
            "missing key `kind`",
            Some(KINDS),
        );
        return None;
    };
    let Some(kind_name) = kind.get_ref().as_str().map(str::to_string) else {
        ck.error(
            kind.span(),
            join_key(path, "kind"),
            format!("wrong type: found {}", kind.get_ref().type_str()),
            Some(KINDS),
        );
        return None;
    };
    let kind_span = kind.span();
    let mut rest = table.clone();
    rest.remove("kind");
    let rest = Spanned::new(item.span(), DeValue::Table(rest));

    let (name, address, at, kind) = match kind_name.as_str() {
        "http" => {
            let raw: RawHttpListener = ck.deser(&rest)?;
            let (name, address, at) =
                common(ck, path, &item.span(), raw.name.as_ref(), &raw.address)?;
            let http = http_settings(
                ck,
                path,
                HttpKeys {
                    max_connections: raw.max_connections.as_ref(),
                    accept_proxy_protocol: raw.accept_proxy_protocol,
                    h2c: raw.h2c,
                    merge_slashes: raw.merge_slashes,
                    escaped_slashes: raw.escaped_slashes.as_ref(),
                    limits: raw.limits,
                },
            );
            (name, address, at, ListenerKind::Http(http))
        }
        "https" => {
            let raw: RawHttpsListener = ck.deser(&rest)?;
            let (name, address, at) =
                common(ck, path, &item.span(), raw.name.as_ref(), &raw.address)?;
            let http = http_settings(
                ck,
                path,
                HttpKeys {
                    max_connections: raw.max_connections.as_ref(),
                    accept_proxy_protocol: raw.accept_proxy_protocol,
                    h2c: None,
                    merge_slashes: raw.merge_slashes,
                    escaped_slashes: raw.escaped_slashes.as_ref(),
                    limits: raw.limits,
                },
            );
            let certificates = certificates(ck, path, &item.span(), raw.certificate);
            (
                name,
                address,
                at,
                ListenerKind::Https(HttpsListener {
                    http,
                    http2: raw.http2.unwrap_or(true),
                    certificates,
                }),
            )
        }
        "tcp" => {
            let raw: RawTcpListener = ck.deser(&rest)?;
            let (name, address, at) =
                common(ck, path, &item.span(), raw.name.as_ref(), &raw.address)?;
            let at = at.with("pool", raw.pool.span());
            let connection_rate = raw
                .connection_rate
                .as_ref()
                .and_then(|r| ck.rate_value(r, &join_key(path, "connection_rate")));
            let tcp = TcpListener {
                pool: raw.pool.get_ref().clone(),
                max_connections: ck.int(
                    &raw.max_connections,
                    path,
                    "max_connections",
                    1,
                    10_000_000,
                    10_000,
                ) as usize,
                accept_proxy_protocol: raw.accept_proxy_protocol.unwrap_or(false),
                idle_timeout: ck.positive_duration(
                    &raw.idle_timeout,
                    path,
                    "idle_timeout",
                    std::time::Duration::from_secs(600),
                ),
                connection_rate,
                connection_burst: ck.int(
                    &raw.connection_burst,
                    path,
                    "connection_burst",
                    0,
                    1_000_000,
                    0,
                ) as u32,
            };
            if connection_rate.is_none() {
                ck.not_here(
                    &raw.connection_burst,
                    path,
                    "connection_burst",
                    "needs a `connection_rate`",
                );
            }
            (name, address, at, ListenerKind::Tcp(tcp))
        }
        "dns" => {
            let raw: RawDnsListener = ck.deser(&rest)?;
            let (name, address, at) =
                common(ck, path, &item.span(), raw.name.as_ref(), &raw.address)?;
            (name, address, at, ListenerKind::Dns)
        }
        other => {
            ck.error(
                kind_span,
                join_key(path, "kind"),
                format!("unknown listener kind {other:?}"),
                Some(KINDS),
            );
            return None;
        }
    };
    Some((
        at,
        Listener {
            name,
            address,
            kind,
        },
    ))
}

fn common(
    ck: &mut Checker<'_>,
    path: &str,
    span: &std::ops::Range<usize>,
    name: Option<&Spanned<String>>,
    address: &Spanned<String>,
) -> Option<(String, SocketAddr, ItemAt)> {
    let addr = ck.socket_addr(address, &join_key(path, "address"));
    // Unnamed listeners are reported at their address.
    let at = ItemAt::new(path, span.clone())
        .with("address", address.span())
        .with("name", name.map_or(address.span(), |n| n.span()));
    let name = match name {
        Some(n) => ck.name(n, &join_key(path, "name"))?,
        None => address.get_ref().to_string(),
    };
    Some((name, addr?, at))
}

/// The keys `http` and `https` listeners share.
struct HttpKeys<'a> {
    max_connections: Option<&'a Spanned<i64>>,
    accept_proxy_protocol: Option<bool>,
    h2c: Option<bool>,
    merge_slashes: Option<bool>,
    escaped_slashes: Option<&'a Spanned<String>>,
    limits: Option<Spanned<RawHttpLimits>>,
}

fn http_settings(ck: &mut Checker<'_>, path: &str, keys: HttpKeys<'_>) -> HttpListener {
    let HttpKeys {
        max_connections,
        accept_proxy_protocol,
        h2c,
        merge_slashes,
        escaped_slashes,
        limits,
    } = keys;
    let escaped_slashes = escaped_slashes
        .and_then(|v| {
            ck.choice(
                v,
                &join_key(path, "escaped_slashes"),
                &[
                    ("reject", EscapedSlashes::Reject),
                    ("keep", EscapedSlashes::Keep),
                    ("decode_and_redirect", EscapedSlashes::DecodeAndRedirect),
                ],
            )
        })
        .unwrap_or_default();
    HttpListener {
        max_connections: ck.int(
            &max_connections.cloned(),
            path,
            "max_connections",
            1,
            10_000_000,
            100_000,
        ) as usize,
        accept_proxy_protocol: accept_proxy_protocol.unwrap_or(false),
        h2c: h2c.unwrap_or(false),
        merge_slashes: merge_slashes.unwrap_or(true),
        escaped_slashes,
        limits: http_limits(
            ck,
            &join_key(path, "limits"),
            limits.map(Spanned::into_inner),
        ),
    }
}

fn http_limits(ck: &mut Checker<'_>, p: &str, raw: Option<RawHttpLimits>) -> HttpLimits {
    let d = HttpLimits::default();
    let Some(raw) = raw else { return d };
    let RawHttpLimits {
        header_timeout,
        keepalive_timeout,
        max_header_bytes,
        max_headers,
        max_request_line,
        max_body,
        max_requests_per_connection,
        request_buffer,
    } = raw;
    HttpLimits {
        header_timeout: ck.positive_duration(
            &header_timeout,
            p,
            "header_timeout",
            d.header_timeout,
        ),
        keepalive_timeout: ck.positive_duration(
            &keepalive_timeout,
            p,
            "keepalive_timeout",
            d.keepalive_timeout,
        ),
        max_header_bytes: bounded_size(
            ck,
            &max_header_bytes,
            p,
            "max_header_bytes",
            1024,
            1 << 20,
            d.max_header_bytes,
        ),
        max_headers: ck.int(
            &max_headers,
            p,
            "max_headers",
            1,
            10_000,
            d.max_headers as i64,
        ) as usize,
        max_request_line: bounded_size(
            ck,
            &max_request_line,
            p,
            "max_request_line",
            256,
            1 << 20,
            d.max_request_line,
        ),
        max_body: ck.size(&max_body, p, "max_body", d.max_body),
        max_requests_per_connection: ck.int(
            &max_requests_per_connection,
            p,
            "max_requests_per_connection",
            0,
            u32::MAX as i64,
            0,
        ) as u32,
        request_buffer: bounded_size(
            ck,
            &request_buffer,
            p,
            "request_buffer",
            0,
            16 << 20,
            d.request_buffer,
        ),
    }
}

fn bounded_size(
    ck: &mut Checker<'_>,
    value: &Option<Spanned<crate::units::Scalar>>,
    p: &str,
    key: &str,
    min: u64,
    max: u64,
    default: usize,
) -> usize {
    let Some(v) = value else { return default };
    let path = join_key(p, key);
    match ck.size_value(v, &path) {
        Some(n) if (min..=max).contains(&n) => n as usize,
        Some(n) => {
            ck.error(
                v.span(),
                path,
                format!("{n} bytes is out of range"),
                Some(&format!("a size from {min} to {max} bytes")),
            );
            default
        }
        None => default,
    }
}

fn certificates(
    ck: &mut Checker<'_>,
    path: &str,
    span: &std::ops::Range<usize>,
    raw: Vec<Spanned<crate::raw::RawCertificate>>,
) -> Vec<Certificate> {
    if raw.is_empty() {
        ck.error(
            span.clone(),
            join_key(path, "certificate"),
            "an https listener needs at least one certificate",
            Some("[[listener.certificate]] with `cert` and `key`"),
        );
    }
    let mut out: Vec<Certificate> = Vec::new();
    let mut default_seen = false;
    let single = raw.len() == 1;
    for (i, c) in raw.into_iter().enumerate() {
        let cp = format!("{path}.certificate[{i}]");
        let c_span = c.span();
        let c = c.into_inner();
        let mut names = Vec::new();
        for (j, n) in c.server_names.iter().enumerate() {
            let np = format!("{cp}.server_names[{j}]");
            let name = n.get_ref().trim_end_matches('.').to_ascii_lowercase();
            let body = name.strip_prefix("*.").unwrap_or(&name);
            if !super::fields::dns_name_ok(body) || body.contains('*') {
                ck.error(
                    n.span(),
                    np,
                    format!("{:?} is not a server name", n.get_ref()),
                    Some("a host name or a wildcard such as \"*.example.com\""),
                );
                continue;
            }
            if out.iter().any(|o| o.server_names.contains(&name)) || names.contains(&name) {
                ck.error(
                    n.span(),
                    np,
                    format!("server name {name:?} has two certificates"),
                    None,
                );
                continue;
            }
            names.push(name);
        }
        let is_default = c.default.unwrap_or(single || names.is_empty());
        if is_default {
            if default_seen {
                ck.error(
                    c_span,
                    join_key(&cp, "default"),
                    "a second default certificate",
                    Some("at most one certificate with `default = true`"),
                );
            }
            default_seen = true;
        }
        let cert = ck.existing_file(&c.cert, &join_key(&cp, "cert"), "certificate file");
        let key = ck.existing_file(&c.key, &join_key(&cp, "key"), "key file");
        out.push(Certificate {
            server_names: names,
            cert,
            key,
            default: is_default,
        });
    }
    out
}
