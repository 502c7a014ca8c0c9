//! `X-Request-Id`: one id for a request through every tier (the node a
//! client reached, the owner in the site, the shield, the origin) and in
//! every access log line about it. A client's (or a proxy's in front) is
//! kept when it is a plain token; otherwise edge makes a UUID v4, as Envoy
//! does. A new id is set on the request when the request leaves the node
//! (the request phase ends with the request going on, or a subrequest is
//! spawned from it), so every request sent upstream and every subrequest
//! carries it; routes, rate-limit keys and cache keys see the request as
//! the client sent it, and a RAM hit never writes it.

use pingora_http::RequestHeader;

pub const HEADER: &str = "x-request-id";

/// Whether `v` is an id edge passes on: 1–128 of `A-Z a-z 0-9 - _ . :`.
fn usable(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A random UUID (RFC 9562 version 4), 36 characters: one allocation
/// (made with `format!` per byte it took 10,000 instructions, a tenth of
/// a RAM hit's; `benches/callgrind/instr.sh`).
pub fn generate() -> String {
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    let mut at = 0;
    for group in [&b[0..4], &b[4..6], &b[6..8], &b[8..10], &b[10..16]] {
        crate::trace_context::hex_into(&mut out[at..at + 2 * group.len()], group);
        // The dash stays between groups.
        at += 2 * group.len() + 1;
    }
    // Only hex digits and dashes were written.
    crate::trace_context::ascii_string(&out)
}

/// The request's id: its one usable `X-Request-Id` (`false`: the request
/// already carries it), else a new one (`true`: [`stamp`] it on what goes
/// on, replacing whatever the request carried).
pub fn choose(req: &RequestHeader) -> (String, bool) {
    let mut values = crate::names::values(&req.headers, crate::names::X_REQUEST_ID);
    if let (Some(v), None) = (values.next(), values.next()) {
        if usable(v.as_bytes()) {
            if let Ok(s) = v.to_str() {
                return (s.to_string(), false);
            }
        }
    }
    (generate(), true)
}

/// Sets the request's one `X-Request-Id` field to `id`.
pub fn stamp(req: &mut RequestHeader, id: &str) {
    // A generated id is ASCII: the header value is always valid.
    let _ = req.insert_header(crate::names::X_REQUEST_ID, id);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id, and the request as it goes on.
    fn ensure(r: &mut RequestHeader) -> String {
        let (id, new) = choose(r);
        if new {
            stamp(r, &id);
        }
        id
    }

    fn req(ids: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for id in ids {
            r.append_header(HEADER, *id).unwrap();
        }
        r
    }

    #[test]
    fn a_plain_id_is_kept_and_anything_else_replaced() {
        let mut r = req(&["abc-123_X.y:z"]);
        assert_eq!(ensure(&mut r), "abc-123_X.y:z");
        for bad in [&["a b"][..], &["<script>"], &["x"; 2], &[""]] {
            let mut r = req(bad);
            let id = ensure(&mut r);
            assert_eq!(id.len(), 36, "{bad:?}");
            let values: Vec<_> = r.headers.get_all(HEADER).iter().collect();
            assert_eq!(values.len(), 1);
            assert_eq!(values[0].to_str().unwrap(), id);
        }
        let long = "a".repeat(129);
        assert_ne!(ensure(&mut req(&[&long])), long);
        let mut none = req(&[]);
        let id = ensure(&mut none);
        assert_eq!(&id[14..15], "4", "version 4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "variant");
        assert_ne!(id, generate());
        // The 8-4-4-4-12 groups of lower-case hex digits.
        for _ in 0..100 {
            let id = generate();
            let groups: Vec<&str> = id.split('-').collect();
            let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lens, [8, 4, 4, 4, 12], "{id}");
            assert!(groups.iter().all(|g| g
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))));
        }
    }
}
