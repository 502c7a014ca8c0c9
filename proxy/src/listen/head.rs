//! The request-head deadline (slowloris protection).
//!
//! pingora times each read of a request head separately, so a client that
//! sends one byte every few seconds holds a connection forever. This
//! wrapper, above TLS, gives the whole head a deadline: for a connection's
//! first request from accept, for later ones from their first byte (the
//! keep-alive timeout covers the wait before it). The head ends at the first
//! empty line; bytes after it are the body and are not timed. The handler
//! re-arms the guard before each request through [`HeadClock`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::buffered::delegate_stream_traits;

/// Shared between a connection's handler and its [`HeadGuard`].
#[derive(Debug, Default)]
pub struct HeadClock {
    rearm: AtomicBool,
}

impl HeadClock {
    /// The next bytes read start a new request head.
    pub fn next_request(&self) {
        self.rearm.store(true, Ordering::Release);
    }
}

#[derive(Debug)]
pub struct HeadGuard<S> {
    inner: S,
    clock: Arc<HeadClock>,
    limit: Duration,
    /// Reading a head (true) or a body / nothing (false).
    armed: bool,
    /// Set once the head's clock runs.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The last two bytes seen, to find the empty line across reads.
    last: [u8; 2],
}

impl<S> HeadGuard<S> {
    /// Guards the first request's head, timed from now.
    pub fn new(inner: S, limit: Duration, clock: Arc<HeadClock>) -> Self {
        Self {
            inner,
            clock,
            limit,
            armed: true,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            last: [0; 2],
        }
    }

    /// Looks for the end of the head in `data`; true when found.
    fn scan(&mut self, data: &[u8]) -> bool {
        for &b in data {
            let end = b == b'\n' && (self.last[1] == b'\n' || self.last == *b"\n\r");
            self.last = [self.last[1], b];
            if end {
                return true;
            }
        }
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.clock.rearm.swap(false, Ordering::AcqRel) {
            this.armed = true;
            this.deadline = None;
            this.last = [0; 2];
        }
        if !this.armed {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = &buf.filled()[before..];
                if filled.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let data = filled.to_vec();
                if this.deadline.is_none() {
                    let at = Instant::now() + this.limit;
                    this.deadline = Some(Box::pin(tokio::time::sleep_until(at)));
                }
                if this.scan(&data) {
                    this.armed = false;
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("request head not complete within {:?}", this.limit),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl<S: Shutdown + Send> Shutdown for HeadGuard<S> {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

delegate_stream_traits!(HeadGuard);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_trickled_head_times_out_and_a_complete_one_disarms() {
        let (client, server) = tokio::io::duplex(1024);
        let clock = Arc::new(HeadClock::default());
        let mut guard = HeadGuard::new(server, Duration::from_secs(10), clock.clone());
        let mut client = client;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = guard.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody");
        assert!(!guard.armed);
        // Body bytes are not timed.
        tokio::time::advance(Duration::from_secs(60)).await;
        client.write_all(b"more").await.unwrap();
        assert_eq!(guard.read(&mut buf).await.unwrap(), 4);
        // The next request's head: clock starts at its first byte.
        clock.next_request();
        tokio::time::advance(Duration::from_secs(60)).await;
        client.write_all(b"G").await.unwrap();
        assert_eq!(guard.read(&mut buf).await.unwrap(), 1);
        let err = guard.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn the_empty_line_is_found_across_reads_and_with_bare_lf() {
        let clock = Arc::new(HeadClock::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut g = HeadGuard::new((), Duration::from_secs(1), clock);
            assert!(!g.scan(b"GET / HTTP/1.1\r\nA: b\r"));
            assert!(!g.scan(b"\n\r"));
            assert!(g.scan(b"\n"));
            g.last = [0; 2];
            assert!(g.scan(b"GET /\nA: b\n\n"));
        });
    }
}
