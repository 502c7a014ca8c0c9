//! Load-balancing algorithms. Each picks among the backends the caller says
//! are usable (healthy, not ejected, breaker closed, not drained), by their
//! effective weights (configured or overridden, reduced by reported load).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use edge_config::Algorithm;
use parking_lot::Mutex;
use pingora_ketama::{Bucket, Continuum};

/// What a selector sees of a backend (tests and small pools).
pub struct View {
    /// Effective weight; 0 means not usable right now.
    pub weight: u32,
    pub in_flight: u64,
    /// Peak-EWMA latency (ms), if known.
    pub ewma_ms: Option<f64>,
}

/// The backends a selector picks among, looked at one at a time: a pick
/// reads only the backends it draws, so its cost does not grow with the
/// pool (issue 17: a pool of 10,000 backends cost 10× a pool of one when
/// every pick read every backend and computed its latency's decay).
pub trait Candidates {
    fn len(&self) -> usize;
    /// The weight a backend would have if usable: the configured weight or
    /// the admin's override. The precomputed table of weighted picks is
    /// built from these.
    fn base_weight(&self, i: usize) -> u32;
    /// The weight to use now: 0 when the backend is not usable (down,
    /// ejected, drained, breaker open, excluded), else at most
    /// `base_weight` (load feedback only lowers it).
    fn weight(&self, i: usize) -> u32;
    fn in_flight(&self, i: usize) -> u64;
    /// Peak-EWMA latency (ms), if known.
    fn ewma_ms(&self, i: usize) -> Option<f64>;
    /// Changes whenever any `base_weight` may have changed.
    fn weights_epoch(&self) -> u64;
}

impl Candidates for [View] {
    fn len(&self) -> usize {
        <[View]>::len(self)
    }
    fn base_weight(&self, i: usize) -> u32 {
        self[i].weight
    }
    fn weight(&self, i: usize) -> u32 {
        self[i].weight
    }
    fn in_flight(&self, i: usize) -> u64 {
        self[i].in_flight
    }
    fn ewma_ms(&self, i: usize) -> Option<f64> {
        self[i].ewma_ms
    }
    fn weights_epoch(&self) -> u64 {
        // Tests change views between picks: every distinct weight vector
        // is its own epoch.
        self.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, v| {
            (h ^ u64::from(v.weight)).wrapping_mul(0x0100_0000_01B3)
        })
    }
}

/// Pools up to this size keep the exact algorithms that look at every
/// backend (nginx's smooth weighted round robin, least requests over all):
/// their cost is bounded by this constant. Larger pools use the O(log n)
/// forms below.
pub const SMALL_POOL: usize = 64;

/// Weighted draws without a scan: prefix sums of the base weights, built
/// once per weights epoch; a draw is a binary search.
struct WeightTable {
    epoch: u64,
    /// `sums[i]` = sum of base weights of backends `0..=i`.
    sums: Vec<u64>,
    /// The stride of weighted round robin over the table's points: coprime
    /// with the total, near its golden section, so that consecutive picks
    /// land far apart and one cycle visits every point once.
    stride: u64,
}

impl WeightTable {
    fn build(c: &(impl Candidates + ?Sized)) -> Self {
        let mut sums = Vec::with_capacity(c.len());
        let mut total = 0u64;
        for i in 0..c.len() {
            total += u64::from(c.base_weight(i));
            sums.push(total);
        }
        let mut stride = ((total as f64) * 0.618_033_988_75) as u64;
        stride = stride.max(1);
        while total > 1 && gcd(stride, total) != 1 {
            stride += 1;
        }
        Self {
            epoch: c.weights_epoch(),
            sums,
            stride,
        }
    }

    fn total(&self) -> u64 {
        self.sums.last().copied().unwrap_or(0)
    }

    /// The backend owning point `p` (< total).
    fn at(&self, p: u64) -> usize {
        self.sums.partition_point(|&s| s <= p)
    }

    fn base(&self, i: usize) -> u64 {
        self.sums[i] - if i == 0 { 0 } else { self.sums[i - 1] }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A pool's selector; built per config generation.
pub struct Selector {
    kind: Kind,
    table: ArcSwap<WeightTable>,
}

enum Kind {
    RoundRobin(AtomicUsize),
    /// nginx's smooth weighted round robin (`current` per backend) for
    /// small pools; a stride over the weight table's points for large ones.
    SmoothWeighted(Mutex<Vec<i64>>, AtomicU64),
    Random,
    LeastRequests(AtomicUsize),
    P2cEwma,
    /// Ketama ring (source-IP hash, consistent hash): walks the ring from
    /// the key's point to the first usable backend, so a backend going down
    /// moves only its own keys.
    Ring {
        ring: Continuum,
        index: HashMap<SocketAddr, usize>,
    },
}

/// Draws tried before a weighted pick falls back to an exact scan (when
/// most of the pool is unusable or heavily loaded).
const DRAWS: usize = 16;

impl Selector {
    pub fn new(algorithm: &Algorithm, addrs: &[(SocketAddr, u32)]) -> Self {
        let kind = match algorithm {
            Algorithm::RoundRobin => Kind::RoundRobin(AtomicUsize::new(0)),
            Algorithm::WeightedRoundRobin => {
                Kind::SmoothWeighted(Mutex::new(vec![0; addrs.len()]), AtomicU64::new(0))
            }
            Algorithm::Random => Kind::Random,
            // Sticky cookies fall back to least requests for new clients.
            Algorithm::LeastRequests | Algorithm::Cookie(_) => {
                Kind::LeastRequests(AtomicUsize::new(0))
            }
            Algorithm::P2cEwma => Kind::P2cEwma,
            Algorithm::SourceIpHash | Algorithm::ConsistentHash { .. } => {
                let buckets: Vec<Bucket> = addrs
                    .iter()
                    .map(|(a, w)| Bucket::new(*a, (*w).max(1)))
                    .collect();
                Kind::Ring {
                    ring: Continuum::new(&buckets),
                    index: addrs
                        .iter()
                        .enumerate()
                        .map(|(i, (a, _))| (*a, i))
                        .collect(),
                }
            }
        };
        Self {
            kind,
            table: ArcSwap::from_pointee(WeightTable {
                epoch: u64::MAX,
                sums: Vec::new(),
                stride: 1,
            }),
        }
    }

    /// The weight table for `c`'s current base weights.
    fn table(&self, c: &(impl Candidates + ?Sized)) -> Arc<WeightTable> {
        let table = self.table.load_full();
        if table.epoch == c.weights_epoch() && table.sums.len() == c.len() {
            return table;
        }
        let fresh = Arc::new(WeightTable::build(c));
        self.table.store(fresh.clone());
        fresh
    }

    /// Picks a usable backend; `key` is the hash input for ring selectors.
    /// None when none is usable.
    ///
    /// Cost: O(1) expected for round robin, O(log n) for weighted draws
    /// (random, P2C, large-pool weighted round robin and least requests),
    /// O(log n) for rings; bounded by [`SMALL_POOL`] for the exact
    /// algorithms of small pools. When most of a pool is unusable, a pick
    /// falls back to one scan of it.
    pub fn pick(&self, c: &(impl Candidates + ?Sized), key: Option<&[u8]>) -> Option<usize> {
        let n = c.len();
        if n == 0 {
            return None;
        }
        match &self.kind {
            Kind::RoundRobin(next) => {
                // A turn per backend tried, so unusable backends' turns go
                // to the next usable ones and the shares stay equal.
                let mut last = 0;
                for _ in 0..n {
                    let i = next.fetch_add(1, Ordering::Relaxed) % n;
                    if c.weight(i) > 0 {
                        return Some(i);
                    }
                    last = i;
                }
                // Concurrent picks may have taken every usable backend's
                // turn between these reads (a pick then answered 503 with
                // a backend still usable): scan once, in order.
                (1..=n).map(|k| (last + k) % n).find(|&i| c.weight(i) > 0)
            }
            Kind::SmoothWeighted(current, _) if n <= SMALL_POOL => {
                let mut current = current.lock();
                if current.len() != n {
                    *current = vec![0; n];
                }
                let mut weights = [0u32; SMALL_POOL];
                for (i, w) in weights[..n].iter_mut().enumerate() {
                    *w = c.weight(i);
                }
                let total: i64 = weights[..n].iter().map(|&w| i64::from(w)).sum();
                let mut best: Option<usize> = None;
                for (i, &w) in weights[..n].iter().enumerate() {
                    if w == 0 {
                        continue;
                    }
                    current[i] += i64::from(w);
                    if best.is_none_or(|b| current[i] > current[b]) {
                        best = Some(i);
                    }
                }
                let b = best?;
                current[b] -= total;
                Some(b)
            }
            Kind::SmoothWeighted(_, next) => {
                let table = self.table(c);
                let total = table.total();
                if total > 0 {
                    for _ in 0..DRAWS {
                        let step = next.fetch_add(1, Ordering::Relaxed);
                        let p = (u128::from(step) * u128::from(table.stride) % u128::from(total))
                            as u64;
                        let i = table.at(p);
                        if accept(&table, c, i) {
                            return Some(i);
                        }
                    }
                }
                weighted_scan(c)
            }
            Kind::Random => weighted_draw(&self.table(c), c),
            Kind::LeastRequests(tiebreak) if n <= SMALL_POOL => {
                // Lowest (in_flight + 1) / weight; ties rotate.
                let start = tiebreak.fetch_add(1, Ordering::Relaxed);
                let mut best: Option<(usize, f64)> = None;
                for k in 0..n {
                    let i = (start + k) % n;
                    let w = c.weight(i);
                    if w == 0 {
                        continue;
                    }
                    let score = (c.in_flight(i) as f64 + 1.0) / f64::from(w);
                    if best.is_none_or(|(_, s)| score < s) {
                        best = Some((i, score));
                    }
                }
                best.map(|(i, _)| i)
            }
            Kind::LeastRequests(_) => {
                // Envoy's least request for large pools: the better of two
                // weighted draws by (in flight + 1) / weight.
                let score =
                    |i: usize| (c.in_flight(i) as f64 + 1.0) / f64::from(c.weight(i).max(1));
                two_choices(&self.table(c), c, score)
            }
            Kind::P2cEwma => {
                let cost = |i: usize| {
                    // An unmeasured backend is assumed fast, so it gets tried.
                    let latency = c.ewma_ms(i).unwrap_or(0.0).max(0.001);
                    latency * (c.in_flight(i) as f64 + 1.0) / f64::from(c.weight(i).max(1))
                };
                two_choices(&self.table(c), c, cost)
            }
            Kind::Ring { ring, index } => {
                let key = key.unwrap_or(b"");
                let mut seen = 0usize;
                for addr in ring.node_iter(key) {
                    seen += 1;
                    if let Some(&i) = index.get(addr) {
                        if i < n && c.weight(i) > 0 {
                            return Some(i);
                        }
                    }
                    // Every point has been passed: nothing usable on the ring.
                    if seen > 160 * n + 1 {
                        break;
                    }
                }
                weighted_draw(&self.table(c), c)
            }
        }
    }
}

/// Whether a drawn backend is taken: usable, and with probability
/// weight ÷ base weight (load feedback lowers a backend's share).
fn accept(table: &WeightTable, c: &(impl Candidates + ?Sized), i: usize) -> bool {
    let w = u64::from(c.weight(i));
    if w == 0 {
        return false;
    }
    let base = table.base(i);
    w >= base || fastrand::u64(0..base) < w
}

/// One backend drawn with probability proportional to its current weight.
fn weighted_draw(table: &WeightTable, c: &(impl Candidates + ?Sized)) -> Option<usize> {
    let total = table.total();
    if total > 0 {
        for _ in 0..DRAWS {
            let i = table.at(fastrand::u64(0..total));
            if accept(table, c, i) {
                return Some(i);
            }
        }
    }
    weighted_scan(c)
}

/// The better (lower `score`) of two distinct weighted draws.
fn two_choices(
    table: &WeightTable,
    c: &(impl Candidates + ?Sized),
    score: impl Fn(usize) -> f64,
) -> Option<usize> {
    let a = weighted_draw(table, c)?;
    let mut b = a;
    for _ in 0..8 {
        b = weighted_draw(table, c)?;
        if b != a {
            break;
        }
    }
    Some(if score(b) < score(a) { b } else { a })
}

/// The exact weighted draw over every backend's current weight: what the
/// table's draws fall back to when they keep hitting unusable backends.
fn weighted_scan(c: &(impl Candidates + ?Sized)) -> Option<usize> {
    let total: u64 = (0..c.len()).map(|i| u64::from(c.weight(i))).sum();
    if total == 0 {
        return None;
    }
    let mut point = fastrand::u64(0..total);
    for i in 0..c.len() {
        let w = u64::from(c.weight(i));
        if point < w {
            return Some(i);
        }
        point -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views(weights: &[u32]) -> Vec<View> {
        weights
            .iter()
            .map(|w| View {
                weight: *w,
                in_flight: 0,
                ewma_ms: None,
            })
            .collect()
    }

    fn addrs(n: usize) -> Vec<(SocketAddr, u32)> {
        (0..n)
            .map(|i| {
                (
                    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 80)),
                    1,
                )
            })
            .collect()
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves() {
        let s = Selector::new(&Algorithm::WeightedRoundRobin, &addrs(3));
        let v = views(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7).filter_map(|_| s.pick(v.as_slice(), None)).collect();
        // nginx's sequence for weights 5,1,1: a a b a c a a.
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weights_one_to_three_split_a_quarter_and_three_quarters() {
        for algorithm in [Algorithm::WeightedRoundRobin, Algorithm::Random] {
            let s = Selector::new(&algorithm, &addrs(2));
            let v = views(&[1, 3]);
            let mut count = [0usize; 2];
            for _ in 0..4000 {
                count[s.pick(v.as_slice(), None).unwrap()] += 1;
            }
            let share = count[0] as f64 / 4000.0;
            assert!((0.22..0.28).contains(&share), "{algorithm:?}: {share}");
        }
    }

    #[test]
    fn unusable_backends_are_never_picked() {
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::WeightedRoundRobin,
            Algorithm::Random,
            Algorithm::LeastRequests,
            Algorithm::P2cEwma,
            Algorithm::SourceIpHash,
        ] {
            let s = Selector::new(&algorithm, &addrs(3));
            let v = views(&[1, 0, 1]);
            for i in 0..200u32 {
                assert_ne!(
                    s.pick(v.as_slice(), Some(&i.to_le_bytes())),
                    Some(1),
                    "{algorithm:?}"
                );
            }
            assert_eq!(
                s.pick(views(&[0, 0, 0]).as_slice(), Some(b"k")),
                None,
                "{algorithm:?}"
            );
        }
    }

    /// Candidates where another pick takes its turn between every two
    /// backends this pick reads (what concurrent requests do).
    struct Interleaved<'a> {
        selector: &'a Selector,
        weights: Vec<u32>,
    }

    impl Candidates for Interleaved<'_> {
        fn len(&self) -> usize {
            self.weights.len()
        }
        fn base_weight(&self, _: usize) -> u32 {
            1
        }
        fn weight(&self, i: usize) -> u32 {
            if let Kind::RoundRobin(next) = &self.selector.kind {
                next.fetch_add(1, Ordering::Relaxed);
            }
            self.weights[i]
        }
        fn in_flight(&self, _: usize) -> u64 {
            0
        }
        fn ewma_ms(&self, _: usize) -> Option<f64> {
            None
        }
        fn weights_epoch(&self) -> u64 {
            1
        }
    }

    #[test]
    fn round_robin_finds_the_usable_backend_whatever_runs_between_reads() {
        for (weights, usable) in [
            (vec![0, 1], 1),
            (vec![1, 0], 0),
            (vec![0, 0, 1], 2),
            (vec![0, 0, 0, 1], 3),
            (vec![0, 1, 0, 0], 1),
        ] {
            let s = Selector::new(&Algorithm::RoundRobin, &addrs(weights.len()));
            for _ in 0..20 {
                let c = Interleaved {
                    selector: &s,
                    weights: weights.clone(),
                };
                assert_eq!(s.pick(&c, None), Some(usable), "{weights:?}");
            }
        }
    }

    #[test]
    fn least_requests_prefers_the_idle() {
        let s = Selector::new(&Algorithm::LeastRequests, &addrs(3));
        let mut v = views(&[1, 1, 1]);
        v[0].in_flight = 5;
        v[2].in_flight = 2;
        assert_eq!(s.pick(v.as_slice(), None), Some(1));
    }

    #[test]
    fn p2c_avoids_the_slow_backend() {
        let s = Selector::new(&Algorithm::P2cEwma, &addrs(2));
        let mut v = views(&[1, 1]);
        v[0].ewma_ms = Some(200.0);
        v[1].ewma_ms = Some(2.0);
        let slow = (0..1000)
            .filter(|_| s.pick(v.as_slice(), None) == Some(0))
            .count();
        // Two choices of two: the slow one wins only when drawn twice (≈25%).
        assert!(slow < 350, "{slow}");
    }

    #[test]
    fn ketama_moves_about_one_nth_of_keys_when_a_backend_is_added() {
        let n = 10;
        let before = Selector::new(
            &Algorithm::ConsistentHash {
                key: edge_config::HashKey::Uri,
            },
            &addrs(n),
        );
        let after = Selector::new(
            &Algorithm::ConsistentHash {
                key: edge_config::HashKey::Uri,
            },
            &addrs(n + 1),
        );
        let (vb, va) = (views(&vec![1; n]), views(&vec![1; n + 1]));
        let moved = (0..10_000)
            .filter(|k| {
                let key = format!("/video/{k}.ts");
                before.pick(vb.as_slice(), Some(key.as_bytes()))
                    != after.pick(va.as_slice(), Some(key.as_bytes()))
            })
            .count();
        // Ideal: 1/(n+1) ≈ 909 of 10,000; allow 1.5/n.
        assert!(moved <= 10_000 * 3 / (2 * n), "{moved} keys moved");
        assert!(moved > 0);
    }

    #[test]
    fn ketama_keeps_keys_off_a_down_backend_only() {
        let s = Selector::new(&Algorithm::SourceIpHash, &addrs(4));
        let all = views(&[1, 1, 1, 1]);
        let mut one_down = views(&[1, 1, 1, 1]);
        one_down[2].weight = 0;
        for k in 0..2000u32 {
            let key = k.to_le_bytes();
            let a = s.pick(all.as_slice(), Some(&key)).unwrap();
            let b = s.pick(one_down.as_slice(), Some(&key)).unwrap();
            if a != 2 {
                assert_eq!(a, b, "a key not on the down backend stays put");
            }
        }
    }

    /// Candidates that count how many backends a pick reads.
    struct Counted {
        base: Vec<u32>,
        now: Vec<u32>,
        in_flight: Vec<u64>,
        reads: std::cell::Cell<usize>,
    }

    impl Counted {
        fn new(n: usize) -> Self {
            Self {
                base: vec![1; n],
                now: vec![1; n],
                in_flight: vec![0; n],
                reads: std::cell::Cell::new(0),
            }
        }
    }

    impl Candidates for Counted {
        fn len(&self) -> usize {
            self.base.len()
        }
        fn base_weight(&self, i: usize) -> u32 {
            self.base[i]
        }
        fn weight(&self, i: usize) -> u32 {
            self.reads.set(self.reads.get() + 1);
            self.now[i]
        }
        fn in_flight(&self, i: usize) -> u64 {
            self.in_flight[i]
        }
        fn ewma_ms(&self, _: usize) -> Option<f64> {
            None
        }
        fn weights_epoch(&self) -> u64 {
            1
        }
    }

    const ALL: [Algorithm; 7] = [
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::Random,
        Algorithm::LeastRequests,
        Algorithm::P2cEwma,
        Algorithm::SourceIpHash,
        Algorithm::ConsistentHash {
            key: edge_config::HashKey::Uri,
        },
    ];

    #[test]
    fn a_pick_in_a_pool_of_ten_thousand_reads_a_few_backends() {
        let n = 10_000;
        for algorithm in &ALL {
            let s = Selector::new(algorithm, &addrs(n));
            let c = Counted::new(n);
            // The first pick builds the weight table (once per epoch). Two
            // weighted draws read each drawn backend twice (accept, score).
            s.pick(&c, Some(b"k0"));
            c.reads.set(0);
            for k in 0..1000u32 {
                assert!(s.pick(&c, Some(&k.to_le_bytes())).is_some());
            }
            let per_pick = c.reads.get() as f64 / 1000.0;
            assert!(
                per_pick <= 8.0,
                "{algorithm:?}: {per_pick} backends read per pick"
            );
        }
    }

    #[test]
    fn large_pools_keep_shares_and_skip_the_unusable() {
        let n = 1000;
        for algorithm in &ALL {
            let s = Selector::new(algorithm, &addrs(n));
            let mut c = Counted::new(n);
            // Even backends weigh 3, odd 1; every tenth is unusable.
            for i in 0..n {
                c.base[i] = if i % 2 == 0 { 3 } else { 1 };
                c.now[i] = if i % 10 == 5 || i % 10 == 4 {
                    0
                } else {
                    c.base[i]
                };
            }
            let mut even = 0usize;
            let picks = 40_000u32;
            for k in 0..picks {
                let i = s.pick(&c, Some(&k.to_le_bytes())).unwrap();
                assert!(c.now[i] > 0, "{algorithm:?} picked unusable {i}");
                even += usize::from(i.is_multiple_of(2));
            }
            let share = even as f64 / f64::from(picks);
            match algorithm {
                // Unweighted, and rings by configured weight (1 here).
                Algorithm::RoundRobin
                | Algorithm::SourceIpHash
                | Algorithm::ConsistentHash { .. } => {
                    assert!((share - 0.5).abs() < 0.04, "{algorithm:?}: {share}")
                }
                Algorithm::WeightedRoundRobin | Algorithm::Random => {
                    assert!((share - 0.75).abs() < 0.04, "{algorithm:?}: {share}")
                }
                // Draws by weight, then the lower load per weight of two:
                // with equal load, the heavier wins more than its share.
                _ => assert!(share > 0.8, "{algorithm:?}: {share}"),
            }
        }
    }

    #[test]
    fn load_feedback_lowers_a_share_without_a_rebuild() {
        // Base weights equal; half the backends report load that leaves a
        // quarter of their weight: they get 1/(1+4) of the picks.
        let n = 200;
        for algorithm in [Algorithm::Random, Algorithm::WeightedRoundRobin] {
            let s = Selector::new(&algorithm, &addrs(n));
            let mut c = Counted::new(n);
            for i in 0..n {
                c.base[i] = 4;
                c.now[i] = if i < n / 2 { 1 } else { 4 };
            }
            let loaded = (0..20_000)
                .filter(|_| s.pick(&c, None).unwrap() < n / 2)
                .count();
            let share = loaded as f64 / 20_000.0;
            assert!((share - 0.2).abs() < 0.03, "{algorithm:?}: {share}");
        }
    }

    #[test]
    fn large_least_requests_avoids_the_busy() {
        let n = 1000;
        let s = Selector::new(&Algorithm::LeastRequests, &addrs(n));
        let mut c = Counted::new(n);
        for i in 0..n / 2 {
            c.in_flight[i] = 50;
        }
        let busy = (0..10_000)
            .filter(|_| s.pick(&c, None).unwrap() < n / 2)
            .count();
        // Two choices: a busy one wins only when both draws are busy (≈25%).
        assert!(busy < 3000, "{busy}");
    }

    #[test]
    fn large_weighted_round_robin_visits_every_point_once_per_cycle() {
        let n = 100;
        let s = Selector::new(&Algorithm::WeightedRoundRobin, &addrs(n));
        let mut c = Counted::new(n);
        for i in 0..n {
            c.base[i] = 1 + (i % 4) as u32;
            c.now[i] = c.base[i];
        }
        let total: u32 = c.base.iter().sum();
        let mut count = vec![0u32; n];
        for _ in 0..total {
            count[s.pick(&c, None).unwrap()] += 1;
        }
        assert_eq!(count, c.base);
    }

    #[test]
    fn a_pool_with_nothing_usable_picks_nothing() {
        for n in [1, SMALL_POOL, SMALL_POOL + 1, 5000] {
            for algorithm in &ALL {
                let s = Selector::new(algorithm, &addrs(n));
                let mut c = Counted::new(n);
                c.now = vec![0; n];
                assert_eq!(s.pick(&c, Some(b"k")), None, "{algorithm:?} n={n}");
                // One usable backend is found however it is drawn.
                c.now[n / 2] = 1;
                assert_eq!(s.pick(&c, Some(b"k")), Some(n / 2), "{algorithm:?} n={n}");
            }
        }
    }
}
