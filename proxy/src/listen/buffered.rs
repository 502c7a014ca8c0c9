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
//! TLS too, so records coalesce; and over TLS for HTTP/1, so a response's
//! head and a small body are one record (pingora writes them in two calls:
//! two records, each sealed and framed, where one does).
//!
//! It also holds the connection's send timeout (`listener.limits.send_timeout`,
//! nginx's `send_timeout`): a write the socket cannot take starts a timer,
//! any progress stops it, and a write still waiting when it fires fails with
//! `TimedOut`, so a client that stops reading (a slow-read attack) gives up
//! its connection, its request's state and its upstream connection instead
//! of holding them forever. Under TLS and HTTP/2 alike: every path's bytes
//! pass here.

use std::future::Future;
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
use tokio::time::{Duration, Instant, Sleep};

/// A stream whose close can be made to reset the connection.
pub trait ResetOnClose {
    /// A later close sends a reset and drops what is unsent (`SO_LINGER`
    /// 0), instead of leaving it queued in the kernel.
    fn reset_on_close(&self);
}

impl ResetOnClose for pingora_core::protocols::l4::stream::Stream {
    fn reset_on_close(&self) {
        let _ = self.set_zero_linger();
    }
}

impl<S: ResetOnClose> ResetOnClose for WriteBuffered<S> {
    fn reset_on_close(&self) {
        self.inner.reset_on_close();
    }
}

impl<S: ResetOnClose> ResetOnClose for pingora_core::protocols::tls::TlsStream<S> {
    fn reset_on_close(&self) {
        if let Some(transport) = self.transport() {
            transport.reset_on_close();
        }
    }
}

/// One TCP segment's worth, as pingora's listeners use.
pub const WRITE_CAPACITY: usize = 1460;

/// Slices in one vectored write: what is held and the caller's first
/// seven (a chunk of a chunked body is three: size line, data, CRLF).
const MAX_SLICES: usize = 8;

thread_local! {
    /// The write buffer a connection let go last on this thread, empty:
    /// the next connection to write takes it. A buffer of
    /// [`WRITE_CAPACITY`] is above the allocator's small sizes, where an
    /// allocation and a free per response cost about 170 instructions
    /// (`benches/callgrind/instr.sh`, issue 17).
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// An empty buffer of `capacity` bytes: the thread's spare if it is that
/// size, else a new one.
fn take_buffer(capacity: usize) -> Vec<u8> {
    let spare = SPARE.try_with(std::cell::Cell::take).unwrap_or_default();
    if spare.capacity() == capacity {
        return spare;
    }
    // Not this size: left for a writer of its own (the thread's locals
    // gone, as the thread ends: dropped).
    let _ = SPARE.try_with(|s| s.set(spare));
    Vec::with_capacity(capacity)
}

/// `buf` as the thread's spare, emptied (a spare it replaces is freed; as
/// the thread ends, `buf` is).
fn release_buffer(mut buf: Vec<u8>) {
    buf.clear();
    let _ = SPARE.try_with(|s| s.set(buf));
}

#[derive(Debug)]
pub struct WriteBuffered<S> {
    inner: S,
    buf: Vec<u8>,
    capacity: usize,
    send_timeout: Option<Duration>,
    /// The send timer: made at the first write that waits, then moved.
    stall: Option<Pin<Box<Sleep>>>,
    /// Whether `stall` runs for the write now waiting.
    armed: bool,
    /// Whether the inner stream took bytes during the current poll (one
    /// that ends waiting may have written some first).
    progress: bool,
    /// Reads fail once the send timeout has fired (HTTP/2 connections:
    /// [`Self::fail_reads_on_send_timeout`]).
    reads_fail: std::sync::atomic::AtomicBool,
}

impl<S> WriteBuffered<S> {
    /// The buffer is taken at the first write (the thread's spare or a new
    /// one) and let go at each flush (a connection that has not answered
    /// anything, or waits for its next request, holds none). No send
    /// timeout.
    pub fn new(inner: S, capacity: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            capacity,
            send_timeout: None,
            stall: None,
            armed: false,
            progress: false,
            reads_fail: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Once the send timeout has fired on a waiting write, reads fail with
    /// its error too. For HTTP/2: h2 reads the connection before it
    /// flushes, and fails every stream with the error a read returns,
    /// while a flush's error only ends the connection (its streams read
    /// "broken pipe"); and h2 never leaves a write waiting unpolled. Not
    /// for HTTP/1, where a write can be left so: rustls takes plaintext
    /// and answers `Ok` while the socket's write waits, then pingora reads
    /// while the origin pauses; the next write sees the progress.
    pub fn fail_reads_on_send_timeout(&self) {
        self.reads_fail
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// A write (or flush, or shutdown) that makes no progress for `limit`
    /// fails with `io::ErrorKind::TimedOut`, and the stream's close then
    /// resets the connection (nginx's `reset_timedout_connection`): a
    /// client that stopped reading would otherwise keep the kernel's send
    /// buffer (megabytes) in FIN-WAIT-1 long after.
    pub fn with_send_timeout(mut self, limit: Duration) -> Self {
        self.send_timeout = Some(limit);
        self
    }
}

impl<S: ResetOnClose> WriteBuffered<S> {
    /// `poll` of a write, flush or shutdown with the send timeout: one that
    /// is ready (progress or an error) stops the timer; one that waits
    /// starts it if it is not running or bytes went out during the poll,
    /// and fails once it fires.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Self, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        self.progress = false;
        let r = poll(self, cx);
        let Some(limit) = self.send_timeout else {
            return r;
        };
        if r.is_ready() {
            self.armed = false;
            return r;
        }
        if self.progress {
            self.armed = false;
        }
        let at = Instant::now() + limit;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if !self.armed {
            self.armed = true;
            stall.as_mut().reset(at);
        }
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(self.timed_out(limit))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The send timeout fired: the close will reset the connection.
    fn timed_out(&mut self, limit: Duration) -> io::Error {
        self.inner.reset_on_close();
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {limit:?} (send_timeout)"),
        )
    }

    /// A read while a write waits fails once the send timeout fires, with
    /// its error, when [`Self::fail_reads_on_send_timeout`] asked for it.
    ///
    /// The timer's deadline is compared, not the timer polled: the waiting
    /// write's poll holds the timer's wake-up, and a read must not take it.
    fn read_timed_out(&mut self) -> Option<io::Error> {
        let limit = self.send_timeout?;
        if !self.armed || !self.reads_fail.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let deadline = self.stall.as_ref()?.deadline();
        (Instant::now() >= deadline).then(|| self.timed_out(limit))
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
                Poll::Ready(Ok(n)) => {
                    written += n;
                    self.progress = true;
                }
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
    /// calls (its first `MAX_SLICES - 1` slices): `Ok(n)` once the buffer
    /// is out, `n` being how much of `data` went with it (0: none; then
    /// `data` is the caller's to write).
    fn poll_drain_with(
        &mut self,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.inner.is_write_vectored() {
            return self.poll_drain(cx).map_ok(|()| 0);
        }
        let with = data.len().min(MAX_SLICES - 1);
        while !self.buf.is_empty() {
            let held = self.buf.len();
            let mut slices = [io::IoSlice::new(&[]); MAX_SLICES];
            slices[0] = io::IoSlice::new(&self.buf);
            slices[1..=with].copy_from_slice(&data[..with]);
            match Pin::new(&mut self.inner).poll_write_vectored(cx, &slices[..=with]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) if n < held => {
                    self.buf.drain(..n);
                    self.progress = true;
                }
                Poll::Ready(Ok(n)) => {
                    self.buf.clear();
                    self.progress = true;
                    return Poll::Ready(Ok(n - held));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }
}

#[cfg(target_os = "linux")]
impl WriteBuffered<pingora_core::protocols::l4::stream::Stream> {
    /// Whether what a pipe holds may be moved into the socket with
    /// splice(2) ([`Self::poll_splice_from`]): a plain TCP stream (what is
    /// buffered here goes first).
    pub fn spliceable(&self) -> bool {
        self.inner.spliceable_to()
    }

    /// What is buffered here written out, then what `pipe` holds (some or
    /// all) moved into the socket: the bytes moved from the pipe (0 only
    /// if it held nothing). As a write: under the send timeout (no
    /// progress for that long fails with `TimedOut` and the close resets
    /// the connection), the errors the socket gives.
    pub fn poll_splice_from(
        &mut self,
        cx: &mut Context<'_>,
        pipe: &mut pingora_core::protocols::l4::splice::Pipe,
    ) -> Poll<io::Result<usize>> {
        self.timed(cx, |me, cx| {
            std::task::ready!(me.poll_drain(cx))?;
            let moved = std::task::ready!(pipe.poll_drain(cx, &mut me.inner))?;
            me.progress |= moved > 0;
            Poll::Ready(Ok(moved))
        })
    }
}

impl<S: AsyncRead + Unpin + ResetOnClose> AsyncRead for WriteBuffered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.armed {
            if let Some(e) = self.read_timed_out() {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> WriteBuffered<S> {
    fn poll_write_untimed(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self;
        if data.is_empty() {
            // Nothing to hold: no buffer taken for it (an idle connection
            // holds none).
            return Poll::Ready(Ok(0));
        }
        if this.buf.len() + data.len() > this.capacity {
            // What is held and `data` leave in one call where the stream
            // takes several buffers (a response head and a body that do not
            // fit together: one `writev`, not two `write`s).
            match this.poll_drain_with(cx, &[io::IoSlice::new(data)]) {
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
            this.buf = take_buffer(this.capacity);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    /// A vectored write: gathered while it fits, else out with what is
    /// held in one call (a chunk's size line, data and CRLF: one `writev`,
    /// and over TLS one record, not three writes).
    fn poll_write_vectored_untimed(
        &mut self,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = data.iter().map(|d| d.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        if self.buf.len() + total > self.capacity {
            match self.poll_drain_with(cx, data) {
                Poll::Ready(Ok(0)) => {}
                other => return other,
            }
        }
        if total >= self.capacity {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        }
        if self.buf.capacity() == 0 {
            self.buf = take_buffer(self.capacity);
        }
        for d in data {
            self.buf.extend_from_slice(d);
        }
        Poll::Ready(Ok(total))
    }

    /// Writes out what is held, lets the buffer go (the thread's spare:
    /// [`take_buffer`]), then flushes the stream. A keep-alive connection
    /// waiting for its next request holds no write buffer, as nginx frees
    /// its buffers of an idle connection (issue 17's idle-connection
    /// target).
    fn poll_flush_untimed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => {
                if self.buf.capacity() > 0 {
                    release_buffer(std::mem::take(&mut self.buf));
                }
                Pin::new(&mut self.inner).poll_flush(cx)
            }
            other => other,
        }
    }

    fn poll_shutdown_untimed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin + ResetOnClose> AsyncWrite for WriteBuffered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.timed(cx, |this, cx| this.poll_write_untimed(cx, data))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.timed(cx, |this, cx| this.poll_write_vectored_untimed(cx, data))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.timed(cx, Self::poll_flush_untimed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.timed(cx, Self::poll_shutdown_untimed)
    }
}

#[async_trait]
impl<S: Shutdown + AsyncWrite + Unpin + Send + ResetOnClose> Shutdown for WriteBuffered<S> {
    async fn shutdown(&mut self) {
        let drained = std::future::poll_fn(|cx| self.timed(cx, Self::poll_drain)).await;
        if drained.is_ok() {
            self.inner.shutdown().await;
        }
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

            fn poll_idle(
                &mut self,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<bool>> {
                self.inner.poll_idle(cx)
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

    impl ResetOnClose for Counting {
        fn reset_on_close(&self) {}
    }

    impl ResetOnClose for Vectored {
        fn reset_on_close(&self) {}
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
    async fn a_flushed_connection_holds_no_buffer_and_buffers_again_after() {
        let mut w = WriteBuffered::new(Counting::default(), 100);
        assert_eq!(w.buf.capacity(), 0, "nothing written yet");
        for round in 0..3u8 {
            w.write_all(&[b'a' + round; 10]).await.unwrap();
            w.write_all(b"!").await.unwrap();
            assert_eq!(w.buf.capacity(), 100, "held until the flush");
            w.flush().await.unwrap();
            assert_eq!(w.buf.capacity(), 0, "freed by the flush");
            // Empty writes take no buffer.
            assert_eq!(w.write(b"").await.unwrap(), 0);
            assert_eq!(w.write_vectored(&[io::IoSlice::new(b"")]).await.unwrap(), 0);
            assert_eq!(w.buf.capacity(), 0, "an empty write holds nothing");
        }
        let mut expected = Vec::new();
        for round in 0..3u8 {
            let mut one = vec![b'a' + round; 10];
            one.push(b'!');
            expected.push(one);
        }
        assert_eq!(w.get_ref().writes, expected);
    }

    /// The buffer a flush lets go is the thread's spare: the next
    /// connection of the same capacity to write on this thread takes it
    /// (empty), one of another capacity makes its own; two connections
    /// writing at once do not share one.
    #[tokio::test]
    async fn a_let_go_buffer_is_the_next_writers_and_empty() {
        SPARE.take();
        let mut a = WriteBuffered::new(Counting::default(), 64);
        a.write_all(b"first answer").await.unwrap();
        let at = a.buf.as_ptr();
        a.flush().await.unwrap();
        let spare = SPARE.take();
        assert_eq!((spare.as_ptr(), spare.len(), spare.capacity()), (at, 0, 64));
        SPARE.set(spare);
        let mut b = WriteBuffered::new(Counting::default(), 64);
        let mut c = WriteBuffered::new(Counting::default(), 64);
        b.write_all(b"x").await.unwrap();
        assert_eq!(b.buf.as_ptr(), at, "the spare, taken");
        assert_eq!(&b.buf[..], b"x", "and empty");
        assert_eq!(SPARE.take().capacity(), 0, "taken");
        c.write_all(b"y").await.unwrap();
        assert_ne!(c.buf.as_ptr(), at, "no spare left: its own");
        let mut other = WriteBuffered::new(Counting::default(), 32);
        b.flush().await.unwrap();
        other.write_all(b"z").await.unwrap();
        assert_eq!(other.buf.capacity(), 32, "not the spare of 64");
        c.flush().await.unwrap();
        other.flush().await.unwrap();
        assert_eq!(b.get_ref().writes, vec![b"x".to_vec()]);
        assert_eq!(c.get_ref().writes, vec![b"y".to_vec()]);
        assert_eq!(other.get_ref().writes, vec![b"z".to_vec()]);
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

    /// Writes all of `parts` with vectored writes, as `write_all_buf` of a
    /// chunk does.
    async fn write_all_vectored(w: &mut WriteBuffered<Vectored>, parts: &[&[u8]]) {
        let mut owned: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        while owned.iter().any(|p| !p.is_empty()) {
            let slices: Vec<io::IoSlice<'_>> = owned.iter().map(|p| io::IoSlice::new(p)).collect();
            let mut n = w.write_vectored(&slices).await.unwrap();
            for p in &mut owned {
                let k = n.min(p.len());
                p.drain(..k);
                n -= k;
            }
        }
    }

    #[tokio::test]
    async fn vectored_writes_gather_or_leave_with_what_is_held_in_one_call() {
        let mut w = WriteBuffered::new(
            Vectored {
                calls: Vec::new(),
                limit: usize::MAX,
                stall: false,
                stalled: false,
            },
            16,
        );
        assert!(w.is_write_vectored());
        // A small chunk (size line, data, CRLF) is gathered.
        write_all_vectored(&mut w, &[b"3\r\n", b"abc", b"\r\n"]).await;
        assert!(w.get_ref().calls.is_empty());
        // A large one leaves with what is held, in one call.
        let data = [b'x'; 64];
        write_all_vectored(&mut w, &[b"40\r\n", &data, b"\r\n"]).await;
        let mut want = b"3\r\nabc\r\n40\r\n".to_vec();
        want.extend_from_slice(&data);
        want.extend_from_slice(b"\r\n");
        assert_eq!(w.get_ref().calls, vec![want]);
        // With nothing held, a large one is one call of its own.
        write_all_vectored(&mut w, &[b"40\r\n", &data, b"\r\n"]).await;
        assert_eq!(w.get_ref().calls.len(), 2);
        w.flush().await.unwrap();
        assert_eq!(w.get_ref().calls.len(), 2);
        // More slices than one call takes: every byte, in order.
        let many: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; usize::from(i) + 1]).collect();
        let parts: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        write_all_vectored(&mut w, &[b"HELD"]).await;
        write_all_vectored(&mut w, &parts).await;
        w.flush().await.unwrap();
        let mut want = b"HELD".to_vec();
        want.extend(many.concat());
        assert_eq!(w.get_ref().calls[2..].concat(), want);
    }

    #[tokio::test]
    async fn vectored_partial_and_pending_calls_keep_every_byte_in_order() {
        for stall in [false, true] {
            for limit in 1..=90 {
                let mut w = WriteBuffered::new(
                    Vectored {
                        calls: Vec::new(),
                        limit,
                        stall,
                        stalled: false,
                    },
                    16,
                );
                let data: Vec<u8> = (0..64u8).collect();
                write_all_vectored(&mut w, &[b"HEAD:"]).await;
                write_all_vectored(&mut w, &[b"40\r\n", &data, b"\r\n"]).await;
                write_all_vectored(&mut w, &[b"3\r\n", b"abc", b"\r\n"]).await;
                w.flush().await.unwrap();
                let mut want = b"HEAD:40\r\n".to_vec();
                want.extend_from_slice(&data);
                want.extend_from_slice(b"\r\n3\r\nabc\r\n");
                assert_eq!(
                    w.get_ref().calls.concat(),
                    want,
                    "limit {limit}, stall {stall}"
                );
            }
        }
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

    /// Takes one byte per `every`, waiting in between (a client reading
    /// slowly), or nothing at all after `stop` bytes; records a reset.
    struct Trickle {
        every: Duration,
        next: Pin<Box<Sleep>>,
        stop: usize,
        taken: usize,
        reset: std::sync::atomic::AtomicBool,
    }

    impl Trickle {
        fn new(every: Duration, stop: usize) -> Self {
            Self {
                every,
                next: Box::pin(tokio::time::sleep(Duration::ZERO)),
                stop,
                taken: 0,
                reset: false.into(),
            }
        }
    }

    impl ResetOnClose for Trickle {
        fn reset_on_close(&self) {
            self.reset.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.taken >= self.stop || self.next.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let at = Instant::now() + self.every;
            self.next.as_mut().reset(at);
            self.taken += 1;
            Poll::Ready(Ok(data.len().min(1)))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_takes_something_within_the_send_timeout_is_kept() {
        // One byte every 4 s against a 5 s timeout: 40 s in all, no error.
        for every in [1, 4, 5] {
            let every = Duration::from_secs(every);
            let mut w = WriteBuffered::new(Trickle::new(every, usize::MAX), 4)
                .with_send_timeout(Duration::from_secs(5) + Duration::from_millis(1));
            let started = Instant::now();
            w.write_all(b"0123456789").await.unwrap();
            w.write_all(b"ab").await.unwrap();
            w.flush().await.unwrap();
            assert_eq!(w.get_ref().taken, 12);
            assert_eq!(started.elapsed(), every * 11);
            assert!(!w.get_ref().reset.load(std::sync::atomic::Ordering::Relaxed));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_without_progress_for_the_send_timeout_fails_and_resets() {
        // Stalled after `stop` bytes, in a large write, a small one's flush
        // or a shutdown: the error comes the timeout after the last byte.
        for stop in [0, 1, 2] {
            for how in ["large", "flush", "shutdown"] {
                let mut w = WriteBuffered::new(Trickle::new(Duration::from_secs(1), stop), 4)
                    .with_send_timeout(Duration::from_secs(5));
                let started = Instant::now();
                let e = match how {
                    "large" => w.write_all(b"0123456789").await,
                    "flush" => {
                        w.write_all(b"012").await.unwrap();
                        w.flush().await
                    }
                    _ => {
                        w.write_all(b"012").await.unwrap();
                        AsyncWriteExt::shutdown(&mut w).await
                    }
                }
                .expect_err(how);
                assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{how} {stop}");
                let last = Duration::from_secs(stop.saturating_sub(1) as u64);
                assert_eq!(
                    started.elapsed(),
                    last + Duration::from_secs(5),
                    "{how} {stop}"
                );
                assert!(w.get_ref().reset.load(std::sync::atomic::Ordering::Relaxed));
            }
        }
    }

    impl AsyncRead for Trickle {
        /// The client sends nothing.
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    /// One poll of a read of `w`: `None` while it waits.
    fn poll_read_once(w: &mut WriteBuffered<Trickle>) -> Option<io::Result<()>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut space = [0u8; 8];
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(w).poll_read(&mut cx, &mut buf) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_while_a_write_waits_fails_when_the_send_timeout_fires() {
        // Not asked (HTTP/1): a read never fails for the send timeout, not
        // even after a write left waiting (its next poll sees progress).
        let mut w = WriteBuffered::new(Trickle::new(Duration::from_secs(1), 0), 4)
            .with_send_timeout(Duration::from_secs(5));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut w)
            .poll_write(&mut cx, b"0123456789")
            .is_pending());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(poll_read_once(&mut w).is_none());
        assert!(!w.get_ref().reset.load(std::sync::atomic::Ordering::Relaxed));

        // Asked (HTTP/2).
        let mut w = WriteBuffered::new(Trickle::new(Duration::from_secs(1), 0), 4)
            .with_send_timeout(Duration::from_secs(5));
        w.fail_reads_on_send_timeout();
        // No write waiting: a read just waits, however long.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(poll_read_once(&mut w).is_none());
        // A write that waits; a read waits with it until the timeout.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut w)
            .poll_write(&mut cx, b"0123456789")
            .is_pending());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(poll_read_once(&mut w).is_none());
        assert!(!w.get_ref().reset.load(std::sync::atomic::Ordering::Relaxed));
        tokio::time::advance(Duration::from_secs(1)).await;
        let e = poll_read_once(&mut w)
            .expect("the read fails")
            .expect_err("an error");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("(send_timeout)"), "{e}");
        assert!(w.get_ref().reset.load(std::sync::atomic::Ordering::Relaxed));
        // The write fails too.
        assert!(matches!(
            Pin::new(&mut w).poll_write(&mut cx, b"0123456789"),
            Poll::Ready(Err(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_send_timeout_a_write_waits() {
        let mut w = WriteBuffered::new(Trickle::new(Duration::from_secs(1), 0), 4);
        let waited = tokio::time::timeout(Duration::from_secs(3600), w.write_all(b"0123456789"));
        assert!(waited.await.is_err());
        assert!(!w.get_ref().reset.load(std::sync::atomic::Ordering::Relaxed));
    }
}
