//! Hop-by-hop fields (RFC 9110 §7.6.1) on responses: they describe one
//! connection and never cross edge. (Requests: pingora's standard upstream
//! request policy removes the same set, skipped for a request with none of
//! them ([`upstream_request_policy`]); the door refuses a `Connection`
//! that names `Host`, framing or forwarding fields, and leaves out an
//! `Upgrade` that asks no upgrade, `listen/framing.rs`.)
//!
//! Removed: `Connection` and every field it names, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Trailer`, `Upgrade` and `Proxy-Authenticate`;
//! a 101 keeps `Upgrade` and says `Connection: upgrade`. pingora then
//! writes the client's own `Connection`.
//! `Transfer-Encoding: chunked` is framing that pingora re-creates for the
//! client's hop; it stays, except for an HTTP/1.0 client, which cannot read
//! chunks: its response is delimited by closing instead (RFC 9112 §6.1).

use http::header::{self, HeaderName};
use pingora_core::upstreams::peer::HttpUpstreamRequestPolicy;
use pingora_http::{RequestHeader, ResponseHeader};

/// Fields a response's `Connection` may not make edge drop (framing).
const KEEP: &[&str] = &["content-length", "transfer-encoding", "content-range"];

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Every field pingora's standard upstream request policy acts on
/// (pingora-proxy 0.9.1 `sanitize_h1_upstream_request`: the fields
/// `Connection` nominates, the standard hop-by-hop set, and the upgrade
/// handshake it keeps for WebSocket only).
pub(crate) static REQUEST_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// The upstream request policy for `req` (the request as it goes to the
/// backend): pingora's standard one, which removes the hop-by-hop fields
/// of RFC 9110 §7.6.1 and those `Connection` nominates and forwards only a
/// WebSocket upgrade; or `preserve` when `req` has none of the fields the
/// standard one acts on. Then both forward the same head, and `preserve`
/// skips ten removals that find nothing (about 3,300 instructions per
/// request; benches/RESULTS.md). Fields nominated by a `Connection` need a
/// `Connection`, so its absence rules them out. Chosen in `upstream_peer`
/// from the request pingora's sanitizing then copies: nothing in between
/// may add one of these fields (edge does not override
/// `connected_to_upstream`; `upstream_request_filter` runs after it).
pub fn upstream_request_policy(req: &RequestHeader) -> HttpUpstreamRequestPolicy {
    if crate::names::any_present(&req.headers, &REQUEST_HOP) {
        HttpUpstreamRequestPolicy::standard()
    } else {
        HttpUpstreamRequestPolicy::preserve()
    }
}

/// Removes the hop-by-hop fields of a response on its way to a client.
/// A 101 keeps `Upgrade` and `Connection: upgrade`: they are the switch
/// itself (RFC 9110 §7.8). `Connection` itself is pingora's to write: it
/// replaces the value on HTTP/1 and drops the field on HTTP/2.
pub fn strip_response(resp: &mut ResponseHeader, client_http10: bool) {
    let switching = resp.status.as_u16() == 101;
    // One pass over the names: a usual response has none of these but
    // `Connection: keep-alive`, and then nothing is removed.
    let (mut connection, mut fixed, mut upgrade, mut te) = (false, false, false, false);
    for name in resp.headers.keys() {
        if *name == header::CONNECTION {
            connection = true;
        } else if *name == header::UPGRADE {
            upgrade = true;
        } else if *name == header::TRANSFER_ENCODING {
            te = true;
        } else if *name == KEEP_ALIVE
            || *name == PROXY_CONNECTION
            || *name == header::TE
            || *name == header::TRAILER
            || *name == header::PROXY_AUTHENTICATE
        {
            fixed = true;
        }
    }
    if connection {
        let nominated: Vec<String> = resp
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                let kept = t.is_empty()
                    || t.eq_ignore_ascii_case("keep-alive")
                    || t.eq_ignore_ascii_case("close")
                    || KEEP.iter().any(|k| t.eq_ignore_ascii_case(k))
                    || (switching && t.eq_ignore_ascii_case("upgrade"));
                !kept
            })
            .map(str::to_ascii_lowercase)
            .collect();
        for name in nominated {
            resp.remove_header(name.as_str());
        }
    }
    if fixed {
        for name in [
            KEEP_ALIVE,
            PROXY_CONNECTION,
            header::TE,
            header::TRAILER,
            header::PROXY_AUTHENTICATE,
        ] {
            resp.remove_header(&name);
        }
    }
    let status = resp.status.as_u16();
    if status < 200 || status == 204 {
        // No content, so no framing: a server must not send
        // Content-Length (RFC 9110 §8.6) or Transfer-Encoding (RFC 9112
        // §6.1) in a 1xx or 204.
        resp.remove_header(&header::CONTENT_LENGTH);
        resp.remove_header(&header::TRANSFER_ENCODING);
    }
    if switching {
        let _ = resp.insert_header(header::CONNECTION, "upgrade");
        return;
    }
    if upgrade {
        resp.remove_header(&header::UPGRADE);
    }
    if client_http10 && te {
        resp.remove_header(&header::TRANSFER_ENCODING);
    }
}

/// Whether a response to `method` has a body whose end only the closing of
/// the connection would mark (no `Content-Length`, not chunked).
pub fn delimited_by_close(resp: &ResponseHeader, method: &http::Method) -> bool {
    let status = resp.status.as_u16();
    if *method == http::Method::HEAD || status < 200 || status == 204 || status == 304 {
        return false;
    }
    !resp.headers.contains_key(header::CONTENT_LENGTH)
        && !resp
            .headers
            .get(header::TRANSFER_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn named_and_standard_fields_go_framing_stays() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret, content-length"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("upgrade", "h2c"),
            ("transfer-encoding", "chunked"),
            ("content-length", "5"),
            ("x-kept", "1"),
        ] {
            r.append_header(k, v).unwrap();
        }
        strip_response(&mut r, false);
        let mut names: Vec<&str> = r.headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "connection",
                "content-length",
                "transfer-encoding",
                "x-kept"
            ],
            "pingora writes its own Connection"
        );
        strip_response(&mut r, true);
        assert!(!r.headers.contains_key("transfer-encoding"));
    }

    #[test]
    fn a_response_without_content_carries_no_framing() {
        for status in [100u16, 102, 103, 204] {
            for (name, value) in [
                ("content-length", "0"),
                ("content-length", "11"),
                ("transfer-encoding", "chunked"),
            ] {
                let mut resp = ResponseHeader::build(status, None).unwrap();
                resp.insert_header(name, value).unwrap();
                resp.insert_header("etag", "\"x\"").unwrap();
                strip_response(&mut resp, false);
                assert!(resp.headers.get(name).is_none(), "{status} {name}");
                assert!(resp.headers.get("etag").is_some(), "{status}");
            }
        }
        // A 304 keeps its Content-Length: the selected representation's
        // (RFC 9110 §8.6); a 200 keeps either.
        for (status, name) in [
            (304u16, "content-length"),
            (200, "content-length"),
            (200, "transfer-encoding"),
        ] {
            let mut resp = ResponseHeader::build(status, None).unwrap();
            resp.insert_header(name, "11").unwrap();
            strip_response(&mut resp, false);
            assert!(resp.headers.get(name).is_some(), "{status} {name}");
        }
    }

    #[test]
    fn a_switch_keeps_its_upgrade_fields() {
        let mut r = ResponseHeader::build(101, None).unwrap();
        r.append_header("connection", "Upgrade, X-Secret").unwrap();
        r.append_header("upgrade", "websocket").unwrap();
        r.append_header("x-secret", "1").unwrap();
        r.append_header("keep-alive", "1").unwrap();
        strip_response(&mut r, false);
        assert_eq!(r.headers.get("upgrade").unwrap(), "websocket");
        assert_eq!(r.headers.get("connection").unwrap(), "upgrade");
        assert!(!r.headers.contains_key("x-secret"));
        assert!(!r.headers.contains_key("keep-alive"));
    }
}
