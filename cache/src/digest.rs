//! A digest of what a node holds, for steering: a Bloom filter of the
//! [`Url`](crate::key::Url) part of the keys of stored objects (authority,
//! path, normalized query: what every scheme, slice and header variant of
//! a URL share), so another node can ask "does it hold this URL?" without
//! the list. As Squid's cache digests, false positives are possible (at
//! most [`FALSE_POSITIVE_RATE`] at the size it was built for), false
//! negatives are not, until an object is added after the digest was built.
//!
//! Sizes: `m = ⌈-n ln p / (ln 2)²⌉` bits for `n` URLs (9.6 bits, 1.2
//! bytes, per URL at p = 1%), `k = 7` positions per URL. 100,000 URLs
//! make a 117 KiB digest; 1,000,000 make 1.14 MiB.
//!
//! Positions are portable between nodes and versions: `xxh3_128` of the
//! URL's bytes (a fixed, specified hash), split into two 64-bit halves
//! for double hashing (Kirsch–Mitzenmacher): `h1 + i·h2 mod m`. A crate's
//! Bloom filter would hash with its own (seeded) function; ours must give
//! every node the same positions.

use xxhash_rust::xxh3::xxh3_128;

/// The false positive rate a digest is sized for.
pub const FALSE_POSITIVE_RATE: f64 = 0.01;
/// Positions set per URL (optimal for 1%: `-log2 p` ≈ 6.6).
pub const HASHES: u32 = 7;
/// Smallest digest, in bits.
const MIN_BITS: u64 = 1024;
/// Largest digest, in bits (64 MiB; 55 million URLs at 1%).
pub const MAX_BITS: u64 = 1 << 29;

/// A Bloom filter of URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    bits: Vec<u8>,
    hashes: u32,
    keys: u64,
}

/// Why received digest bytes are not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("a digest of {0} bytes: expected a multiple of 8 from 128 to 64 MiB")]
    Size(usize),
    #[error("{0} hashes per key: expected 1 to 32")]
    Hashes(u32),
}

impl Digest {
    /// An empty digest sized for `keys` URLs at [`FALSE_POSITIVE_RATE`].
    pub fn with_capacity(keys: u64) -> Digest {
        let ln2 = std::f64::consts::LN_2;
        let m = (-(keys as f64) * FALSE_POSITIVE_RATE.ln() / (ln2 * ln2)).ceil() as u64;
        let m = m.clamp(MIN_BITS, MAX_BITS).div_ceil(64) * 64;
        Digest {
            bits: vec![0; (m / 8) as usize],
            hashes: HASHES,
            keys: 0,
        }
    }

    /// A digest of `urls` (sized for exactly as many).
    pub fn of<'a>(urls: impl ExactSizeIterator<Item = &'a str>) -> Digest {
        let mut d = Digest::with_capacity(urls.len() as u64);
        for u in urls {
            d.insert(u);
        }
        d
    }

    /// A digest received from a node: its bit array and hash count.
    pub fn from_parts(bits: Vec<u8>, hashes: u32, keys: u64) -> Result<Digest, DigestError> {
        let n = bits.len() as u64;
        if !n.is_multiple_of(8) || n * 8 < MIN_BITS || n * 8 > MAX_BITS {
            return Err(DigestError::Size(bits.len()));
        }
        if !(1..=32).contains(&hashes) {
            return Err(DigestError::Hashes(hashes));
        }
        Ok(Digest { bits, hashes, keys })
    }

    fn positions(&self, url: &str) -> impl Iterator<Item = u64> {
        let h = xxh3_128(url.as_bytes());
        let h1 = h as u64;
        let h2 = ((h >> 64) as u64) | 1;
        let m = self.bits.len() as u64 * 8;
        (0..u64::from(self.hashes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % m)
    }

    pub fn insert(&mut self, url: &str) {
        let positions: Vec<u64> = self.positions(url).collect();
        for p in positions {
            self.bits[(p / 8) as usize] |= 1 << (p % 8);
        }
        self.keys += 1;
    }

    /// Whether `url` may be held (false: it is not, as of the digest).
    pub fn contains(&self, url: &str) -> bool {
        self.positions(url)
            .all(|p| self.bits[(p / 8) as usize] & (1 << (p % 8)) != 0)
    }

    /// The bit array (`bits() / 8` bytes; bit `i` is byte `i / 8`, bit `i % 8`).
    pub fn bytes(&self) -> &[u8] {
        &self.bits
    }

    pub fn bits(&self) -> u64 {
        self.bits.len() as u64 * 8
    }

    pub fn hashes(&self) -> u32 {
        self.hashes
    }

    /// URLs inserted.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// The false positive rate expected at the current fill:
    /// `(1 - e^(-k·n/m))^k`.
    pub fn expected_false_positive_rate(&self) -> f64 {
        let (k, n, m) = (f64::from(self.hashes), self.keys as f64, self.bits() as f64);
        (1.0 - (-k * n / m).exp()).powf(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(i: u64) -> String {
        format!("video.example/vod/title{}/seg{}.ts", i / 100, i % 100)
    }

    #[test]
    fn holds_everything_inserted_and_misses_at_about_the_planned_rate() {
        for n in [1u64, 10, 1000, 100_000] {
            let urls: Vec<String> = (0..n).map(url).collect();
            let d = Digest::of(urls.iter().map(String::as_str));
            assert!(
                urls.iter().all(|u| d.contains(u)),
                "a false negative at {n}"
            );
            let probes = 100_000;
            let false_hits = (n..n + probes).filter(|i| d.contains(&url(*i))).count();
            let rate = false_hits as f64 / probes as f64;
            // Sized for 1%: measured 0.995% at 100,000 keys and 1.08% at
            // 1,000 (100,000 probes each); small digests are larger than
            // needed (the 1024-bit floor): 0.005% at 10.
            assert!(rate < 0.015, "{rate} at {n} keys");
            assert_eq!(d.keys(), n);
            assert!(d.expected_false_positive_rate() <= 0.0101);
        }
    }

    #[test]
    fn size_is_about_ten_bits_per_url() {
        let d = Digest::with_capacity(100_000);
        assert_eq!(d.bits(), 958_528);
        assert_eq!(d.bytes().len(), 119_816);
        assert_eq!(Digest::with_capacity(0).bits(), MIN_BITS);
        assert_eq!(Digest::with_capacity(u64::MAX).bits(), MAX_BITS);
    }

    #[test]
    fn a_received_digest_answers_as_the_one_sent() {
        let d = Digest::of(["a/x", "b/y"].into_iter());
        let r = Digest::from_parts(d.bytes().to_vec(), d.hashes(), d.keys()).unwrap();
        assert!(r.contains("a/x") && r.contains("b/y") && !r.contains("c/z"));
        assert_eq!(r, d);
    }

    #[test]
    fn hostile_parts_are_refused() {
        assert_eq!(Digest::from_parts(vec![], 7, 0), Err(DigestError::Size(0)));
        assert_eq!(
            Digest::from_parts(vec![0; 129], 7, 0),
            Err(DigestError::Size(129))
        );
        assert_eq!(
            Digest::from_parts(vec![0; 128], 0, 0),
            Err(DigestError::Hashes(0))
        );
        assert_eq!(
            Digest::from_parts(vec![0; 128], 33, 0),
            Err(DigestError::Hashes(33))
        );
        assert!(Digest::from_parts(vec![0xff; 128], 32, 0).is_ok());
    }

    #[test]
    fn positions_are_fixed_across_builds() {
        // The hash is part of the format between nodes: a change here
        // makes nodes of two versions misread each other's digests.
        let d = Digest::with_capacity(0);
        let p: Vec<u64> = d.positions("video.example/a.ts").collect();
        assert_eq!(p, [607, 696, 785, 874, 963, 28, 117]);
    }
}
