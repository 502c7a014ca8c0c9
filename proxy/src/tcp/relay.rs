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

/// Per-direction copy buffer: starts small (a short connection allocates
/// and clears little) and doubles while reads fill it, up to `MAX_BUFFER`,
/// so bulk transfers move in few system calls.
const FIRST_BUFFER: usize = 8 * 1024;
const MAX_BUFFER: usize = 256 * 1024;

/// One direction of a relay: read into `buf`, write it all out, repeat; on
/// EOF shut down the writer's write side.
struct Direction {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    read_done: bool,
    done: bool,
    moved: u64,
}

impl Direction {
    fn new() -> Self {
        Self {
            buf: vec![0; FIRST_BUFFER],
            start: 0,
            end: 0,
            read_done: false,
            done: false,
            moved: 0,
        }
    }

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(self.moved));
            }
            if self.start == self.end && !self.read_done {
                let mut rb = ReadBuf::new(&mut self.buf);
                match reader.as_mut().poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            self.start = 0;
                            self.end = n;
                            if n == self.buf.len() && self.buf.len() < MAX_BUFFER {
                                let bigger = self.buf.len() * 2;
                                self.buf.resize(bigger, 0);
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            while self.start < self.end {
                match writer
                    .as_mut()
                    .poll_write(cx, &self.buf[self.start..self.end])
                {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.start += n;
                        self.moved += n as u64;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.read_done {
                match writer.as_mut().poll_shutdown(cx) {
                    Poll::Ready(Ok(())) => self.done = true,
                    // The peer may be gone already: this direction is over either way.
                    Poll::Ready(Err(_)) => self.done = true,
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
    }
}

/// Both directions until each has ended.
async fn copy_both<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Direction::new();
    let mut down = Direction::new();
    std::future::poll_fn(|cx| {
        let u = up.poll(cx, Pin::new(&mut *a), Pin::new(&mut *b));
        if let Poll::Ready(Err(e)) = u {
            return Poll::Ready(Err(e));
        }
        let d = down.poll(cx, Pin::new(&mut *b), Pin::new(&mut *a));
        match (u, d) {
            (_, Poll::Ready(Err(e))) => Poll::Ready(Err(e)),
            (Poll::Ready(Ok(x)), Poll::Ready(Ok(y))) => Poll::Ready(Ok((x, y))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both directions finished.
    Done,
    /// Nothing moved either way for the idle timeout.
    Idle,
    Error(io::Error),
}

/// What a relay moved and how it ended.
#[derive(Debug)]
pub struct Relayed {
    pub end: RelayEnd,
    /// Bytes client → backend.
    pub up: u64,
    /// Bytes backend → client.
    pub down: u64,
}

/// A stream that counts what is read from it and stamps the time of the
/// last activity.
struct Metered<S> {
    inner: S,
    read_bytes: [IntCounter; 2],
    activity: Arc<Activity>,
    /// 0: read from the client (up), 1: from the backend (down).
    side: usize,
}

struct Activity {
    /// Bytes read from the client and from the backend.
    moved: [AtomicU64; 2],
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
            for c in &self.read_bytes {
                c.inc_by(n as u64);
            }
            self.activity.moved[self.side].fetch_add(n as u64, Ordering::Relaxed);
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

/// Counters a relay adds to (the listener's and the backend's).
pub struct RelayCounters {
    /// Client → backend.
    pub up: [IntCounter; 2],
    /// Backend → client.
    pub down: [IntCounter; 2],
}

/// Relays until both directions have ended (each side's EOF is passed on as
/// a shutdown of the other side's write half), an error, or `idle` with no
/// byte moving either way.
pub async fn relay<C, B>(client: C, backend: B, idle: Duration, counters: RelayCounters) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity {
        moved: [AtomicU64::new(0), AtomicU64::new(0)],
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let mut client = Metered {
        inner: client,
        read_bytes: counters.up,
        activity: activity.clone(),
        side: 0,
    };
    let mut backend = Metered {
        inner: backend,
        read_bytes: counters.down,
        activity: activity.clone(),
        side: 1,
    };
    let copy = copy_both(&mut client, &mut backend);
    tokio::pin!(copy);
    let end = loop {
        let deadline = activity.last() + idle;
        tokio::select! {
            r = &mut copy => {
                break match r {
                    Ok(_) => RelayEnd::Done,
                    Err(e) => RelayEnd::Error(e),
                };
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if activity.last() + idle <= Instant::now() {
                    break RelayEnd::Idle;
                }
            }
        }
    };
    Relayed {
        end,
        up: activity.moved[0].load(Ordering::Relaxed),
        down: activity.moved[1].load(Ordering::Relaxed),
    }
}
