//! Byte hit ratio of edge's RAM tier (the real `edge_cache::ram::RamTier`:
//! S3-FIFO, weighted by bytes) against plain LRU at the
//! same size and the offline optimum (Belady: evict what is next used
//! farthest in the future), on one Zipf-distributed trace of video segments
//! over a catalog larger than RAM.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use edge_cache::object::{Object, ObjectInfo};
use edge_cache::ram::RamTier;

pub struct Params {
    /// Distinct segments in the catalog.
    pub objects: usize,
    pub requests: usize,
    /// Zipf exponent of popularity.
    pub alpha: f64,
    /// Cache sizes to try, as fractions of the catalog's bytes.
    pub fractions: Vec<f64>,
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            objects: 20_000,
            requests: 400_000,
            alpha: 0.9,
            fractions: vec![0.01, 0.05, 0.10],
            seed: 42,
        }
    }
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uniform(x: &mut u64) -> f64 {
    (splitmix64(x) >> 11) as f64 / (1u64 << 53) as f64
}

/// Segment sizes of three renditions (250 KB, 750 KB, 2 MB, ±20 %).
fn sizes(p: &Params, rng: &mut u64) -> Vec<u64> {
    (0..p.objects)
        .map(|_| {
            let base = [250_000.0, 750_000.0, 2_000_000.0][(splitmix64(rng) % 3) as usize];
            (base * (0.8 + 0.4 * uniform(rng))) as u64
        })
        .collect()
}

/// Object ids requested, Zipf by rank (the popular ones spread over the catalog).
fn trace(p: &Params, rng: &mut u64) -> Vec<u32> {
    let weights: Vec<f64> = (1..=p.objects)
        .map(|r| 1.0 / (r as f64).powf(p.alpha))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(p.objects);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    // Rank → object id, shuffled so popularity does not follow id order.
    let mut ids: Vec<u32> = (0..p.objects as u32).collect();
    for i in (1..ids.len()).rev() {
        let j = (splitmix64(rng) % (i as u64 + 1)) as usize;
        ids.swap(i, j);
    }
    (0..p.requests)
        .map(|_| {
            let u = uniform(rng);
            let rank = cdf.partition_point(|c| *c < u).min(p.objects - 1);
            ids[rank]
        })
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Tally {
    hit_bytes: u64,
    bytes: u64,
    hits: u64,
    requests: u64,
}

impl Tally {
    fn add(&mut self, size: u64, hit: bool) {
        self.bytes += size;
        self.requests += 1;
        if hit {
            self.hit_bytes += size;
            self.hits += 1;
        }
    }
    fn byte_ratio(&self) -> f64 {
        self.hit_bytes as f64 / self.bytes.max(1) as f64
    }
    fn object_ratio(&self) -> f64 {
        self.hits as f64 / self.requests.max(1) as f64
    }
}

fn edge_ram(trace: &[u32], sizes: &[u64], capacity: u64) -> Tally {
    let largest = sizes.iter().copied().max().unwrap_or(0) as usize;
    // One buffer every simulated body points into: weights are real, memory is not.
    let buffer: &'static [u8] = Box::leak(vec![0u8; largest].into_boxed_slice());
    let ram = RamTier::new(capacity, capacity, Arc::new(|_| {}));
    let info = ObjectInfo::default();
    let mut t = Tally::default();
    for &id in trace {
        let key = format!("obj{id}");
        let size = sizes[id as usize];
        let hit = ram.get(&key).is_some();
        if !hit {
            let object = Object::new(
                (Vec::new(), Vec::new()),
                Bytes::from_static(&buffer[..size as usize]),
                info.clone(),
            );
            ram.insert(key, Arc::new(object));
        }
        t.add(size, hit);
    }
    t
}

fn lru(trace: &[u32], sizes: &[u64], capacity: u64) -> Tally {
    let mut last_use: HashMap<u32, u64> = HashMap::new();
    let mut order: BTreeMap<u64, u32> = BTreeMap::new();
    let mut used = 0u64;
    let mut t = Tally::default();
    for (tick, &id) in trace.iter().enumerate() {
        let tick = tick as u64;
        let size = sizes[id as usize];
        let hit = match last_use.insert(id, tick) {
            Some(prev) => {
                order.remove(&prev);
                true
            }
            None => {
                used += size;
                false
            }
        };
        order.insert(tick, id);
        while used > capacity {
            let Some((_, victim)) = order.pop_first() else {
                break;
            };
            last_use.remove(&victim);
            used -= sizes[victim as usize];
        }
        t.add(size, hit);
    }
    t
}

fn belady(trace: &[u32], sizes: &[u64], capacity: u64) -> Tally {
    // Next request of the same object after each position.
    let mut next = vec![usize::MAX; trace.len()];
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for (i, &id) in trace.iter().enumerate().rev() {
        if let Some(&j) = seen.get(&id) {
            next[i] = j;
        }
        seen.insert(id, i);
    }
    let mut cached: HashMap<u32, usize> = HashMap::new();
    let mut by_next: BTreeSet<(usize, u32)> = BTreeSet::new();
    let mut used = 0u64;
    let mut t = Tally::default();
    for (i, &id) in trace.iter().enumerate() {
        let size = sizes[id as usize];
        let hit = match cached.insert(id, next[i]) {
            Some(prev) => {
                by_next.remove(&(prev, id));
                true
            }
            None => {
                used += size;
                false
            }
        };
        by_next.insert((next[i], id));
        // Evict what is needed farthest ahead (possibly the newcomer: not admitted).
        while used > capacity {
            let Some((_, victim)) = by_next.pop_last() else {
                break;
            };
            cached.remove(&victim);
            used -= sizes[victim as usize];
        }
        t.add(size, hit);
    }
    t
}

/// Runs the simulation and writes the markdown section.
pub fn report(p: &Params) -> String {
    let mut rng = p.seed;
    let sizes = sizes(p, &mut rng);
    let trace = trace(p, &mut rng);
    let catalog: u64 = sizes.iter().sum();
    let mut out = format!(
        "### RAM tier hit ratio: edge vs LRU vs Belady\n\n\
         - catalog: {} segments, {:.1} GB (250 KB / 750 KB / 2 MB renditions ±20 %)\n\
         - trace: {} requests, Zipf α = {}, seed {}\n\
         - edge: `edge_cache::ram::RamTier` itself (S3-FIFO, weighted by bytes)\n\
         - LRU: least recently used by bytes; Belady: evict the object next used farthest ahead (offline)\n\n\
         | RAM (share of catalog) | edge byte hit | LRU byte hit | Belady byte hit | edge ÷ LRU | edge ÷ Belady | edge object hit | LRU object hit |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
        p.objects,
        catalog as f64 / 1e9,
        p.requests,
        p.alpha,
        p.seed
    );
    for &f in &p.fractions {
        let capacity = (catalog as f64 * f) as u64;
        let started = Instant::now();
        let e = edge_ram(&trace, &sizes, capacity);
        let edge_secs = started.elapsed().as_secs_f64();
        let l = lru(&trace, &sizes, capacity);
        let b = belady(&trace, &sizes, capacity);
        eprintln!(
            "RAM {:.0}%: edge {:.4} ({edge_secs:.1} s) LRU {:.4} Belady {:.4}",
            f * 100.0,
            e.byte_ratio(),
            l.byte_ratio(),
            b.byte_ratio()
        );
        let _ = writeln!(
            out,
            "| {:.2} GB ({:.0} %) | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {:.3} | {:.3} |",
            capacity as f64 / 1e9,
            f * 100.0,
            e.byte_ratio(),
            l.byte_ratio(),
            b.byte_ratio(),
            e.byte_ratio() / l.byte_ratio(),
            e.byte_ratio() / b.byte_ratio(),
            e.object_ratio(),
            l.object_ratio(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_and_belady_agree_on_a_tiny_trace() {
        let sizes = vec![10, 10, 10];
        // Capacity for two: a b c a b c …
        let trace: Vec<u32> = (0..30).map(|i| i % 3).collect();
        let l = lru(&trace, &sizes, 20);
        let b = belady(&trace, &sizes, 20);
        assert_eq!(l.hits, 0, "LRU thrashes on a cycle larger than the cache");
        assert!(b.hits >= 13, "Belady keeps one of two: {}", b.hits);
        let all = lru(&trace, &sizes, 30);
        assert_eq!(all.hits, 27);
    }

    #[test]
    fn zipf_traces_favour_low_ranks() {
        let p = Params {
            objects: 100,
            requests: 10_000,
            ..Params::default()
        };
        let mut rng = 1;
        let t = trace(&p, &mut rng);
        let mut counts = vec![0u32; 100];
        for id in t {
            counts[id as usize] += 1;
        }
        counts.sort_unstable();
        assert!(counts[99] > 10 * counts[50].max(1));
    }
}
