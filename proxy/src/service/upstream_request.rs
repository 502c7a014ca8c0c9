//! The upstream request phase: the route's compiled steps toward its own
//! pool ([`UpstreamStep`]: rewrite, header edits, the encoding the cache
//! keys), then what every request upstream gets: `Host`, `X-Forwarded-*`,
//! `CDN-Loop`, the players' data only where the route forwards it, a
//! slice's `Range`.

use super::*;
use crate::route::UpstreamStep;

pub(super) fn apply_request_ops(req: &mut RequestHeader, ops: &CompiledHeaderOps) -> Result<()> {
    for name in &ops.remove {
        req.remove_header(name);
    }
    for (name, value) in &ops.set {
        req.insert_header(name.clone(), value.clone())?;
    }
    for (name, value) in &ops.add {
        req.append_header(name.clone(), value.clone())?;
    }
    Ok(())
}

/// The `X-Forwarded-For` value for a client at `ip`: `prior` (the first
/// value the request carried, if text), `, `, then the address.
pub(super) fn forwarded_for(prior: Option<&str>, ip: std::net::IpAddr) -> String {
    let mut value = String::with_capacity(prior.map_or(0, |p| p.len() + 2) + 39);
    push_forwarded_for(&mut value, prior, ip);
    value
}

/// Appends [`forwarded_for`]'s value to `out` (the lean pass-through
/// writes it straight into the upstream head).
pub(super) fn push_forwarded_for(
    out: &mut impl std::fmt::Write,
    prior: Option<&str>,
    ip: std::net::IpAddr,
) {
    if let Some(prior) = prior {
        let _ = out.write_str(prior);
        let _ = out.write_str(", ");
    }
    push_ip(out, ip);
}

/// Appends `ip` as its `Display` writes it: an IPv4 address by its four
/// numbers (`Ipv4Addr`'s `Display` goes through the formatter's padding,
/// about 1,250 instructions per request; benches/RESULTS.md), IPv6 by
/// `Display` (RFC 5952 text). Writing to a `String` or a `BytesMut`
/// cannot fail.
fn push_ip(out: &mut impl std::fmt::Write, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    let _ = out.write_char('.');
                }
                let _ = out.write_str(digits.format(octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// [`push_forwarded_for`] into bytes (the lean pass-through's upstream
/// head): an IPv4 address's text made in a stack buffer and appended
/// once, where [`push_ip`] appends each number and dot on its own (about
/// 150 instructions per request more; `benches/callgrind/instr.sh`,
/// issue 17). The same text as [`push_forwarded_for`]'s.
pub(super) fn push_forwarded_for_bytes(
    out: &mut bytes::BytesMut,
    prior: Option<&str>,
    ip: std::net::IpAddr,
) {
    if let Some(prior) = prior {
        out.extend_from_slice(prior.as_bytes());
        out.extend_from_slice(b", ");
    }
    match ip {
        std::net::IpAddr::V4(v4) => {
            let (text, len) = ipv4_text(v4);
            out.extend_from_slice(&text[..len]);
        }
        std::net::IpAddr::V6(_) => push_ip(out, ip),
    }
}

/// An IPv4 address's dotted-decimal text (as `Display` writes it: no
/// leading zeros) and its length, 7 to 15 bytes.
fn ipv4_text(v4: std::net::Ipv4Addr) -> ([u8; 15], usize) {
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    (text, len)
}

impl EdgeProxy {
    pub(super) async fn upstream_request(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.upstream_request_of(client_ip(session), upstream, ctx)
    }

    /// [`Self::upstream_request`] for a client at `client`.
    pub(super) fn upstream_request_of(
        &self,
        client: Option<IpAddr>,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Toward the shield or a peer (an edge with the same routes) the
        // request goes as the client sent it: that edge applies the route.
        if let Some(route) = ctx.route.clone().filter(|_| !ctx.plan.tier.is_edge()) {
            for step in &route.upstream_steps {
                match step {
                    UpstreamStep::Rewrite => {
                        if let Some(rewrite) = &route.rewrite {
                            let path = rewrite_path(rewrite, upstream.uri.path());
                            let target = crate::video::with_query(&path, upstream.uri.query());
                            let uri: Uri = target.parse().map_err(|e| {
                                Error::because(ErrorType::InternalError, "rewritten path", e)
                            })?;
                            upstream.set_uri(uri);
                        }
                    }
                    UpstreamStep::HeaderEdits => {
                        apply_request_ops(upstream, &route.request_headers)?
                    }
                    UpstreamStep::AcceptEncoding => {
                        if matches!(ctx.cache.way, Some(Way::Whole | Way::Sliced)) {
                            // What the Vary key said is what the origin is asked for.
                            let accept = upstream
                                .headers
                                .get(http::header::ACCEPT_ENCODING)
                                .and_then(|v| v.to_str().ok());
                            let chosen =
                                caching::vary::pick_encoding(accept, &route.cache.accept_encoding);
                            upstream
                                .insert_header(http::header::ACCEPT_ENCODING, chosen.to_string())?;
                        }
                    }
                }
            }
        }
        // Not toward the shield or a peer either: it routes and keys its cache
        // by the client's Host, and one Host for every site would mix their objects.
        if let Some(host) = ctx
            .pool
            .as_ref()
            .filter(|_| !ctx.plan.tier.is_edge())
            .and_then(|p| p.config.host.clone())
        {
            upstream.insert_header(http::header::HOST, host)?;
        } else if !upstream.headers.contains_key(http::header::HOST) {
            // An HTTP/1.0 client may send none; HTTP/1.1 to the backend needs one.
            if let (Some(pool), Some(a)) = (&ctx.pool, &ctx.attempt) {
                if let Some(b) = pool.backends.get(a.index) {
                    upstream.insert_header(http::header::HOST, b.address.to_string())?;
                }
            }
        }
        if let Some(ip) = client {
            let prior = upstream
                .headers
                .get(crate::names::X_FORWARDED_FOR)
                .and_then(|v| v.to_str().ok());
            upstream.insert_header(crate::names::X_FORWARDED_FOR, forwarded_for(prior, ip))?;
        }
        upstream.insert_header(
            crate::names::X_FORWARDED_PROTO,
            http::HeaderValue::from_static(if self.tls { "https" } else { "http" }),
        )?;
        // A prefill is this site's business: the shield or origin sees a GET.
        // The players' data goes to the origin only if the route says so,
        // and never to another edge (which would count it again).
        let forward_cmcd =
            !ctx.plan.tier.is_edge() && ctx.route.as_ref().is_some_and(|r| r.config.cmcd.forward);
        let [a, b, c, d] = crate::video::cmcd::HEADERS.clone();
        let removed = [crate::names::PREFILL, a, b, c, d];
        let removed = if forward_cmcd {
            &removed[..1]
        } else {
            &removed[..]
        };
        if crate::names::any_present(&upstream.headers, removed) {
            for h in removed {
                upstream.remove_header(h);
            }
        }
        if let Some(raw) = ctx.cmcd_query.as_ref().filter(|_| forward_cmcd) {
            let target = match upstream.uri.query() {
                Some(q) => format!("{}?{q}&CMCD={raw}", upstream.uri.path()),
                None => format!("{}?CMCD={raw}", upstream.uri.path()),
            };
            let uri: Uri = target
                .parse()
                .map_err(|e| Error::because(ErrorType::InternalError, "cmcd target", e))?;
            upstream.set_uri(uri);
        }
        if let Some(site) = ctx.state.as_ref().and_then(|s| s.site.as_ref()) {
            // RFC 8586: this site's name added to what the request carried;
            // toward the owner, marked as a hop inside the site.
            let peer_of = (ctx.plan.tier == Tier::Owner).then_some(site.node.as_str());
            let value = crate::site::cdn_loop(upstream, &site.name, peer_of);
            let value = http::HeaderValue::from_bytes(&value)
                .map_err(|e| Error::because(ErrorType::InternalError, "cdn-loop", e))?;
            upstream.insert_header(crate::names::CDN_LOOP, value)?;
        }
        if let Some(Sub::Slice { index, size }) = ctx.cache.sub {
            // The index comes from a client's range: no arithmetic may wrap.
            let first = index.saturating_mul(size);
            let last = first.saturating_add(size.saturating_sub(1));
            upstream.insert_header(http::header::RANGE, format!("bytes={first}-{last}"))?;
        }
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{push_forwarded_for_bytes, push_ip};
    use std::net::IpAddr;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut rng = fastrand::Rng::with_seed(17);
        let mut ips: Vec<IpAddr> = [
            "0.0.0.0",
            "255.255.255.255",
            "127.0.0.1",
            "10.0.100.9",
            "1.22.203.0",
            "::",
            "::1",
            "::ffff:192.0.2.1",
            "2001:db8::8a2e:370:7334",
            "fe80::1:0:0:0",
        ]
        .iter()
        .map(|s| s.parse().expect("an address"))
        .collect();
        ips.extend((0..2000).map(|_| IpAddr::from(rng.u32(..).to_be_bytes())));
        ips.extend((0..500).map(|_| IpAddr::from(rng.u128(..).to_be_bytes())));
        for ip in ips {
            let mut out = String::from("x, ");
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x, {ip}"));
            let mut bytes = bytes::BytesMut::from(&b"X-Forwarded-For: "[..]);
            push_forwarded_for_bytes(&mut bytes, Some("x"), ip);
            assert_eq!(&bytes[..], format!("X-Forwarded-For: x, {ip}").as_bytes());
            let mut alone = bytes::BytesMut::new();
            push_forwarded_for_bytes(&mut alone, None, ip);
            assert_eq!(&alone[..], ip.to_string().as_bytes());
        }
    }
}
