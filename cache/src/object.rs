//! What the cache keeps: a response's meta (pingora's serialized
//! `CacheMeta`) and body, what purges need to find it, and (for objects in
//! memory) the meta already parsed, so a hit does not decode it again.

use std::sync::Arc;
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

/// Facts about an object that purges and prefetch use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The URL part of its key (host + path + normalized query).
    pub url: String,
    /// From the origin's `Surrogate-Key` header.
    pub surrogate_keys: Vec<String>,
}

/// The parts of a stored meta a fresh hit needs, decoded once.
///
/// The response head is kept as its HTTP/1 header lines (names as the
/// origin cased them), not as a `ResponseHeader`: a header map with its
/// case map took about 2 KB per object (issue 17: 1 KiB objects held
/// 5.5 KiB each); the lines take what they say. A hit rebuilds the header
/// from them ([`Parsed::header`]), as it cloned the kept map before.
#[derive(Debug)]
pub struct Parsed {
    pub fresh_until: SystemTime,
    /// When it was stored or last revalidated (what `Age` counts from).
    pub updated: SystemTime,
    /// Stored with a `Vary` variance: only pingora's lookup picks variants.
    pub varies: bool,
    /// The head has a `Content-Length`.
    pub has_length: bool,
    status: u16,
    reason: Option<Box<str>>,
    /// `name: value\r\n` lines, then the empty line. Rebuilt headers
    /// share its bytes (names and values are slices of it).
    lines: Bytes,
    /// How many header lines.
    count: u16,
}

impl Parsed {
    fn of(meta: &Meta) -> Option<Arc<Parsed>> {
        let m = CacheMeta::deserialize(&meta.0, &meta.1).ok()?;
        Self::from_header(
            m.response_header(),
            m.fresh_until(),
            m.epoch(),
            m.variance().is_some(),
        )
        .map(Arc::new)
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
        let mut lines = Vec::with_capacity(256);
        header.header_to_h1_wire(&mut lines);
        lines.extend_from_slice(b"\r\n");
        Some(Parsed {
            fresh_until,
            updated,
            varies,
            has_length: header.headers.contains_key(http::header::CONTENT_LENGTH),
            status: header.status.as_u16(),
            reason: header.get_reason_phrase().map(Into::into),
            count: u16::try_from(header.headers.len()).ok()?,
            lines: Bytes::from(lines.into_boxed_slice()),
        })
    }

    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.fresh_until >= now
    }

    /// The stored status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The stored reason phrase, when the origin's was not the standard one.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
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
        Fields { rest: &self.lines }
    }

    /// The stored field lines as they go on the wire (`name: value\r\n`
    /// each, names as the origin cased them), then the empty line.
    pub fn lines(&self) -> &[u8] {
        &self.lines
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
        let (_, fields) = match httparse::parse_headers(&self.lines, slots).ok()? {
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
            let value = http::HeaderValue::from_maybe_shared(self.lines.slice_ref(f.value)).ok()?;
            headers.append(name, value);
        }
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = http::StatusCode::from_u16(self.status).ok()?;
        parts.headers = headers;
        let mut out = ResponseHeader::from(parts);
        if let Some(r) = &self.reason {
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

/// Heap bytes per RAM object beyond its key, body, meta, head lines and
/// URL, measured with a counting allocator (cache/tests/ram_memory.rs,
/// 2026-12-01): the moka entry (about 340), the purge index entry (about
/// 170 without the URL), the object, its info and its decoded head (about
/// 250), and the allocator's rounding of each.
pub const RAM_OVERHEAD: u64 = 900;

/// Heap bytes per surrogate key of a RAM object beyond twice its length
/// (its copy in the info, its entry in the purge index's set).
pub const SURROGATE_OVERHEAD: u64 = 96;

/// A complete cached response.
#[derive(Debug)]
pub struct Object {
    pub meta: Meta,
    pub body: Bytes,
    pub info: Arc<ObjectInfo>,
    /// `meta`, parsed (`None` if it does not parse).
    pub parsed: Option<Arc<Parsed>>,
}

impl Object {
    pub fn new(meta: Meta, body: Bytes, info: Arc<ObjectInfo>) -> Object {
        let (mut internal, mut header) = meta;
        // Serialized with room to grow; kept as long as the object is.
        internal.shrink_to_fit();
        header.shrink_to_fit();
        let meta = (internal, header);
        Object {
            parsed: Parsed::of(&meta),
            meta,
            body,
            info,
        }
    }

    /// Bytes it occupies (body and meta).
    pub fn weight(&self) -> u64 {
        (self.body.len() + self.meta.0.len() + self.meta.1.len()) as u64
    }

    /// Bytes it holds in the RAM tier, as `ram_size` counts them: body,
    /// meta, the decoded head's lines, its URL, and [`RAM_OVERHEAD`] for
    /// the structures around it, so that `ram_size` bounds the memory the
    /// tier really uses (tests/ram_memory.rs counts it with the allocator).
    pub fn ram_weight(&self) -> u64 {
        self.weight()
            + self.parsed.as_ref().map_or(0, |p| p.lines.len() as u64)
            + self.info.url.len() as u64
            + self
                .info
                .surrogate_keys
                .iter()
                .map(|k| 2 * k.len() as u64 + SURROGATE_OVERHEAD)
                .sum::<u64>()
            + RAM_OVERHEAD
    }

    /// The same body with other headers (a revalidation, a soft purge).
    pub fn with_meta(&self, meta: Meta) -> Object {
        Object::new(meta, self.body.clone(), self.info.clone())
    }
}
