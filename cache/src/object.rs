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

/// The parts of a stored meta a fresh hit needs, parsed once.
#[derive(Debug)]
pub struct Parsed {
    pub fresh_until: SystemTime,
    /// When it was stored or last revalidated (what `Age` counts from).
    pub updated: SystemTime,
    /// Stored with a `Vary` variance: only pingora's lookup picks variants.
    pub varies: bool,
    pub header: ResponseHeader,
}

impl Parsed {
    fn of(meta: &Meta) -> Option<Arc<Parsed>> {
        let m = CacheMeta::deserialize(&meta.0, &meta.1).ok()?;
        Some(Arc::new(Parsed {
            fresh_until: m.fresh_until(),
            updated: m.epoch(),
            varies: m.variance().is_some(),
            header: m.response_header_copy(),
        }))
    }

    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.fresh_until >= now
    }
}

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

    /// The same body with other headers (a revalidation, a soft purge).
    pub fn with_meta(&self, meta: Meta) -> Object {
        Object::new(meta, self.body.clone(), self.info.clone())
    }
}
