//! What the cache keeps: a response's meta (pingora's serialized
//! `CacheMeta`) and body, and what purges need to find it.

use std::sync::Arc;

use bytes::Bytes;

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
            Tier::Ram => "RAM",
            Tier::Disk => "DISK",
            Tier::Fill => "FILL",
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

/// A complete cached response.
#[derive(Debug)]
pub struct Object {
    pub meta: Meta,
    pub body: Bytes,
    pub info: Arc<ObjectInfo>,
}

impl Object {
    /// Bytes it occupies (body and meta).
    pub fn weight(&self) -> u64 {
        (self.body.len() + self.meta.0.len() + self.meta.1.len()) as u64
    }

    /// The same body with other headers (a revalidation, a soft purge).
    pub fn with_meta(&self, meta: Meta) -> Object {
        Object {
            meta,
            body: self.body.clone(),
            info: self.info.clone(),
        }
    }
}
