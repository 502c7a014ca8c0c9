//! A client socket that stops being read on demand: what a server writes
//! to it fills the kernel's buffers, then waits (a client that reads
//! nothing, for send timeouts).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP connection whose reads wait for ever once [`Stall::stopper`]'s
/// flag is set (writes go on). Layers above it (TLS, HTTP/2) see a peer
/// that has stopped sending.
pub struct Stall {
    inner: TcpStream,
    stop: Arc<AtomicBool>,
}

impl Stall {
    pub fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The flag that stops reads: `store(true, …)` to stop.
    pub fn stopper(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// A connection to `addr` with a receive buffer of `recv_buffer`
    /// bytes (small: the kernel's queues fill at a few hundred KB).
    pub async fn connect(addr: std::net::SocketAddr, recv_buffer: u32) -> std::io::Result<Self> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_recv_buffer_size(recv_buffer)?;
        Ok(Self::new(socket.connect(addr).await?))
    }
}

impl AsyncRead for Stall {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.stop.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stall {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
