//! The door of the request path: every request's authority and path are
//! validated and normalized here, once, before anything routes on them;
//! the normalized request is what routes match, what the cache keys and
//! what goes upstream. HTTP/1 wire framing is checked even earlier, on the
//! raw bytes (`listen::framing`); this part sees a parsed request of any
//! protocol (HTTP/1.0, 1.1, 2).
//!
//! | rule | source | answer |
//! |---|---|---|
//! | one valid `Host` (HTTP/1.1), or `:authority` | RFC 9112 §3.2, RFC 9113 §8.3.1 | 400 |
//! | an absolute-form target's authority wins over `Host` | RFC 9112 §3.2.2 | — |
//! | host lower-case, no trailing dot, no default port | RFC 3986 §6.2.2.1, §6.2.3 | — |
//! | path: see [`path`] | RFC 3986 §5.2.4, §6.2.2 | 400, or 307 |
//! | `Connection` may not name `Host`, framing or forwarding fields | RFC 9110 §7.6.1 | 400 |

pub mod host;
pub mod path;

use http::header::{CONNECTION, CONTENT_LENGTH, COOKIE, HOST};
use http::{Method, Version};
use pingora_http::RequestHeader;

pub use self::host::{Authority, HostError};
pub use self::path::{NormalizedPath, PathError, PathOptions};

/// What the door found out about an admitted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The normalized authority; `None` for an HTTP/1.0 request without `Host`.
    pub authority: Option<Authority>,
    /// `authority` as `host[:port]` (what `Host` now says); empty without one.
    pub header: String,
}

impl Admitted {
    /// The host routes match on (no port); empty when there is none.
    pub fn host(&self) -> &str {
        self.authority.as_ref().map_or("", |a| a.host.as_str())
    }
}

/// A request the door turns away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
    /// For a 307: where the client should go instead.
    pub location: Option<String>,
}

impl Refusal {
    fn bad(reason: impl Into<String>) -> Self {
        Self {
            status: 400,
            reason: reason.into(),
            location: None,
        }
    }
}

/// Fields a `Connection` header may not nominate for removal: removing them
/// would change the request's target, framing or what edge says about the client.
const PROTECTED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
];

/// Validates and normalizes `req` in place: `Host` holds the normalized
/// authority and the target is the normalized origin-form path with the
/// query as it came. `tls` picks the default port when the target names no
/// scheme.
pub fn admit(req: &mut RequestHeader, tls: bool, paths: &PathOptions) -> Result<Admitted, Refusal> {
    if let Some(scheme) = scheme(req) {
        // HTTP/2's `:scheme`, or an absolute-form target's.
        if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
            return Err(Refusal::bad("scheme is not http or https"));
        }
    }
    let authority = authority(req, tls)?;
    let target = target(req, paths, tls, authority.as_ref())?;
    // An authority in the URI (HTTP/2's `:authority`) would go upstream as
    // it came: the request leaves in origin form, its authority in `Host`.
    let target = match target {
        None if req.uri.authority().is_some() => {
            // An origin-form path and query as the URI holds them
            // (HTTP/2's `:path`): the same URI without the authority,
            // sharing its bytes, where `set_raw_path` would parse them
            // again (about 1,000 instructions per HTTP/2 request). Not an
            // empty one (a `:path` of a fragment alone, `#x`): without its
            // scheme the URI would have no path at all, where the old way
            // gives `/`.
            let from_uri = req
                .uri
                .path_and_query()
                .filter(|pq| {
                    pq.as_str().starts_with('/') && req.raw_path() == pq.as_str().as_bytes()
                })
                .map(|pq| http::Uri::from(pq.clone()))
                .filter(|uri| uri.path().starts_with('/'));
            match from_uri {
                Some(uri) => {
                    req.set_uri(uri);
                    None
                }
                None => Some(req.raw_path().to_vec()),
            }
        }
        t => t,
    };
    if let Some(target) = target {
        req.set_raw_path(&target)
            .map_err(|_| Refusal::bad("the request target cannot be rebuilt"))?;
    }
    let header = authority
        .as_ref()
        .map(Authority::to_header)
        .unwrap_or_default();
    if authority.is_some()
        && crate::names::values(&req.headers, HOST)
            .next()
            .map(|h| h.as_bytes())
            != Some(header.as_bytes())
    {
        req.insert_header(HOST, header.as_str())
            .map_err(|_| Refusal::bad("bad Host"))?;
    }
    for line in crate::names::values(&req.headers, CONNECTION) {
        for token in line.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if let Some(p) = PROTECTED
                .iter()
                .find(|p| token.eq_ignore_ascii_case(p.as_bytes()))
            {
                return Err(Refusal::bad(format!("Connection names {p}")));
            }
        }
    }
    content_length(req)?;
    fields(req)?;
    Ok(Admitted { authority, header })
}

/// One `Content-Length`, a run of digits (HTTP/1 was checked on the wire;
/// this holds HTTP/2 to the same rule: a list or a repeat is never forwarded).
fn content_length(req: &RequestHeader) -> Result<(), Refusal> {
    let mut lengths = crate::names::values(&req.headers, CONTENT_LENGTH);
    if let Some(v) = lengths.next() {
        let v = v.as_bytes();
        if lengths.next().is_some() {
            return Err(Refusal::bad("more than one Content-Length"));
        }
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Err(Refusal::bad("bad Content-Length"));
        }
    }
    Ok(())
}

/// Fields as they go upstream: names with `_` are dropped (as nginx does by
/// default: CGI-style backends read `X_Forwarded_For` as `X-Forwarded-For`),
/// and HTTP/2 cookie crumbs are joined into one field (RFC 9113 §8.2.3).
fn fields(req: &mut RequestHeader) -> Result<(), Refusal> {
    // A byte loop: `str::contains` runs a pattern searcher per name
    // (about 60 instructions a name, `benches/callgrind`, issue 17).
    let underscored = |k: &http::HeaderName| k.as_str().bytes().any(|b| b == b'_');
    if req.headers.keys().any(underscored) {
        let underscored: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|k| underscored(k))
            .cloned()
            .collect();
        for name in underscored {
            req.remove_header(&name);
        }
    }
    // A second cookie field found by walking a small map (`names::values`),
    // not by hashing the name: most requests carry one or none.
    if req.version == Version::HTTP_2 && crate::names::values(&req.headers, COOKIE).nth(1).is_some()
    {
        let joined: Vec<u8> = req
            .headers
            .get_all(COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect::<Vec<_>>()
            .join(&b"; "[..]);
        let value =
            http::HeaderValue::from_bytes(&joined).map_err(|_| Refusal::bad("bad cookie"))?;
        req.insert_header(COOKIE, value)
            .map_err(|_| Refusal::bad("bad cookie"))?;
    }
    Ok(())
}

/// The request's scheme: HTTP/2's `:scheme`, or an absolute-form target's.
fn scheme(req: &RequestHeader) -> Option<&[u8]> {
    req.uri.scheme_str().map(str::as_bytes).or_else(|| {
        let raw = req.raw_path();
        if raw.first() == Some(&b'/') {
            return None;
        }
        let i = raw.windows(3).position(|w| w == b"://")?;
        Some(&raw[..i])
    })
}

fn authority(req: &RequestHeader, tls: bool) -> Result<Option<Authority>, Refusal> {
    let mut hosts = crate::names::values(&req.headers, HOST);
    let (host, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err(Refusal::bad("more than one Host header"));
    }
    let default_port = match scheme(req) {
        Some(s) if s.eq_ignore_ascii_case(b"https") => 443,
        Some(_) => 80,
        None if tls => 443,
        None => 80,
    };
    let parse = |raw: &[u8], what: &str| {
        host::parse(raw, default_port).map_err(|e| Refusal::bad(format!("{what}: {e}")))
    };
    let raw = req.raw_path();
    let target_authority = match req.uri.authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None if raw.first() != Some(&b'/') => absolute_authority(raw),
        None => None,
    };
    match (target_authority, host) {
        (Some(target), host) => {
            let a = parse(target, "request target")?;
            if let Some(h) = host {
                // RFC 9112 §3.2: a bad Host is refused even where the
                // target's authority wins (HTTP/1); RFC 9113 §8.3.1: in
                // HTTP/2 the two must agree.
                let h = parse(h.as_bytes(), "Host")?;
                if req.version == Version::HTTP_2 && h != a {
                    return Err(Refusal::bad("Host differs from :authority"));
                }
            }
            Ok(Some(a))
        }
        (None, Some(h)) => parse(h.as_bytes(), "Host").map(Some),
        (None, None) if req.version == Version::HTTP_10 => Ok(None),
        (None, None) => Err(Refusal::bad("no Host header")),
    }
}

/// The authority of an absolute-form target (`scheme://authority/...`).
fn absolute_authority(raw: &[u8]) -> Option<&[u8]> {
    let i = raw.windows(3).position(|w| w == b"://")?;
    let after = &raw[i + 3..];
    let end = after
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(after.len());
    Some(&after[..end])
}

/// The normalized target, or `None` when it is already normal.
fn target(
    req: &RequestHeader,
    paths: &PathOptions,
    tls: bool,
    authority: Option<&Authority>,
) -> Result<Option<Vec<u8>>, Refusal> {
    let raw = req.raw_path();
    if raw == b"*" && req.method == Method::OPTIONS {
        return Ok(None);
    }
    let origin_form = if raw.first() == Some(&b'/') {
        raw
    } else {
        // Absolute form: what follows `scheme://authority`.
        let Some(after) = raw
            .windows(3)
            .position(|w| w == b"://")
            .map(|i| &raw[i + 3..])
        else {
            return Err(Refusal::bad("the request target is not a path"));
        };
        let start = after
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(after.len());
        &after[start..]
    };
    let (path, query) = match origin_form.iter().position(|&b| b == b'?') {
        Some(i) => (&origin_form[..i], Some(&origin_form[i..])),
        None => (origin_form, None),
    };
    // One pass over the query for both refusals (`#` is forbidden too);
    // a byte refused for itself is named before a fragment.
    let query_bytes = query.unwrap_or_default();
    if let Some(at) = query_bytes
        .iter()
        .position(|&b| path::FORBIDDEN_TARGET_BYTES[usize::from(b)])
    {
        if let Some(&b) = query_bytes[at..]
            .iter()
            .find(|&&b| path::forbidden_target_byte(b) && b != b'#')
        {
            return Err(Refusal::bad(format!(
                "byte {:?} in the query",
                char::from(b)
            )));
        }
        return Err(Refusal::bad("a fragment in the request target"));
    }
    if path::is_normal(path, paths) && origin_form.len() == raw.len() {
        return Ok(None);
    }
    let path = if path.is_empty() { &b"/"[..] } else { path };
    let n = path::normalize(path, paths).map_err(|e| Refusal::bad(e.to_string()))?;
    let mut out = n.path.into_bytes();
    if let Some(q) = query {
        out.extend_from_slice(q);
    }
    if n.redirect {
        // Absolute, so that a path starting with `//` cannot name another host.
        let path = String::from_utf8_lossy(&out);
        let location = match authority {
            Some(a) => format!(
                "{}://{}{path}",
                if tls { "https" } else { "http" },
                a.to_header()
            ),
            None => format!("/{}", path.trim_start_matches('/')),
        };
        return Err(Refusal {
            status: 307,
            reason: "encoded slashes decoded".into(),
            location: Some(location),
        });
    }
    Ok((out != raw).then_some(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(target: &str, host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        if let Some(h) = host {
            r.insert_header(HOST, h).unwrap();
        }
        r
    }

    #[test]
    fn a_clean_request_is_left_alone() {
        let mut r = req("/a/b?x=1", Some("example.com"));
        let a = admit(&mut r, false, &PathOptions::default()).unwrap();
        assert_eq!(a.host(), "example.com");
        assert_eq!(r.raw_path(), b"/a/b?x=1");
    }

    /// An HTTP/2 request as pingora builds it: the URI holds `:scheme`,
    /// `:authority` and `:path`.
    fn h2(uri: &str) -> RequestHeader {
        let (parts, ()) = http::Request::builder()
            .version(Version::HTTP_2)
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts();
        RequestHeader::from(parts)
    }

    /// A target whose authority is dropped (HTTP/2's `:authority`; an
    /// absolute-form target, which the door always rewrites) leaves as the
    /// same request in origin form with that `Host` leaves: the same URI,
    /// target, wire form and errors. An HTTP/2 path the door keeps shares
    /// its bytes (not parsed again).
    #[test]
    fn an_authoritys_request_leaves_as_its_origin_form_does() {
        // What follows the authority, its origin form, and whether an
        // HTTP/1 absolute-form target of it is tried too.
        let cases = [
            ("/", "/", true),
            ("/a", "/a", true),
            ("/a/b/c.ts", "/a/b/c.ts", true),
            ("/a?b", "/a?b", true),
            ("/a?", "/a?", true),
            ("/?x=1&y=2", "/?x=1&y=2", true),
            ("/a%20b?c=%2F", "/a%20b?c=%2F", true),
            (
                "/seg_1.m4s?token=abc.def-ghi_~&exp=1700000000",
                "/seg_1.m4s?token=abc.def-ghi_~&exp=1700000000",
                true,
            ),
            ("/a;p=1/b", "/a;p=1/b", true),
            ("/a?x=/../y", "/a?x=/../y", true),
            ("/a/./b/../c", "/a/./b/../c", true),
            ("/a//b", "/a//b", true),
            ("/%7Euser/%2e%2E/x", "/%7Euser/%2e%2E/x", true),
            ("/%E2%82%AC?%ff", "/%E2%82%AC?%ff", true),
            ("/a:b@c!$&'()*+,;=", "/a:b@c!$&'()*+,;=", true),
            // A fragment is no part of the target (the URI parse drops
            // it); one alone leaves an empty path, which is `/`.
            ("#x", "/", false),
            ("#", "/", false),
            ("/a#frag", "/a", false),
            ("/a?b#c", "/a?b", false),
            ("/#/../x", "/", false),
        ];
        for scheme in ["http", "https"] {
            let tls = scheme == "https";
            for authority in ["example.com", "example.com:8443", "Example.COM", "[::1]:80"] {
                for (after, origin_form, absolute_too) in cases {
                    let uri = format!("{scheme}://{authority}{after}");
                    let mut origin = req(origin_form, Some(authority));
                    let expected = admit(&mut origin, tls, &PathOptions::default())
                        .map(|a| a.host().to_string());
                    let mut shapes = vec![("h2", h2(&uri))];
                    if absolute_too {
                        shapes.push(("absolute-form", req(&uri, None)));
                    }
                    for (label, mut r) in shapes {
                        let before = r.uri.path_and_query().map(|pq| pq.as_str().as_ptr());
                        let got = admit(&mut r, tls, &PathOptions::default())
                            .map(|a| a.host().to_string());
                        assert_eq!(got.is_ok(), expected.is_ok(), "{label} {uri}");
                        let (Ok(got), Ok(expected)) = (got, expected.as_ref()) else {
                            continue;
                        };
                        assert_eq!(&got, expected, "{label} {uri}");
                        assert_eq!(r.uri, origin.uri, "{label} {uri}");
                        assert_eq!(r.uri.path(), origin.uri.path(), "{label} {uri}");
                        assert_eq!(r.uri.authority(), None, "{label} {uri}");
                        assert_eq!(r.raw_path(), origin.raw_path(), "{label} {uri}");
                        assert_eq!(
                            r.headers.get(HOST),
                            origin.headers.get(HOST),
                            "{label} {uri}"
                        );
                        let kept = origin.raw_path() == after.as_bytes();
                        if label == "h2" && kept {
                            let after_admit = r.uri.path_and_query().map(|pq| pq.as_str().as_ptr());
                            assert_eq!(after_admit, before, "not shared: {uri}");
                        }
                        r.set_version(origin.version);
                        let (mut wire, mut origin_wire) = (Vec::new(), Vec::new());
                        r.header_to_h1_wire(&mut wire);
                        origin.header_to_h1_wire(&mut origin_wire);
                        assert_eq!(wire, origin_wire, "{label} {uri}");
                    }
                }
            }
        }
    }

    #[test]
    fn absolute_form_wins_and_becomes_origin_form() {
        let mut r = req("http://Abs.Test:80/p/../q?x=/../", Some("other.test"));
        let a = admit(&mut r, false, &PathOptions::default()).unwrap();
        assert_eq!(a.host(), "abs.test");
        assert_eq!(r.raw_path(), b"/q?x=/../");
        assert_eq!(r.headers.get(HOST).unwrap(), "abs.test");
        let mut r = req("http://abs.test", None);
        admit(&mut r, false, &PathOptions::default()).unwrap();
        assert_eq!(r.raw_path(), b"/");
    }

    #[test]
    fn host_rules() {
        let o = PathOptions::default();
        let mut r = req("/", None);
        assert_eq!(admit(&mut r, false, &o).unwrap_err().status, 400);
        let mut r = req("/", None);
        r.set_version(Version::HTTP_10);
        assert_eq!(admit(&mut r, false, &o).unwrap().authority, None);
        let mut r = req("/", Some("a.test"));
        r.append_header(HOST, "a.test").unwrap();
        assert_eq!(admit(&mut r, false, &o).unwrap_err().status, 400);
        let mut r = req("/", Some("Example.COM.:443"));
        admit(&mut r, true, &o).unwrap();
        assert_eq!(r.headers.get(HOST).unwrap(), "example.com");
    }

    #[test]
    fn protected_fields_cannot_be_nominated() {
        for v in ["close, Host", "X-Forwarded-For", "content-length"] {
            let mut r = req("/", Some("a.test"));
            r.insert_header(CONNECTION, v).unwrap();
            assert_eq!(
                admit(&mut r, false, &PathOptions::default())
                    .unwrap_err()
                    .status,
                400,
                "{v}"
            );
        }
    }

    #[test]
    fn decode_and_redirect_keeps_the_query() {
        let o = PathOptions {
            escaped_slashes: edge_config::EscapedSlashes::DecodeAndRedirect,
            ..PathOptions::default()
        };
        let mut r = req("/a%2Fb?q=%2F", Some("a.test"));
        let e = admit(&mut r, false, &o).unwrap_err();
        assert_eq!(
            (e.status, e.location.as_deref()),
            (307, Some("http://a.test/a/b?q=%2F"))
        );
        // Never a protocol-relative location to another host.
        let o = PathOptions {
            merge_slashes: false,
            ..o
        };
        let mut r = req("//evil.com/%2f", Some("a.test"));
        let e = admit(&mut r, true, &o).unwrap_err();
        assert_eq!(e.location.as_deref(), Some("https://a.test//evil.com//"));
    }

    #[test]
    fn only_http_schemes() {
        let mut r = req("ftp://a.test/x", Some("a.test"));
        assert_eq!(
            admit(&mut r, false, &PathOptions::default())
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn the_default_port_follows_the_connection_for_origin_form() {
        let mut r = req("/x?next=https://y", Some("example.com:443"));
        admit(&mut r, false, &PathOptions::default()).unwrap();
        assert_eq!(r.headers.get(HOST).unwrap(), "example.com:443");
        let mut r = req("/x?next=http://y", Some("example.com:80"));
        admit(&mut r, true, &PathOptions::default()).unwrap();
        assert_eq!(r.headers.get(HOST).unwrap(), "example.com:80");
    }

    #[test]
    fn framing_and_field_names_hold_for_every_protocol() {
        let o = PathOptions::default();
        let mut r = req("/", Some("a.test"));
        r.append_header("content-length", "3").unwrap();
        r.append_header("content-length", "3").unwrap();
        assert_eq!(admit(&mut r, false, &o).unwrap_err().status, 400);
        let mut r = req("/", Some("a.test"));
        r.append_header("x_forwarded_for", "1.2.3.4").unwrap();
        r.append_header("x-kept", "1").unwrap();
        admit(&mut r, false, &o).unwrap();
        assert!(!r.headers.contains_key("x_forwarded_for"));
        assert!(r.headers.contains_key("x-kept"));
    }
}
