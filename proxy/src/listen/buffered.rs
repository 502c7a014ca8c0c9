//! Write coalescing for accepted connections.
//!
//! pingora's own listeners give each client stream a small write buffer, so a
//! response head and a short body leave in one segment; the buffer setting is
//! private to pingora, and a stream edge accepts itself writes every call
//! straight to the socket (two `sendto`s, two wake-ups of the client, per
//! small response). This wrapper restores the buffering: writes collect until
//! they would exceed `capacity` or the writer flushes, as pingora flushes at
//! the end of every response; a write that would exceed it leaves with what
//! is held in one vectored call (a head and its body: one `writev`, where
//! they were two `sendto`s; `strace -c` of 100 KiB RAM hits). It sits under
//! TLS too, so records coalesce.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One TCP segment's worth, as pingora's listeners use.
pub const WRITE_CAPACITY: usize = 1460;

#[derive(Debug)]
pub struct WriteBuffered<S> {
    inner: S,
    buf: Vec<u8>,
    capacity: usize,
}

impl<S> WriteBuffered<S> {
    /// The buffer is allocated at the first write (a connection that has
    /// not answered anything holds none).
    pub fn new(inner: S, capacity: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            capacity,
        }
    }

    #[cfg(test)]
    fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncWrite + Unpin> WriteBuffered<S> {
    /// Writes out what is buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut written = 0;
        while written < self.buf.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.buf[written..]) {
                Poll::Ready(Ok(0)) => {
                    self.buf.drain(..written);
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => {
                    self.buf.drain(..written);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    self.buf.drain(..written);
                    return Poll::Pending;
                }
            }
        }
        self.buf.clear();
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> WriteBuffered<S> {
    /// Writes out what is buffered, with `data` after it in the same
    /// calls: `Ok(n)` once the buffer is out, `n` being how much of `data`
    /// went with it (0: none; then `data` is the caller's to write).
    fn poll_drain_with(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if !self.inner.is_write_vectored() {
            return self.poll_drain(cx).map_ok(|()| 0);
        }
        while !self.buf.is_empty() {
            let held = self.buf.len();
            let slices = [io::IoSlice::new(&self.buf), io::IoSlice::new(data)];
            match Pin::new(&mut self.inner).poll_write_vectored(cx, &slices) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) if n < held => {
                    self.buf.drain(..n);
                }
                Poll::Ready(Ok(n)) => {
                    self.buf.clear();
                    return Poll::Ready(Ok(n - held));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteBuffered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteBuffered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buf.len() + data.len() > this.capacity {
            // What is held and `data` leave in one call where the stream
            // takes several buffers (a response head and a body that do not
            // fit together: one `writev`, not two `write`s).
            match this.poll_drain_with(cx, data) {
                Poll::Ready(Ok(0)) => {}
                Poll::Ready(Ok(n)) => return Poll::Ready(Ok(n)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if data.len() >= this.capacity {
            // Large writes go straight through.
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        if this.buf.capacity() == 0 {
            this.buf.reserve_exact(this.capacity);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[async_trait]
impl<S: Shutdown + AsyncWrite + Unpin + Send> Shutdown for WriteBuffered<S> {
    async fn shutdown(&mut self) {
        let _ = std::future::poll_fn(|cx| self.poll_drain(cx)).await;
        self.inner.shutdown().await;
    }
}

/// Implements pingora's stream traits for a wrapper by passing them to its
/// `inner` field (everything but reads, writes and shutdown).
macro_rules! delegate_stream_traits {
    ($wrapper:ident) => {
        impl<S: UniqueID> UniqueID for $wrapper<S> {
            fn id(&self) -> UniqueIDType {
                self.inner.id()
            }
        }

        impl<S: Ssl> Ssl for $wrapper<S> {
            fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
                self.inner.get_ssl()
            }

            fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
                self.inner.get_ssl_digest()
            }

            fn selected_alpn_proto(&self) -> Option<pingora_core::protocols::ALPN> {
                self.inner.selected_alpn_proto()
            }
        }

        impl<S: GetTimingDigest> GetTimingDigest for $wrapper<S> {
            fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
                self.inner.get_timing_digest()
            }
        }

        impl<S: GetProxyDigest> GetProxyDigest for $wrapper<S> {
            fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
                self.inner.get_proxy_digest()
            }
        }

        impl<S: GetSocketDigest> GetSocketDigest for $wrapper<S> {
            fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
                self.inner.get_socket_digest()
            }

            fn set_socket_digest(&mut self, digest: SocketDigest) {
                self.inner.set_socket_digest(digest)
            }
        }
        #[async_trait]
        impl<S: Peek + Send> Peek for $wrapper<S> {
            async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
                self.inner.try_peek(buf).await
            }
        }
    };
}
pub(crate) use delegate_stream_traits;

delegate_stream_traits!(WriteBuffered);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Counts writes reaching the inner stream.
    #[derive(Default)]
    struct Counting {
        writes: Vec<Vec<u8>>,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn small_writes_leave_together_on_flush() {
        let mut w = WriteBuffered::new(Counting::default(), 100);
        w.write_all(b"head ").await.unwrap();
        w.write_all(b"body").await.unwrap();
        assert!(w.get_ref().writes.is_empty());
        w.flush().await.unwrap();
        assert_eq!(w.get_ref().writes, vec![b"head body".to_vec()]);
    }

    /// Takes several buffers per call, at most `limit` bytes, and is not
    /// ready every other call when `stall`.
    struct Vectored {
        calls: Vec<Vec<u8>>,
        limit: usize,
        stall: bool,
        stalled: bool,
    }

    impl AsyncWrite for Vectored {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            if self.stall {
                self.stalled = !self.stalled;
                if self.stalled {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            let mut call = Vec::new();
            for b in bufs {
                let room = self.limit - call.len();
                call.extend_from_slice(&b[..b.len().min(room)]);
            }
            let n = call.len();
            self.calls.push(call);
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_held_head_leaves_with_a_large_body_in_one_call() {
        let mut w = WriteBuffered::new(
            Vectored {
                calls: Vec::new(),
                limit: usize::MAX,
                stall: false,
                stalled: false,
            },
            10,
        );
        w.write_all(b"head").await.unwrap();
        w.write_all(&[b'x'; 50]).await.unwrap();
        w.flush().await.unwrap();
        let mut want = b"head".to_vec();
        want.extend_from_slice(&[b'x'; 50]);
        assert_eq!(w.get_ref().calls, vec![want]);
        // A body smaller than the buffer that does not fit beside the head:
        // one call too, nothing left held.
        w.write_all(b"head2").await.unwrap();
        w.write_all(b"body2!").await.unwrap();
        assert_eq!(w.get_ref().calls.len(), 2);
        assert_eq!(w.get_ref().calls[1], b"head2body2!".to_vec());
        w.flush().await.unwrap();
        assert_eq!(w.get_ref().calls.len(), 2);
    }

    #[tokio::test]
    async fn partial_and_pending_calls_keep_every_byte_in_order() {
        // Every split of a held head and a large body the stream may take,
        // ready or not every other call: the same bytes in the same order.
        for stall in [false, true] {
            for limit in 1..=70 {
                let mut w = WriteBuffered::new(
                    Vectored {
                        calls: Vec::new(),
                        limit,
                        stall,
                        stalled: false,
                    },
                    16,
                );
                let body: Vec<u8> = (0..60u8).collect();
                w.write_all(b"HEAD:").await.unwrap();
                w.write_all(&body).await.unwrap();
                w.write_all(b"tail").await.unwrap();
                w.write_all(b"0123456789ab").await.unwrap();
                w.flush().await.unwrap();
                let out: Vec<u8> = w.get_ref().calls.concat();
                let mut want = b"HEAD:".to_vec();
                want.extend_from_slice(&body);
                want.extend_from_slice(b"tail0123456789ab");
                assert_eq!(out, want, "limit {limit}, stall {stall}");
                assert!(w.get_ref().calls.iter().all(|c| c.len() <= limit));
            }
        }
    }

    #[tokio::test]
    async fn overflow_and_large_writes_are_not_held() {
        let mut w = WriteBuffered::new(Counting::default(), 10);
        w.write_all(b"12345678").await.unwrap();
        w.write_all(b"abc").await.unwrap(); // would exceed: the first goes out
        assert_eq!(w.get_ref().writes, vec![b"12345678".to_vec()]);
        w.write_all(&[b'x'; 50]).await.unwrap(); // large: "abc" out, then straight through
        assert_eq!(w.get_ref().writes.len(), 3);
        assert_eq!(w.get_ref().writes[1], b"abc".to_vec());
        w.flush().await.unwrap();
        assert_eq!(w.get_ref().writes.len(), 3);
    }
}
