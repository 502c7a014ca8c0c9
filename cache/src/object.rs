//! What the cache keeps: a response's head (parsed once, kept as its
//! lines) and freshness (pingora's serialized internal meta), its body, and
//! what purges need to find it. pingora's serialized `CacheMeta` is made
//! from these when asked.

use std::time::SystemTime;

use bytes::Bytes;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;

/// Serialized `CacheMeta`: (internal, header).
pub type Meta = (Vec<u8>, Vec<u8>);

/// The tier an object was served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Ram,
    Disk,
    /// Read while its fill was still arriving (a coalesced request).
    Fill,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Ram | Tier::Fill => "RAM",
            Tier::Disk => "DISK",
        }
    }
}

/// Facts about an object that purges and prefetch use: its storage key,
/// the URL part of that key (host + path + normalized query) and the keys
/// of the origin's `Surrogate-Key` header.
///
/// One shared allocation behind a thin pointer (`arcstr`: 8 bytes where
/// an `Arc<str>` takes 16), cloned by reference: each part written as its
/// length in decimal, `:`, and its text (key, URL, surrogate keys). The
/// purge index holds only these (issue 17: the info, its URL, and the
/// index's keys and lists took about 280 bytes per RAM object; now about
/// 110 with the text).
#[derive(Clone, PartialEq, Eq)]
pub struct ObjectInfo(arcstr::ArcStr);

impl ObjectInfo {
    pub fn new<K: AsRef<str>>(key: &str, url: &str, surrogate_keys: &[K]) -> ObjectInfo {
        let parts = [key, url]
            .into_iter()
            .chain(surrogate_keys.iter().map(AsRef::as_ref));
        let mut text = String::with_capacity(key.len() + url.len() + 8);
        for part in parts {
            text.push_str(itoa::Buffer::new().format(part.len()));
            text.push(':');
            text.push_str(part);
        }
        ObjectInfo(arcstr::ArcStr::from(text.as_str()))
    }

    /// The storage key of the object it describes.
    pub fn key(&self) -> &str {
        self.parts().next().unwrap_or_default()
    }

    /// The URL part of its key.
    pub fn url(&self) -> &str {
        self.parts().nth(1).unwrap_or_default()
    }

    /// The surrogate keys, in the origin's order.
    pub fn surrogate_keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.parts().skip(2)
    }

    /// Where each surrogate key's part begins in the text: what
    /// [`ObjectInfo::surrogate_key_at`] reads in constant time (the purge
    /// index orders its entries by them).
    pub fn surrogate_key_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        self.parts_at().skip(2).map(|(at, _)| at)
    }

    /// The surrogate key whose part begins at `offset`, one of
    /// [`ObjectInfo::surrogate_key_offsets`] (another offset reads
    /// whatever part it happens to parse, or an empty one; never panics).
    pub fn surrogate_key_at(&self, offset: usize) -> &str {
        part_at(&self.0, offset).map_or("", |(part, _)| part)
    }

    /// The same allocation (a clone of this one).
    pub fn same(&self, other: &ObjectInfo) -> bool {
        arcstr::ArcStr::ptr_eq(&self.0, &other.0)
    }

    /// Bytes of its text (its parts and their lengths).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn parts(&self) -> impl Iterator<Item = &str> + '_ {
        self.parts_at().map(|(_, part)| part)
    }

    /// Each part, with where it begins in the text.
    fn parts_at(&self) -> impl Iterator<Item = (usize, &str)> + '_ {
        let text: &str = &self.0;
        let mut at = 0;
        std::iter::from_fn(move || {
            let (part, next) = part_at(text, at)?;
            let begins = at;
            at = next;
            Some((begins, part))
        })
    }
}

/// The part of an [`ObjectInfo`]'s text that begins at `at` (its length in
/// decimal, `:`, its text), and where the next begins.
fn part_at(text: &str, at: usize) -> Option<(&str, usize)> {
    let rest = text.get(at..)?;
    let (len, after) = rest.split_once(':')?;
    let len = len.parse::<usize>().ok()?;
    let part = after.get(..len)?;
    Some((part, text.len() - after.len() + len))
}

impl Default for ObjectInfo {
    fn default() -> Self {
        ObjectInfo::new::<&str>("", "", &[])
    }
}

impl std::fmt::Debug for ObjectInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectInfo")
            .field("key", &self.key())
            .field("url", &self.url())
            .field("surrogate_keys", &self.surrogate_keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A time as nanoseconds since the Unix epoch: 8 bytes where a
/// `SystemTime` takes 16 (issue 17's bytes per RAM object). Exact from
/// 1970 to 2554; earlier reads as 1970 and later as 2554 (a cache may take
/// any `max-age` above 2^31 seconds, 68 years, as 2^31: RFC 9111
/// §1.2.2).
#[derive(Debug, Clone, Copy)]
struct Stamp(u64);

impl Stamp {
    fn of(t: SystemTime) -> Stamp {
        let nanos = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Stamp(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn time(self) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(self.0)
    }
}

/// The parts of a stored meta a fresh hit needs, decoded once.
///
/// The response head is kept as its HTTP/1 header lines (names as the
/// origin cased them), not as a `ResponseHeader`: a header map with its
/// case map took about 2 KB per object (issue 17: 1 KiB objects held
/// 5.5 KiB each); the lines take what they say. A hit rebuilds the header
/// from them ([`Parsed::header`]), as it cloned the kept map before.
///
/// One buffer holds the lines, then pingora's serialized internal meta
/// (what [`Object::cache_meta`] decodes), then the origin's own reason
/// phrase if it had one: one allocation per head rather than three
/// (issue 17: about 60 bytes per RAM object).
#[derive(Debug)]
pub struct Parsed {
    /// [`Parsed::fresh_until`], as a [`Stamp`].
    fresh_until: Stamp,
    /// [`Parsed::updated`], as a [`Stamp`].
    updated: Stamp,
    /// Stored with a `Vary` variance: only pingora's lookup picks variants.
    pub varies: bool,
    /// The head has a `Content-Length`.
    pub has_length: bool,
    /// The origin's own reason phrase ends `buf`.
    has_reason: bool,
    status: u16,
    /// How many header lines.
    count: u16,
    /// `buf[..lines_end]`: `name: value\r\n` lines, then the empty line.
    lines_end: u32,
    /// `buf[lines_end..internal_end]`: the internal meta.
    internal_end: u32,
    /// Lines, internal meta, reason. Rebuilt headers share its bytes
    /// (names and values are slices of it).
    buf: Bytes,
}

impl Parsed {
    fn of(meta: &Meta) -> Option<Parsed> {
        let m = CacheMeta::deserialize(&meta.0, &meta.1).ok()?;
        Self::build(
            m.response_header(),
            m.fresh_until(),
            m.epoch(),
            m.variance().is_some(),
            &meta.0,
        )
    }

    /// A stored head as a hit reads it: `fresh_until` and `updated` as
    /// [`Parsed::fresh_until`] and [`Parsed::updated`], `varies` when stored
    /// with a `Vary` variance. `None` with more than 65,535 fields.
    pub fn from_header(
        header: &ResponseHeader,
        fresh_until: SystemTime,
        updated: SystemTime,
        varies: bool,
    ) -> Option<Parsed> {
        Self::build(header, fresh_until, updated, varies, &[])
    }

    /// As [`Parsed::from_header`], keeping `internal` (pingora's serialized
    /// internal meta) in the same buffer. `None` with more than 65,535
    /// fields or a head of 4 GiB.
    fn build(
        header: &ResponseHeader,
        fresh_until: SystemTime,
        updated: SystemTime,
        varies: bool,
        internal: &[u8],
    ) -> Option<Parsed> {
        // Only an origin's own phrase: the standard one follows the status
        // a hit answers with (206, 304).
        let reason = header
            .get_reason_phrase()
            .filter(|r| Some(*r) != header.status.canonical_reason());
        let mut buf = Vec::with_capacity(256 + internal.len());
        header.header_to_h1_wire(&mut buf);
        buf.extend_from_slice(b"\r\n");
        let lines_end = u32::try_from(buf.len()).ok()?;
        buf.extend_from_slice(internal);
        let internal_end = u32::try_from(buf.len()).ok()?;
        buf.extend_from_slice(reason.unwrap_or_default().as_bytes());
        Some(Parsed {
            fresh_until: Stamp::of(fresh_until),
            updated: Stamp::of(updated),
            varies,
            has_length: header.headers.contains_key(http::header::CONTENT_LENGTH),
            has_reason: reason.is_some(),
            status: header.status.as_u16(),
            count: u16::try_from(header.headers.len()).ok()?,
            lines_end,
            internal_end,
            // Exactly as long as it holds (`into_boxed_slice` gives the
            // slack back).
            buf: Bytes::from(buf.into_boxed_slice()),
        })
    }

    /// pingora's serialized internal meta kept with the head.
    fn internal(&self) -> &[u8] {
        &self.buf[self.lines_end as usize..self.internal_end as usize]
    }

    /// The bytes it holds: lines, internal meta and reason.
    fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.fresh_until() >= now
    }

    /// Until when it is fresh.
    pub fn fresh_until(&self) -> SystemTime {
        self.fresh_until.time()
    }

    /// When it was stored or last revalidated (what `Age` counts from).
    pub fn updated(&self) -> SystemTime {
        self.updated.time()
    }

    /// The stored status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The stored reason phrase, when the origin's was not the standard one.
    pub fn reason(&self) -> Option<&str> {
        let tail = &self.buf[self.internal_end as usize..];
        // Written from a `&str`.
        self.has_reason
            .then(|| std::str::from_utf8(tail).ok())
            .flatten()
    }

    /// The first stored value of field `name` (case-insensitive), trimmed;
    /// `None` when absent or not visible ASCII (what `HeaderValue::to_str`
    /// reads: a value with other bytes reads as absent, as on a header map).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields()
            .find(|f| f.name.len() == name.len() && f.name.eq_ignore_ascii_case(name.as_bytes()))
            .filter(|f| {
                f.value
                    .iter()
                    .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
            })
            .and_then(|f| std::str::from_utf8(f.value).ok())
    }

    /// The stored fields in order.
    pub fn fields(&self) -> Fields<'_> {
        Fields { rest: self.lines() }
    }

    /// The stored field lines as they go on the wire (`name: value\r\n`
    /// each, names as the origin cased them), then the empty line.
    pub fn lines(&self) -> &[u8] {
        &self.buf[..self.lines_end as usize]
    }

    /// The stored response head, rebuilt (names in lower case).
    /// None if the kept lines do not parse (they always do: they were
    /// written from a parsed header).
    pub fn header(&self) -> Option<ResponseHeader> {
        let mut storage = [httparse::EMPTY_HEADER; 32];
        let mut heap;
        let slots: &mut [httparse::Header<'_>] = if usize::from(self.count) <= storage.len() {
            &mut storage
        } else {
            heap = vec![httparse::EMPTY_HEADER; usize::from(self.count)];
            &mut heap
        };
        let (_, fields) = match httparse::parse_headers(self.lines(), slots).ok()? {
            httparse::Status::Complete(done) => done,
            httparse::Status::Partial => return None,
        };
        // Straight into the header map, without pingora's case map: field
        // names go out in lower case, as HTTP/2 sends them (RFC 9110 §5.1:
        // names are case-insensitive). With the case map, a rebuild took
        // 1.16 µs; this takes 0.54, as the clone of a kept header map and
        // case map did (0.51; `cargo bench -p edge-benches -- "hit head"`).
        let mut headers = http::HeaderMap::with_capacity(fields.len());
        for f in fields.iter() {
            let name = http::HeaderName::from_bytes(f.name.as_bytes()).ok()?;
            let value = http::HeaderValue::from_maybe_shared(self.buf.slice_ref(f.value)).ok()?;
            headers.append(name, value);
        }
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = http::StatusCode::from_u16(self.status).ok()?;
        parts.headers = headers;
        let mut out = ResponseHeader::from(parts);
        if let Some(r) = self.reason() {
            out.set_reason_phrase(Some(r)).ok()?;
        }
        Some(out)
    }
}

impl Parsed {
    /// The stored response head, rebuilt with the origin's name case and
    /// order (what pingora's lookup and the disk tier's meta carry). None
    /// if a kept line does not make a field (they always do: they were
    /// written from a parsed header).
    pub fn header_with_case(&self) -> Option<ResponseHeader> {
        let mut out = ResponseHeader::build(self.status, Some(usize::from(self.count))).ok()?;
        for f in self.fields() {
            let value = http::HeaderValue::from_maybe_shared(self.buf.slice_ref(f.value)).ok()?;
            out.append_header(self.buf.slice_ref(f.name), value).ok()?;
        }
        if let Some(r) = self.reason() {
            out.set_reason_phrase(Some(r)).ok()?;
        }
        Some(out)
    }
}

/// One stored field: its name as the origin cased it, its value trimmed,
/// and its whole line without the line end.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    pub line: &'a [u8],
}

/// The fields of a [`Parsed`] head, in order ([`Parsed::fields`]).
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (line, rest) = match memchr::memchr(b'\n', self.rest) {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            // The lines were written from a valid header map: each has a
            // colon; the empty line ends them.
            let Some(colon) = memchr::memchr(b':', line) else {
                continue;
            };
            return Some(Field {
                name: &line[..colon],
                value: line[colon + 1..].trim_ascii(),
                line,
            });
        }
    }
}

/// Heap bytes per RAM object beyond its key, body, head (lines, internal
/// meta, reason) and info's text, measured with a counting allocator
/// (cache/tests/ram_memory.rs, 2026-12-03: about 265): the object (120
/// with its `Arc`), its info's header (16), the shared counts of the body
/// and, from its first read, the head (24 each), the RAM tier's slot,
/// table and queue entries (about 70), the purge index's entry and URL
/// order (about 35). The running server holds about 60 more per object
/// (`edge_heap_live_bytes` of an `alloc-stats` build: 1,744 bytes per 1
/// KiB object never read against 1,668 in the test; what is learnt of
/// each URL, `caching/url_facts.rs`, is some of it): 95 more to spare,
/// so that `ram_size` bounds the heap the tier really holds. The
/// allocator's own rounding and pages are not counted: RSS grows by
/// about 2,040 bytes per such object under mimalloc (benches/RESULTS.md).
pub const RAM_OVERHEAD: u64 = 360;

/// Heap bytes per surrogate key of a RAM object beyond its text in the
/// info: its entry in the purge index's order (about 30, whether the key
/// is the object's alone or shared by thousands).
pub const SURROGATE_OVERHEAD: u64 = 48;

/// A complete cached response.
///
/// The head is kept once: as the parsed lines ([`Parsed`]), which hits
/// read. pingora's serialized form (`Meta`: the internal part and a zstd
/// header) is made again from them when the disk tier, a purge or
/// pingora's lookup asks ([`Object::meta`], [`Object::cache_meta`]);
/// keeping both cost about 230 more bytes per object (issue 17). Only a
/// meta whose header does not parse is kept as it came.
#[derive(Debug)]
pub struct Object {
    pub body: Bytes,
    pub info: ObjectInfo,
    /// The stored head, parsed, with the internal meta (`None` if the
    /// meta does not parse).
    head: Head,
}

/// An object's stored head.
#[derive(Debug)]
enum Head {
    Parsed(Parsed),
    /// The meta as it came, kept only when it does not parse.
    Unparsed(Box<Meta>),
}

/// pingora's serialized form of a header with no fields: what the internal
/// meta is decoded with before the kept head is put in its place.
fn empty_header() -> &'static [u8] {
    static EMPTY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| {
        ResponseHeader::build(200, Some(0))
            .ok()
            .and_then(|h| {
                CacheMeta::new(SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH, 0, 0, h)
                    .serialize()
                    .ok()
            })
            .map(|(_, header)| header)
            .unwrap_or_default()
    })
}

impl Object {
    pub fn new(meta: Meta, body: Bytes, info: ObjectInfo) -> Object {
        let head = match Parsed::of(&meta) {
            Some(p) => Head::Parsed(p),
            None => {
                let (mut internal, mut header) = meta;
                internal.shrink_to_fit();
                header.shrink_to_fit();
                Head::Unparsed(Box::new((internal, header)))
            }
        };
        Object { body, info, head }
    }

    /// The stored head, parsed (`None` if the meta does not parse).
    pub fn parsed(&self) -> Option<&Parsed> {
        match &self.head {
            Head::Parsed(p) => Some(p),
            Head::Unparsed(_) => None,
        }
    }

    /// The stored meta, decoded as pingora's lookup returns it; the head
    /// keeps the origin's name case. Errors as `CacheMeta::deserialize`.
    pub fn cache_meta(&self) -> pingora_error::Result<CacheMeta> {
        let parsed = match &self.head {
            Head::Parsed(p) => p,
            Head::Unparsed(m) => return CacheMeta::deserialize(&m.0, &m.1),
        };
        let mut meta = CacheMeta::deserialize(parsed.internal(), empty_header())?;
        *meta.response_header_mut() = parsed.header_with_case().ok_or_else(|| {
            pingora_error::Error::explain(
                pingora_error::ErrorType::InternalError,
                "kept head lines do not rebuild",
            )
        })?;
        Ok(meta)
    }

    /// The stored meta in pingora's serialized form (for the disk tier and
    /// meta updates). Errors as `CacheMeta::serialize`.
    pub fn meta(&self) -> pingora_error::Result<Meta> {
        match &self.head {
            Head::Unparsed(m) => Ok((**m).clone()),
            Head::Parsed(_) => self.cache_meta()?.serialize(),
        }
    }

    /// Bytes it occupies: body, internal meta, and the head (its lines, or
    /// the serialized header kept when it did not parse).
    pub fn weight(&self) -> u64 {
        let head = match &self.head {
            Head::Parsed(p) => p.len(),
            Head::Unparsed(m) => m.0.len() + m.1.len(),
        };
        (self.body.len() + head) as u64
    }

    /// Bytes it holds in the RAM tier, as `ram_size` counts them: body (a
    /// mapped one to its last page's end), head (lines and meta), its
    /// info's text (key, URL, surrogate keys),
    /// [`SURROGATE_OVERHEAD`] per surrogate key and [`RAM_OVERHEAD`] for
    /// the structures around it, so that `ram_size` bounds the memory the
    /// tier really uses (tests/ram_memory.rs counts it with the allocator).
    pub fn ram_weight(&self) -> u64 {
        // A mapped body takes whole pages (4 KiB on the machines edge
        // runs on; a larger page size only makes this an undercount of
        // the last page).
        let mapped = self.body.len() >= crate::mapped::MAPPED_MIN
            && crate::mapped::pages_of(&self.body).is_some();
        let page_tail = match mapped {
            true => (self.body.len().next_multiple_of(4096) - self.body.len()) as u64,
            false => 0,
        };
        self.weight()
            + page_tail
            + self.info.len() as u64
            + self
                .info
                .surrogate_keys()
                .map(|_| SURROGATE_OVERHEAD)
                .sum::<u64>()
            + RAM_OVERHEAD
    }

    /// The same body with other headers (a revalidation, a soft purge).
    pub fn with_meta(&self, meta: Meta) -> Object {
        Object::new(meta, self.body.clone(), self.info.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn head(fields: &[(&str, &str)], reason: Option<&str>) -> ResponseHeader {
        let mut h = ResponseHeader::build(203, None).unwrap();
        for (k, v) in fields {
            h.append_header(k.to_string(), *v).unwrap();
        }
        h.set_reason_phrase(reason).unwrap();
        h
    }

    /// The fields as a client reads them on the wire: name case, order,
    /// values (the map's own order groups same names; the case map keeps
    /// the wire order).
    fn wire(h: &ResponseHeader) -> Vec<u8> {
        let mut out = Vec::new();
        h.header_to_h1_wire(&mut out);
        out
    }

    #[test]
    fn the_meta_made_from_the_kept_lines_is_the_meta_that_was_stored() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        type Case<'a> = (Vec<(&'a str, &'a str)>, Option<&'a str>);
        let cases: Vec<Case<'_>> = vec![
            (vec![], None),
            (vec![("Content-Length", "3")], Some("Non-Authoritative")),
            (
                vec![
                    ("Server", "nginx"),
                    ("set-cookie", "a=1"),
                    ("X-Odd-CASE", ""),
                    ("Set-Cookie", "b=2"),
                    ("Cache-Control", "max-age=60"),
                    ("cache-control", "public"),
                    ("Content-Type", "text/plain; charset=\u{e9}"),
                    ("Link", "</a>; rel=preload,\t</b>"),
                ],
                None,
            ),
            (
                (0..40).map(|_| ("X-Many", "v")).collect::<Vec<_>>(),
                Some("OK"),
            ),
        ];
        for (fields, reason) in cases {
            let h = head(&fields, reason);
            let mut m = CacheMeta::new(now + Duration::from_secs(60), now, 7, 9, h.clone());
            m.set_variance(*b"0123456789abcdef");
            let stored = m.serialize().unwrap();
            // What a lookup decoded before: the stored form, deserialized
            // (pingora's serde keeps only standard reason phrases).
            let h = CacheMeta::deserialize(&stored.0, &stored.1)
                .unwrap()
                .response_header_copy();
            if fields.iter().any(|(k, _)| *k == "X-Odd-CASE") {
                assert!(String::from_utf8_lossy(&wire(&h)).contains("X-Odd-CASE: \r\n"));
            }
            let obj = Object::new(
                stored.clone(),
                Bytes::from_static(b"abc"),
                Default::default(),
            );
            assert!(obj.parsed().is_some(), "{fields:?}");
            assert!(
                matches!(obj.head, Head::Parsed(_)),
                "the serialized header is not kept"
            );
            for again in [obj.cache_meta().unwrap(), {
                let (i, hd) = obj.meta().unwrap();
                CacheMeta::deserialize(&i, &hd).unwrap()
            }] {
                let got = again.response_header();
                assert_eq!(got.status, h.status);
                assert_eq!(got.get_reason_phrase(), h.get_reason_phrase(), "{fields:?}");
                assert_eq!(wire(got), wire(&h), "{fields:?}");
                assert_eq!(again.fresh_until(), m.fresh_until());
                assert_eq!(again.created(), m.created());
                assert_eq!(again.updated(), m.updated());
                assert_eq!(again.stale_while_revalidate_sec(), 7);
                assert_eq!(again.stale_if_error_sec(), 9);
                assert_eq!(again.variance(), m.variance());
            }
        }
    }

    #[test]
    fn an_info_gives_back_the_parts_it_was_made_of() {
        let long = "x".repeat(70_000);
        type Case<'a> = (&'a str, &'a str, Vec<&'a str>);
        let cases: Vec<Case<'_>> = vec![
            ("", "", vec![]),
            ("k", "", vec![""]),
            (
                "0123456789abcdef0123456789abcdef",
                "h/a",
                vec!["vod", "title-1"],
            ),
            ("3:abc", "12:h/a?x=1:2", vec!["1:", ":", "0:", "9"]),
            ("k\u{e9}", "h\u{e9}/\u{1f600}", vec!["\u{e9}"]),
            ("k", &long, vec![&long, "a"]),
        ];
        for (key, url, keys) in cases {
            let info = ObjectInfo::new(key, url, &keys);
            assert_eq!(info.key(), key);
            assert_eq!(info.url(), url);
            assert_eq!(info.surrogate_keys().collect::<Vec<_>>(), keys);
            let by_offset: Vec<&str> = info
                .surrogate_key_offsets()
                .map(|at| info.surrogate_key_at(at))
                .collect();
            assert_eq!(by_offset, keys);
            for at in 0..info.len() + 2 {
                info.surrogate_key_at(at);
            }
            assert!(info.same(&info.clone()));
            assert_eq!(info, ObjectInfo::new(key, url, &keys));
        }
        assert_ne!(
            ObjectInfo::new::<&str>("a", "b", &[]),
            ObjectInfo::new("a", "b", &[""])
        );
    }

    #[test]
    fn stamps_keep_times_to_the_nanosecond_and_saturate_outside_their_range() {
        let epoch = SystemTime::UNIX_EPOCH;
        for t in [
            epoch,
            epoch + Duration::new(1_800_000_000, 123_456_789),
            epoch + Duration::from_nanos(u64::MAX),
        ] {
            assert_eq!(Stamp::of(t).time(), t);
        }
        assert_eq!(Stamp::of(epoch - Duration::from_secs(1)).time(), epoch);
        let far = epoch + Duration::from_secs(1 << 40);
        assert_eq!(
            Stamp::of(far).time(),
            epoch + Duration::from_nanos(u64::MAX)
        );
    }

    #[test]
    fn an_object_stays_small() {
        // 104 bytes, 128 with its `Arc` and the allocator's header
        // (issue 17: bytes per RAM object).
        assert!(std::mem::size_of::<Object>() <= 104);
    }

    #[test]
    fn a_meta_that_does_not_parse_is_kept_as_it_came() {
        let meta = (b"internal".to_vec(), b"not a header".to_vec());
        let obj = Object::new(meta.clone(), Bytes::new(), Default::default());
        assert!(obj.parsed().is_none());
        assert_eq!(obj.meta().unwrap(), meta);
        assert!(obj.cache_meta().is_err());
        assert_eq!(obj.weight(), (meta.0.len() + meta.1.len()) as u64);
    }
}
