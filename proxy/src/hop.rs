//! Hop-by-hop fields (RFC 9110 §7.6.1) on responses: they describe one
//! connection and never cross edge. (Requests: pingora's standard upstream
//! request policy removes the same set, and the door refuses a `Connection`
//! that names `Host`, framing or forwarding fields.)
//!
//! Removed: `Connection` and every field it names, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Trailer`, `Upgrade` and `Proxy-Authenticate`;
//! a 101 keeps `Upgrade` and says `Connection: upgrade`. pingora then
//! writes the client's own `Connection`.
//! `Transfer-Encoding: chunked` is framing that pingora re-creates for the
//! client's hop; it stays, except for an HTTP/1.0 client, which cannot read
//! chunks: its response is delimited by closing instead (RFC 9112 §6.1).

use http::header;
use pingora_http::ResponseHeader;

/// Fields that are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "proxy-authenticate",
];

/// Fields a response's `Connection` may not make edge drop (framing).
const KEEP: &[&str] = &["content-length", "transfer-encoding", "content-range"];

/// Removes the hop-by-hop fields of a response on its way to a client.
/// A 101 keeps `Upgrade` and `Connection: upgrade`: they are the switch
/// itself (RFC 9110 §7.8).
pub fn strip_response(resp: &mut ResponseHeader, client_http10: bool) {
    let switching = resp.status.as_u16() == 101;
    let nominated: Vec<String> = resp
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && !KEEP.contains(&t.as_str()))
        .filter(|t| !(switching && t == "upgrade"))
        .collect();
    for name in nominated {
        resp.remove_header(name.as_str());
    }
    for name in HOP_BY_HOP {
        resp.remove_header(*name);
    }
    if switching {
        let _ = resp.insert_header(header::CONNECTION, "upgrade");
        return;
    }
    resp.remove_header(&header::CONNECTION);
    resp.remove_header(&header::UPGRADE);
    if client_http10 {
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
        assert_eq!(names, ["content-length", "transfer-encoding", "x-kept"]);
        strip_response(&mut r, true);
        assert!(!r.headers.contains_key("transfer-encoding"));
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
