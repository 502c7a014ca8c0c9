use crate::codec::UserError;
use crate::codec::UserError::*;
use crate::frame::{self, Frame, FrameSize};
use crate::hpack;

use bytes::{Buf, BufMut, BytesMut};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_write_buf;

use std::io::{self, Cursor};

// A macro to get around a method needing to borrow &mut self
macro_rules! limited_write_buf {
    ($self:expr) => {{
        let limit = $self.max_frame_size() + frame::HEADER_LEN;
        $self.buf.get_mut().limit(limit)
    }};
}

#[derive(Debug)]
pub struct FramedWrite<T, B> {
    /// Upstream `AsyncWrite`
    inner: T,
    final_flush_done: bool,

    encoder: Encoder<B>,
}

#[derive(Debug)]
struct Encoder<B> {
    /// HPACK encoder
    hpack: hpack::Encoder,

    /// Write buffer
    ///
    /// TODO: Should this be a ring buffer?
    buf: Cursor<BytesMut>,

    /// Next frame to encode
    next: Option<Next<B>>,

    /// Last data frame
    last_data_frame: Option<frame::Data<B>>,

    /// Max frame size, this is specified by the peer
    max_frame_size: FrameSize,

    /// Chain payloads bigger than this.
    chain_threshold: usize,

    /// Min buffer required to attempt to write a frame
    min_buffer_capacity: usize,
}

#[derive(Debug)]
enum Next<B> {
    Data(frame::Data<B>),
    Continuation(frame::Continuation),
}

/// Initialize the connection with this amount of write buffer.
///
/// The minimum MAX_FRAME_SIZE is 16kb, so always be able to send a HEADERS
/// frame that big.
const DEFAULT_BUFFER_CAPACITY: usize = 16 * 1_024;

/// Chain payloads bigger than this when vectored I/O is enabled. The remote
/// will never advertise a max frame size less than this (well, the spec says
/// the max frame size can't be less than 16kb, so not even close).
const CHAIN_THRESHOLD: usize = 256;

/// Chain payloads bigger than this when vectored I/O is **not** enabled.
/// A larger value in this scenario will reduce the number of small and
/// fragmented data being sent, and hereby improve the throughput.
const CHAIN_THRESHOLD_WITHOUT_VECTORED_IO: usize = 1024;

/// EDGE-PATCH (first): a payload up to this size is copied into the write
/// buffer, as a payload under the chain threshold is, whenever it fits in
/// the buffer's spare room. Only one chained payload can wait at a time, so
/// chaining costs a write to the socket per DATA frame: ten 1 KiB responses
/// on ten streams left in ten `sendto`s, where a copy of about 1 KiB is far
/// cheaper than a system call. Larger payloads are chained as before.
const COPY_WHEN_ROOM: usize = 4 * 1_024;

// TODO: Make generic
impl<T, B> FramedWrite<T, B>
where
    T: AsyncWrite + Unpin,
    B: Buf,
{
    pub fn new(inner: T) -> FramedWrite<T, B> {
        let chain_threshold = if inner.is_write_vectored() {
            CHAIN_THRESHOLD
        } else {
            CHAIN_THRESHOLD_WITHOUT_VECTORED_IO
        };
        FramedWrite {
            inner,
            final_flush_done: false,
            encoder: Encoder {
                hpack: hpack::Encoder::default(),
                buf: Cursor::new(BytesMut::with_capacity(DEFAULT_BUFFER_CAPACITY)),
                next: None,
                last_data_frame: None,
                max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
                chain_threshold,
                min_buffer_capacity: chain_threshold + frame::HEADER_LEN,
            },
        }
    }

    /// Returns `Ready` when `send` is able to accept a frame
    ///
    /// Calling this function may result in the current contents of the buffer
    /// to be flushed to `T`.
    pub fn poll_ready(&mut self, cx: &mut Context) -> Poll<io::Result<()>> {
        if !self.encoder.has_capacity() {
            // Try flushing
            ready!(self.flush(cx))?;

            if !self.encoder.has_capacity() {
                return Poll::Pending;
            }
        }

        Poll::Ready(Ok(()))
    }

    /// Returns whether a frame can be buffered without first flushing the
    /// underlying I/O object.
    pub(crate) fn has_capacity(&self) -> bool {
        self.encoder.has_capacity()
    }

    /// Buffer a frame.
    ///
    /// `poll_ready` must be called first to ensure that a frame may be
    /// accepted.
    pub fn buffer(&mut self, item: Frame<B>) -> Result<(), UserError> {
        self.encoder.buffer(item)
    }

    /// Flush buffered data to the wire
    pub fn flush(&mut self, cx: &mut Context) -> Poll<io::Result<()>> {
        let span = tracing::trace_span!("FramedWrite::flush");
        let _e = span.enter();

        loop {
            while !self.encoder.is_empty() {
                let n = match self.encoder.next {
                    Some(Next::Data(ref mut frame)) => {
                        tracing::trace!(queued_data_frame = true);
                        let mut buf = (&mut self.encoder.buf).chain(frame.payload_mut());
                        ready!(poll_write_buf(Pin::new(&mut self.inner), cx, &mut buf))?
                    }
                    _ => {
                        tracing::trace!(queued_data_frame = false);
                        ready!(poll_write_buf(
                            Pin::new(&mut self.inner),
                            cx,
                            &mut self.encoder.buf
                        ))?
                    }
                };
                if n == 0 {
                    // No progress is possible; retrying would busy-loop.
                    tracing::trace!("write returned zero, but non-zero bytes remaining");
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
            }

            match self.encoder.unset_frame() {
                ControlFlow::Continue => (),
                ControlFlow::Break => break,
            }
        }

        tracing::trace!("flushing buffer");
        // Flush the upstream
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;

        Poll::Ready(Ok(()))
    }

    /// Close the codec
    pub fn shutdown(&mut self, cx: &mut Context) -> Poll<io::Result<()>> {
        if !self.final_flush_done {
            ready!(self.flush(cx))?;
            self.final_flush_done = true;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[must_use]
enum ControlFlow {
    Continue,
    Break,
}

impl<B> Encoder<B>
where
    B: Buf,
{
    fn unset_frame(&mut self) -> ControlFlow {
        // Clear internal buffer
        self.buf.set_position(0);
        self.buf.get_mut().clear();

        // The data frame has been written, so unset it
        match self.next.take() {
            Some(Next::Data(frame)) => {
                self.last_data_frame = Some(frame);
                debug_assert!(self.is_empty());
                self.release();
                ControlFlow::Break
            }
            Some(Next::Continuation(frame)) => {
                // Buffer the continuation frame, then try to write again
                let mut buf = limited_write_buf!(self);
                if let Some(continuation) = frame.encode(&mut buf) {
                    self.next = Some(Next::Continuation(continuation));
                }
                ControlFlow::Continue
            }
            None => {
                self.release();
                ControlFlow::Break
            }
        }
    }

    /// EDGE-PATCH (second): everything buffered is written, so the buffer
    /// (16 KiB) is released; `buffer` takes a new one for the next frame.
    /// An idle connection holds no write buffer.
    fn release(&mut self) {
        if self.buf.get_ref().capacity() != 0 {
            *self.buf.get_mut() = BytesMut::new();
        }
    }

    fn buffer(&mut self, item: Frame<B>) -> Result<(), UserError> {
        // Ensure that we have enough capacity to accept the write.
        assert!(self.has_capacity());
        // EDGE-PATCH (second): the buffer released when all was written.
        if self.buf.get_ref().capacity() == 0 {
            *self.buf.get_mut() = BytesMut::with_capacity(DEFAULT_BUFFER_CAPACITY);
        }
        let span = tracing::trace_span!("FramedWrite::buffer", frame = ?item);
        let _e = span.enter();

        tracing::debug!(frame = ?item, "send");

        match item {
            Frame::Data(mut v) => {
                // Ensure that the payload is not greater than the max frame.
                let len = v.payload().remaining();

                if len > self.max_frame_size() {
                    return Err(PayloadTooBig);
                }

                // EDGE-PATCH (first): copied, not chained, when it is small
                // and fits the spare room (see COPY_WHEN_ROOM).
                let spare = self.buf.get_ref().capacity() - self.buf.get_ref().len();
                let copy = len <= COPY_WHEN_ROOM && len + frame::HEADER_LEN <= spare;
                if len >= self.chain_threshold && !copy {
                    let head = v.head();

                    // Encode the frame head to the buffer
                    head.encode(len, self.buf.get_mut());

                    if self.buf.get_ref().remaining() < self.chain_threshold {
                        let extra_bytes = self.chain_threshold - self.buf.remaining();
                        self.buf.get_mut().put(v.payload_mut().take(extra_bytes));
                    }

                    // Save the data frame
                    self.next = Some(Next::Data(v));
                } else {
                    v.encode_chunk(self.buf.get_mut());

                    // The chunk has been fully encoded, so there is no need to
                    // keep it around
                    assert_eq!(v.payload().remaining(), 0, "chunk not fully encoded");

                    // Save off the last frame...
                    self.last_data_frame = Some(v);
                }
            }
            Frame::Headers(v) => {
                let mut buf = limited_write_buf!(self);
                if let Some(continuation) = (*v).encode(&mut self.hpack, &mut buf) {
                    self.next = Some(Next::Continuation(continuation));
                }
            }
            Frame::PushPromise(v) => {
                let mut buf = limited_write_buf!(self);
                if let Some(continuation) = (*v).encode(&mut self.hpack, &mut buf) {
                    self.next = Some(Next::Continuation(continuation));
                }
            }
            Frame::Settings(v) => {
                v.encode(self.buf.get_mut());
                tracing::trace!(rem = self.buf.remaining(), "encoded settings");
            }
            Frame::GoAway(v) => {
                v.encode(self.buf.get_mut());
                tracing::trace!(rem = self.buf.remaining(), "encoded go_away");
            }
            Frame::Ping(v) => {
                v.encode(self.buf.get_mut());
                tracing::trace!(rem = self.buf.remaining(), "encoded ping");
            }
            Frame::WindowUpdate(v) => {
                v.encode(self.buf.get_mut());
                tracing::trace!(rem = self.buf.remaining(), "encoded window_update");
            }

            Frame::Priority(_) => {
                /*
                v.encode(self.buf.get_mut());
                tracing::trace!("encoded priority; rem={:?}", self.buf.remaining());
                */
                unimplemented!();
            }
            Frame::Reset(v) => {
                v.encode(self.buf.get_mut());
                tracing::trace!(rem = self.buf.remaining(), "encoded reset");
            }
        }

        Ok(())
    }

    fn has_capacity(&self) -> bool {
        // EDGE-PATCH (second): a released buffer (no capacity) is taken
        // anew, whole, by `buffer`.
        let buf = self.buf.get_ref();
        self.next.is_none()
            && (buf.capacity() == 0 || buf.capacity() - buf.len() >= self.min_buffer_capacity)
    }

    fn is_empty(&self) -> bool {
        match self.next {
            Some(Next::Data(ref frame)) => !frame.payload().has_remaining(),
            _ => !self.buf.has_remaining(),
        }
    }
}

impl<B> Encoder<B> {
    fn max_frame_size(&self) -> usize {
        self.max_frame_size as usize
    }
}

impl<T, B> FramedWrite<T, B> {
    /// Returns the max frame size that can be sent
    pub fn max_frame_size(&self) -> usize {
        self.encoder.max_frame_size()
    }

    /// Set the peer's max frame size.
    pub fn set_max_frame_size(&mut self, val: usize) {
        assert!(val <= frame::MAX_MAX_FRAME_SIZE as usize);
        self.encoder.max_frame_size = val as FrameSize;
    }

    /// Set the peer's header table size.
    pub fn set_header_table_size(&mut self, val: usize) {
        self.encoder.hpack.update_max_size(val);
    }

    /// Retrieve the last data frame that has been sent
    pub fn take_last_data_frame(&mut self) -> Option<frame::Data<B>> {
        self.encoder.last_data_frame.take()
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// EDGE-PATCH third: whether the header blocks sent use HPACK's
    /// dynamic table (`hpack::Table::set_indexing`).
    pub fn set_header_indexing(&mut self, on: bool) {
        self.encoder.hpack.set_indexing(on);
    }
}

impl<T: AsyncRead + Unpin, B> AsyncRead for FramedWrite<T, B> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

// We never project the Pin to `B`.
impl<T: Unpin, B> Unpin for FramedWrite<T, B> {}

#[cfg(feature = "unstable")]
mod unstable {
    use super::*;

    impl<T, B> FramedWrite<T, B> {
        pub fn get_ref(&self) -> &T {
            &self.inner
        }
    }
}

/// EDGE-PATCH (first): DATA frames that fit the buffer leave together.
#[cfg(test)]
mod edge_tests {
    use super::*;
    use crate::frame::{Data, StreamId};
    use bytes::Bytes;

    /// Records what each write call was given; takes at most `max` bytes
    /// a call (partial writes).
    struct Writes {
        calls: Vec<Vec<u8>>,
        vectored: bool,
        max: usize,
        /// Every other write call is `Pending` (a socket that is full
        /// now and then).
        stall: bool,
        stalled: bool,
    }

    impl Writes {
        /// Whether this call stalls (`stall`: every other one does).
        fn stalls(&mut self) -> bool {
            if self.stall {
                self.stalled = !self.stalled;
            }
            self.stalled
        }
    }

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.stalls() {
                return Poll::Pending;
            }
            let n = buf.len().min(self.max);
            self.calls.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            if self.stalls() {
                return Poll::Pending;
            }
            let mut all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            all.truncate(self.max);
            let n = all.len();
            self.calls.push(all);
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Sends one DATA frame of each size (stream 1, 3, 5, ...; the last
    /// ends its stream) as a connection would: `poll_ready`, `buffer`,
    /// then one `flush`. Returns the write calls.
    fn send(sizes: &[usize], vectored: bool) -> Vec<Vec<u8>> {
        send_partial(sizes, vectored, usize::MAX)
    }

    /// [`send`] to a writer that takes at most `max` bytes a call. The
    /// buffer never grows past its 16 KiB: a copy is made only into room.
    fn send_partial(sizes: &[usize], vectored: bool, max: usize) -> Vec<Vec<u8>> {
        let mut w: FramedWrite<Writes, Bytes> = FramedWrite::new(Writes {
            calls: Vec::new(),
            vectored,
            max,
            stall: false,
            stalled: false,
        });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut expected = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let id = 1 + 2 * i as u32;
            let payload: Vec<u8> = (0..size).map(|b| (b as u8).wrapping_add(i as u8)).collect();
            let end = i + 1 == sizes.len();
            let mut frame = Data::new(StreamId::from(id), Bytes::from(payload.clone()));
            frame.set_end_stream(end);
            expected.extend_from_slice(&(size as u32).to_be_bytes()[1..]);
            expected.extend_from_slice(&[0, u8::from(end)]);
            expected.extend_from_slice(&id.to_be_bytes());
            expected.extend_from_slice(&payload);
            assert!(w.poll_ready(&mut cx).is_ready());
            w.buffer(frame.into()).unwrap();
            assert_eq!(w.encoder.buf.get_ref().capacity(), DEFAULT_BUFFER_CAPACITY);
        }
        assert!(w.flush(&mut cx).is_ready());
        // EDGE-PATCH (second): all written, the buffer is released.
        assert_eq!(w.encoder.buf.get_ref().capacity(), 0);
        assert!(w.has_capacity());
        let calls = std::mem::take(&mut w.get_mut().calls);
        assert_eq!(calls.concat(), expected, "sizes {sizes:?}, vectored {vectored}");
        calls
    }

    #[test]
    fn small_data_frames_of_many_streams_leave_in_one_write() {
        for vectored in [false, true] {
            // Ten 1 KiB responses (the case that wrote ten times), sizes
            // around both chain thresholds and the copy limit, a mix.
            for sizes in [
                vec![1024; 10],
                vec![255, 256, 257, 1023, 1024, 1025],
                vec![4096, 4096, 4096],
                vec![1, 4096, 300, 2000, 0, 1024],
            ] {
                assert_eq!(send(&sizes, vectored).len(), 1, "sizes {sizes:?}");
            }
        }
    }

    #[test]
    fn frames_beyond_the_copy_limit_or_the_room_are_chained_as_before() {
        for vectored in [false, true] {
            // Over the copy limit: chained, one flush each (more writes
            // than frames without vectored I/O, head and payload apart).
            let calls = send(&[4097, 4097], vectored);
            assert!(calls.len() >= 2, "{} writes", calls.len());
            let calls = send(&[16_384, 16_384, 16_384], vectored);
            assert!(calls.len() >= 3, "{} writes", calls.len());
            // Four 4 KiB frames overflow the 16 KiB buffer: the fourth is
            // chained behind the first three (its bytes checked by `send`),
            // a write of its own where there is no vectored I/O.
            let calls = send(&[4096; 4], vectored);
            assert!(vectored || calls.len() >= 2, "{} writes", calls.len());
        }
    }

    #[test]
    fn partial_writes_keep_every_byte_in_order() {
        for vectored in [false, true] {
            for max in [1, 7, 100, 1033, 5000] {
                for sizes in [vec![1024; 10], vec![300, 4096, 5000, 1, 16_384, 2000]] {
                    let calls = send_partial(&sizes, vectored, max);
                    assert!(calls.iter().all(|c| c.len() <= max));
                }
            }
        }
    }

    /// As a connection drives it over a socket that is full now and then:
    /// frames are buffered while a partial write is still out (one flush
    /// attempt after each frame, every other write call `Pending`), and
    /// every byte leaves once, in order; the buffer never grows.
    #[test]
    fn frames_buffered_behind_a_stalled_partial_write_keep_their_order() {
        for vectored in [false, true] {
            for max in [1, 9, 100, 1033, 5000, usize::MAX] {
                for sizes in [
                    vec![1024; 12],
                    vec![300, 4096, 5000, 1, 16_384, 2000, 0, 4096, 4097],
                    vec![4096; 6],
                ] {
                    let mut w: FramedWrite<Writes, Bytes> = FramedWrite::new(Writes {
                        calls: Vec::new(),
                        vectored,
                        max,
                        stall: true,
                        stalled: false,
                    });
                    let mut cx = Context::from_waker(std::task::Waker::noop());
                    let mut expected = Vec::new();
                    for (i, &size) in sizes.iter().enumerate() {
                        let id = 1 + 2 * i as u32;
                        let payload: Vec<u8> =
                            (0..size).map(|b| (b as u8).wrapping_add(i as u8)).collect();
                        let end = i + 1 == sizes.len();
                        let mut frame = Data::new(StreamId::from(id), Bytes::from(payload.clone()));
                        frame.set_end_stream(end);
                        expected.extend_from_slice(&(size as u32).to_be_bytes()[1..]);
                        expected.extend_from_slice(&[0, u8::from(end)]);
                        expected.extend_from_slice(&id.to_be_bytes());
                        expected.extend_from_slice(&payload);
                        // Bounded: each call that is not stalled moves bytes.
                        let mut tries = 0;
                        while w.poll_ready(&mut cx).is_pending() {
                            tries += 1;
                            assert!(tries < 1_000_000, "poll_ready never ready");
                        }
                        w.buffer(frame.into()).unwrap();
                        assert_eq!(w.encoder.buf.get_ref().capacity(), DEFAULT_BUFFER_CAPACITY);
                        // One attempt: a partial write may be left out.
                        let _ = w.flush(&mut cx);
                    }
                    let mut tries = 0;
                    while w.flush(&mut cx).is_pending() {
                        tries += 1;
                        assert!(tries < 1_000_000, "flush never done");
                    }
                    // EDGE-PATCH (second): all written, the buffer is released.
                    assert_eq!(w.encoder.buf.get_ref().capacity(), 0);
                    assert!(w.has_capacity());
                    let calls = std::mem::take(&mut w.get_mut().calls);
                    assert_eq!(
                        calls.concat(),
                        expected,
                        "sizes {sizes:?}, vectored {vectored}, max {max}"
                    );
                }
            }
        }
    }
}
