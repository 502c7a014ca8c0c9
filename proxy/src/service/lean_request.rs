//! The upstream request of a pass-through written from the client's header
//! map (issue 17): no copy of it is made and edited; its fields are written
//! in its order with edge's edits made on the way, byte for byte what
//! pingora's path sends (`h1_upstream_request`: pingora's sanitizing, then
//! [`EdgeProxy::upstream_request_of`], then pingora's HTTP/1 writer).
//!
//! That holds while the edits only replace a field in its place or append
//! one: the upstream request phase's `Host` (a pool's `host`),
//! `X-Forwarded-For` and `X-Forwarded-Proto` (each replaced in the place of
//! its first value, or appended), and a route's `request_headers` that
//! `set` or `add` fields the request does not carry (appended in order). A
//! request that would lose a field (a hop-by-hop field: the upstream
//! request policy is then pingora's standard one; a prefill or CMCD field;
//! a route's `remove` of a field it carries or of one edge stamps: a header
//! map moves its last field into the place of one removed), a route edit
//! of a field the request carries, of one of edge's, or of one that frames
//! the exchange or names the connection (pingora's client reads those from
//! the request it keeps, and none is kept here), a rewritten path or
//! target, a `Host` other than one, or a target not in origin form goes the
//! usual way ([`EdgeProxy::plain_upstream_head`] is `None`).

use bytes::BytesMut;
use http::header;
use pingora_core::upstreams::peer::HttpUpstreamRequestPolicy;

use super::*;
use crate::route::{CompiledHeaderOps, UpstreamStep};

/// Whether the upstream request phase removes fields named `name` (a
/// prefill's mark, the players' CMCD data).
fn removed(name: &http::HeaderName) -> bool {
    *name == crate::names::PREFILL || crate::video::cmcd::HEADERS.contains(name)
}

/// Names edge writes itself: the request's ids (`stamp_ids`), then the
/// upstream request phase's after the route's edits.
static OURS: [http::HeaderName; 6] = [
    crate::names::X_REQUEST_ID,
    crate::names::TRACEPARENT,
    crate::names::TRACESTATE,
    header::HOST,
    crate::names::X_FORWARDED_FOR,
    crate::names::X_FORWARDED_PROTO,
];

/// Whether `ops` only appends fields `headers` does not carry: no field
/// removed or replaced (the ids edge stamps count as carried: they may not
/// be in `headers` yet), no name twice (a header map groups a name's
/// values), none of the names edge writes itself ([`OURS`]) or removes,
/// and no field that changes the exchange's framing or connection (pingora's
/// client reads them from the request it keeps, and none is kept here:
/// hop-by-hop fields, `Content-Length`, `Expect`).
fn appends_only(ops: &CompiledHeaderOps, headers: &http::HeaderMap) -> bool {
    if ops
        .remove
        .iter()
        .any(|n| headers.contains_key(n) || OURS.contains(n))
    {
        return false;
    }
    let edited = ops.set.iter().chain(&ops.add).map(|(n, _)| n);
    for (i, name) in edited.clone().enumerate() {
        if headers.contains_key(name)
            || OURS.contains(name)
            || removed(name)
            || crate::hop::REQUEST_HOP.contains(name)
            || *name == header::CONTENT_LENGTH
            || *name == header::EXPECT
            || edited.clone().take(i).any(|n| n == name)
        {
            return false;
        }
    }
    true
}

/// A field line, its name spelled as pingora's HTTP/1 writer spells it
/// (its own `titled_header_name_str`: twelve names titled, the rest as a
/// `HeaderName` holds them, in lower case).
fn line(buf: &mut BytesMut, name: &http::HeaderName, value: &[u8]) {
    name_of_line(buf, name);
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// A field line's name and `: `, spelled as [`line`] spells it.
fn name_of_line(buf: &mut BytesMut, name: &http::HeaderName) {
    let name = pingora_http::titled_header_name_str(name).unwrap_or(name.as_str());
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b": ");
}

impl EdgeProxy {
    /// The upstream request of `req` as pingora's path would write it to
    /// an HTTP/1 backend (request line, fields, blank line), or `None` when
    /// its edits are more than replacing and appending (see the module's
    /// text). `req`: the client's request as the lean pass-through takes
    /// it (`GET` or `HEAD`, no body), its ids stamped (`stamp_ids`) or,
    /// if not yet, written here as stamping would have put them; `client`:
    /// the client's address; `policy`: the peer's upstream request policy.
    pub(super) fn plain_upstream_head(
        &self,
        client: Option<IpAddr>,
        req: &RequestHeader,
        ctx: &RequestCtx,
        policy: HttpUpstreamRequestPolicy,
    ) -> Option<BytesMut> {
        // Toward the shield, a peer or the owner, and a slice's subrequest:
        // the usual way.
        if policy != HttpUpstreamRequestPolicy::preserve()
            || ctx.plan.tier.is_edge()
            || ctx.cache.sub.is_some()
            || ctx.state.as_ref().is_some_and(|s| s.site.is_some())
        {
            return None;
        }
        let route = ctx.route.as_deref()?;
        let mut ops = None;
        for step in &route.upstream_steps {
            match step {
                UpstreamStep::Rewrite if route.rewrite.is_some() => return None,
                UpstreamStep::Rewrite => {}
                UpstreamStep::HeaderEdits => ops = Some(&route.request_headers),
                UpstreamStep::AcceptEncoding => {
                    if matches!(ctx.cache.way, Some(Way::Whole | Way::Sliced)) {
                        return None;
                    }
                }
            }
        }
        if ctx.cmcd_query.is_some() && route.config.cmcd.forward {
            return None;
        }
        if ops.is_some_and(|ops| !appends_only(ops, &req.headers)) {
            return None;
        }
        // Origin form: no authority to reconcile with `Host`; pingora's
        // writer refuses NUL, CR, LF and SP in a target.
        let target = req.raw_path();
        if target.first() != Some(&b'/')
            || req.uri.authority().is_some()
            || target
                .iter()
                .any(|&b| matches!(b, 0x00 | b'\n' | b'\r' | b' '))
        {
            return None;
        }
        // The ids `stamp_ids` would have put on the request, if it has not.
        let pending = !ctx.ids_stamped;
        let stamp_id = (pending && ctx.request_id_new).then_some(ctx.request_id.as_bytes());
        let stamp_trace = ctx.trace.filter(|_| pending);
        let host_set = ctx.pool.as_ref().and_then(|p| p.config.host.as_deref());
        let proto: &[u8] = if self.tls { b"https" } else { b"http" };
        let mut buf = BytesMut::with_capacity(512);
        buf.extend_from_slice(req.method.as_str().as_bytes());
        buf.extend_from_slice(b" ");
        buf.extend_from_slice(target);
        buf.extend_from_slice(b" HTTP/1.1\r\n");
        let (mut hosts, mut forwarded, mut proto_sent) = (0, false, false);
        let (mut id_sent, mut trace_sent) = (false, false);
        // A header map yields a name's values together, at its first.
        for (name, value) in &req.headers {
            if *name == header::HOST {
                hosts += 1;
                let host = host_set.map_or(value.as_bytes(), str::as_bytes);
                // pingora refuses userinfo and a second `Host`.
                if hosts > 1 || host.contains(&b'@') {
                    return None;
                }
                line(&mut buf, name, host);
            } else if let Some(id) = stamp_id.filter(|_| *name == crate::names::X_REQUEST_ID) {
                // Each of these replaced in place by one value.
                if !std::mem::replace(&mut id_sent, true) {
                    line(&mut buf, name, id);
                }
            } else if let Some(trace) = stamp_trace.filter(|_| *name == crate::names::TRACEPARENT) {
                if !std::mem::replace(&mut trace_sent, true) {
                    line(&mut buf, name, &trace.header_bytes());
                }
            } else if *name == crate::names::TRACESTATE
                && stamp_trace.is_some_and(|t| t.parent_id.is_none())
            {
                // Removed for a restarted trace (§3.3): a header map moves
                // its last field into its place.
                return None;
            } else if let Some(ip) = client.filter(|_| *name == crate::names::X_FORWARDED_FOR) {
                // Replaced in place by one value: the first, then the client.
                if !std::mem::replace(&mut forwarded, true) {
                    forwarded_for(&mut buf, value.to_str().ok(), ip);
                }
            } else if *name == crate::names::X_FORWARDED_PROTO {
                if !std::mem::replace(&mut proto_sent, true) {
                    line(&mut buf, name, proto);
                }
            } else if removed(name) {
                return None;
            } else {
                line(&mut buf, name, value.as_bytes());
            }
        }
        if hosts != 1 {
            return None;
        }
        if let Some(id) = stamp_id.filter(|_| !id_sent) {
            line(&mut buf, &crate::names::X_REQUEST_ID, id);
        }
        if let Some(trace) = stamp_trace.filter(|_| !trace_sent) {
            line(&mut buf, &crate::names::TRACEPARENT, &trace.header_bytes());
        }
        if let Some(ops) = ops {
            for (name, value) in ops.set.iter().chain(&ops.add) {
                line(&mut buf, name, value.as_bytes());
            }
        }
        if let Some(ip) = client.filter(|_| !forwarded) {
            forwarded_for(&mut buf, None, ip);
        }
        if !proto_sent {
            line(&mut buf, &crate::names::X_FORWARDED_PROTO, proto);
        }
        buf.extend_from_slice(b"\r\n");
        Some(buf)
    }
}

/// The `X-Forwarded-For` line of a client at `ip` (`prior`: the value
/// the client sent, if text).
fn forwarded_for(buf: &mut BytesMut, prior: Option<&str>, ip: IpAddr) {
    name_of_line(buf, &crate::names::X_FORWARDED_FOR);
    super::upstream_request::push_forwarded_for_bytes(buf, prior, ip);
    buf.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use pingora_core::protocols::http::v1::client::http_req_header_to_wire;

    use super::*;
    use crate::route::RequestView;

    const CONFIG: &str = r#"
[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
[[pool]]
name = "p"
backends = [{ address = "127.0.0.1:1" }]
[[pool]]
name = "named"
host = "origin.example"
backends = [{ address = "127.0.0.1:1" }]
[[route]]
name = "named"
pool = "named"
match = { path_prefix = "/named/" }
[[route]]
name = "edits"
pool = "p"
match = { path_prefix = "/edits/" }
[route.request_headers]
remove = ["X-Gone"]
set = { "X-A" = "1", "Cache-Control" = "no-cache" }
add = { "X-B" = "2 3", "Via" = "1.1 edge" }
[[route]]
name = "edits-proto"
pool = "p"
match = { path_prefix = "/edits-proto/" }
[route.request_headers]
set = { "X-Forwarded-Proto" = "http" }
[[route]]
name = "edits-twice"
pool = "p"
match = { path_prefix = "/edits-twice/" }
[route.request_headers]
set = { "X-A" = "1" }
add = { "X-A" = "2" }
[[route]]
name = "edits-id"
pool = "p"
match = { path_prefix = "/edits-id/" }
[route.request_headers]
add = { "traceparent" = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" }
[[route]]
name = "edits-remove-id"
pool = "p"
match = { path_prefix = "/edits-remove-id/" }
[route.request_headers]
remove = ["traceparent"]
[[route]]
name = "edits-remove-rid"
pool = "p"
match = { path_prefix = "/edits-remove-rid/" }
[route.request_headers]
remove = ["X-Request-Id"]
[[route]]
name = "edits-connection"
pool = "p"
match = { path_prefix = "/edits-connection/" }
[route.request_headers]
set = { "Connection" = "close" }
[[route]]
name = "edits-framing"
pool = "p"
match = { path_prefix = "/edits-framing/" }
[route.request_headers]
add = { "Transfer-Encoding" = "chunked" }
[[route]]
name = "edits-length"
pool = "p"
match = { path_prefix = "/edits-length/" }
[route.request_headers]
set = { "Content-Length" = "5" }
[[route]]
name = "edits-upgrade"
pool = "p"
match = { path_prefix = "/edits-upgrade/" }
[route.request_headers]
add = { "Upgrade" = "x", "X-Ok" = "1" }
[[route]]
name = "named-edits"
pool = "named"
match = { path_prefix = "/named-edits/" }
[route.request_headers]
add = { "X-Site" = "a" }
[[route]]
name = "rewrite"
pool = "p"
strip_prefix = "/rewrite"
match = { path_prefix = "/rewrite/" }
[[route]]
name = "cmcd"
pool = "p"
cmcd = { forward = true }
match = { path_prefix = "/cmcd/" }
[[route]]
name = "bare"
pool = "p"
"#;

    /// The proxies (http and https listeners) over one state.
    fn edges() -> [EdgeProxy; 2] {
        let config = edge_config::parse_str(CONFIG, "t.toml", std::path::Path::new(".")).unwrap();
        let proxy = crate::state::Proxy::new(&prometheus::Registry::new()).unwrap();
        let state = proxy.build(&config, &crate::pool::Resolved::new()).unwrap();
        proxy.install(state, &config, false);
        let http = config.listeners[0].kind.http().unwrap();
        [false, true].map(|tls| EdgeProxy::new(proxy.clone(), "web", tls, http))
    }

    /// The context the lean pass-through has for `req` when it builds the
    /// upstream request: its route, pool and ids (not stamped on it), and
    /// the CMCD query the gate kept (`cmcd`).
    fn ctx_for(edge: &EdgeProxy, req: &RequestHeader, cmcd: Option<&str>) -> RequestCtx {
        let state = edge.proxy.state();
        let view = RequestView {
            listener: "web",
            host: "a.example",
            path: req.uri.path(),
            query: None,
            method: &req.method,
            headers: &req.headers,
            cookies: &[],
        };
        let route = state.routes.find(&view).unwrap().clone();
        let crate::route::Action::Proxy { pool } = route.action else {
            panic!("a route that proxies");
        };
        let mut ctx = RequestCtx::new();
        ctx.pool = Some(state.pools[pool].clone());
        ctx.route = Some(route);
        ctx.state = Some(state);
        (ctx.request_id, ctx.request_id_new) = crate::request_id::choose(req);
        ctx.trace = Some(crate::trace_context::continue_or_start(req, None));
        ctx.cmcd_query = cmcd.map(str::to_string);
        ctx
    }

    /// A request's method, path after its route's prefix, fields, and whether
    /// its upstream request is written from its header map.
    type Head<'a> = (&'a str, &'a str, Vec<(&'a str, &'a [u8])>, bool);

    /// A request: `fields` appended in order to a head without a case map,
    /// as the HTTP/1 shortcut builds it.
    fn request(method: &str, target: &str, fields: &[(&str, &[u8])]) -> RequestHeader {
        let mut req = RequestHeader::build_no_case(method, target.as_bytes(), None).unwrap();
        for (name, value) in fields {
            let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            let value = http::HeaderValue::from_bytes(value).unwrap();
            req.append_header(name, value).unwrap();
        }
        req
    }

    /// Every head, under every route, from clients at no address, IPv4
    /// and IPv6, on http and https listeners: when the head is written
    /// from the header map it is byte for byte what pingora's path sends
    /// (`h1_upstream_request` with edge's phase, then pingora's writer),
    /// and it is written so exactly when the module's rules say.
    #[test]
    fn a_head_written_from_the_map_is_pingora_s_byte_for_byte() {
        const H: (&str, &[u8]) = ("Host", b"a.example");
        let trace = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let long: Vec<(String, Vec<u8>)> = (0..40)
            .map(|i| (format!("x-field-{i}"), format!("value {i}").into_bytes()))
            .collect();
        let long: Vec<(&str, &[u8])> = std::iter::once(H)
            .chain(long.iter().map(|(n, v)| (n.as_str(), v.as_slice())))
            .collect();
        // (method, path after the route's prefix, fields, written from the map)
        let heads: Vec<Head> = vec![
            ("GET", "x", vec![H], true),
            ("HEAD", "x", vec![H], true),
            (
                "GET",
                "a/b?c=d&e",
                vec![H, ("User-Agent", b"curl/8"), ("Accept", b"*/*")],
                true,
            ),
            (
                "GET",
                "x",
                vec![
                    ("user-AGENT", b"Mozilla/5.0 (X11)"),
                    ("HOST", b"a.example"),
                    ("cache-CONTROL", b"max-age=0"),
                    ("Accept-Encoding", b"gzip, br"),
                    ("Cookie", b"a=1; b=2"),
                    ("Referer", b"https://a.example/"),
                    ("content-type", b"text/plain"),
                    ("Server", b"odd"),
                    ("Date", b"Tue, 01 Dec 2026 00:00:00 GMT"),
                ],
                true,
            ),
            (
                "GET",
                "x",
                vec![H, ("X-Forwarded-For", b"198.51.100.1")],
                true,
            ),
            (
                "GET",
                "x",
                vec![
                    ("X-Forwarded-For", b"198.51.100.1"),
                    H,
                    ("Accept", b"*/*"),
                    ("x-forwarded-for", b"203.0.113.9, 10.0.0.1"),
                ],
                true,
            ),
            ("GET", "x", vec![H, ("X-Forwarded-For", b"caf\xe9")], true),
            ("GET", "x", vec![H, ("X-Forwarded-For", b"")], true),
            ("GET", "x", vec![("X-Forwarded-Proto", b"https"), H], true),
            (
                "GET",
                "x",
                vec![
                    ("X-Forwarded-Proto", b"https"),
                    H,
                    ("X-Forwarded-Proto", b"ftp"),
                ],
                true,
            ),
            ("GET", "x", vec![H, ("X-Request-Id", b"abc-123")], true),
            (
                "GET",
                "x",
                vec![("X-Request-Id", b"bad id {}"), H, ("Accept", b"*/*")],
                true,
            ),
            (
                "GET",
                "x",
                vec![H, ("X-Request-Id", b"a"), ("X-Request-Id", b"b")],
                true,
            ),
            (
                "GET",
                "x",
                vec![H, ("traceparent", trace), ("tracestate", b"k=v")],
                true,
            ),
            // An unusable parent: its state is removed (a header map moves
            // its last field into the place) before the upstream request.
            (
                "GET",
                "x",
                vec![
                    H,
                    ("tracestate", b"k=v"),
                    ("Accept", b"*/*"),
                    ("traceparent", b"zz"),
                    ("X-Z", b"1"),
                ],
                true,
            ),
            (
                "GET",
                "x",
                vec![
                    ("Cookie", b"a=1"),
                    H,
                    ("Accept", b"a"),
                    ("cookie", b"b=2"),
                    ("ACCEPT", b"b"),
                    ("Accept", b"c"),
                ],
                true,
            ),
            (
                "GET",
                "x",
                vec![H, ("User-Agent", b"tab\there \xff\xfe obs-text")],
                true,
            ),
            ("GET", "x", vec![H, ("X-Empty", b"")], true),
            ("GET", "x", long.clone(), true),
            ("GET", "x", vec![H, ("X-A", b"client")], true),
            ("GET", "x", vec![H, ("X-Gone", b"client")], true),
            ("GET", "x", vec![H, ("Via", b"1.0 other")], true),
            // Hop-by-hop fields: pingora's standard policy removes them.
            ("GET", "x", vec![H, ("Keep-Alive", b"timeout=5")], false),
            (
                "GET",
                "x",
                vec![H, ("Proxy-Authorization", b"Basic eA==")],
                false,
            ),
            (
                "GET",
                "x",
                vec![H, ("Proxy-Connection", b"keep-alive")],
                false,
            ),
            (
                "GET",
                "x",
                vec![H, ("HTTP2-Settings", b"AAMAAABkAAQAoAAAAAIAAAAA")],
                false,
            ),
            ("GET", "x", vec![("Trailer", b"x"), H], false),
            (
                "GET",
                "x",
                vec![H, ("Connection", b"x-a"), ("X-A", b"1")],
                false,
            ),
            // Fields the upstream request phase removes.
            ("GET", "x", vec![H, (crate::site::PREFILL, b"1")], false),
            ("GET", "x", vec![H, ("CMCD-Object", b"br=3200")], false),
            ("GET", "x", vec![("cmcd-request", b"bl=21300"), H], false),
            // No Host, two, userinfo.
            ("GET", "x", vec![("Accept", b"*/*")], false),
            ("GET", "x", vec![H, ("Host", b"b.example")], false),
            ("GET", "x", vec![("Host", b"user@a.example")], false),
        ];
        let edges = edges();
        let clients: [Option<IpAddr>; 3] = [
            None,
            Some("192.0.2.7".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap()),
        ];
        // (route's prefix, whether its edits can be written from the map)
        let routes = [
            ("/bare/", true),
            ("/named/", true),
            ("/edits/", true),
            ("/edits-proto/", false),
            ("/edits-twice/", false),
            ("/edits-id/", false),
            ("/edits-remove-id/", false),
            ("/edits-remove-rid/", false),
            ("/edits-connection/", false),
            ("/edits-framing/", false),
            ("/edits-length/", false),
            ("/edits-upgrade/", false),
            ("/named-edits/", true),
            ("/rewrite/", false),
            ("/cmcd/", true),
            // The same route, for a request whose CMCD query the gate kept.
            ("/cmcd/?", false),
        ];
        let mut written = 0;
        for (method, path, fields, plain) in &heads {
            for (route_prefix, route_plain) in routes {
                let (prefix, cmcd) = match route_prefix.strip_suffix('?') {
                    Some(prefix) => (prefix, Some("br%3D3200")),
                    None => (route_prefix, None),
                };
                for edge in &edges {
                    for client in clients {
                        let target = format!("{prefix}{path}");
                        let what = format!(
                            "{method} {target} {fields:?} {client:?} tls {} cmcd {cmcd:?}",
                            edge.tls
                        );
                        let req = request(method, &target, fields);
                        let ctx = ctx_for(edge, &req, cmcd);
                        let policy = crate::hop::upstream_request_policy(&req);
                        // As pingora's path has it: the ids stamped.
                        let mut stamped = req.clone();
                        let mut stamped_ctx = ctx_for(edge, &req, cmcd);
                        stamped_ctx.request_id = ctx.request_id.clone();
                        stamped_ctx.request_id_new = ctx.request_id_new;
                        stamped_ctx.trace = ctx.trace;
                        stamped_ctx.stamp_ids(&mut stamped);
                        let reference =
                            pingora_proxy::h1_upstream_request(&stamped, policy, |up| {
                                edge.upstream_request_of(client, up, &mut ctx_for(edge, &req, cmcd))
                            })
                            .ok()
                            .and_then(|up| http_req_header_to_wire(&up));
                        // The head from the request as it came, ids written
                        // on the way, and from the stamped one.
                        let unstamped_head = edge.plain_upstream_head(client, &req, &ctx, policy);
                        let stamped_head =
                            edge.plain_upstream_head(client, &stamped, &stamped_ctx, policy);
                        let carries_edited = prefix == "/edits/"
                            && fields.iter().any(|(n, _)| {
                                ["x-a", "x-gone", "x-b", "via", "cache-control"]
                                    .iter()
                                    .any(|e| n.eq_ignore_ascii_case(e))
                            });
                        // A pool's `host` replaces a client's with userinfo.
                        let hosts: Vec<_> = fields
                            .iter()
                            .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
                            .collect();
                        let userinfo_replaced = prefix.starts_with("/named")
                            && hosts.len() == 1
                            && hosts[0].1.contains(&b'@');
                        let expected =
                            (*plain || userinfo_replaced) && route_plain && !carries_edited;
                        // A restarted trace's `tracestate` is removed when
                        // the ids are stamped.
                        let restarted = ctx.trace.is_some_and(|t| t.parent_id.is_none())
                            && fields
                                .iter()
                                .any(|(n, _)| n.eq_ignore_ascii_case("tracestate"));
                        for (head, expected, stamped) in [
                            (unstamped_head, expected && !restarted, false),
                            (stamped_head, expected, true),
                        ] {
                            let what = format!("{what} stamped {stamped}");
                            assert_eq!(head.is_some(), expected, "{what}");
                            if let Some(head) = head {
                                let reference = reference.as_ref().expect(&what);
                                assert_eq!(
                                    String::from_utf8_lossy(&head),
                                    String::from_utf8_lossy(reference),
                                    "{what}"
                                );
                                assert_eq!(&head[..], &reference[..], "{what}");
                                written += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(written > 900, "{written}");
    }

    /// A backend on loopback that reads one request head, sends it back
    /// through `heads`, then writes `answer` a piece at a time.
    async fn backend(
        answer: Vec<&'static [u8]>,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Receiver<Vec<u8>>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut b = [0u8; 1024];
                let n = sock.read(&mut b).await.unwrap();
                if n == 0 {
                    return;
                }
                got.extend_from_slice(&b[..n]);
            }
            let _ = tx.send(got);
            for piece in answer {
                sock.write_all(piece).await.unwrap();
                sock.flush().await.unwrap();
            }
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest).await;
        });
        (addr, rx)
    }

    /// pingora-core's `write_request_head` (EDGE-PATCH twenty-seventh):
    /// the head is sent as given, and the answer framed as for the method
    /// it names: a `HEAD`'s answer has no body whatever its
    /// `Content-Length` (read raw or built, after a 100 or not), a `GET`'s
    /// body is its length.
    #[tokio::test]
    async fn a_head_written_as_bytes_frames_its_answer_as_its_method_s() {
        use pingora_core::protocols::http::v1::client::{HttpSession, RawTask};
        use pingora_core::protocols::http::HttpTask;
        use pingora_core::protocols::l4::stream::Stream;
        for (method, head_method) in [("HEAD", true), ("GET", false)] {
            let wire = format!("{method} /a HTTP/1.1\r\nHost: h\r\n\r\n");
            for informational in [false, true] {
                for raw in [false, true] {
                    let mut answer: Vec<&'static [u8]> = Vec::new();
                    if informational {
                        answer.push(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    answer.push(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
                    if !head_method {
                        answer.push(b"abc");
                    }
                    let (addr, head) = backend(answer).await;
                    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let mut h1 = HttpSession::new(Box::new(Stream::from(tcp)));
                    let sent = h1
                        .write_request_head(wire.as_bytes(), head_method)
                        .await
                        .unwrap();
                    assert_eq!(sent, wire.len());
                    assert_eq!(head.await.unwrap(), wire.as_bytes());
                    assert!(!h1.is_upgrade_req());
                    let what = format!("{method} 100 {informational} raw {raw}");
                    if informational {
                        match h1.read_response_task().await.unwrap() {
                            HttpTask::Header(h, eob) => assert!(h.status == 100 && !eob, "{what}"),
                            other => panic!("{what}: {other:?}"),
                        }
                    }
                    let mut end = if raw {
                        match h1.read_response_task_raw().await.unwrap() {
                            RawTask::Head(h, end) => {
                                assert_eq!(h.status(), 200, "{what}");
                                end
                            }
                            other => panic!("{what}: {other:?}"),
                        }
                    } else {
                        match h1.read_response_task().await.unwrap() {
                            HttpTask::Header(h, end) => {
                                assert_eq!(h.status, 200, "{what}");
                                end
                            }
                            other => panic!("{what}: {other:?}"),
                        }
                    };
                    assert_eq!(end, head_method, "{what}");
                    let mut body = Vec::new();
                    while !end {
                        match h1.read_response_task().await.unwrap() {
                            HttpTask::Body(piece, e) => {
                                body.extend_from_slice(&piece.unwrap_or_default());
                                end = e;
                            }
                            HttpTask::Done => end = true,
                            other => panic!("{what}: {other:?}"),
                        }
                    }
                    assert_eq!(body, if head_method { &b""[..] } else { b"abc" }, "{what}");
                    assert!(h1.is_body_done(), "{what}");
                }
            }
        }
    }
}
