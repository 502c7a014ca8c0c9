//! `[[listener]]`: dispatched on `kind` by hand, so the kind's own table is
//! deserialized with its spans intact.

use std::net::SocketAddr;
use std::path::PathBuf;

use toml::de::DeValue;
use toml::Spanned;

use super::{Checker, ItemAt};
use crate::model::{
    Acme, AcmeChallenge, Certificate, EscapedSlashes, HttpLimits, HttpListener, HttpsListener,
    Listener, ListenerKind, TcpListener,
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
            let raw_acme = raw.tls.map(|t| t.into_inner()).and_then(|t| t.acme);
            let has_acme = raw_acme.is_some();
            let acme =
                raw_acme.and_then(|a| acme(ck, &join_key(&join_key(path, "tls"), "acme"), a));
            let certificates = certificates(
                ck,
                path,
                &item.span(),
                raw.certificate,
                (has_acme, acme.as_ref()),
            );
            (
                name,
                address,
                at,
                ListenerKind::Https(HttpsListener {
                    http,
                    http2: raw.http2.unwrap_or(true),
                    certificates,
                    acme,
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
        send_timeout,
        max_header_bytes,
        max_headers,
        max_request_line,
        max_body,
        max_requests_per_connection,
        request_buffer,
        tcp_notsent_lowat,
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
        send_timeout: ck.positive_duration(&send_timeout, p, "send_timeout", d.send_timeout),
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
        tcp_notsent_lowat: notsent_lowat(ck, &tcp_notsent_lowat, p, d.tcp_notsent_lowat),
    }
}

/// `tcp_notsent_lowat`: 0 (the kernel's default), or 4 KiB to 1 GiB (less
/// would wake the connection for every segment or two).
fn notsent_lowat(
    ck: &mut Checker<'_>,
    value: &Option<Spanned<crate::units::Scalar>>,
    p: &str,
    default: u32,
) -> u32 {
    const MIN: usize = 4096;
    let n = bounded_size(
        ck,
        value,
        p,
        "tcp_notsent_lowat",
        0,
        1 << 30,
        default as usize,
    );
    match value {
        Some(v) if n > 0 && n < MIN => {
            ck.error(
                v.span(),
                join_key(p, "tcp_notsent_lowat"),
                format!("{n} bytes is too small"),
                Some("0 (the kernel's default) or a size from 4096 to 1073741824 bytes"),
            );
            default
        }
        _ => n as u32,
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
    (has_acme, acme): (bool, Option<&Acme>),
) -> Vec<Certificate> {
    if raw.is_empty() && !has_acme {
        ck.error(
            span.clone(),
            join_key(path, "certificate"),
            "an https listener needs at least one certificate",
            Some("[[listener.certificate]] with `cert` and `key`, or `tls.acme`"),
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
            if out.iter().any(|o| o.server_names.contains(&name))
                || names.contains(&name)
                || acme.is_some_and(|a| a.domains.contains(&name))
            {
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
        // With `tls.acme`, its certificate is the default unless a file says otherwise.
        let is_default = c
            .default
            .unwrap_or((single && !has_acme) || names.is_empty());
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

/// A name a public CA certifies (RFC 1123 §2.1 host names under a parent
/// domain): letters, digits and inner hyphens in each label, at least two
/// labels, not all digits (an address).
fn host_name_ok(name: &str) -> bool {
    name.len() <= 253
        && name.contains('.')
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

/// Where ACME state is kept when `state_dir` is not given (the Debian
/// package's state directory).
pub const DEFAULT_ACME_STATE_DIR: &str = "/var/lib/edge/acme";

/// `tls.acme`: checks the directory URL (HTTPS, RFC 8555 §6.1), the contact,
/// and the names (host names; no wildcards, which only DNS-01 can prove).
fn acme(ck: &mut Checker<'_>, path: &str, raw: Spanned<crate::raw::RawAcme>) -> Option<Acme> {
    let span = raw.span();
    let raw = raw.into_inner();
    let mut ok = true;
    let dir_path = join_key(path, "directory");
    match url::Url::parse(raw.directory.get_ref()) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            ok = false;
            ck.error(
                raw.directory.span(),
                dir_path,
                "a directory URL with a user name or password",
                Some("the CA's directory URL alone (ACME authenticates with the account key)"),
            );
        }
        Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {}
        Ok(_) => {
            ok = false;
            ck.error(
                raw.directory.span(),
                dir_path,
                format!("{:?} is not an https URL", raw.directory.get_ref()),
                Some("the CA's directory URL, such as \"https://acme-v02.api.letsencrypt.org/directory\" (RFC 8555 requires HTTPS)"),
            );
        }
        Err(e) => {
            ok = false;
            ck.error(
                raw.directory.span(),
                dir_path,
                format!("{:?} is not a URL: {e}", raw.directory.get_ref()),
                Some("the CA's directory URL, such as \"https://acme-v02.api.letsencrypt.org/directory\""),
            );
        }
    }
    let email = raw.email.as_ref().map(|e| {
        let text = e.get_ref().trim();
        // RFC 5322 §3.4.1 dot-atom local part at a public host name; a
        // `mailto:` URI (RFC 6068) must carry nothing else.
        let bare = text.strip_prefix("mailto:").unwrap_or(text);
        let good = bare.rsplit_once('@').is_some_and(|(local, host)| {
            !local.is_empty()
                && !local.starts_with('.')
                && !local.ends_with('.')
                && !local.contains("..")
                && local
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=^_`{|}~.".contains(&b))
                && host_name_ok(host)
        });
        if !good {
            ok = false;
            ck.error(
                e.span(),
                join_key(path, "email"),
                format!("{:?} is not an email address", e.get_ref()),
                Some("an address such as \"ops@example.com\""),
            );
        }
        text.strip_prefix("mailto:").unwrap_or(text).to_string()
    });
    if raw.domains.is_empty() {
        ok = false;
        ck.error(
            span.clone(),
            join_key(path, "domains"),
            "tls.acme needs at least one domain",
            Some("domains = [\"example.com\", \"www.example.com\"]"),
        );
    }
    let mut domains: Vec<String> = Vec::new();
    for (i, d) in raw.domains.iter().enumerate() {
        let dp = format!("{}[{i}]", join_key(path, "domains"));
        let name = d.get_ref().trim_end_matches('.').to_ascii_lowercase();
        if name.contains('*') {
            ok = false;
            ck.error(
                d.span(),
                dp,
                format!("{:?} is a wildcard", d.get_ref()),
                Some("host names: a wildcard certificate needs the DNS-01 challenge, which edge does not answer; use a [[listener.certificate]] file for it"),
            );
            continue;
        }
        if !host_name_ok(&name) {
            ok = false;
            ck.error(
                d.span(),
                dp,
                format!("{:?} is not a domain name", d.get_ref()),
                Some("a fully qualified host name such as \"www.example.com\""),
            );
            continue;
        }
        if domains.contains(&name) {
            ok = false;
            ck.error(d.span(), dp, format!("{name:?} is listed twice"), None);
            continue;
        }
        domains.push(name);
    }
    let challenge = match &raw.challenge {
        Some(c) => ck
            .choice(
                c,
                &join_key(path, "challenge"),
                &[
                    ("tls-alpn-01", AcmeChallenge::TlsAlpn01),
                    ("http-01", AcmeChallenge::Http01),
                ],
            )
            .unwrap_or_else(|| {
                ok = false;
                AcmeChallenge::TlsAlpn01
            }),
        None => AcmeChallenge::TlsAlpn01,
    };
    let state_dir = match &raw.state_dir {
        Some(d) if d.get_ref().trim().is_empty() => {
            ok = false;
            ck.error(
                d.span(),
                join_key(path, "state_dir"),
                "an empty path",
                Some("a directory edge may write, such as \"/var/lib/edge/acme\""),
            );
            PathBuf::new()
        }
        Some(d) => ck.resolve(d.get_ref()),
        None => PathBuf::from(DEFAULT_ACME_STATE_DIR),
    };
    let renew_before = raw.renew_before.as_ref().map(|_| {
        ck.positive_duration(
            &raw.renew_before,
            path,
            "renew_before",
            std::time::Duration::ZERO,
        )
    });
    let ca = raw
        .ca
        .as_ref()
        .map(|c| ck.existing_file(c, &join_key(path, "ca"), "CA certificate file"));
    ok.then(|| Acme {
        directory: raw.directory.into_inner(),
        email,
        domains,
        challenge,
        state_dir,
        renew_before,
        ca,
    })
}
