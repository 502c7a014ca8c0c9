//! Response bodies that are never stored: each byte is a function of what was
//! asked for and its offset, so a cache in front can be checked byte for byte.

use std::sync::Arc;

use bytes::Bytes;

use crate::ts::Segment;

/// SplitMix64: a fast, well-mixed 64-bit hash step.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a: a stable 64-bit hash of a string (stable across builds, unlike `DefaultHasher`).
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// Fills `buf` with a pseudo-random stream determined by `seed`.
pub fn fill_random(seed: u64, buf: &mut [u8]) {
    let mut state = seed;
    for chunk in buf.chunks_mut(8) {
        state = splitmix64(state);
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

/// Bytes of a deterministic object addressed by offset: byte `o` is byte
/// `o % 8` of `splitmix64(seed ^ (o / 8))`.
pub fn object_bytes(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < buf.len() {
        let word = splitmix64(seed ^ (pos / 8)).to_le_bytes();
        let within = (pos % 8) as usize;
        let n = (8 - within).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&word[within..within + n]);
        i += n;
        pos += n as u64;
    }
}

/// A response body.
#[derive(Debug, Clone)]
pub enum Content {
    /// Text: playlists, manifests, JSON.
    Static(Bytes),
    /// An MPEG-TS segment.
    Segment(Arc<Segment>),
    /// Pseudo-random bytes of a given length.
    Object { seed: u64, len: u64 },
}

impl Content {
    pub fn len(&self) -> u64 {
        match self {
            Content::Static(b) => b.len() as u64,
            Content::Segment(s) => s.len(),
            Content::Object { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the bytes at `offset..offset + buf.len()` (which must be in range).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) {
        match self {
            Content::Static(b) => {
                let o = offset as usize;
                buf.copy_from_slice(&b[o..o + buf.len()]);
            }
            Content::Segment(s) => s.read_at(offset, buf),
            Content::Object { seed, .. } => object_bytes(*seed, offset, buf),
        }
    }

    /// The bytes in `start..end`.
    pub fn slice(&self, start: u64, end: u64) -> Bytes {
        if let Content::Static(b) = self {
            return b.slice(start as usize..end as usize);
        }
        let mut buf = vec![0u8; (end - start) as usize];
        self.read_at(start, &mut buf);
        Bytes::from(buf)
    }

    /// The whole body (for tests and small objects).
    pub fn to_bytes(&self) -> Bytes {
        self.slice(0, self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_bytes_are_addressable() {
        let mut whole = vec![0u8; 100];
        object_bytes(7, 0, &mut whole);
        let mut part = vec![0u8; 13];
        object_bytes(7, 45, &mut part);
        assert_eq!(part, whole[45..58]);
        let mut other = vec![0u8; 100];
        object_bytes(8, 0, &mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn hashes_are_stable() {
        assert_eq!(fnv1a(""), 0xCBF2_9CE4_8422_2325);
        assert_eq!(fnv1a("a"), 0xAF63_DC4C_8601_EC8C);
    }
}
