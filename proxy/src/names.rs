//! Field names the request path sets or removes on every request, made
//! once: a name given as `&str` is parsed and validated on each use (about
//! 100–200 instructions, `benches/callgrind/instr.sh`), a `HeaderName`
//! constant is not.

use http::HeaderName;

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// RFC 9211.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
pub const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
pub const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// RFC 8586.
pub const CDN_LOOP: HeaderName = HeaderName::from_static("cdn-loop");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static(crate::request_id::HEADER);
/// W3C Trace Context.
pub const TRACEPARENT: HeaderName = HeaderName::from_static(crate::trace_context::TRACEPARENT);
pub const TRACESTATE: HeaderName = HeaderName::from_static(crate::trace_context::TRACESTATE);
pub const PREFILL: HeaderName = HeaderName::from_static(crate::site::PREFILL);

/// Whether `map` has a field named in `names`: one pass over the map's
/// names, where removing each name would hash it and probe the map once
/// per name (about 150 instructions each, `benches/callgrind`), though
/// such fields are seldom there.
pub fn any_present(map: &http::HeaderMap, names: &[HeaderName]) -> bool {
    map.keys().any(|k| names.contains(k))
}

/// A map of at most this many values is walked for a name's values
/// rather than probed ([`values`]).
const WALKED: usize = 6;

/// The values of `map`'s fields named `name`, in order, as
/// `HeaderMap::get_all` gives them. A map of at most [`WALKED`] values (a
/// usual request: `Host`, `User-Agent`, `Accept`) is walked, comparing
/// names, where a probe hashes the name first: about 150 instructions for
/// a name the map lacks, 5 per field walked (`benches/callgrind`, issue
/// 17); the door asks after half a dozen names a request seldom has.
///
/// A name the map lacks (most of those asked after) is found absent by a
/// walk of the map's names alone: the walk of its fields takes about 25
/// instructions a field, the names' about 6 (`benches/callgrind`, issue
/// 17).
pub fn values(map: &http::HeaderMap, name: HeaderName) -> Values<'_> {
    if map.len() <= WALKED {
        if !map.keys().any(|k| *k == name) {
            return Values::Absent;
        }
        Values::Walked(map.iter(), name)
    } else {
        Values::Probed(map.get_all(name).into_iter())
    }
}

/// The iterator [`values`] gives.
pub enum Values<'a> {
    /// The name is not in the map.
    Absent,
    Walked(http::header::Iter<'a, http::HeaderValue>, HeaderName),
    Probed(http::header::ValueIter<'a, http::HeaderValue>),
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a http::HeaderValue;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Values::Absent => None,
            Values::Walked(fields, name) => fields.find(|(n, _)| *n == name).map(|(_, v)| v),
            Values::Probed(values) => values.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_http::{RequestHeader, ResponseHeader};

    fn wire(req: &RequestHeader) -> String {
        let mut buf = Vec::new();
        req.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    /// `values` gives what `get_all` gives, in order, for maps on both
    /// sides of `WALKED`: names repeated, in other cases, standard and
    /// not, present and absent.
    #[test]
    fn values_are_get_all_s() {
        let pool = [
            "host",
            "connection",
            "content-length",
            "x-request-id",
            "traceparent",
            "cookie",
            "x-a",
            "accept",
            "user-agent",
            "x-b-c",
        ];
        let mut rng = fastrand::Rng::with_seed(17);
        for _ in 0..3_000 {
            let mut map = http::HeaderMap::new();
            for i in 0..rng.usize(0..12) {
                let name = HeaderName::from_static(pool[rng.usize(..pool.len())]);
                map.append(name, http::HeaderValue::from(i));
            }
            for name in pool {
                let name = HeaderName::from_static(name);
                let walked: Vec<_> = values(&map, name.clone()).collect();
                let probed: Vec<_> = map.get_all(&name).iter().collect();
                assert_eq!(walked, probed, "{name} in {map:?}");
            }
        }
    }

    /// pingora-http, EDGE-PATCH first: a `HeaderName` goes into a head
    /// without a case map as is; the head reads and writes the same as when
    /// the name took the round trip through bytes, and a head that keeps
    /// case still records the name's case.
    #[test]
    fn header_names_go_in_as_is_and_read_back_the_same() {
        let mut fast = RequestHeader::build_no_case("GET", b"/", None).unwrap();
        let mut slow = RequestHeader::build_no_case("GET", b"/", None).unwrap();
        for (name, value) in [
            (X_FORWARDED_FOR, "192.0.2.1"),
            (http::header::HOST, "edge.test"),
            (
                TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ] {
            fast.insert_header(name.clone(), value).unwrap();
            slow.insert_header(name.as_str().to_string(), value)
                .unwrap();
            fast.append_header(&name, "again").unwrap();
            slow.append_header(name.as_str().to_string(), "again")
                .unwrap();
        }
        fast.insert_header(X_FORWARDED_FOR, "198.51.100.7").unwrap();
        slow.insert_header("x-forwarded-for", "198.51.100.7")
            .unwrap();
        assert_eq!(fast.headers, slow.headers);
        assert_eq!(wire(&fast), wire(&slow));
        assert_eq!(
            fast.headers.get_all(X_FORWARDED_FOR).iter().count(),
            1,
            "insert replaces every value"
        );
        assert_eq!(fast.headers.get_all(TRACEPARENT).iter().count(), 2);

        // A head that keeps case: the case map still gets the name.
        let mut cased = RequestHeader::build("GET", b"/", None).unwrap();
        cased.insert_header(X_FORWARDED_FOR, "192.0.2.1").unwrap();
        cased.append_header(&CDN_LOOP, "edge").unwrap();
        cased
            .insert_header(http::header::HOST, "edge.test")
            .unwrap();
        let names: Vec<String> = cased
            .case_header_iter()
            .map(|(n, _)| String::from_utf8_lossy(n.as_slice()).into_owned())
            .collect();
        // Standard names pingora title-cases keep that case.
        assert_eq!(names, ["x-forwarded-for", "cdn-loop", "Host"]);
        assert!(wire(&cased).contains("x-forwarded-for: 192.0.2.1\r\n"));
        assert!(wire(&cased).contains("Host: edge.test\r\n"));

        assert!(any_present(&fast.headers, &[CDN_LOOP, X_FORWARDED_FOR]));
        assert!(!any_present(&fast.headers, &[CDN_LOOP, PREFILL]));
        assert!(!any_present(&fast.headers, &[]));

        let mut resp = ResponseHeader::build_no_case(200, None).unwrap();
        resp.insert_header(X_CACHE, "HIT").unwrap();
        resp.append_header(CACHE_STATUS, "edge; hit").unwrap();
        assert_eq!(resp.headers.get(X_CACHE).unwrap(), "HIT");
        assert_eq!(resp.headers.get(CACHE_STATUS).unwrap(), "edge; hit");
    }
}
