//! A fresh RAM hit's HTTP/1 head written straight from the stored head's
//! lines (issue 17: "pre-rendered response heads for RAM hits"). The map
//! path of [`super::fast`] rebuilds a header map from the lines
//! ([`edge_cache::object::Parsed::header`]), edits it (the cache's fields,
//! hop-by-hop, the route's edits) and pingora serializes it again; here the
//! lines are copied, filtered by name, and edge's fields appended, for the
//! same fields and values (`benches/callgrind/instr.sh`: a 1 KiB hit
//! 81,663 → 68,629 instructions).
//!
//! Field by field, as the map path does it:
//!
//! ```text
//! Connection, Keep-Alive, Proxy-Connection, TE,   dropped (hop-by-hop, RFC 9110
//! Trailer, Upgrade, Proxy-Authenticate            §7.6.1); pingora writes Connection
//! Surrogate-Key, Surrogate-Control, X-Cache, Age  dropped; edge writes Age, X-Cache
//! targeted fields (CDN-Cache-Control)             dropped unless forwarded (RFC 9213)
//! Cache-Control of a playlist or manifest         max-age, s-maxage capped
//! Cache-Status                                    kept; edge's member appended
//! the route's response_headers                    remove, set (replaces), add
//! Date                                            the stored one, else pingora's
//! Accept-Ranges                                   `bytes` on a 200 with a body
//!                                                 (pingora's range filter, as nginx)
//! ```
//!
//! [`render`] gives up (`None`: the map path answers) where only the map
//! path has the rule: a `Connection` naming other fields, a
//! `Transfer-Encoding`, no `Content-Length`, a route edit of the framing
//! fields or `Date`.

use std::time::SystemTime;

use bytes::{BufMut, BytesMut};
use edge_cache::object::Parsed;
use edge_config::Cache;
use http::header::{self, HeaderName};

use super::fields::{cap_max_age, current_age, playlist_cap, Served};
use crate::route::CompiledHeaderOps;

/// A head's field lines, ready for pingora's `write_response_fields`.
pub(crate) struct Fields {
    /// `name: value\r\n` lines, without `Connection` and the empty line.
    pub lines: BytesMut,
    /// The lines carry a `Date`.
    pub has_date: bool,
    /// The `Content-Length` they carry.
    pub content_length: usize,
}

/// What a stored field is to this writer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Name {
    /// Dropped whatever the route says: hop-by-hop, or the cache's own.
    Dropped,
    Connection,
    TransferEncoding,
    ContentLength,
    Date,
    CacheControl,
    AcceptRanges,
    Other,
}

/// One comparison per name of the same length (a head has about ten
/// fields; a list of names tested in turn cost a hit 7,000 instructions).
fn classify(name: &[u8]) -> Name {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    match name.len() {
        2 if is("te") => Name::Dropped,
        3 if is("age") => Name::Dropped,
        4 if is("date") => Name::Date,
        7 if is("trailer") || is("upgrade") || is("x-cache") => Name::Dropped,
        10 if is("connection") => Name::Connection,
        10 if is("keep-alive") => Name::Dropped,
        13 if is("cache-control") => Name::CacheControl,
        13 if is("accept-ranges") => Name::AcceptRanges,
        13 if is("surrogate-key") => Name::Dropped,
        14 if is("content-length") => Name::ContentLength,
        16 if is("proxy-connection") => Name::Dropped,
        17 if is("surrogate-control") => Name::Dropped,
        17 if is("transfer-encoding") => Name::TransferEncoding,
        18 if is("proxy-authenticate") => Name::Dropped,
        _ => Name::Other,
    }
}

/// Route edits of these take the map path (framing and `Date` are
/// pingora's to write there).
const NOT_EDITED: [HeaderName; 4] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::DATE,
];

fn same(a: &HeaderName, b: &[u8]) -> bool {
    a.as_str().len() == b.len() && a.as_str().as_bytes().eq_ignore_ascii_case(b)
}

/// The field lines of a fresh RAM hit's 200 (or other stored final status)
/// to an HTTP/1 client, or `None` when the map path must answer (see the
/// module docs). `ops`: the route's response header edits.
pub(crate) fn render(
    parsed: &Parsed,
    served: &Served<'_>,
    settings: &Cache,
    ops: Option<&CompiledHeaderOps>,
    now: SystemTime,
) -> Option<Fields> {
    // Removed or replaced by the route (`set` replaces).
    let edited = |name: &[u8]| {
        ops.is_some_and(|o| {
            o.remove.iter().any(|n| same(n, name)) || o.set.iter().any(|(n, _)| same(n, name))
        })
    };
    if let Some(o) = ops {
        let names = o.remove.iter().chain(o.set.iter().map(|(n, _)| n));
        if names
            .chain(o.add.iter().map(|(n, _)| n))
            .any(|n| NOT_EDITED.contains(n))
        {
            return None;
        }
    }
    let targeted = |name: &[u8]| {
        !settings.forward_targeted_fields
            && settings
                .targeted_fields
                .iter()
                .any(|t| t.len() == name.len() && t.as_bytes().eq_ignore_ascii_case(name))
    };
    if parsed.status() < 200 {
        return None;
    }
    let cap = playlist_cap(served, settings);
    let all = parsed.lines();
    let mut out = BytesMut::with_capacity(all.len() + 160);
    let mut has_date = false;
    let mut content_length = None;
    // pingora's range filter on a 200 with a body and no `Range`: the
    // representation may be asked for in ranges (as nginx says it).
    // Whether the body is empty is known at the end: the stored
    // `Accept-Ranges` lines are held until then.
    let mut held = Vec::new();
    for f in parsed.fields() {
        let class = classify(f.name);
        match class {
            Name::Dropped => continue,
            Name::Connection => {
                // Only keep-alive and close: nothing else to drop with it.
                let nominates = f
                    .value
                    .split(|b| *b == b',')
                    .map(<[u8]>::trim_ascii)
                    .any(|t| {
                        !(t.is_empty()
                            || t.eq_ignore_ascii_case(b"keep-alive")
                            || t.eq_ignore_ascii_case(b"close"))
                    });
                if nominates {
                    return None;
                }
                continue;
            }
            Name::TransferEncoding => return None,
            _ => {}
        }
        if targeted(f.name) || edited(f.name) {
            continue;
        }
        match class {
            Name::ContentLength => {
                // Digits only, as pingora reads it on the map path.
                if f.value.is_empty() || !f.value.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                content_length = Some(std::str::from_utf8(f.value).ok()?.parse::<usize>().ok()?);
            }
            Name::Date => has_date = true,
            Name::AcceptRanges => {
                held.push(f.line);
                continue;
            }
            Name::CacheControl => {
                if let Some(cap) = cap {
                    // The map path caps only values `to_str` reads.
                    if !visible_ascii(f.value) {
                        return None;
                    }
                    out.put_slice(f.name);
                    out.put_slice(b": ");
                    out.put_slice(cap_max_age(std::str::from_utf8(f.value).ok()?, cap).as_bytes());
                    out.put_slice(b"\r\n");
                    continue;
                }
            }
            _ => {}
        }
        out.put_slice(f.line);
        out.put_slice(b"\r\n");
    }
    let content_length = content_length?;
    let ranges = parsed.status() == 200 && content_length > 0;
    if !ranges {
        for line in held {
            out.put_slice(line);
            out.put_slice(b"\r\n");
        }
    }
    // Edge's own fields, unless the route edits them or they are targeted
    // (the map path removes targeted fields after setting these).
    let mut field = |name: &str, value: &[u8]| {
        if !edited(name.as_bytes()) && !targeted(name.as_bytes()) {
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value);
            out.put_slice(b"\r\n");
        }
    };
    if ranges {
        field("Accept-Ranges", b"bytes");
    }
    if let Some(age) = current_age(served, now) {
        let mut digits = [0u8; 20];
        field("Age", decimal(age, &mut digits));
    }
    field(
        "x-cache",
        super::x_cache(served.status, served.tier).as_bytes(),
    );
    field(
        "cache-status",
        super::fields::cache_status(&settings.status_name, served, now).as_bytes(),
    );
    if let Some(o) = ops {
        for (i, (name, value)) in o.set.iter().enumerate() {
            // `set` replaces: of one name set twice, the last stands.
            if o.set[i + 1..].iter().all(|(n, _)| n != name) {
                put(&mut out, name, value.as_bytes());
            }
        }
        for (name, value) in &o.add {
            put(&mut out, name, value.as_bytes());
        }
    }
    Some(Fields {
        lines: out,
        has_date,
        content_length,
    })
}

/// What `HeaderValue::to_str` accepts: visible ASCII and tab.
fn visible_ascii(v: &[u8]) -> bool {
    v.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
}

fn put(out: &mut BytesMut, name: &HeaderName, value: &[u8]) {
    out.put_slice(name.as_str().as_bytes());
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use edge_cache::video::Kind;
    use edge_cache::{Status, Tier};
    use pingora_http::ResponseHeader;
    use std::time::Duration;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn parsed(status: u16, fields: &[(&str, &str)]) -> Parsed {
        let mut h = ResponseHeader::build(status, None).unwrap();
        for (n, v) in fields {
            h.append_header(n.to_string(), *v).unwrap();
        }
        let t = now();
        Parsed::from_header(
            &h,
            t + Duration::from_secs(100),
            t - Duration::from_secs(7),
            false,
        )
        .unwrap()
    }

    fn served(p: &Parsed, kind: Kind) -> Served<'static> {
        Served {
            status: Status::Hit,
            tier: Some(Tier::Ram),
            stored: Some((p.fresh_until, p.updated)),
            storing: false,
            fwd_status: None,
            fwd: None,
            key: "a.test/x",
            kind,
        }
    }

    /// The rendered fields as (lower-case name, value), in order.
    fn render_fields(
        p: &Parsed,
        kind: Kind,
        settings: &Cache,
        ops: Option<&CompiledHeaderOps>,
    ) -> Option<(Vec<(String, String)>, Fields)> {
        let f = render(p, &served(p, kind), settings, ops, now())?;
        let text = String::from_utf8(f.lines.to_vec()).unwrap();
        assert!(
            text.ends_with("\r\n") && !text.ends_with("\r\n\r\n"),
            "{text:?}"
        );
        let list = text
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        Some((list, f))
    }

    fn names(list: &[(String, String)]) -> Vec<&str> {
        list.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn a_usual_segment_head_keeps_its_fields_and_gets_the_caches() {
        let p = parsed(
            200,
            &[
                ("content-type", "video/mp2t"),
                ("content-length", "1024"),
                ("etag", "\"v1\""),
                ("date", "Thu, 15 Jan 2027 08:00:00 GMT"),
                ("cache-control", "max-age=600"),
                ("accept-ranges", "none"),
            ],
        );
        let (list, f) = render_fields(&p, Kind::Segment, &Cache::default(), None).unwrap();
        assert_eq!(f.content_length, 1024);
        assert!(f.has_date);
        assert_eq!(
            names(&list),
            [
                "content-type",
                "content-length",
                "etag",
                "date",
                "cache-control",
                "accept-ranges",
                "age",
                "x-cache",
                "cache-status"
            ]
        );
        assert!(list.contains(&("accept-ranges".into(), "bytes".into())));
        assert!(list.contains(&("age".into(), "7".into())));
        assert!(list.contains(&("x-cache".into(), "HIT RAM".into())));
        assert!(list.contains(&(
            "cache-status".into(),
            "edge; hit; ttl=100; key=\"a.test/x\"".into()
        )));
    }

    #[test]
    fn hop_by_hop_and_the_caches_own_fields_are_dropped() {
        let p = parsed(
            200,
            &[
                ("connection", "keep-alive, close"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("te", "trailers"),
                ("trailer", "x-t"),
                ("upgrade", "h2c"),
                ("proxy-authenticate", "Basic"),
                ("surrogate-key", "a b"),
                ("surrogate-control", "max-age=5"),
                ("x-cache", "MISS from elsewhere"),
                ("age", "99"),
                ("cdn-cache-control", "max-age=60"),
                ("cache-status", "upstream; hit"),
                ("content-length", "3"),
            ],
        );
        let (list, f) = render_fields(&p, Kind::Other, &Cache::default(), None).unwrap();
        assert!(!f.has_date);
        assert_eq!(
            names(&list),
            [
                "cache-status",
                "content-length",
                "accept-ranges",
                "age",
                "x-cache",
                "cache-status"
            ]
        );
        let forwarding = Cache {
            forward_targeted_fields: true,
            ..Cache::default()
        };
        let (list, _) = render_fields(&p, Kind::Other, &forwarding, None).unwrap();
        assert!(names(&list).contains(&"cdn-cache-control"));
    }

    #[test]
    fn what_only_the_map_path_handles_is_left_to_it() {
        for fields in [
            &[("connection", "x-secret"), ("content-length", "1")][..],
            &[("connection", "close, x-secret"), ("content-length", "1")],
            &[("transfer-encoding", "chunked")],
            &[("content-type", "text/plain")],
        ] {
            let p = parsed(200, fields);
            assert!(
                render_fields(&p, Kind::Other, &Cache::default(), None).is_none(),
                "{fields:?}"
            );
        }
        let p = parsed(200, &[("content-length", "1")]);
        for name in ["content-length", "connection", "transfer-encoding", "date"] {
            let n = HeaderName::from_static(name);
            let ops = [
                CompiledHeaderOps {
                    remove: vec![n.clone()],
                    ..Default::default()
                },
                CompiledHeaderOps {
                    set: vec![(n.clone(), http::HeaderValue::from_static("1"))],
                    ..Default::default()
                },
                CompiledHeaderOps {
                    add: vec![(n, http::HeaderValue::from_static("1"))],
                    ..Default::default()
                },
            ];
            for o in &ops {
                assert!(render_fields(&p, Kind::Other, &Cache::default(), Some(o)).is_none());
            }
        }
    }

    #[test]
    fn the_routes_edits_remove_set_and_add_as_the_map_path_does() {
        let p = parsed(
            200,
            &[
                ("content-length", "2"),
                ("server", "origin"),
                ("cache-control", "max-age=600"),
                ("x-add", "origin"),
            ],
        );
        let v = http::HeaderValue::from_static;
        let ops = CompiledHeaderOps {
            remove: vec![
                HeaderName::from_static("server"),
                HeaderName::from_static("x-cache"),
            ],
            set: vec![
                (header::CACHE_CONTROL, v("max-age=1")),
                (header::CACHE_CONTROL, v("max-age=5")),
                (header::AGE, v("0")),
            ],
            add: vec![(HeaderName::from_static("x-add"), v("edge"))],
        };
        let (list, _) = render_fields(&p, Kind::Other, &Cache::default(), Some(&ops)).unwrap();
        assert_eq!(
            list,
            [
                ("content-length", "2"),
                ("x-add", "origin"),
                ("accept-ranges", "bytes"),
                ("cache-status", "edge; hit; ttl=100; key=\"a.test/x\""),
                ("cache-control", "max-age=5"),
                ("age", "0"),
                ("x-add", "edge"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
    }

    #[test]
    fn playlists_lifetimes_cap_max_age_and_empty_bodies_say_no_ranges() {
        let p = parsed(
            200,
            &[
                ("content-length", "0"),
                ("accept-ranges", "none"),
                ("cache-control", "public, max-age=86400, s-maxage=600"),
                ("cache-control", "no-transform"),
            ],
        );
        let (list, f) = render_fields(&p, Kind::HlsPlaylist, &Cache::default(), None).unwrap();
        assert_eq!(f.content_length, 0);
        let cc: Vec<&str> = list
            .iter()
            .filter(|(n, _)| n == "cache-control")
            .map(|(_, v)| v.as_str())
            .collect();
        // Stored for 107 s (fresh_until − updated).
        assert_eq!(cc, ["public, max-age=107, s-maxage=107", "no-transform"]);
        assert!(list.contains(&("accept-ranges".into(), "none".into())));
        let p = parsed(404, &[("content-length", "4")]);
        let (list, _) = render_fields(&p, Kind::Other, &Cache::default(), None).unwrap();
        assert!(!names(&list).contains(&"accept-ranges"), "{list:?}");
    }

    #[test]
    fn targeted_fields_that_edge_writes_are_not_written() {
        let p = parsed(
            200,
            &[
                ("content-length", "3"),
                ("cache-status", "upstream; hit"),
                ("date", "Thu, 15 Jan 2027 08:00:00 GMT"),
            ],
        );
        let settings = Cache {
            targeted_fields: ["cache-status", "Age", "X-Cache", "accept-ranges", "date"]
                .map(String::from)
                .to_vec(),
            ..Cache::default()
        };
        let (list, f) = render_fields(&p, Kind::Other, &settings, None).unwrap();
        assert_eq!(names(&list), ["content-length"]);
        assert!(!f.has_date, "pingora writes its own Date");
    }

    #[test]
    fn odd_bytes_and_odd_statuses_are_left_to_the_map_path() {
        for (status, fields) in [
            (200, &[("content-length", "+5")][..]),
            (200, &[("content-length", "5, 5")]),
            (200, &[("content-length", "")]),
            (101, &[("content-length", "0")]),
        ] {
            let p = parsed(status, fields);
            assert!(
                render_fields(&p, Kind::Other, &Cache::default(), None).is_none(),
                "{status} {fields:?}"
            );
        }
        // A playlist's Cache-Control that `to_str` cannot read.
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.append_header("content-length", "1").unwrap();
        h.append_header(
            "cache-control",
            http::HeaderValue::from_bytes(b"max-age=60, x=\"caf\xc3\xa9\"").unwrap(),
        )
        .unwrap();
        let t = now();
        let p = Parsed::from_header(&h, t + Duration::from_secs(10), t, false).unwrap();
        assert!(render_fields(&p, Kind::HlsPlaylist, &Cache::default(), None).is_none());
        assert!(render_fields(&p, Kind::Other, &Cache::default(), None).is_some());
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 99, 1_234_567, u64::MAX] {
            let mut b = [0u8; 20];
            assert_eq!(decimal(n, &mut b), n.to_string().as_bytes());
        }
    }
}
