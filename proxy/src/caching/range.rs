//! Range requests on responses edge serves from its cache (RFC 9110 §14):
//! pingora's range filter, with two corrections. A suffix range of length 0
//! (`bytes=-0`) is unsatisfiable (§14.1.1, §14.1.3); pingora reads it as an
//! empty range and would send a 206 whose `Content-Range` is malformed:
//! edge answers 416 with `Content-Range: bytes */length`. On an empty
//! representation pingora's arithmetic underflows (a panic in debug builds,
//! a nonsense range in release): edge ignores `Range` there and sends the
//! empty 200, as §14.2 allows.

use http::header;
use pingora_http::RequestHeader;
use pingora_http::ResponseHeader;
use pingora_proxy::{range_header_filter, RangeType};

/// Ranges of a multipart answer at most (as pingora's default).
pub(crate) const MAX_RANGES: Option<usize> = Some(200);

/// Decides how `resp` (a 200 with `Content-Length`) answers `req`'s
/// `Range`, and sets its status and headers accordingly.
pub(crate) fn filter(
    req: &RequestHeader,
    resp: &mut ResponseHeader,
    max_ranges: Option<usize>,
) -> RangeType {
    let length = resp
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if length == Some(0) {
        return RangeType::None;
    }
    let t = match without_empty_suffixes(req) {
        Cleaned::Unchanged => range_header_filter(req, resp, max_ranges),
        Cleaned::Rest(req) => range_header_filter(&req, resp, max_ranges),
        // Unsatisfiable, where a range would be honoured at all.
        Cleaned::Nothing
            if resp.status.as_u16() == 200
                && matches!(req.method, http::Method::GET | http::Method::HEAD)
                && !req.headers.contains_key(header::IF_RANGE) =>
        {
            RangeType::Single(0..0)
        }
        Cleaned::Nothing => RangeType::None,
    };
    let empty = match &t {
        RangeType::Single(r) => r.is_empty(),
        RangeType::Multi(m) => m.ranges.iter().any(|r| r.is_empty()),
        _ => false,
    };
    if !empty {
        return t;
    }
    let _ = resp.set_status(416);
    for name in [
        header::ACCEPT_RANGES,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::TRANSFER_ENCODING,
    ] {
        resp.remove_header(&name);
    }
    let _ = resp.insert_header(header::CONTENT_LENGTH, "0");
    let _ = resp.insert_header(
        header::CONTENT_RANGE,
        format!("bytes */{}", length.unwrap_or(0)),
    );
    RangeType::Invalid
}

enum Cleaned {
    Unchanged,
    /// The request with its zero-length suffixes taken out of `Range`.
    Rest(Box<RequestHeader>),
    /// Every range was a zero-length suffix.
    Nothing,
}

/// Takes `-0` (any suffix of zero bytes) out of a `bytes=` range set: it
/// can never be satisfied, the others still may be (§14.1.1).
fn without_empty_suffixes(req: &RequestHeader) -> Cleaned {
    let Some(v) = req.headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Cleaned::Unchanged;
    };
    let Some((unit, set)) = v.split_once('=') else {
        return Cleaned::Unchanged;
    };
    let zero = |spec: &str| {
        spec.trim()
            .strip_prefix('-')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b == b'0'))
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || !set.split(',').any(zero) {
        return Cleaned::Unchanged;
    }
    let rest: Vec<&str> = set.split(',').filter(|s| !zero(s)).collect();
    if rest.is_empty() {
        return Cleaned::Nothing;
    }
    let mut req = req.clone();
    if req
        .insert_header(header::RANGE, format!("bytes={}", rest.join(",")))
        .is_err()
    {
        return Cleaned::Unchanged;
    }
    Cleaned::Rest(Box::new(req))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn answer(range: &str, len: usize) -> (u16, Option<String>) {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("range", range).unwrap();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("content-length", len.to_string())
            .unwrap();
        filter(&req, &mut resp, MAX_RANGES);
        let cr = resp
            .headers
            .get("content-range")
            .map(|v| v.to_str().unwrap().to_string());
        (resp.status.as_u16(), cr)
    }

    #[test]
    fn unsatisfiable_ranges_get_416() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(answer("bytes=-0", 100), (416, s("bytes */100")));
        assert_eq!(answer("bytes=-000", 100), (416, s("bytes */100")));
        assert_eq!(answer("bytes=-5", 0), (200, None));
        assert_eq!(answer("bytes=0-", 0), (200, None));
        assert_eq!(answer("bytes=100-", 100), (416, s("bytes */100")));
        assert_eq!(answer("bytes=0-4,-0", 100), (206, s("bytes 0-4/100")));
        assert_eq!(answer("bytes=-0,-0", 100), (416, s("bytes */100")));
        assert_eq!(answer("bytes=-1", 100), (206, s("bytes 99-99/100")));
        assert_eq!(answer("bytes=-500", 100), (206, s("bytes 0-99/100")));
        assert_eq!(answer("bytes=0-0", 100), (206, s("bytes 0-0/100")));
        assert_eq!(answer("bytes=5-2", 100).0, 416);
    }
}
