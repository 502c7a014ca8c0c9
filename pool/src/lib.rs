//! Idle upstream streams kept for reuse, in one shard per worker thread:
//! the vendored pingora-core's `TransportConnector` keeps its HTTP/1 and L4
//! upstream connections here (`vendor/pingora-core/EDGE-PATCH.md`,
//! twelfth).
//!
//! pingora's `ConnectionPool` wraps every released stream in an
//! `Arc<Mutex<_>>`, makes a oneshot channel and a `Notify`, and spawns a
//! task that watches the stream until it is taken again: about 7,800
//! instructions and one task switch per proxied request (issue 17,
//! `benches/callgrind`). Here a released stream goes into its thread's shard
//! (a map from the peer's reuse hash to a stack of streams) and nothing
//! watches it:
//!
//! - Taking one checks it where pingora's watcher did: a stream whose peer
//!   closed it, sent unexpected data or broke is refused and closed (the
//!   runtime's reactor keeps a socket's readiness whether or not a task
//!   waits on it), and so is one idle past its timeout.
//! - One sweep task per shard closes such streams within [`SWEEP_EVERY`]
//!   while the shard holds any, so a socket the peer closed does not stay
//!   half-closed, and ends when the shard is empty.
//! - The newest stream of a peer is taken first (nginx's upstream
//!   `keepalive` cache does the same), so surplus streams age out.
//! - At most `capacity` streams are kept over all shards; a release beyond
//!   that closes the pool's oldest stream, whichever shard holds it (as
//!   pingora's LRU did).
//!
//! A thread takes only the streams it released, as each nginx worker keeps
//! its own cache; with one single-threaded runtime per worker thread (edge's
//! default) and up to [`SHARDS`] threads, a stream then stays on the runtime
//! whose reactor it is registered with. Beyond that, threads share shards
//! and a stream may be used from another runtime than its own, which tokio
//! allows while that runtime runs.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// Shards; worker threads are spread over them in the order they first use
/// the pool.
pub const SHARDS: usize = 64;

/// How often a shard's sweep task looks for idle streams that are closed,
/// broken or past their timeout.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Idle<S> {
    /// Release order within the shard: lower is older.
    seq: u64,
    stream: S,
    since: Instant,
    deadline: Option<Instant>,
}

impl<S> Idle<S> {
    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }
}

struct Shard<S> {
    /// Reuse hash → the peer's idle streams, oldest first. Hashed with
    /// foldhash (randomly seeded), not std's SipHash: a take and a put per
    /// proxied request each hashed the key, about 147 instructions apiece
    /// (`benches/callgrind`, issue 17); keys are already hashes of peers
    /// the configuration names, not chosen by clients.
    groups: HashMap<u64, VecDeque<Idle<S>>, foldhash::fast::RandomState>,
    /// (reuse hash, seq) in release order, for evicting the oldest; entries
    /// of streams since taken or swept are skipped and compacted away.
    order: VecDeque<(u64, u64)>,
    len: usize,
    next_seq: u64,
    sweeping: bool,
}

impl<S> Default for Shard<S> {
    fn default() -> Self {
        Shard {
            groups: HashMap::default(),
            order: VecDeque::new(),
            len: 0,
            next_seq: 0,
            sweeping: false,
        }
    }
}

impl<S> Shard<S> {
    fn push(&mut self, key: u64, stream: S, now: Instant, timeout: Option<Duration>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.groups.entry(key).or_default().push_back(Idle {
            seq,
            stream,
            since: now,
            deadline: timeout.and_then(|t| now.checked_add(t)),
        });
        self.order.push_back((key, seq));
        self.len += 1;
    }

    /// The newest idle stream of `key`. An emptied group keeps its
    /// allocation until the next sweep, so a peer's steady reuse allocates
    /// nothing.
    fn pop_newest(&mut self, key: u64) -> Option<Idle<S>> {
        let idle = self.groups.get_mut(&key)?.pop_back()?;
        self.len -= 1;
        self.compact();
        Some(idle)
    }

    /// The oldest idle stream of the shard. The order log and every group
    /// are sorted by seq, so the first log entry still at the front of its
    /// group is the oldest stream.
    fn pop_oldest(&mut self) -> Option<Idle<S>> {
        while let Some((key, seq)) = self.order.pop_front() {
            let Some(group) = self.groups.get_mut(&key) else {
                continue;
            };
            if group.front().is_some_and(|i| i.seq == seq) {
                self.len -= 1;
                return group.pop_front();
            }
        }
        None
    }

    /// When the shard's oldest stream was released; drops the order log's
    /// stale entries before it.
    fn oldest_since(&mut self) -> Option<Instant> {
        while let Some(&(key, seq)) = self.order.front() {
            let front = self.groups.get(&key).and_then(|g| g.front());
            match front {
                Some(idle) if idle.seq == seq => return Some(idle.since),
                _ => {
                    self.order.pop_front();
                }
            }
        }
        None
    }

    /// Removes the streams `dead` says are dead, and emptied groups.
    fn remove_dead(&mut self, mut dead: impl FnMut(&mut Idle<S>) -> bool) -> Vec<Idle<S>> {
        let mut removed = Vec::new();
        self.groups.retain(|_, group| {
            let mut i = 0;
            while i < group.len() {
                if dead(&mut group[i]) {
                    removed.extend(group.remove(i));
                } else {
                    i += 1;
                }
            }
            !group.is_empty()
        });
        self.len -= removed.len();
        self.compact();
        removed
    }

    /// Rebuilds the order log from the live streams once stale entries
    /// outnumber them: amortized O(log n) per release.
    fn compact(&mut self) {
        if self.order.len() <= 2 * self.len + 32 {
            return;
        }
        self.order.clear();
        for (key, group) in &self.groups {
            self.order.extend(group.iter().map(|i| (*key, i.seq)));
        }
        self.order
            .make_contiguous()
            .sort_unstable_by_key(|(_, seq)| *seq);
    }
}

/// The shard of the calling thread.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SLOT.with(|slot| *slot)
}

/// Idle upstream streams by reuse hash; see the module docs.
pub struct IdlePool<S> {
    shards: Box<[Mutex<Shard<S>>]>,
    /// Most streams kept over all shards.
    capacity: usize,
    len: AtomicUsize,
    unexpected_data: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin + Send + 'static> IdlePool<S> {
    /// A pool of at most `capacity` idle streams; `unexpected_data` counts
    /// idle streams refused because the peer sent data unasked.
    pub fn new(capacity: usize, unexpected_data: Arc<AtomicU64>) -> Arc<Self> {
        Arc::new(IdlePool {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            capacity,
            len: AtomicUsize::new(0),
            unexpected_data,
        })
    }

    /// Keeps `stream` for reuse under `key` (the peer's reuse hash) until
    /// `timeout` (none: until the peer closes it or it is evicted). Must be
    /// called within a tokio runtime: the shard's sweep task starts there.
    /// Returns how long the stream it evicted to stay within capacity had
    /// been idle, if it evicted one.
    pub fn put(
        self: &Arc<Self>,
        key: u64,
        stream: S,
        timeout: Option<Duration>,
    ) -> Option<Duration> {
        if self.capacity == 0 {
            return None;
        }
        let index = shard_index();
        let now = Instant::now();
        let start_sweep = {
            let mut shard = self.shards[index].lock();
            shard.push(key, stream, now, timeout);
            let start_sweep = !shard.sweeping;
            shard.sweeping = true;
            start_sweep
        };
        if start_sweep {
            // The mark is cleared if the task never runs or ends early.
            let running = Running {
                pool: Arc::downgrade(self),
                index,
                armed: true,
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(sweep(running))),
                Err(_) => drop(running),
            }
        }
        if self.len.fetch_add(1, Ordering::Relaxed) < self.capacity {
            return None;
        }
        let evicted = self.pop_oldest_anywhere()?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(now.saturating_duration_since(evicted.since))
    }

    /// Removes the oldest idle stream of the whole pool, as pingora's LRU
    /// did, so a thread that released many cannot keep the others from
    /// keeping any. Only a release beyond capacity pays for this: one lock
    /// of each shard, none held together.
    fn pop_oldest_anywhere(&self) -> Option<Idle<S>> {
        let mut oldest: Option<(Instant, usize)> = None;
        for (i, shard) in self.shards.iter().enumerate() {
            if let Some(since) = shard.lock().oldest_since() {
                if oldest.is_none_or(|(o, _)| since < o) {
                    oldest = Some((since, i));
                }
            }
        }
        // Another thread may have taken it since: then that shard's oldest.
        self.shards[oldest?.1].lock().pop_oldest()
    }

    /// The newest usable idle stream of `key` from the calling thread's
    /// shard, with how long it was idle. Streams found expired, closed by the
    /// peer, holding unexpected data, or refused by `usable` are closed on
    /// the way. Must be called within a tokio runtime.
    pub fn take(&self, key: u64, mut usable: impl FnMut(&S) -> bool) -> Option<(S, Duration)> {
        let shard = &self.shards[shard_index()];
        let now = Instant::now();
        loop {
            let mut idle = shard.lock().pop_newest(key)?;
            self.len.fetch_sub(1, Ordering::Relaxed);
            if !idle.expired(now)
                && usable(&idle.stream)
                && still_idle(&mut idle.stream, &self.unexpected_data)
            {
                return Some((idle.stream, now.saturating_duration_since(idle.since)));
            }
        }
    }

    /// Idle streams kept now, over all shards.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no idle stream is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A shard's sweep task: clears the shard's `sweeping` mark when dropped,
/// whether the task ended, was dropped before it ran (its runtime shut
/// down) or never started, so the next release starts another.
struct Running<S> {
    pool: Weak<IdlePool<S>>,
    index: usize,
    /// False once the task cleared the mark itself.
    armed: bool,
}

impl<S> Drop for Running<S> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pool) = self.pool.upgrade() {
            pool.shards[self.index].lock().sweeping = false;
        }
    }
}

/// Every [`SWEEP_EVERY`], closes the shard's streams that are expired,
/// closed by the peer, broken or holding unexpected data; ends when the
/// shard is empty or the pool is gone.
async fn sweep<S: AsyncRead + Unpin + Send + 'static>(mut running: Running<S>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(pool) = running.pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        let (dead, empty) = {
            let mut shard = pool.shards[running.index].lock();
            let dead = shard.remove_dead(|idle| {
                idle.expired(now) || !still_idle(&mut idle.stream, &pool.unexpected_data)
            });
            let empty = shard.len == 0;
            if empty {
                // Cleared under the lock that saw the shard empty, so the
                // next release starts a sweep.
                shard.sweeping = false;
                running.armed = false;
            }
            (dead, empty)
        };
        pool.len.fetch_sub(dead.len(), Ordering::Relaxed);
        drop(dead); // closed outside the shard's lock
        if empty {
            return;
        }
    }
}

/// Whether an idle stream is still fit to reuse: nothing to read from it
/// now. End of stream (the peer closed it), an error, or data the peer sent
/// unasked (counted in `unexpected_data`) make it unfit. Reads at most one
/// byte, without waiting: a stream whose readiness the runtime's reactor has
/// not marked is not read at all. From pingora-core's
/// `test_reusable_stream`.
pub fn still_idle<S: AsyncRead + Unpin>(stream: &mut S, unexpected_data: &AtomicU64) -> bool {
    let mut buf = [0; 1];
    // Unconstrained: a task out of its cooperative budget would otherwise
    // read Pending and keep a closed stream. A waker that does nothing:
    // nobody waits on an idle stream.
    let read = pin!(tokio::task::unconstrained(stream.read(&mut buf[..])));
    match read.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Pending => true,
        Poll::Ready(Ok(0)) => {
            tracing::debug!("idle upstream connection closed by the peer");
            false
        }
        Poll::Ready(Ok(_)) => {
            tracing::warn!("unexpected data read on an idle upstream connection; closing it");
            unexpected_data.fetch_add(1, Ordering::Relaxed);
            false
        }
        Poll::Ready(Err(e)) => {
            tracing::debug!("idle upstream connection broken: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::fd::AsRawFd;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: (our stream, the peer's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (ours.unwrap(), theirs.unwrap().0)
    }

    fn id(stream: &TcpStream) -> i32 {
        stream.as_raw_fd()
    }

    #[tokio::test]
    async fn the_newest_stream_of_a_peer_is_taken_first_and_only_for_that_peer() {
        let pool = IdlePool::new(8, Arc::default());
        let (a, _pa) = pair().await;
        let (b, _pb) = pair().await;
        let (c, _pc) = pair().await;
        let (ida, idb, idc) = (id(&a), id(&b), id(&c));
        pool.put(1, a, None);
        pool.put(1, b, None);
        pool.put(2, c, None);
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.take(1, |_| true).map(|s| id(&s.0)), Some(idb));
        assert_eq!(pool.take(1, |_| true).map(|s| id(&s.0)), Some(ida));
        assert!(pool.take(1, |_| true).is_none());
        assert_eq!(pool.take(2, |_| true).map(|s| id(&s.0)), Some(idc));
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn a_stream_refused_by_the_caller_is_closed_and_the_next_is_tried() {
        let pool = IdlePool::new(8, Arc::default());
        let (a, _pa) = pair().await;
        let (b, _pb) = pair().await;
        let ida = id(&a);
        let idb = id(&b);
        pool.put(1, a, None);
        pool.put(1, b, None);
        let taken = pool.take(1, |s| id(s) != idb).map(|s| id(&s.0));
        assert_eq!(taken, Some(ida));
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn beyond_capacity_the_oldest_stream_is_closed() {
        let pool = IdlePool::new(2, Arc::default());
        let (a, mut pa) = pair().await;
        let (b, _pb) = pair().await;
        let (c, _pc) = pair().await;
        let (idb, idc) = (id(&b), id(&c));
        pool.put(1, a, None);
        pool.put(2, b, None);
        pool.put(1, c, None);
        assert_eq!(pool.len(), 2);
        // The oldest (a) was closed: its peer reads end of stream.
        let mut buf = [0u8; 1];
        assert_eq!(
            tokio::io::AsyncReadExt::read(&mut pa, &mut buf)
                .await
                .unwrap(),
            0
        );
        assert_eq!(pool.take(1, |_| true).map(|s| id(&s.0)), Some(idc));
        assert_eq!(pool.take(2, |_| true).map(|s| id(&s.0)), Some(idb));
        assert!(pool.take(1, |_| true).is_none());
    }

    #[tokio::test]
    async fn a_capacity_of_zero_keeps_nothing() {
        let pool = IdlePool::new(0, Arc::default());
        let (a, _pa) = pair().await;
        pool.put(1, a, None);
        assert_eq!(pool.len(), 0);
        assert!(pool.take(1, |_| true).is_none());
    }

    #[tokio::test]
    async fn a_stream_past_its_timeout_is_not_taken() {
        let pool = IdlePool::new(8, Arc::default());
        let (a, _pa) = pair().await;
        pool.put(1, a, Some(Duration::ZERO));
        assert!(pool.take(1, |_| true).is_none());
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn streams_the_peer_closed_or_wrote_to_are_refused_and_counted() {
        let counter = Arc::new(AtomicU64::new(0));
        let pool = IdlePool::new(8, counter.clone());
        let (a, pa) = pair().await;
        let (b, mut pb) = pair().await;
        let (ida, idb) = (id(&a), id(&b));
        drop(pa);
        pb.write_all(b"x").await.unwrap();
        // Wait until the reactor has marked both readable (an end of stream
        // and a byte), as it does for an idle stream nobody polls.
        a.readable().await.unwrap();
        b.readable().await.unwrap();
        pool.put(1, a, None);
        pool.put(1, b, None);
        let taken = pool.take(1, |_| true).map(|s| id(&s.0));
        assert!(taken.is_none(), "took {taken:?} of {ida}, {idb}");
        assert_eq!(counter.load(Ordering::Relaxed), 1);
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn beyond_capacity_the_oldest_stream_of_any_thread_is_closed() {
        let pool = IdlePool::new(2, Arc::default());
        let (a, mut pa) = pair().await;
        let (b, _pb) = pair().await;
        let idb = id(&b);
        // This thread keeps two.
        pool.put(1, a, None);
        pool.put(1, b, None);
        // Another thread (another shard) releases one beyond capacity: this
        // thread's oldest (a) is closed, not the one just released.
        let other = pool.clone();
        let kept_there = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let (c, pc) = pair().await;
                    let idc = id(&c);
                    assert!(other.put(1, c, None).is_some(), "one was evicted");
                    let taken = other.take(1, |_| true).map(|s| id(&s.0));
                    (taken == Some(idc), pc)
                })
        })
        .join()
        .unwrap();
        assert!(kept_there.0, "the other thread kept and took its own");
        let mut buf = [0u8; 1];
        assert_eq!(
            tokio::io::AsyncReadExt::read(&mut pa, &mut buf)
                .await
                .unwrap(),
            0
        );
        assert_eq!(pool.take(1, |_| true).map(|s| id(&s.0)), Some(idb));
        assert!(pool.is_empty());
    }

    #[tokio::test]
    async fn eviction_finds_the_oldest_after_many_reuses_left_stale_entries() {
        let pool = IdlePool::new(3, Arc::default());
        let (old, mut p_old) = pair().await;
        let (hot, _p_hot) = pair().await;
        pool.put(1, old, None);
        let mut hot = Some(hot);
        // 500 reuses of another peer's stream: each leaves a stale entry in
        // the order log, compacted on the way.
        for _ in 0..500 {
            pool.put(2, hot.take().unwrap(), None);
            hot = pool.take(2, |_| true).map(|s| s.0);
        }
        {
            let shard = pool.shards[shard_index()].lock();
            assert!(
                shard.order.len() <= 2 * shard.len + 33,
                "{}",
                shard.order.len()
            );
        }
        let (x, _px) = pair().await;
        let (y, _py) = pair().await;
        pool.put(2, hot.take().unwrap(), None);
        pool.put(3, x, None);
        assert_eq!(pool.len(), 3);
        // Beyond capacity: the stream idle longest goes, not a newer one.
        assert!(pool.put(3, y, None).is_some());
        let mut buf = [0u8; 1];
        assert_eq!(
            tokio::io::AsyncReadExt::read(&mut p_old, &mut buf)
                .await
                .unwrap(),
            0
        );
        assert!(pool.take(1, |_| true).is_none());
        assert_eq!(pool.len(), 3);
    }

    #[test]
    fn a_sweep_that_never_ran_does_not_keep_the_shard_from_another() {
        let pool: Arc<IdlePool<TcpStream>> = IdlePool::new(8, Arc::default());
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        // A release whose runtime ends before the sweep task first runs.
        let rt = runtime();
        let (a, _pa) = rt.block_on(pair());
        rt.block_on(async { pool.put(1, a, None) });
        drop(rt);
        assert!(!pool.shards[shard_index()].lock().sweeping);
        // The next release starts a sweep again.
        let rt = runtime();
        let (b, _pb) = rt.block_on(pair());
        rt.block_on(async { pool.put(1, b, None) });
        assert!(pool.shards[shard_index()].lock().sweeping);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_closes_what_the_peer_closed_and_ends_when_the_shard_is_empty() {
        let pool = IdlePool::new(8, Arc::default());
        let (a, pa) = pair().await;
        let (b, mut pb) = pair().await;
        pool.put(1, a, None);
        pool.put(2, b, Some(Duration::from_secs(3)));
        drop(pa);
        tokio::time::sleep(SWEEP_EVERY + Duration::from_millis(1)).await;
        assert_eq!(pool.len(), 1, "the stream its peer closed is swept");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(pool.len(), 0, "the expired stream is swept");
        let mut buf = [0u8; 1];
        assert_eq!(
            tokio::io::AsyncReadExt::read(&mut pb, &mut buf)
                .await
                .unwrap(),
            0
        );
        assert!(!pool.shards[shard_index()].lock().sweeping);
    }
}
