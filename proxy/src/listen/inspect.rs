//! The reader under pingora on every HTTP/1 client connection: it checks
//! each request's framing on the raw bytes ([`framing`]) before pingora
//! parses them, and times request heads (slowloris protection).
//!
//! It follows the byte stream message by message (head, then a body by
//! `Content-Length` or chunked framing, then the next head), so pipelined
//! requests are checked as well as the first:
//!
//! - A head is held until it is complete and valid, then let through. A
//!   refused head is replaced by a fixed stand-in request; the request path
//!   sees the refusal for that request's number in [`Connection`] and
//!   answers with its status and `Connection: close`. Nothing after a
//!   refused head is read as HTTP.
//! - A chunked body is held with its head until it is complete or
//!   `request_buffer` bytes long, so a malformed body within that much is
//!   refused before anything reaches a backend. Past that it streams, still
//!   checked; a framing error there ends the connection (the backend sees a
//!   body cut short, never a second request).
//! - After a message that closes the connection, nothing more is read as
//!   HTTP; after an upgrade request, what follows waits for the answer (101:
//!   the bytes pass unchecked from then on).
//! - The head deadline: a connection's first head must be complete within
//!   `header_timeout` of accept, later ones within `header_timeout` of their
//!   first byte (the keep-alive timeout covers the wait before it); pingora
//!   times each read, not the whole head.
//! - Closing after a refusal lingers (as nginx's `lingering_close`): the
//!   write side is shut and what the client still sends is read and
//!   dropped for a while, so the refusal is not lost to a reset.
//!
//! [`framing`]: super::framing

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::conn::{Connection, UpgradeWait};
use super::framing::{self, Body, Chunked, HeadScan, Limits, Refusal, Scan};

/// What pingora parses in place of a refused head. The request path never
/// routes it: it answers with the refusal.
pub const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nHost: refused.invalid\r\nConnection: close\r\n\r\n";

/// How long and how much a closing connection reads and drops after a refusal.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 1 << 20;

/// Read size from the client.
const READ_CHUNK: usize = 8 * 1024;

thread_local! {
    /// An inspector's read buffer no connection holds (`spare.rs`): let go
    /// while a connection waits for its next request, taken by the next
    /// read on the thread.
    static SPARE: std::cell::Cell<Option<BytesMut>> = const { std::cell::Cell::new(None) };
}

/// Settings of one listener's inspectors.
#[derive(Debug, Clone, Copy)]
pub struct InspectSettings {
    pub limits: Limits,
    pub header_timeout: Duration,
    /// Bytes of a chunked body held and checked before its request goes on.
    pub request_buffer: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Next,
    Close,
    Upgrade,
}

#[derive(Debug)]
enum State {
    Head(HeadScan),
    Body {
        left: u64,
        after: After,
    },
    Chunked {
        parser: Chunked,
        /// The head is still held (the body is being buffered).
        held: bool,
        after: After,
    },
    /// Nothing more goes to pingora.
    Closed,
    /// Upgrade request `n` went through; what follows waits for its answer.
    Upgrade(u64),
    /// After a 101: bytes pass unchecked.
    Tunnel,
}

#[derive(Debug)]
pub struct Inspector<S> {
    inner: S,
    conn: Arc<Connection>,
    settings: InspectSettings,
    /// Bytes read from the client not yet given to pingora.
    buf: BytesMut,
    /// `buf[..ready]` may go to pingora.
    ready: usize,
    /// `buf[..scan]` has been examined.
    scan: usize,
    state: State,
    /// Heads let through so far (a stand-in counts).
    heads: u64,
    deadline: Option<Pin<Box<Sleep>>>,
    eof: bool,
    failed: Option<io::Error>,
    linger: bool,
    /// `100 Continue` to send for a held chunked body: bytes written so far.
    continue_sent: Option<usize>,
}

impl<S> Inspector<S> {
    /// The stream under the inspector, to write to: writes pass through
    /// it untouched (a pass-through's body spliced into the socket).
    pub fn writer_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Inspects a new connection; its first head is timed from now.
    pub fn new(inner: S, conn: Arc<Connection>, settings: InspectSettings) -> Self {
        Self {
            inner,
            conn,
            settings,
            buf: BytesMut::new(),
            ready: 0,
            scan: 0,
            state: State::Head(HeadScan::default()),
            heads: 0,
            deadline: Some(Box::pin(tokio::time::sleep(settings.header_timeout))),
            eof: false,
            failed: None,
            linger: false,
            continue_sent: None,
        }
    }

    /// Starts the head clock (or the held body's) afresh.
    fn rearm(&mut self) {
        let at = Instant::now() + self.settings.header_timeout;
        match self.deadline.as_mut() {
            Some(d) => d.as_mut().reset(at),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// After bytes were read into `buf`: examine them, and start the
    /// clocks they start.
    fn on_bytes(&mut self) {
        if self.body_held() {
            // A held body's clock runs between reads.
            self.rearm();
        }
        self.process();
        // A head has begun and is not complete: its clock starts.
        if self.deadline.is_none() && self.head_pending() && self.buf.len() > self.ready {
            let at = Instant::now() + self.settings.header_timeout;
            self.deadline = Some(Box::pin(tokio::time::sleep_until(at)));
        }
    }

    /// The client's end (or a reset between requests): bytes of a head not
    /// complete are dropped, so pingora sees a clean end.
    fn on_end(&mut self) {
        self.eof = true;
        self.buf.truncate(self.ready);
        self.scan = self.ready;
    }

    /// Examines what was read, moving `ready` and `state` on as far as the
    /// bytes allow.
    fn process(&mut self) {
        loop {
            match &mut self.state {
                State::Head(scan) => {
                    let fresh = self.scan == self.ready;
                    if fresh {
                        // RFC 9112 §2.2: empty lines before a request line are ignored.
                        while self.buf[self.ready..].starts_with(b"\r\n") {
                            remove(&mut self.buf, self.ready..self.ready + 2);
                        }
                        if &self.buf[self.ready..] == b"\r" {
                            return;
                        }
                    }
                    if self.buf.len() == self.ready {
                        return;
                    }
                    let limits = self.settings.limits;
                    let len = match scan.scan(&self.buf[self.ready..], &limits) {
                        Err(r) => return self.refuse(r),
                        Ok(Scan::Partial) => {
                            self.scan = self.buf.len();
                            return;
                        }
                        Ok(Scan::Complete(len)) => len,
                    };
                    let head =
                        match framing::check(&self.buf[self.ready..self.ready + len], &limits) {
                            Ok(h) => h,
                            Err(r) => return self.refuse(r),
                        };
                    // A chunked body is held and checked before its request
                    // goes on; a client that waits for `100 Continue` first
                    // gets it from edge, and the expectation goes no further.
                    let held = head.body == Body::Chunked && self.settings.request_buffer > 0;
                    let answer_continue = held && head.expect_continue;
                    let mut cut: Vec<std::ops::Range<usize>> = head.drop.clone();
                    if answer_continue {
                        cut.extend(head.expect_lines.iter().cloned());
                    }
                    cut.sort_by_key(|r| r.start);
                    let mut len = len;
                    for range in cut.iter().rev() {
                        remove(
                            &mut self.buf,
                            self.ready + range.start..self.ready + range.end,
                        );
                        len -= range.len();
                    }
                    if let Some((range, bytes)) = &head.target {
                        // Before every removed line: its position holds.
                        let at = self.ready + range.start..self.ready + range.end;
                        replace(&mut self.buf, at, bytes);
                        len = len - range.len() + bytes.len();
                    }
                    let after = if head.close {
                        After::Close
                    } else if head.upgrade {
                        After::Upgrade
                    } else {
                        After::Next
                    };
                    match head.body {
                        Body::Chunked => {
                            let parser = Chunked::new(limits.max_header_bytes);
                            if held {
                                self.scan = self.ready + len;
                                // The body has its own clock: between reads.
                                self.rearm();
                                if answer_continue {
                                    self.continue_sent = Some(0);
                                }
                            } else {
                                self.release(len);
                            }
                            self.state = State::Chunked {
                                parser,
                                held,
                                after,
                            };
                        }
                        Body::Length(left) => {
                            self.release(len);
                            self.state = State::Body { left, after };
                        }
                        Body::None => {
                            self.release(len);
                            self.state = self.after(after);
                        }
                    }
                }
                State::Body { left, after } => {
                    let take = ((self.buf.len() - self.scan) as u64).min(*left);
                    *left -= take;
                    self.scan += take as usize;
                    self.ready = self.scan;
                    if *left > 0 {
                        return;
                    }
                    let after = *after;
                    self.state = self.after(after);
                }
                State::Chunked {
                    parser,
                    held,
                    after,
                } => {
                    match parser.feed(&self.buf[self.scan..]) {
                        Ok(n) => self.scan += n,
                        Err(r) if *held => return self.refuse(r),
                        Err(r) => return self.fail(r),
                    }
                    let done = parser.done();
                    if *held && (done || self.scan - self.ready >= self.settings.request_buffer) {
                        *held = false;
                        self.heads += 1;
                        self.deadline = None;
                    }
                    if *held {
                        return;
                    }
                    self.ready = self.scan;
                    if !done {
                        return;
                    }
                    let after = *after;
                    self.state = self.after(after);
                }
                State::Closed => {
                    self.buf.truncate(self.ready);
                    self.scan = self.ready;
                    return;
                }
                State::Upgrade(_) => return,
                State::Tunnel => {
                    self.ready = self.buf.len();
                    self.scan = self.ready;
                    return;
                }
            }
        }
    }

    /// Lets a head of `len` bytes at `ready` through.
    fn release(&mut self, len: usize) {
        self.ready += len;
        self.scan = self.ready;
        self.heads += 1;
        self.deadline = None;
    }

    fn after(&mut self, after: After) -> State {
        match after {
            After::Next => State::Head(HeadScan::default()),
            After::Close => State::Closed,
            After::Upgrade => {
                let n = self.heads - 1;
                self.conn.wait_for_upgrade(n);
                State::Upgrade(n)
            }
        }
    }

    /// Replaces the held head (and all after it) with the stand-in.
    fn refuse(&mut self, refusal: Refusal) {
        tracing::debug!(
            status = refusal.status,
            reason = refusal.reason,
            "request refused on its framing"
        );
        let held = &self.buf[self.ready..];
        let line_end = memchr::memchr2(b'\r', b'\n', held).unwrap_or(held.len());
        let line = held[..line_end.min(200)].escape_ascii().to_string();
        self.buf.truncate(self.ready);
        self.buf.extend_from_slice(STAND_IN);
        self.conn.refuse(self.heads, refusal, line);
        self.heads += 1;
        self.ready = self.buf.len();
        self.scan = self.ready;
        self.state = State::Closed;
        self.deadline = None;
        self.linger = true;
    }

    /// A framing error in a body already going upstream: the connection ends.
    fn fail(&mut self, refusal: Refusal) {
        tracing::debug!(
            reason = refusal.reason,
            "chunked body refused after its start was forwarded"
        );
        self.failed = Some(io::Error::new(io::ErrorKind::InvalidData, refusal.reason));
        self.state = State::Closed;
        self.buf.truncate(self.ready);
        self.scan = self.ready;
        self.linger = true;
    }

    fn body_held(&self) -> bool {
        matches!(self.state, State::Chunked { held: true, .. })
    }

    fn head_pending(&self) -> bool {
        matches!(self.state, State::Head(_))
            || matches!(self.state, State::Chunked { held: true, .. })
    }
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Removes bytes that pingora has not seen.
fn remove(buf: &mut BytesMut, range: std::ops::Range<usize>) {
    replace(buf, range, b"");
}

/// Replaces bytes that pingora has not seen.
fn replace(buf: &mut BytesMut, range: std::ops::Range<usize>, with: &[u8]) {
    let mut tail = buf.split_off(range.start);
    tail.advance(range.len());
    buf.extend_from_slice(with);
    buf.unsplit(tail);
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Inspector<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.ready > 0 {
                let n = this.ready.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.ready -= n;
                this.scan -= n;
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = this.failed.take() {
                return Poll::Ready(Err(e));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if let State::Upgrade(n) = this.state {
                match this.conn.upgrade_outcome(cx.waker()) {
                    UpgradeWait::Upgraded(m) if m == n => this.state = State::Tunnel,
                    UpgradeWait::Refused(m) if m == n => {
                        this.state = State::Head(HeadScan::default());
                    }
                    _ => return Poll::Pending,
                }
                this.process();
                continue;
            }
            if let Some(sent) = this.continue_sent {
                if !this.body_held() {
                    this.continue_sent = None;
                } else if !this.conn.in_flight() {
                    // Only between requests: never inside another answer.
                    // Written in full, then flushed.
                    let step = if sent < CONTINUE.len() {
                        Pin::new(&mut this.inner).poll_write(cx, &CONTINUE[sent..])
                    } else {
                        Pin::new(&mut this.inner).poll_flush(cx).map_ok(|()| 0)
                    };
                    match step {
                        Poll::Ready(Ok(0)) if sent == CONTINUE.len() => this.continue_sent = None,
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()))
                        }
                        Poll::Ready(Ok(n)) => {
                            this.continue_sent = Some(sent + n);
                            continue;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
            if this.buf.capacity() - this.buf.len() < READ_CHUNK / 4 {
                this.buf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buf) {
                // A head cut short is dropped: pingora sees a clean end.
                Poll::Ready(Ok(0)) => this.on_end(),
                Poll::Ready(Ok(_)) => this.on_bytes(),
                Poll::Ready(Err(e)) => {
                    if this.conn.in_flight() {
                        return Poll::Ready(Err(e));
                    }
                    // Between requests a reset is a client going away: the
                    // end of the connection, not an error of the node's.
                    tracing::debug!(error = %e, "client connection ended");
                    this.on_end();
                }
                Poll::Pending => {
                    if !this.head_pending() {
                        return Poll::Pending;
                    }
                    let Some(deadline) = this.deadline.as_mut() else {
                        return Poll::Pending;
                    };
                    if deadline.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if this.conn.in_flight() {
                        // A pipelined head waits behind a request still being
                        // served; its clock restarts.
                        let at = Instant::now() + this.settings.header_timeout;
                        deadline.as_mut().reset(at);
                        let _ = deadline.as_mut().poll(cx);
                        return Poll::Pending;
                    }
                    // A client that stops talking: closed, and said at
                    // info level (it is the client's doing, not an error).
                    tracing::info!(
                        held = this.buf.len() - this.ready,
                        limit = ?this.settings.header_timeout,
                        "closed: request head not complete in time"
                    );
                    this.eof = true;
                    this.deadline = None;
                    this.buf.truncate(this.ready);
                    this.scan = this.ready;
                    continue;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Inspector<S> {
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
impl<S: Shutdown + AsyncRead + Unpin + Send> Shutdown for Inspector<S> {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
        if !(self.linger || self.conn.lingers()) || self.eof {
            return;
        }
        let inner = &mut self.inner;
        let drain = async {
            let mut scratch = vec![0u8; READ_CHUNK];
            let mut total = 0;
            while total < LINGER_BYTES {
                match inner.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    }
}

impl<S: UniqueID> UniqueID for Inspector<S> {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl<S: Ssl> Ssl for Inspector<S> {
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

impl<S: GetTimingDigest> GetTimingDigest for Inspector<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl<S: GetProxyDigest> GetProxyDigest for Inspector<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl<S: GetSocketDigest> GetSocketDigest for Inspector<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

/// edge's idle wait between requests (`listen/http.rs`), not a peek:
/// returns `Ok(true)` once the client has sent something (read into the
/// inspector's own buffer, examined as any read is, and given to pingora
/// by the next reads) or the connection ended (the next read reports it);
/// `buf` is left untouched. While it waits, the connection holds no read
/// buffer (nginx frees its buffers between requests the same way; the
/// emptied one becomes the thread's spare, `spare.rs`); the
/// first read goes through a stack buffer, so waiting costs no extra
/// system call.
#[async_trait]
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Peek for Inspector<S> {
    async fn try_peek(&mut self, _buf: &mut [u8]) -> io::Result<bool> {
        std::future::poll_fn(|cx| self.poll_idle(cx)).await
    }

    /// [`Self::try_peek`] as a poll (vendored pingora-core, forty-second):
    /// the idle wait polls it without the boxed future `async_trait` makes
    /// per call (about 150 instructions per request,
    /// `benches/callgrind/instr.sh`; issue 17).
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if !self.buf.is_empty() || self.eof || self.failed.is_some() {
            return Poll::Ready(Ok(true));
        }
        // The emptied buffer becomes the thread's spare (`spare.rs`), or is
        // freed: one read to its very end leaves no capacity but still
        // holds the allocation.
        super::spare::give(&SPARE, std::mem::take(&mut self.buf), READ_CHUNK);
        // Not zeroed first (twice per request, 266 instructions): every
        // reader below fills what it reports filled.
        let mut first = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
        let mut read = ReadBuf::uninit(&mut first);
        match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(())) if read.filled().is_empty() => self.on_end(),
            Poll::Ready(Ok(())) => {
                self.buf = super::spare::take(&SPARE, READ_CHUNK.max(read.filled().len()));
                self.buf.extend_from_slice(read.filled());
                self.on_bytes();
            }
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "client connection ended");
                self.on_end();
            }
        }
        Poll::Ready(Ok(true))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn settings(request_buffer: usize) -> InspectSettings {
        InspectSettings {
            limits: Limits {
                max_request_line: 1024,
                max_header_bytes: 4096,
                max_headers: 20,
            },
            header_timeout: Duration::from_secs(10),
            request_buffer,
        }
    }

    fn pair(request_buffer: usize) -> (DuplexStream, Inspector<DuplexStream>, Arc<Connection>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let conn = Arc::new(Connection::default());
        let insp = Inspector::new(server, conn.clone(), settings(request_buffer));
        (client, insp, conn)
    }

    /// Everything the inspector lets through until it has nothing more for
    /// a (paused-clock) second.
    async fn drain(insp: &mut Inspector<DuplexStream>) -> Vec<u8> {
        drain_quiet(insp, Duration::from_secs(1)).await
    }

    /// As [`drain`], until nothing comes for `quiet`.
    async fn drain_quiet(insp: &mut Inspector<DuplexStream>, quiet: Duration) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            match tokio::time::timeout(quiet, insp.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => return out,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => panic!("read error {e} after {:?}", String::from_utf8_lossy(&out)),
            }
        }
    }

    const GOOD: &str = concat!(
        "\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "GET /d HTTP/1.1\r\nHost: a\r\n\r\n",
    );

    #[tokio::test(start_paused = true)]
    async fn valid_pipelined_requests_pass_unchanged_in_any_split() {
        let (mut client, mut insp, conn) = pair(64 * 1024);
        client.write_all(GOOD.as_bytes()).await.unwrap();
        let out = drain(&mut insp).await;
        assert_eq!(
            String::from_utf8_lossy(&out),
            &GOOD[2..],
            "the leading CRLF is dropped"
        );
        for i in 0..4 {
            assert!(conn.begin().refusal.is_none(), "request {i}");
        }
        // One byte at a time.
        let (mut client, mut insp, _) = pair(64 * 1024);
        let writer = tokio::spawn(async move {
            for b in GOOD.as_bytes() {
                client.write_all(std::slice::from_ref(b)).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let out = drain(&mut insp).await;
        drop(writer.await.unwrap());
        assert_eq!(String::from_utf8_lossy(&out), &GOOD[2..]);
    }

    /// The idle wait's poll (vendored pingora-core, forty-second): pending
    /// while the client is quiet, woken and ready once it sends, with what
    /// it sent read next; ready at the connection's end too, the next read
    /// reporting it; a default stream's answer is "cannot wait so".
    #[tokio::test(start_paused = true)]
    async fn the_idle_poll_waits_for_the_client_and_keeps_what_it_read() {
        use std::task::Waker;
        let (mut client, mut insp, _) = pair(64 * 1024);
        let noop = &mut Context::from_waker(Waker::noop());
        assert!(insp.poll_idle(noop).is_pending(), "nothing sent yet");
        let request = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
        client.write_all(request.as_bytes()).await.unwrap();
        let ready = std::future::poll_fn(|cx| insp.poll_idle(cx)).await;
        assert!(ready.unwrap());
        // Ready again at once: the bytes are held, not read again.
        assert!(matches!(insp.poll_idle(noop), Poll::Ready(Ok(true))));
        let mut buf = [0u8; 256];
        let n = insp.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], request.as_bytes());
        assert!(insp.poll_idle(noop).is_pending(), "all of it taken");
        drop(client);
        assert!(std::future::poll_fn(|cx| insp.poll_idle(cx)).await.unwrap());
        assert_eq!(insp.read(&mut buf).await.unwrap(), 0, "the end, reported");

        let (_other, mut plain) = tokio::io::duplex(64);
        assert!(matches!(
            Peek::poll_idle(&mut plain, noop),
            Poll::Ready(Ok(false))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_head_in_a_pipeline_becomes_a_stand_in_for_that_request() {
        let (mut client, mut insp, conn) = pair(64 * 1024);
        let first = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
        client
            .write_all(
                format!("{first}GET /b HTTP/1.1\nHost: a\n\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let out = drain(&mut insp).await;
        assert_eq!(out, [first.as_bytes(), STAND_IN].concat());
        assert!(conn.begin().refusal.is_none());
        assert_eq!(conn.begin().refusal.unwrap().status, 400);
        assert!(insp.linger);
    }

    #[tokio::test(start_paused = true)]
    async fn a_malformed_chunked_body_is_refused_before_its_head_goes_on() {
        let (mut client, mut insp, conn) = pair(64 * 1024);
        client
            .write_all(b"POST /d HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
            .await
            .unwrap();
        assert_eq!(drain(&mut insp).await, STAND_IN);
        assert_eq!(conn.begin().refusal.unwrap().status, 400);
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_buffer_a_chunked_body_streams_and_an_error_ends_the_connection() {
        let (mut client, mut insp, _) = pair(16);
        let head = "POST /d HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        let good = "14\r\n01234567890123456789\r\n";
        client
            .write_all(format!("{head}{good}").as_bytes())
            .await
            .unwrap();
        let out = drain(&mut insp).await;
        assert_eq!(String::from_utf8_lossy(&out), format!("{head}{good}"));
        client.write_all(b"zz\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let err = insp.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_after_a_closing_request_is_read_as_http() {
        let (mut client, mut insp, _) = pair(64 * 1024);
        let first = "GET /a HTTP/1.0\r\n\r\n";
        client
            .write_all(format!("{first}GET /b HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&drain(&mut insp).await), first);
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_upgrade_the_bytes_wait_for_its_answer() {
        let up = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        let frames = "\x01\x05hello\r\n\r\n";
        for (status, passes) in [(101, frames), (200, "")] {
            let (mut client, mut insp, conn) = pair(64 * 1024);
            client
                .write_all(format!("{up}{frames}").as_bytes())
                .await
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&drain(&mut insp).await), up);
            let n = conn.begin().index;
            conn.answered(n, status);
            // Not HTTP: refused (a stand-in) unless the upgrade happened.
            let rest = drain(&mut insp).await;
            if status == 101 {
                assert_eq!(String::from_utf8_lossy(&rest), passes);
            } else {
                assert_eq!(rest, STAND_IN);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn heads_have_a_deadline_from_accept_then_from_their_first_byte() {
        let (mut client, mut insp, conn) = pair(64 * 1024);
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            insp.read(&mut buf).await.unwrap(),
            0,
            "closed: the head took too long"
        );

        let (mut client, mut insp, _) = pair(64 * 1024);
        let first = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        client.write_all(first.as_bytes()).await.unwrap();
        let n = insp.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], first.as_bytes());
        // Idle between requests is the keep-alive timeout's business.
        tokio::time::advance(Duration::from_secs(60)).await;
        client.write_all(b"GET / HT").await.unwrap();
        assert_eq!(
            insp.read(&mut buf).await.unwrap(),
            0,
            "closed: the head took too long"
        );
        drop(conn);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_chunked_body_is_timed_between_reads_not_in_total() {
        let (mut client, mut insp, _) = pair(64 * 1024);
        let head = "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        let writer = tokio::spawn(async move {
            client.write_all(head.as_bytes()).await.unwrap();
            // 30 s in all, never 10 s without a byte.
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                client.write_all(b"3\r\nabc\r\n").await.unwrap();
            }
            client.write_all(b"0\r\n\r\n").await.unwrap();
            client
        });
        let out = drain_quiet(&mut insp, Duration::from_secs(40)).await;
        let client = writer.await.unwrap();
        let want = format!("{head}{}0\r\n\r\n", "3\r\nabc\r\n".repeat(10));
        assert_eq!(String::from_utf8_lossy(&out), want);
        drop(client);

        let (mut client, mut insp, _) = pair(64 * 1024);
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(b"3\r\nabc\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            insp.read(&mut buf).await.unwrap(),
            0,
            "a stalled body: closed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn edge_sends_100_continue_for_a_held_chunked_body() {
        let (mut client, mut insp, _) = pair(64 * 1024);
        client
            .write_all(b"POST /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let reader = tokio::spawn(async move {
            let out = drain(&mut insp).await;
            (insp, out)
        });
        let mut interim = [0u8; 25];
        client.read_exact(&mut interim).await.unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        client.write_all(b"2\r\nhi\r\n0\r\n\r\n").await.unwrap();
        let (_insp, out) = reader.await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            "the expectation was answered here"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pipelined_head_is_not_timed_while_a_request_is_served() {
        let (mut client, mut insp, conn) = pair(64 * 1024);
        let first = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        client
            .write_all(format!("{first}GET / HT").as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = insp.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], first.as_bytes());
        conn.begin();
        let r = tokio::time::timeout(Duration::from_secs(30), insp.read(&mut buf)).await;
        assert!(r.is_err(), "still waiting, not timed out: {r:?}");
        conn.end();
        assert_eq!(
            insp.read(&mut buf).await.unwrap(),
            0,
            "closed: the head took too long"
        );
    }
}
