//! Moving bytes both ways between a client and a backend until both sides
//! are done, with half-close passed through (a client that shuts down its
//! write side still gets the rest of the reply) and an idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Per-direction copy buffer: large enough that bulk transfers move in few
/// system calls.
const BUFFER: usize = 64 * 1024;

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both directions finished; bytes client→backend and backend→client.
    Done {
        up: u64,
        down: u64,
    },
    /// Nothing moved either way for the idle timeout.
    Idle,
    Error(io::Error),
}

/// A stream that counts what is read from it and stamps the time of the
/// last activity.
struct Metered<S> {
    inner: S,
    read_bytes: IntCounter,
    activity: Arc<Activity>,
}

struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last read.
    last_ms: AtomicU64,
}

impl Activity {
    fn stamp(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read_bytes.inc_by(n as u64);
            self.activity.stamp();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counters a relay adds to.
pub struct RelayCounters {
    /// Client → backend.
    pub up: IntCounter,
    /// Backend → client.
    pub down: IntCounter,
}

/// Relays until both directions have ended (each side's EOF is passed on as
/// a shutdown of the other side's write half), an error, or `idle` with no
/// byte moving either way.
pub async fn relay<C, B>(client: C, backend: B, idle: Duration, counters: RelayCounters) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let mut client = Metered {
        inner: client,
        read_bytes: counters.up,
        activity: activity.clone(),
    };
    let mut backend = Metered {
        inner: backend,
        read_bytes: counters.down,
        activity: activity.clone(),
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut backend, BUFFER, BUFFER);
    tokio::pin!(copy);
    loop {
        let deadline = activity.last() + idle;
        tokio::select! {
            r = &mut copy => {
                return match r {
                    Ok((up, down)) => RelayEnd::Done { up, down },
                    Err(e) => RelayEnd::Error(e),
                };
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if activity.last() + idle <= Instant::now() {
                    return RelayEnd::Idle;
                }
            }
        }
    }
}
