//! The deadline of an HTTP/2 connection's preface (slowloris protection):
//! pingora times each read, so a client sending a byte every few seconds
//! would hold the connection forever. This wrapper, above TLS, gives the
//! bytes up to the preface's first empty line `header_timeout` from accept;
//! after that HTTP/2's own flow control and pingora's timeouts apply.
//! (HTTP/1 heads are timed by the [`Inspector`](super::inspect::Inspector).)

use std::future::Future;
use std::io;
use std::pin::Pin;
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

#[derive(Debug)]
pub struct HeadGuard<S> {
    inner: S,
    limit: Duration,
    /// Reading a head (true) or a body / nothing (false).
    armed: bool,
    /// Set once the head's clock runs.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The last two bytes seen, to find the empty line across reads.
    last: [u8; 2],
}

impl<S> HeadGuard<S> {
    /// Guards the preface, timed from now.
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
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
    async fn a_trickled_preface_times_out_and_a_complete_one_disarms() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut guard = HeadGuard::new(server, Duration::from_secs(10));
        client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(guard.read(&mut buf).await.unwrap() > 0);
        assert!(!guard.armed);
        // Frames after the preface are not timed.
        tokio::time::advance(Duration::from_secs(60)).await;
        client.write_all(b"more").await.unwrap();
        assert_eq!(guard.read(&mut buf).await.unwrap(), 4);

        let (mut client, server) = tokio::io::duplex(1024);
        let mut guard = HeadGuard::new(server, Duration::from_secs(10));
        client.write_all(b"P").await.unwrap();
        assert_eq!(guard.read(&mut buf).await.unwrap(), 1);
        let err = guard.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn the_empty_line_is_found_across_reads_and_with_bare_lf() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut g = HeadGuard::new((), Duration::from_secs(1));
            assert!(!g.scan(b"GET / HTTP/1.1\r\nA: b\r"));
            assert!(!g.scan(b"\n\r"));
            assert!(g.scan(b"\n"));
            g.last = [0; 2];
            assert!(g.scan(b"GET /\nA: b\n\n"));
        });
    }
}
