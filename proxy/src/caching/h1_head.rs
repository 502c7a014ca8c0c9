//! A fresh RAM hit's HTTP/1 head written straight from the stored head's
//! lines (issue 17: "pre-rendered response heads for RAM hits"). The map
//! path of [`super::fast`] rebuilds a header map from the lines
//! ([`edge_cache::object::Parsed::header`]), edits it (the cache's fields,
//! hop-by-hop, the route's edits) and pingora serializes it again; here the
//! lines are copied, filtered by name, and edge's fields appended, for the
//! same fields and values (`benches/callgrind/instr.sh`: a 1 KiB hit
//! 81,663 → 68,629 instructions). What does not change from hit to hit
//! ([`Fixed`]) is rendered once per object and shape and kept
//! ([`super::head_memo`]); [`finish`] writes the rest per hit (a 1 KiB
//! shortcut hit 38,378 → 31,407 instructions, a single range 43,526 →
//! 36,180, a 304 45,941 → 39,579).
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
//! A request with `Range`, `If-None-Match` or `If-Modified-Since` gets the
//! answer the map path decides ([`shape`]: the conditional filter, then
//! the range filter, run on a header of the four fields they read), then
//! the lines are written for it: a single range is a 206 whose
//! `Content-Length` is the part's and which carries `Content-Range` (no
//! `Accept-Ranges`); a 304 drops `Content-Length`, `Content-Type`,
//! `Content-Encoding` and `Accept-Ranges` (pingora's `to_304`, as nginx).
//! Multiple ranges and unsatisfiable ones (416) go the map way.
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
use http::HeaderValue;
use pingora_core::protocols::http::conditional_filter::not_modified_filter;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::RangeType;

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
    ContentRange,
    /// `Content-Type`, `Content-Encoding`: not in a 304 (pingora's `to_304`).
    Representation,
    Other,
}

/// What a hit answers with, as the map path decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The stored status and the whole body.
    Whole,
    /// 206 with these bytes of the body (RFC 9110 §14.2, §15.3.7).
    Part(std::ops::Range<usize>),
    /// 304 and no body (RFC 9110 §13.1.1, §13.1.3, §15.4.5).
    NotModified,
}

impl Shape {
    /// Which of the three it is: a [`Fixed`] part is the same for every
    /// part.
    pub(crate) fn class(&self) -> u8 {
        match self {
            Shape::Whole => 0,
            Shape::Part(_) => 1,
            Shape::NotModified => 2,
        }
    }

    /// The status the answer goes with, `stored` being the object's.
    pub(crate) fn status(&self, stored: u16) -> u16 {
        match self {
            Shape::Whole => stored,
            Shape::Part(_) => 206,
            Shape::NotModified => 304,
        }
    }
}

/// The answer to `req` from the stored head, decided by the filters the
/// map path runs ([`super::fast::map_head`]), in its order (RFC 9110
/// §13.2.2: the conditional filter, which validates only a 200, then the
/// range filter): they read the status, the first `Content-Length`,
/// `ETag` and `Last-Modified`, and only these go into the header they are
/// given. `None` where the map path does not answer itself (several
/// ranges, an unsatisfiable range) or a value it could not read into its
/// header.
pub(crate) fn shape(req: &RequestHeader, parsed: &Parsed) -> Option<Shape> {
    let (mut length, mut etag, mut modified) = (None, None, None);
    for f in parsed.fields() {
        let slot = match f.name.len() {
            4 if f.name.eq_ignore_ascii_case(b"etag") => &mut etag,
            13 if f.name.eq_ignore_ascii_case(b"last-modified") => &mut modified,
            14 if f.name.eq_ignore_ascii_case(b"content-length") => &mut length,
            _ => continue,
        };
        slot.get_or_insert(f.value);
    }
    // The filters' header: the status and the three fields they read.
    let mini = || -> Option<ResponseHeader> {
        let mut mini = ResponseHeader::build_no_case(parsed.status(), Some(3)).ok()?;
        for (name, value) in [
            (header::CONTENT_LENGTH, length),
            (header::ETAG, etag),
            (header::LAST_MODIFIED, modified),
        ] {
            if let Some(v) = value {
                mini.insert_header(name, HeaderValue::from_bytes(v).ok()?)
                    .ok()?;
            }
        }
        Some(mini)
    };
    // RFC 9110 §13.2.2: a validated 200 is a 304 whatever the range.
    if (req.headers.contains_key(header::IF_NONE_MATCH)
        || req.headers.contains_key(header::IF_MODIFIED_SINCE))
        && not_modified_filter(req, &mini()?)
    {
        return Some(Shape::NotModified);
    }
    // One plain range (the usual request) without a header: what pingora's
    // filter would decide (`range::simple`); anything else by the filter.
    match super::range::simple(
        req,
        parsed.status(),
        length,
        etag,
        modified,
        super::range::MAX_RANGES,
    ) {
        Some(super::range::Decision::Part { range, .. }) => Some(Shape::Part(range)),
        Some(_) => Some(Shape::Whole),
        None => match super::range::filter(req, &mut mini()?, super::range::MAX_RANGES) {
            RangeType::None => Some(Shape::Whole),
            RangeType::Single(r) => Some(Shape::Part(r)),
            RangeType::Invalid | RangeType::Multi(_) => None,
        },
    }
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
        12 if is("content-type") => Name::Representation,
        13 if is("cache-control") => Name::CacheControl,
        13 if is("accept-ranges") => Name::AcceptRanges,
        13 if is("content-range") => Name::ContentRange,
        13 if is("surrogate-key") => Name::Dropped,
        14 if is("content-length") => Name::ContentLength,
        16 if is("proxy-connection") => Name::Dropped,
        16 if is("content-encoding") => Name::Representation,
        17 if is("surrogate-control") => Name::Dropped,
        17 if is("transfer-encoding") => Name::TransferEncoding,
        18 if is("proxy-authenticate") => Name::Dropped,
        _ => Name::Other,
    }
}

/// Route edits of these take the map path (framing and `Date` are
/// pingora's to write there).
static NOT_EDITED: [HeaderName; 4] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::DATE,
];

fn same(a: &HeaderName, b: &[u8]) -> bool {
    a.as_str().len() == b.len() && a.as_str().as_bytes().eq_ignore_ascii_case(b)
}

/// The field lines of a fresh RAM hit to an HTTP/1 client, answered as
/// `shape` says (the stored status and body, a part, or a 304), or `None`
/// when the map path must answer (see the module docs). `ops`: the route's
/// response header edits. (What `head_memo` keeps and writes per hit.)
#[cfg(test)]
pub(crate) fn render(
    parsed: &Parsed,
    shape: &Shape,
    served: &Served<'_>,
    settings: &Cache,
    ops: Option<&CompiledHeaderOps>,
    now: SystemTime,
) -> Option<Fields> {
    let fixed = fixed(parsed, shape, served, settings, ops)?;
    Some(finish(&fixed, shape, served, now))
}

/// What a hit's head says that is the same from hit to hit of one object
/// answered as one [`Shape`] under one route and one set of cache
/// settings: all but `Content-Range`'s, `Age`'s and the `ttl` of
/// `Cache-Status`'s values ([`finish`] writes those).
pub(crate) struct Fixed {
    /// The stored lines kept, then `Accept-Ranges`: what comes before
    /// edge's own fields.
    head: BytesMut,
    /// Which of edge's fields go on (not removed or replaced by the
    /// route, not targeted): `Content-Range`, `Age`, `X-Cache`,
    /// `Cache-Status`.
    content_range: bool,
    age: bool,
    x_cache: bool,
    cache_status: bool,
    /// `Cache-Status` without its `ttl`, and where the `ttl` goes
    /// (`fields::cache_status`).
    status: String,
    ttl_at: usize,
    /// The route's `set` and `add` lines, after edge's fields.
    tail: BytesMut,
    /// Where in `head` a part's `Content-Length` goes (where the first
    /// stored one stood).
    length_at: Option<usize>,
    has_date: bool,
    /// The first stored `Content-Length`.
    content_length: usize,
}

/// The [`Fixed`] part of a hit's head, or `None` when the map path must
/// answer (see the module docs).
pub(super) fn fixed(
    parsed: &Parsed,
    shape: &Shape,
    served: &Served<'_>,
    settings: &Cache,
    ops: Option<&CompiledHeaderOps>,
) -> Option<Fixed> {
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
    let mut out = BytesMut::with_capacity(all.len() + 32);
    let mut has_date = false;
    let mut content_length = None;
    // pingora's range filter on a 200 with a body and no `Range`: the
    // representation may be asked for in ranges (as nginx says it).
    // Whether the body is empty is known at the end: the stored
    // `Accept-Ranges` lines are held until then.
    let mut held = Vec::new();
    let whole = *shape == Shape::Whole;
    let not_modified = *shape == Shape::NotModified;
    // A part's `Content-Length` (one, where the first stood: [`finish`]
    // writes it) and its `Content-Range` replace the stored ones, as
    // pingora's range filter sets them.
    let mut length_at = None;
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
                let n = std::str::from_utf8(f.value).ok()?.parse::<usize>().ok()?;
                // The first, as pingora's writer and range filter read it.
                content_length.get_or_insert(n);
                if let Shape::Part(_) = shape {
                    length_at.get_or_insert(out.len());
                    continue;
                }
                if not_modified {
                    continue;
                }
            }
            Name::Date => has_date = true,
            Name::AcceptRanges => {
                if whole {
                    held.push(f.line);
                }
                continue;
            }
            Name::ContentRange if matches!(shape, Shape::Part(_)) => continue,
            Name::Representation if not_modified => continue,
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
    let ranges = whole && parsed.status() == 200 && content_length > 0;
    if !ranges {
        for line in held {
            out.put_slice(line);
            out.put_slice(b"\r\n");
        }
    }
    // Edge's own fields, unless the route edits them or they are targeted
    // (the map path removes targeted fields after setting these).
    let ours = |name: &str| !edited(name.as_bytes()) && !targeted(name.as_bytes());
    if ranges && ours("Accept-Ranges") {
        out.put_slice(b"Accept-Ranges: bytes\r\n");
    }
    let mut tail = BytesMut::new();
    if let Some(o) = ops {
        for (i, (name, value)) in o.set.iter().enumerate() {
            // `set` replaces: of one name set twice, the last stands.
            if o.set[i + 1..].iter().all(|(n, _)| n != name) {
                put(&mut tail, name, value.as_bytes());
            }
        }
        for (name, value) in &o.add {
            put(&mut tail, name, value.as_bytes());
        }
    }
    let cache_status = ours("cache-status");
    let mut status = String::new();
    let mut ttl_at = 0;
    if cache_status {
        status.reserve(settings.status_name.len() + served.key.len() + 32);
        super::fields::cache_status_before_ttl(&mut status, &settings.status_name, served);
        ttl_at = status.len();
        super::fields::cache_status_after_ttl(&mut status, served);
    }
    Some(Fixed {
        head: out,
        content_range: ours("Content-Range"),
        age: ours("Age"),
        x_cache: ours("x-cache"),
        cache_status,
        status,
        ttl_at,
        tail,
        length_at,
        has_date,
        content_length,
    })
}

/// The field lines of a hit from their [`Fixed`] part: the stored lines,
/// then edge's `Content-Range`, `Age`, `X-Cache` and `Cache-Status`, then
/// the route's `set` and `add` (the map path's order).
pub(super) fn finish(fixed: &Fixed, shape: &Shape, served: &Served<'_>, now: SystemTime) -> Fields {
    let mut out =
        BytesMut::with_capacity(fixed.head.len() + fixed.tail.len() + fixed.status.len() + 128);
    let mut digits = [0u8; 20];
    match (shape, fixed.length_at) {
        (Shape::Part(r), Some(at)) => {
            let (before, after) = fixed.head.split_at(at);
            out.put_slice(before);
            out.put_slice(b"Content-Length: ");
            out.put_slice(decimal(r.len() as u64, &mut digits));
            out.put_slice(b"\r\n");
            out.put_slice(after);
        }
        _ => out.put_slice(&fixed.head),
    }
    if let (Shape::Part(r), true) = (shape, fixed.content_range) {
        out.put_slice(b"Content-Range: bytes ");
        out.put_slice(decimal(r.start as u64, &mut digits));
        out.put_u8(b'-');
        out.put_slice(decimal(r.end as u64 - 1, &mut digits));
        out.put_u8(b'/');
        out.put_slice(decimal(fixed.content_length as u64, &mut digits));
        out.put_slice(b"\r\n");
    }
    if let (Some(age), true) = (current_age(served, now), fixed.age) {
        out.put_slice(b"Age: ");
        out.put_slice(decimal(age, &mut digits));
        out.put_slice(b"\r\n");
    }
    if fixed.x_cache {
        out.put_slice(b"x-cache: ");
        out.put_slice(super::x_cache(served.status, served.tier).as_bytes());
        out.put_slice(b"\r\n");
    }
    if fixed.cache_status {
        out.put_slice(b"cache-status: ");
        let (before, after) = fixed.status.as_bytes().split_at(fixed.ttl_at);
        out.put_slice(before);
        if let Some(ttl) = super::fields::cache_status_ttl(served, now) {
            out.put_slice(b"; ttl=");
            out.put_slice(itoa::Buffer::new().format(ttl).as_bytes());
        }
        out.put_slice(after);
        out.put_slice(b"\r\n");
    }
    out.put_slice(&fixed.tail);
    Fields {
        lines: out,
        has_date: fixed.has_date,
        content_length: match shape {
            Shape::Whole => fixed.content_length,
            Shape::Part(r) => r.len(),
            Shape::NotModified => 0,
        },
    }
}

/// A RAM hit's whole HTTP/1.1 head as pingora's `write_response_fields`
/// writes it on a connection that stays open: the status line (`reason`,
/// else none after the code, as pingora leaves it), `fields`, `Date` when
/// they have none, `Connection: keep-alive`, the empty line.
pub(crate) fn status_line_and_fields(
    status: u16,
    reason: Option<&str>,
    fields: &Fields,
) -> BytesMut {
    let mut out = BytesMut::with_capacity(fields.lines.len() + 96);
    out.put_slice(b"HTTP/1.1 ");
    let mut digits = [0u8; 20];
    out.put_slice(decimal(u64::from(status), &mut digits));
    out.put_u8(b' ');
    let reason = reason.or_else(|| {
        http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
    });
    if let Some(r) = reason {
        out.put_slice(r.as_bytes());
    }
    out.put_slice(b"\r\n");
    out.put_slice(&fields.lines);
    if !fields.has_date {
        out.put_slice(b"Date: ");
        out.put_slice(pingora_core::protocols::http::date::get_cached_date().as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"Connection: keep-alive\r\n\r\n");
    out
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
            stored: Some((p.fresh_until(), p.updated())),
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
        render_shaped(p, &Shape::Whole, kind, settings, ops)
    }

    fn render_shaped(
        p: &Parsed,
        shape: &Shape,
        kind: Kind,
        settings: &Cache,
        ops: Option<&CompiledHeaderOps>,
    ) -> Option<(Vec<(String, String)>, Fields)> {
        let f = render(p, shape, &served(p, kind), settings, ops, now())?;
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

    /// What the map path decides for `req` ([`super::super::fast::map_head`]).
    fn map_path_shape(req: &RequestHeader, p: &Parsed) -> Option<Shape> {
        let settings = Cache::default();
        let m = super::super::fast::map_head(req, p, Some(Tier::Ram), "a.test/x", &settings, now())
            .unwrap()?;
        Some(match (m.not_modified, m.part) {
            (true, _) => Shape::NotModified,
            (false, Some(r)) => Shape::Part(r),
            (false, None) => Shape::Whole,
        })
    }

    /// Status, fields (lower case, sorted by name) and kind of a head.
    type Head = (u16, Vec<(String, String)>, Kind);

    /// The map path's whole head for `req` on `path`: status, fields (lower
    /// case, sorted by name, same names in order) and kind.
    fn map_path_head(
        req: &RequestHeader,
        p: &Parsed,
        settings: &Cache,
        ops: Option<&CompiledHeaderOps>,
    ) -> Option<Head> {
        let m = super::super::fast::map_head(req, p, Some(Tier::Ram), "a.test/x", settings, now())
            .unwrap()?;
        let mut resp = m.resp;
        crate::hop::strip_response(&mut resp, false);
        if let Some(o) = ops {
            crate::decorate::apply_response_ops(&mut resp, o).unwrap();
        }
        let mut list: Vec<(String, String)> = resp
            .headers
            .iter()
            .map(|(n, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).trim().to_string();
                (n.as_str().to_string(), v)
            })
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        Some((resp.status.as_u16(), list, m.kind))
    }

    /// The lines path's head, as [`map_path_head`] gives the map path's.
    fn lines_path_head(
        req: &RequestHeader,
        p: &Parsed,
        settings: &Cache,
        ops: Option<&CompiledHeaderOps>,
    ) -> Option<Head> {
        let sh = shape(req, p)?;
        let kind = edge_cache::video::classify(req.uri.path(), p.field("content-type"));
        let (mut list, _) = render_shaped(p, &sh, kind, settings, ops)?;
        list.sort_by(|a, b| a.0.cmp(&b.0));
        Some((sh.status(p.status()), list, kind))
    }

    /// Whole heads of both paths compared (after review: a zero-length
    /// suffix with If-Range, a 304's kind, Range against a condition):
    /// heads with odd fields, playlists and segments on paths with and
    /// without an extension, ranges, conditions and route edits of the
    /// fields a 206 or 304 changes.
    #[test]
    fn both_paths_write_the_same_head_for_ranges_and_conditions() {
        const LM: &str = "Mon, 30 Nov 2026 10:00:00 GMT";
        let heads = [
            parsed(
                200,
                &[
                    ("Content-Type", "application/vnd.apple.mpegurl"),
                    ("Cache-Control", "max-age=86400"),
                    ("ETag", "\"v1\""),
                    ("Last-Modified", LM),
                    ("Content-Length", "100"),
                    ("Accept-Ranges", "none"),
                ],
            ),
            parsed(
                200,
                &[
                    ("Content-Type", "video/mp2t"),
                    ("ETag", "\"v1\""),
                    ("Content-Length", "100"),
                    ("Content-Range", "bytes 0-99/100"),
                    ("Accept-Ranges", "bytes"),
                    ("Accept-Ranges", "none"),
                ],
            ),
            parsed(
                200,
                &[
                    ("Content-Length", "100"),
                    ("Content-Length", "100"),
                    ("ETag", "\"v1\""),
                    ("ETag", "\"v2\""),
                ],
            ),
            parsed(
                200,
                &[
                    ("Content-Length", "0100"),
                    ("Last-Modified", LM),
                    ("Content-Encoding", "gzip"),
                ],
            ),
            parsed(200, &[("Content-Length", "0"), ("ETag", "\"v1\"")]),
            parsed(
                404,
                &[
                    ("Content-Length", "100"),
                    ("ETag", "\"v1\""),
                    ("Accept-Ranges", "bytes"),
                ],
            ),
        ];
        let requests: &[&[(&str, &str)]] = &[
            &[],
            &[("Range", "bytes=1-3")],
            &[("Range", "bytes=-0")],
            &[("Range", "bytes=-0"), ("If-Range", "\"v1\"")],
            &[("Range", "bytes=-0"), ("If-Range", "\"zz\"")],
            &[("Range", "bytes=-00"), ("If-Range", LM)],
            &[("Range", "bytes=0-4,-0"), ("If-Range", "\"v1\"")],
            &[("Range", "bytes=1-3"), ("If-None-Match", "\"v1\"")],
            &[("Range", "bytes=1-3"), ("If-Modified-Since", LM)],
            &[("Range", "bytes=1-3"), ("If-None-Match", "\"x\"")],
            &[("If-None-Match", "\"v1\"")],
            &[("If-None-Match", "*")],
            &[("If-Modified-Since", LM)],
            &[
                ("Range", "bytes=1-3"),
                ("If-Range", "\"zz\""),
                ("If-None-Match", "\"v1\""),
            ],
            &[
                ("Range", "bytes=-0"),
                ("If-Range", "\"v1\""),
                ("If-None-Match", "\"v1\""),
            ],
            &[("Range", "bytes=1-3"), ("Range", "bytes=5-6")],
            &[("Range", "bytes=0-,-2")],
            &[("Range", "bytes=1-3"), ("If-Range", "W/\"v1\"")],
            &[("Range", "bytes=90-200")],
            &[("Range", "items=1-3")],
        ];
        let v = HeaderValue::from_static;
        let n = HeaderName::from_static;
        let edits = [
            None,
            Some(CompiledHeaderOps {
                set: vec![
                    (n("content-type"), v("text/x")),
                    (n("content-range"), v("bytes x")),
                ],
                ..Default::default()
            }),
            Some(CompiledHeaderOps {
                add: vec![
                    (n("accept-ranges"), v("x")),
                    (n("content-range"), v("y")),
                    (n("content-encoding"), v("br")),
                ],
                ..Default::default()
            }),
            Some(CompiledHeaderOps {
                remove: vec![n("accept-ranges"), n("etag")],
                ..Default::default()
            }),
        ];
        let settings = Cache::default();
        let mut compared = 0;
        for path in ["/live/index", "/a.mp4", "/p.m3u8", "/s.ts"] {
            for p in &heads {
                for method in ["GET", "HEAD"] {
                    for r in requests {
                        for ops in &edits {
                            let mut req =
                                RequestHeader::build(method, path.as_bytes(), None).unwrap();
                            for (k, val) in r.iter() {
                                req.append_header(k.to_string(), *val).unwrap();
                            }
                            let what = format!(
                                "{path} {method} {r:?} edits {} head {:?}",
                                ops.is_some(),
                                String::from_utf8_lossy(p.lines())
                            );
                            let lines = lines_path_head(&req, p, &settings, ops.as_ref());
                            let map = map_path_head(&req, p, &settings, ops.as_ref());
                            match (lines, map) {
                                (Some(l), Some(m)) => {
                                    assert_eq!(l, m, "{what}");
                                    compared += 1;
                                }
                                (Some(l), None) => {
                                    panic!("only the lines path answers {l:?}: {what}")
                                }
                                // The lines path gives up where the map path answers.
                                (None, _) => {}
                            }
                        }
                    }
                }
            }
        }
        assert!(compared > 3000, "{compared}");
    }

    #[test]
    fn ranges_and_conditions_are_decided_as_the_map_path_decides() {
        const LM: &str = "Mon, 30 Nov 2026 10:00:00 GMT";
        let heads = [
            parsed(
                200,
                &[
                    ("Content-Type", "video/mp4"),
                    ("ETag", "\"v1\""),
                    ("Last-Modified", LM),
                    ("Content-Length", "100"),
                    ("Cache-Control", "max-age=60"),
                ],
            ),
            parsed(200, &[("content-length", "100"), ("etag", "W/\"w\"")]),
            parsed(200, &[("Content-Length", "1"), ("Last-Modified", LM)]),
            parsed(200, &[("Content-Length", "0"), ("ETag", "\"e\"")]),
            parsed(
                200,
                &[
                    ("ETag", "\"a\""),
                    ("ETag", "\"b\""),
                    ("Content-Length", "9"),
                ],
            ),
            parsed(404, &[("Content-Length", "100"), ("ETag", "\"v1\"")]),
            parsed(203, &[("Content-Length", "100")]),
        ];
        let ranges = [
            None,
            Some("bytes=0-0"),
            Some("bytes=0-"),
            Some("bytes=5-9"),
            Some("bytes=-1"),
            Some("bytes=-100"),
            Some("bytes=-101"),
            Some("bytes=99-"),
            Some("bytes=99-200"),
            Some("bytes=100-"),
            Some("bytes=5-2"),
            Some("bytes=-0"),
            Some("bytes=0-4,-0"),
            Some("bytes=0-1,3-4"),
            Some("bytes=0-1,1-2"),
            Some("BYTES=1-2"),
            Some("bytes = 1-2"),
            Some("items=0-1"),
            Some("bytes=a-b"),
            Some("bytes="),
            Some("bytes=18446744073709551615-"),
        ];
        let if_ranges = [
            None,
            Some("\"v1\""),
            Some("W/\"w\""),
            Some("\"other\""),
            Some(LM),
            Some("Tue, 01 Dec 2026 10:00:00 GMT"),
            Some("garbage"),
        ];
        let conditions: [&[(&str, &str)]; 10] = [
            &[],
            &[("If-None-Match", "\"v1\"")],
            &[("If-None-Match", "W/\"v1\"")],
            &[("If-None-Match", "\"x\", \"v1\"")],
            &[("If-None-Match", "*")],
            &[("If-None-Match", "\"x\"")],
            &[("If-Modified-Since", LM)],
            &[("If-Modified-Since", "Sun, 29 Nov 2026 10:00:00 GMT")],
            &[("If-Modified-Since", "Tue, 01 Dec 2026 10:00:00 GMT")],
            &[("If-None-Match", "\"x\""), ("If-Modified-Since", LM)],
        ];
        let mut checked = 0;
        for p in &heads {
            for method in ["GET", "HEAD", "POST"] {
                for range in ranges {
                    for if_range in if_ranges {
                        for cond in conditions {
                            let mut req = RequestHeader::build(method, b"/a.mp4", None).unwrap();
                            if let Some(r) = range {
                                req.insert_header("Range", r).unwrap();
                            }
                            if let Some(v) = if_range {
                                req.insert_header("If-Range", v).unwrap();
                            }
                            for (n, v) in cond {
                                req.append_header(n.to_string(), *v).unwrap();
                            }
                            assert_eq!(
                                shape(&req, p),
                                map_path_shape(&req, p),
                                "{method} {range:?} {if_range:?} {cond:?} {:?}",
                                String::from_utf8_lossy(p.lines())
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 7 * 3 * 21 * 7 * 10);
    }

    #[test]
    fn a_part_and_a_304_are_written_as_the_map_path_edits_them() {
        let p = parsed(
            200,
            &[
                ("Content-Type", "video/mp4"),
                ("Content-Encoding", "identity"),
                ("ETag", "\"v1\""),
                ("Content-Length", "100"),
                ("Accept-Ranges", "none"),
                ("Content-Range", "bytes 0-99/100"),
                ("Cache-Control", "max-age=600"),
            ],
        );
        let settings = Cache::default();
        let (list, f) =
            render_shaped(&p, &Shape::Part(10..20), Kind::Other, &settings, None).unwrap();
        assert_eq!(f.content_length, 10);
        let get = |list: &[(String, String)], n: &str| {
            list.iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(get(&list, "content-length"), ["10"]);
        assert_eq!(get(&list, "content-range"), ["bytes 10-19/100"]);
        assert!(get(&list, "accept-ranges").is_empty(), "{list:?}");
        assert_eq!(get(&list, "content-type"), ["video/mp4"]);
        assert_eq!(get(&list, "etag"), ["\"v1\""]);
        assert_eq!(get(&list, "x-cache"), ["HIT RAM"]);
        let (list, f) =
            render_shaped(&p, &Shape::NotModified, Kind::Other, &settings, None).unwrap();
        assert_eq!(f.content_length, 0);
        for gone in [
            "content-length",
            "content-type",
            "content-encoding",
            "accept-ranges",
        ] {
            assert!(get(&list, gone).is_empty(), "{gone}: {list:?}");
        }
        assert_eq!(get(&list, "etag"), ["\"v1\""]);
        assert_eq!(get(&list, "content-range"), ["bytes 0-99/100"]);
        assert_eq!(get(&list, "cache-control"), ["max-age=600"]);
        assert_eq!(get(&list, "x-cache"), ["HIT RAM"]);
        assert_eq!(Shape::NotModified.status(200), 304);
        assert_eq!(Shape::Part(0..1).status(200), 206);
        assert_eq!(Shape::Whole.status(203), 203);
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 99, 1_234_567, u64::MAX] {
            let mut b = [0u8; 20];
            assert_eq!(decimal(n, &mut b), n.to_string().as_bytes());
        }
    }
}
