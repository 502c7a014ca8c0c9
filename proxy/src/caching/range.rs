//! Range requests on responses edge serves from its cache (RFC 9110 §14):
//! pingora's range filter, with two corrections. A suffix range of length 0
//! (`bytes=-0`) is unsatisfiable (§14.1.1, §14.1.3); pingora reads it as an
//! empty range and would send a 206 whose `Content-Range` is malformed:
//! edge answers 416 with `Content-Range: bytes */length`. On an empty
//! representation pingora's arithmetic underflows (a panic in debug builds,
//! a nonsense range in release): edge ignores `Range` there and sends the
//! empty 200, as §14.2 allows. An `If-Range` with a weak entity tag never
//! holds (§13.1.5: a strong comparison; pingora compares bytes, nginx
//! strongly): the whole representation is sent.
//!
//! The common request, one `bytes=` range of ASCII digits, is decided here
//! without pingora's parser ([`simple`]: pingora matches each range with a
//! regex, about 5,000 instructions a request, `benches/callgrind/instr.sh`);
//! the answer is pingora's, checked against it over every form in the
//! tests. Anything else goes to pingora's filter.

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
    let field = |name| resp.headers.get(name).map(http::HeaderValue::as_bytes);
    let decided = simple(
        req,
        resp.status.as_u16(),
        field(header::CONTENT_LENGTH),
        field(header::ETAG),
        field(header::LAST_MODIFIED),
        max_ranges,
    );
    match decided {
        Some(Decision::Untouched) => return RangeType::None,
        Some(Decision::Whole) => {
            // May be asked for in ranges (pingora's filter, as nginx).
            let _ = resp.insert_header(header::ACCEPT_RANGES, "bytes");
            return RangeType::None;
        }
        Some(Decision::Part { range, length }) => {
            let _ = resp.set_status(206);
            resp.remove_header(&header::ACCEPT_RANGES);
            let _ = resp.insert_header(header::CONTENT_LENGTH, range.end - range.start);
            let _ = resp.insert_header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{length}", range.start, range.end - 1),
            );
            return RangeType::Single(range);
        }
        None => {}
    }
    by_pingora(req, resp, max_ranges)
}

/// [`filter`] by pingora's `range_header_filter`, with edge's corrections.
fn by_pingora(
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
    if weak_if_range(req) {
        // Never holds: the whole representation, as pingora gives it for
        // an If-Range that does not match.
        let usable = resp
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .is_some_and(|v| v.parse::<usize>().is_ok());
        if resp.status.as_u16() == 200 && usable {
            let _ = resp.insert_header(header::ACCEPT_RANGES, "bytes");
        }
        return RangeType::None;
    }
    let t = match without_empty_suffixes(req) {
        Cleaned::Unchanged => range_header_filter(req, resp, max_ranges),
        Cleaned::Rest(req) => range_header_filter(&req, resp, max_ranges),
        // Every range is a zero-length suffix. Where pingora's filter
        // would look at a range set at all (a 200 with a length it reads)
        // it is unsatisfiable, unless the method takes no ranges or
        // If-Range does not match, which get the whole representation
        // and `Accept-Ranges` as pingora gives them (§13.1.5, §14.2).
        Cleaned::Nothing => {
            let length = resp
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
                .and_then(|v| v.parse::<usize>().ok());
            if resp.status.as_u16() != 200 || length.is_none() {
                RangeType::None
            } else if matches!(req.method, http::Method::GET | http::Method::HEAD)
                && if_range_holds(req, resp)
            {
                RangeType::Single(0..0)
            } else {
                let _ = resp.insert_header(header::ACCEPT_RANGES, "bytes");
                RangeType::None
            }
        }
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

/// What [`simple`] decided, as pingora's filter would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Not a response ranges apply to (not a 200, no usable or a zero
    /// `Content-Length`): nothing changes.
    Untouched,
    /// The whole representation, which may be asked for in ranges
    /// (`Accept-Ranges: bytes` is added).
    Whole,
    /// A 206 of these bytes of a representation of `length` bytes.
    Part {
        range: std::ops::Range<usize>,
        length: usize,
    },
}

/// pingora's range decision (edge's [`filter`]: a zero length, then
/// `range_header_filter`) for a response of `status` with these fields,
/// when the request's `Range` is absent or one `bytes=` range of ASCII
/// digits without spaces; `None` for anything else (several ranges,
/// spaces, a zero-length suffix, a range past the end: pingora decides).
pub(crate) fn simple(
    req: &RequestHeader,
    status: u16,
    content_length: Option<&[u8]>,
    etag: Option<&[u8]>,
    last_modified: Option<&[u8]>,
    max_ranges: Option<usize>,
) -> Option<Decision> {
    // Both of edge's and pingora's readings of the length agree on digits.
    let length = match content_length {
        None => None,
        Some(v) if !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit) => {
            Some(digits(v)?)
        }
        Some(_) => return None,
    };
    if length == Some(0) || status != 200 {
        return Some(Decision::Untouched);
    }
    // Without a length, a zero-length suffix is still edge's 416.
    let length = length?;
    if req.method != http::Method::GET && req.method != http::Method::HEAD {
        return Some(Decision::Whole);
    }
    let mut ranges = req.headers.get_all(header::RANGE).iter();
    let range = match (ranges.next(), ranges.next()) {
        (None, _) => return Some(Decision::Whole),
        (Some(r), None) => r.as_bytes(),
        // Edge's zero-suffix step reads only the first: pingora decides.
        (Some(_), Some(_)) => return None,
    };
    let spec = range
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case(b"bytes="))
        .map(|_| &range[6..])?;
    let (first, last) = spec.split_at(memchr::memchr(b'-', spec)?);
    let last = &last[1..];
    let plain = |d: &[u8]| d.len() <= 19 && d.iter().all(u8::is_ascii_digit);
    if !plain(first) || !plain(last) || (first.is_empty() && last.is_empty()) {
        return None;
    }
    // A zero-length suffix is edge's step before pingora's filter (which
    // it then skips or answers 416): pingora's path decides it.
    if max_ranges.is_some_and(|m| m <= 1) || (first.is_empty() && digits(last)? == 0) {
        return None;
    }
    if let Some(ir) = req
        .headers
        .get(header::IF_RANGE)
        .map(http::HeaderValue::as_bytes)
    {
        let matches = if ir.starts_with(b"W/") {
            false
        } else if ir.len() >= 2 && ir.last() == Some(&b'"') {
            etag == Some(ir)
        } else {
            last_modified.is_some_and(|lm| lm == ir)
        };
        if !matches {
            return Some(Decision::Whole);
        }
    }
    let range = if first.is_empty() {
        // The last `last` bytes (not zero: see above).
        length.saturating_sub(digits(last)?)..length
    } else {
        let start = digits(first)?;
        if start >= length {
            return None;
        }
        let end = match last {
            b"" => length,
            l => digits(l)?.min(length - 1) + 1,
        };
        if end <= start {
            return None;
        }
        start..end
    };
    Some(Decision::Part { range, length })
}

/// An `If-Range` with a weak entity tag: it never holds (RFC 9110
/// §13.1.5 compares strongly; nginx too). pingora compares bytes, so a
/// weak tag equal to a weak `ETag` would get a part of a representation
/// that may have changed.
fn weak_if_range(req: &RequestHeader) -> bool {
    req.headers
        .get(header::IF_RANGE)
        .is_some_and(|v| v.as_bytes().starts_with(b"W/"))
}

/// Whether the request's `If-Range` (if any) matches `resp` as pingora's
/// filter compares it (and [`simple`] does): an entity tag byte for byte
/// with `ETag`, anything else byte for byte with `Last-Modified`; a weak
/// tag never.
fn if_range_holds(req: &RequestHeader, resp: &ResponseHeader) -> bool {
    let Some(ir) = req.headers.get(header::IF_RANGE) else {
        return true;
    };
    let ir = ir.as_bytes();
    if ir.starts_with(b"W/") {
        return false;
    }
    let field = |n| resp.headers.get(n).map(http::HeaderValue::as_bytes);
    if ir.len() >= 2 && ir.last() == Some(&b'"') {
        field(header::ETAG) == Some(ir)
    } else {
        field(header::LAST_MODIFIED) == Some(ir)
    }
}

/// ASCII digits as a number; `None` when it does not fit.
fn digits(d: &[u8]) -> Option<usize> {
    std::str::from_utf8(d).ok()?.parse().ok()
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

    /// `simple`'s decisions against pingora's filter over the forms of
    /// RFC 9110 §14.1.1 and their near misses: whenever it decides, the
    /// status, fields and range are pingora's; it decides the usual forms.
    #[test]
    fn the_simple_decision_is_pingoras_over_every_form() {
        const LM: &str = "Mon, 30 Nov 2026 10:00:00 GMT";
        let numbers = [
            "",
            "0",
            "1",
            "5",
            "9",
            "10",
            "11",
            "99",
            "100",
            "007",
            "9999999999999999999",
            "99999999999999999999",
            "\u{663}",
            "a",
            " 1",
        ];
        let mut ranges: Vec<Option<String>> = vec![None];
        for unit in ["bytes", "BYTES", "items", "byte"] {
            for sep in ["=", " =", "= "] {
                for a in numbers {
                    for b in numbers {
                        ranges.push(Some(format!("{unit}{sep}{a}-{b}")));
                    }
                }
                for multi in [
                    "0-1,5-6", "5-6,0-1", "0-1, 3-4", "-0", "-000", "0-4,-0", "", ",",
                ] {
                    ranges.push(Some(format!("{unit}{sep}{multi}")));
                }
                ranges.push(Some(format!("{unit}{sep}1-2=3")));
            }
        }
        ranges.push(Some("bytes".into()));
        ranges.push(Some("bytes=1-2\r\nRange: bytes=3-4".into()));
        let lengths = [
            None,
            Some("0"),
            Some("1"),
            Some("10"),
            Some("100"),
            Some("0100"),
            Some("x"),
        ];
        let if_ranges = [
            None,
            Some("\"e\""),
            Some("\"x\""),
            Some(LM),
            Some("junk"),
            Some("W/\"e\""),
        ];
        let mut decided = 0usize;
        let mut cases = 0usize;
        let mut check = |method: &str,
                         status: u16,
                         range: &Option<String>,
                         length: Option<&str>,
                         if_range: Option<&str>,
                         etag: Option<&str>,
                         modified: Option<&str>| {
            let mut req = RequestHeader::build(method, b"/v.mp4", None).unwrap();
            if let Some(r) = range {
                for one in r.split("\r\nRange: ") {
                    req.append_header("Range", one).unwrap();
                }
            }
            if let Some(v) = if_range {
                req.insert_header("If-Range", v).unwrap();
            }
            let mut resp = ResponseHeader::build(status, None).unwrap();
            for (n, v) in [
                ("Content-Length", length),
                ("ETag", etag),
                ("Last-Modified", modified),
            ] {
                if let Some(v) = v {
                    resp.insert_header(n, v).unwrap();
                }
            }
            let mut expected = resp.clone();
            let want = by_pingora(&req, &mut expected, MAX_RANGES);
            let got = filter(&req, &mut resp, MAX_RANGES);
            let what = format!("{method} {status} {range:?} {length:?} {if_range:?} {etag:?}");
            if let (RangeType::Multi(w), RangeType::Multi(g)) = (&want, &got) {
                // Both pingora's (boundaries are random).
                assert_eq!(w.ranges, g.ranges, "{what}");
                return;
            }
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{what}");
            assert_eq!(resp.status, expected.status, "{what}");
            let wire = |h: &ResponseHeader| {
                let mut b = Vec::new();
                h.header_to_h1_wire(&mut b);
                b
            };
            assert_eq!(wire(&resp), wire(&expected), "{what}");
            if simple(
                &req,
                status,
                length.map(str::as_bytes),
                etag.map(str::as_bytes),
                modified.map(str::as_bytes),
                MAX_RANGES,
            )
            .is_some()
            {
                decided += 1;
            }
            cases += 1;
        };
        for range in &ranges {
            for length in lengths {
                for if_range in if_ranges {
                    check("GET", 200, range, length, if_range, Some("\"e\""), Some(LM));
                }
            }
        }
        for range in ["bytes=1-5", "bytes=-3", "bytes=4-", "bytes=50-"].map(|r| Some(r.to_string()))
        {
            for method in ["GET", "HEAD", "POST"] {
                for status in [200, 206, 404] {
                    for if_range in if_ranges {
                        for etag in [None, Some("\"e\""), Some("W/\"e\"")] {
                            for modified in [None, Some(LM)] {
                                check(method, status, &range, Some("10"), if_range, etag, modified);
                            }
                        }
                    }
                }
            }
        }
        assert!(decided > 0 && decided < cases, "{decided} of {cases}");
        // The usual forms are decided here, not by pingora's parser.
        let req = |r: &str| {
            let mut q = RequestHeader::build("GET", b"/v.mp4", None).unwrap();
            q.insert_header("Range", r).unwrap();
            q
        };
        for (r, want) in [
            ("bytes=0-0", 0..1),
            ("bytes=0-", 0..100),
            ("bytes=5-9", 5..10),
            ("bytes=-1", 99..100),
            ("bytes=-100", 0..100),
            ("bytes=-500", 0..100),
            ("bytes=99-200", 99..100),
            ("BYTES=1-2", 1..3),
        ] {
            assert_eq!(
                simple(&req(r), 200, Some(b"100"), None, None, MAX_RANGES),
                Some(Decision::Part {
                    range: want,
                    length: 100
                }),
                "{r}"
            );
        }
    }

    #[test]
    fn a_weak_if_range_never_holds() {
        for (etag, if_range) in [("W/\"e\"", "W/\"e\""), ("\"e\"", "W/\"e\"")] {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            req.insert_header("range", "bytes=1-2").unwrap();
            req.insert_header("if-range", if_range).unwrap();
            let mut resp = ResponseHeader::build(200, None).unwrap();
            resp.insert_header("content-length", "10").unwrap();
            resp.insert_header("etag", etag).unwrap();
            assert_eq!(filter(&req, &mut resp, MAX_RANGES), RangeType::None);
            assert_eq!(resp.status.as_u16(), 200);
            assert_eq!(resp.headers.get("accept-ranges").unwrap(), "bytes");
            assert_eq!(
                simple(
                    &req,
                    200,
                    Some(b"10"),
                    Some(etag.as_bytes()),
                    None,
                    MAX_RANGES
                ),
                Some(Decision::Whole)
            );
        }
        // The strong tag still holds.
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("range", "bytes=1-2").unwrap();
        req.insert_header("if-range", "\"e\"").unwrap();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("content-length", "10").unwrap();
        resp.insert_header("etag", "\"e\"").unwrap();
        assert_eq!(filter(&req, &mut resp, MAX_RANGES), RangeType::Single(1..3));
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
