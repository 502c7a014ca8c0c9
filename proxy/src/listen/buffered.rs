//! Write coalescing for accepted connections.
//!
//! pingora's own listeners give each client stream a small write buffer, so a
//! response head and a short body leave in one segment; the buffer setting is
//! private to pingora, and a stream edge accepts itself writes every call
//! straight to the socket (two `sendto`s, two wake-ups of the client, per
//! small response). This wrapper restores the buffering: writes collect until
//! they would exceed `capacity` or the writer flushes, as pingora flushes at
//! the end of every response. It sits under TLS too, so records coalesce.

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
            match this.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
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
