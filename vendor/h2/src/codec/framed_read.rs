use crate::frame::{self, Frame, Kind, Reason};
use crate::frame::{
    DEFAULT_MAX_FRAME_SIZE, DEFAULT_SETTINGS_HEADER_TABLE_SIZE, MAX_MAX_FRAME_SIZE,
};
use crate::proto::Error;

use crate::hpack;

use futures_core::Stream;

use bytes::{Buf, BufMut, BytesMut};

use std::cell::Cell;
use std::io;

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::poll_read_buf;

// 16 MB "sane default" taken from golang http2
const DEFAULT_SETTINGS_MAX_HEADER_LIST_SIZE: usize = 16 << 20;

#[derive(Debug)]
pub struct FramedRead<T> {
    inner: RawFrames<T>,

    decoder: FrameDecoder,
}

/// EDGE-PATCH third: the frames of a connection, whole and undecoded
/// (head and payload), cut from what is read by their 24-bit length as
/// tokio-util's `LengthDelimitedCodec` cut them (length field of 3 bytes,
/// 9 bytes of head, a length above the maximum a `FRAME_SIZE_ERROR`).
///
/// No buffer is held while no frame is partly read: an idle connection
/// holds none (tokio-util's reader kept 8 KiB for the connection's life).
/// Every allocation is the size of what it holds, so a frame h2 keeps (a
/// DATA payload the application has not read, a header value cut from a
/// HEADERS payload) pins no more than the bytes that came with it:
/// - a read while no frame's head is whole goes into a per-thread scratch
///   block, and what came is kept in an allocation of its size (with the
///   part of a head held before it);
/// - once a frame's head is here, the rest of that frame is read straight
///   into an allocation of the frame's size (no copy of its payload, and
///   nothing past the frame is read into it).
///
/// A buffer is never grown in place: growing a shared one takes at least
/// the size the first one had (bytes' `original_capacity`), which let a
/// client make each small frame pin 8 KiB.
#[derive(Debug)]
struct RawFrames<T> {
    io: T,
    /// Bytes read and not yet cut into frames.
    buffer: BytesMut,
    /// The largest payload accepted, in bytes (SETTINGS_MAX_FRAME_SIZE).
    max_frame_size: usize,
    /// An error was returned; the next poll ends the stream.
    errored: bool,
}

/// EDGE-PATCH third: the per-thread block a read lands in while no
/// frame's head is whole (bytes). 8 KiB, tokio-util's reader's buffer.
const READ_BLOCK: usize = 8 * 1024;

thread_local! {
    static READ_SCRATCH: Cell<Option<Box<[u8]>>> = const { Cell::new(None) };
}

/// The payload length a frame's head gives (its first 3 bytes).
fn payload_len(head: &[u8]) -> usize {
    (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2])
}

impl<T> RawFrames<T> {
    fn new(io: T) -> Self {
        RawFrames {
            io,
            buffer: BytesMut::new(),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE as usize,
            errored: false,
        }
    }

    /// Cuts the next whole frame off the held bytes; `None` if they hold
    /// none yet.
    fn split_frame(&mut self) -> Result<Option<BytesMut>, Error> {
        let held = self.buffer.len();
        if held < frame::HEADER_LEN {
            return Ok(None);
        }
        let payload = payload_len(&self.buffer);
        if payload > self.max_frame_size {
            return Err(Error::library_go_away(Reason::FRAME_SIZE_ERROR));
        }
        let whole = frame::HEADER_LEN + payload;
        if held < whole {
            return Ok(None);
        }
        let frame = self.buffer.split_to(whole);
        if self.buffer.is_empty() {
            // What is left is the empty tail of the allocation, which the
            // frames cut from it keep as long as they live.
            self.buffer = BytesMut::new();
        }
        Ok(Some(frame))
    }
}

impl<T: AsyncRead + Unpin> RawFrames<T> {
    /// Reads more: the number of bytes read, 0 at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let held = self.buffer.len();
        if held >= frame::HEADER_LEN {
            // The rest of this frame, straight into an allocation of its
            // size (`split_frame` has checked the length).
            let whole = frame::HEADER_LEN + payload_len(&self.buffer);
            if self.buffer.capacity() < whole {
                let mut sized = BytesMut::with_capacity(whole);
                sized.extend_from_slice(&self.buffer);
                self.buffer = sized;
            }
            let room = whole - held;
            let mut rest = (&mut self.buffer).limit(room);
            return poll_read_buf(Pin::new(&mut self.io), cx, &mut rest);
        }
        let mut scratch = READ_SCRATCH
            .with(Cell::take)
            .unwrap_or_else(|| vec![0; READ_BLOCK].into_boxed_slice());
        let mut read = ReadBuf::new(&mut scratch);
        let polled = Pin::new(&mut self.io).poll_read(cx, &mut read);
        let n = read.filled().len();
        if let Poll::Ready(Ok(())) = polled {
            if n > 0 {
                let mut kept = BytesMut::with_capacity(held + n);
                kept.extend_from_slice(&self.buffer);
                kept.extend_from_slice(read.filled());
                self.buffer = kept;
            }
        }
        READ_SCRATCH.with(|s| s.set(Some(scratch)));
        polled.map_ok(|()| n)
    }

    fn poll_next_raw(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<BytesMut, Error>>> {
        if self.errored {
            self.errored = false;
            return Poll::Ready(None);
        }
        loop {
            match self.split_frame() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(e) => {
                    self.errored = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) if self.buffer.is_empty() => return Poll::Ready(None),
                Ok(0) => {
                    self.errored = true;
                    let e = io::Error::other("bytes remaining on stream");
                    return Poll::Ready(Some(Err(e.into())));
                }
                Ok(_) => {}
                Err(e) => {
                    self.errored = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}

#[derive(Debug)]
struct FrameDecoder {
    // hpack decoder state
    hpack: hpack::Decoder,

    max_header_list_size: usize,

    max_continuation_frames: usize,

    /// EDGE-PATCH third: boxed (336 bytes, held inline by every
    /// connection, used only while a header block spans CONTINUATION
    /// frames).
    partial: Option<Box<Partial>>,
}

/// Partially loaded headers frame
#[derive(Debug)]
struct Partial {
    /// Empty frame
    frame: Continuable,

    /// Partial header payload
    buf: BytesMut,

    continuation_frames_count: usize,
}

#[derive(Debug)]
enum Continuable {
    Headers(frame::Headers),
    PushPromise(frame::PushPromise),
}

impl<T> FramedRead<T> {
    pub fn new(io: T) -> FramedRead<T> {
        let inner = RawFrames::new(io);
        let decoder = FrameDecoder::new(inner.max_frame_size);
        FramedRead { inner, decoder }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner.io
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner.io
    }

    /// Returns the current max frame size setting
    #[inline]
    pub fn max_frame_size(&self) -> usize {
        self.inner.max_frame_size
    }

    /// Updates the max frame size setting.
    ///
    /// Must be within 16,384 and 16,777,215.
    #[inline]
    pub fn set_max_frame_size(&mut self, val: usize) {
        assert!(DEFAULT_MAX_FRAME_SIZE as usize <= val && val <= MAX_MAX_FRAME_SIZE as usize);
        self.inner.max_frame_size = val;
        // Update max CONTINUATION frames too, since its based on this
        self.decoder.set_max_frame_size(val);
    }

    /// Update the max header list size setting.
    #[inline]
    pub fn set_max_header_list_size(&mut self, val: usize) {
        self.decoder
            .set_max_header_list_size(val, self.max_frame_size());
    }

    /// Update the header table size setting.
    #[inline]
    pub fn set_header_table_size(&mut self, val: usize) {
        self.decoder.set_header_table_size(val);
    }
}

fn calc_max_continuation_frames(header_max: usize, frame_max: usize) -> usize {
    // At least this many frames needed to use max header list size
    let min_frames_for_list = (header_max / frame_max).max(1);
    // Some padding for imperfectly packed frames
    // 25% without floats
    let padding = min_frames_for_list >> 2;
    min_frames_for_list.saturating_add(padding).max(5)
}

impl FrameDecoder {
    fn new(max_frame_size: usize) -> Self {
        let max_header_list_size = DEFAULT_SETTINGS_MAX_HEADER_LIST_SIZE;
        FrameDecoder {
            hpack: hpack::Decoder::new(DEFAULT_SETTINGS_HEADER_TABLE_SIZE),
            max_header_list_size,
            max_continuation_frames: calc_max_continuation_frames(
                max_header_list_size,
                max_frame_size,
            ),
            partial: None,
        }
    }

    fn set_max_frame_size(&mut self, val: usize) {
        self.max_continuation_frames = calc_max_continuation_frames(self.max_header_list_size, val);
    }

    fn set_max_header_list_size(&mut self, val: usize, max_frame_size: usize) {
        self.max_header_list_size = val;
        // Update max CONTINUATION frames too, since its based on this
        self.max_continuation_frames = calc_max_continuation_frames(val, max_frame_size);
    }

    fn set_header_table_size(&mut self, val: usize) {
        self.hpack.queue_size_update(val);
    }

    fn decode(&mut self, bytes: BytesMut) -> Result<Option<Frame>, Error> {
        decode_frame(self, bytes)
    }
}

/// Decodes a frame.
///
/// This function is intentionally de-generified and outlined because it is very large.
fn decode_frame(decoder: &mut FrameDecoder, mut bytes: BytesMut) -> Result<Option<Frame>, Error> {
    let span = tracing::trace_span!("FramedRead::decode_frame", offset = bytes.len());
    let _e = span.enter();

    tracing::trace!("decoding frame from {}B", bytes.len());

    // Parse the head
    let head = frame::Head::parse(&bytes);

    if decoder.partial.is_some() && head.kind() != Kind::Continuation {
        proto_err!(conn: "expected CONTINUATION, got {:?}", head.kind());
        return Err(Error::library_go_away(Reason::PROTOCOL_ERROR));
    }

    let kind = head.kind();

    tracing::trace!(frame.kind = ?kind);

    macro_rules! header_block {
        ($frame:ident, $head:ident, $bytes:ident) => ({
            // Drop the frame header
            $bytes.advance(frame::HEADER_LEN);

            // Parse the header frame w/o parsing the payload
            let (mut frame, mut payload) = match frame::$frame::load($head, $bytes) {
                Ok(res) => res,
                Err(frame::Error::InvalidDependencyId) => {
                    proto_err!(stream: "invalid HEADERS dependency ID");
                    // A stream cannot depend on itself. An endpoint MUST
                    // treat this as a stream error (Section 5.4.2) of type
                    // `PROTOCOL_ERROR`.
                    return Err(Error::library_reset($head.stream_id(), Reason::PROTOCOL_ERROR));
                },
                Err(e) => {
                    proto_err!(conn: "failed to load frame; err={:?}", e);
                    return Err(Error::library_go_away(Reason::PROTOCOL_ERROR));
                }
            };

            let is_end_headers = frame.is_end_headers();

            // Load the HPACK encoded headers
            match frame.load_hpack(&mut payload, decoder.max_header_list_size, &mut decoder.hpack) {
                Ok(_) => {},
                Err(frame::Error::Hpack(hpack::DecoderError::NeedMore(_))) if !is_end_headers => {},
                Err(frame::Error::MalformedMessage) => {
                    let id = $head.stream_id();
                    proto_err!(stream: "malformed header block; stream={:?}", id);
                    return Err(Error::library_reset(id, Reason::PROTOCOL_ERROR));
                },
                Err(frame::Error::HeaderListWayTooLarge) => {
                    proto_err!(conn: "decoded header list size over abuse limit");
                    return Err(Error::library_go_away_data(
                        Reason::ENHANCE_YOUR_CALM,
                        "header_list_way_too_large",
                    ));
                },
                Err(e) => {
                    proto_err!(conn: "failed HPACK decoding; err={:?}", e);
                    return Err(Error::library_go_away(Reason::PROTOCOL_ERROR));
                }
            }

            if is_end_headers {
                frame.into()
            } else {
                tracing::trace!("loaded partial header block");
                // Defer returning the frame
                decoder.partial = Some(Box::new(Partial {
                    frame: Continuable::$frame(frame),
                    buf: payload,
                    continuation_frames_count: 0,
                }));

                return Ok(None);
            }
        });
    }

    let frame = match kind {
        Kind::Settings => {
            let res = frame::Settings::load(head, &bytes[frame::HEADER_LEN..]);

            res.map_err(|e| {
                proto_err!(conn: "failed to load SETTINGS frame; err={:?}", e);
                Error::library_go_away(Reason::PROTOCOL_ERROR)
            })?
            .into()
        }
        Kind::Ping => {
            let res = frame::Ping::load(head, &bytes[frame::HEADER_LEN..]);

            res.map_err(|e| {
                proto_err!(conn: "failed to load PING frame; err={:?}", e);
                Error::library_go_away(Reason::PROTOCOL_ERROR)
            })?
            .into()
        }
        Kind::WindowUpdate => {
            let res = frame::WindowUpdate::load(head, &bytes[frame::HEADER_LEN..]);

            res.map_err(|e| {
                proto_err!(conn: "failed to load WINDOW_UPDATE frame; err={:?}", e);
                Error::library_go_away(Reason::PROTOCOL_ERROR)
            })?
            .into()
        }
        Kind::Data => {
            bytes.advance(frame::HEADER_LEN);
            let res = frame::Data::load(head, bytes.freeze());

            // TODO: Should this always be connection level? Probably not...
            res.map_err(|e| {
                proto_err!(conn: "failed to load DATA frame; err={:?}", e);
                Error::library_go_away(Reason::PROTOCOL_ERROR)
            })?
            .into()
        }
        Kind::Headers => header_block!(Headers, head, bytes),
        Kind::Reset => {
            let res = frame::Reset::load(head, &bytes[frame::HEADER_LEN..]);
            res.map_err(|e| {
                proto_err!(conn: "failed to load RESET frame; err={:?}", e);
                Error::library_go_away(Reason::PROTOCOL_ERROR)
            })?
            .into()
        }
        Kind::GoAway => {
            let res = frame::GoAway::load(head, &bytes[frame::HEADER_LEN..]);
            res.map_err(|e| {
                proto_err!(conn: "failed to load GO_AWAY frame; err={:?}", e);
                Error::library_go_away(Reason::PROTOCOL_ERROR)
            })?
            .into()
        }
        Kind::PushPromise => header_block!(PushPromise, head, bytes),
        Kind::Priority => {
            if head.stream_id() == 0 {
                // Invalid stream identifier
                proto_err!(conn: "invalid stream ID 0");
                return Err(Error::library_go_away(Reason::PROTOCOL_ERROR));
            }

            match frame::Priority::load(head, &bytes[frame::HEADER_LEN..]) {
                Ok(frame) => frame.into(),
                Err(frame::Error::InvalidDependencyId) => {
                    // A stream cannot depend on itself. An endpoint MUST
                    // treat this as a stream error (Section 5.4.2) of type
                    // `PROTOCOL_ERROR`.
                    let id = head.stream_id();
                    proto_err!(stream: "PRIORITY invalid dependency ID; stream={:?}", id);
                    return Err(Error::library_reset(id, Reason::PROTOCOL_ERROR));
                }
                Err(e) => {
                    proto_err!(conn: "failed to load PRIORITY frame; err={:?};", e);
                    return Err(Error::library_go_away(Reason::PROTOCOL_ERROR));
                }
            }
        }
        Kind::Continuation => {
            let is_end_headers = (head.flag() & 0x4) == 0x4;

            let mut partial = match decoder.partial.take() {
                Some(partial) => partial,
                None => {
                    proto_err!(conn: "received unexpected CONTINUATION frame");
                    return Err(Error::library_go_away(Reason::PROTOCOL_ERROR));
                }
            };

            // The stream identifiers must match
            if partial.frame.stream_id() != head.stream_id() {
                proto_err!(conn: "CONTINUATION frame stream ID does not match previous frame stream ID");
                return Err(Error::library_go_away(Reason::PROTOCOL_ERROR));
            }

            // Check for CONTINUATION flood
            if is_end_headers {
                partial.continuation_frames_count = 0;
            } else {
                let cnt = partial.continuation_frames_count + 1;
                if cnt > decoder.max_continuation_frames {
                    tracing::debug!(
                        "too_many_continuations, max = {}",
                        decoder.max_continuation_frames
                    );
                    return Err(Error::library_go_away_data(
                        Reason::ENHANCE_YOUR_CALM,
                        "too_many_continuations",
                    ));
                } else {
                    partial.continuation_frames_count = cnt;
                }
            }

            // Extend the buf
            if partial.buf.is_empty() {
                partial.buf = bytes.split_off(frame::HEADER_LEN);
            } else {
                if partial.frame.is_over_size() {
                    // If there was left over bytes previously, they may be
                    // needed to continue decoding, even though we will
                    // be ignoring this frame. This is done to keep the HPACK
                    // decoder state up-to-date.
                    //
                    // Still, we need to be careful, because if a malicious
                    // attacker were to try to send a gigantic string, such
                    // that it fits over multiple header blocks, we could
                    // grow memory uncontrollably again, and that'd be a shame.
                    //
                    // Instead, we use a simple heuristic to determine if
                    // we should continue to ignore decoding, or to tell
                    // the attacker to go away.
                    if partial.buf.len() + bytes.len() > decoder.max_header_list_size {
                        proto_err!(conn: "CONTINUATION frame header block size over ignorable limit");
                        return Err(Error::library_go_away(Reason::COMPRESSION_ERROR));
                    }
                }
                partial.buf.extend_from_slice(&bytes[frame::HEADER_LEN..]);
            }

            match partial.frame.load_hpack(
                &mut partial.buf,
                decoder.max_header_list_size,
                &mut decoder.hpack,
            ) {
                Ok(_) => {}
                Err(frame::Error::Hpack(hpack::DecoderError::NeedMore(_))) if !is_end_headers => {}
                Err(frame::Error::MalformedMessage) => {
                    let id = head.stream_id();
                    proto_err!(stream: "malformed CONTINUATION frame; stream={:?}", id);
                    return Err(Error::library_reset(id, Reason::PROTOCOL_ERROR));
                }
                Err(frame::Error::HeaderListWayTooLarge) => {
                    proto_err!(conn: "decoded CONTINUATION header list size over abuse limit");
                    return Err(Error::library_go_away_data(
                        Reason::ENHANCE_YOUR_CALM,
                        "header_list_way_too_large",
                    ));
                }
                Err(e) => {
                    proto_err!(conn: "failed HPACK decoding; err={:?}", e);
                    return Err(Error::library_go_away(Reason::PROTOCOL_ERROR));
                }
            }

            if is_end_headers {
                partial.frame.into()
            } else {
                decoder.partial = Some(partial);
                return Ok(None);
            }
        }
        Kind::Unknown => {
            // Unknown frames are ignored
            return Ok(None);
        }
    };

    Ok(Some(frame))
}

impl<T> Stream for FramedRead<T>
where
    T: AsyncRead + Unpin,
{
    type Item = Result<Frame, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let span = tracing::trace_span!("FramedRead::poll_next");
        let _e = span.enter();
        loop {
            tracing::trace!("poll");
            let bytes = match ready!(self.inner.poll_next_raw(cx)) {
                Some(Ok(bytes)) => bytes,
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => return Poll::Ready(None),
            };

            tracing::trace!(read.bytes = bytes.len());
            if let Some(frame) = self.decoder.decode(bytes)? {
                tracing::debug!(?frame, "received");
                return Poll::Ready(Some(Ok(frame)));
            }
        }
    }
}

// ===== impl Continuable =====

impl Continuable {
    fn stream_id(&self) -> frame::StreamId {
        match *self {
            Continuable::Headers(ref h) => h.stream_id(),
            Continuable::PushPromise(ref p) => p.stream_id(),
        }
    }

    fn is_over_size(&self) -> bool {
        match *self {
            Continuable::Headers(ref h) => h.is_over_size(),
            Continuable::PushPromise(ref p) => p.is_over_size(),
        }
    }

    fn load_hpack(
        &mut self,
        src: &mut BytesMut,
        max_header_list_size: usize,
        decoder: &mut hpack::Decoder,
    ) -> Result<(), frame::Error> {
        match *self {
            Continuable::Headers(ref mut h) => h.load_hpack(src, max_header_list_size, decoder),
            Continuable::PushPromise(ref mut p) => p.load_hpack(src, max_header_list_size, decoder),
        }
    }
}

impl<T> From<Continuable> for Frame<T> {
    fn from(cont: Continuable) -> Self {
        match cont {
            Continuable::Headers(mut headers) => {
                headers.set_end_headers();
                headers.into()
            }
            Continuable::PushPromise(mut push) => {
                push.set_end_headers();
                push.into()
            }
        }
    }
}

#[cfg(test)]
mod edge_tests {
    use super::*;
    use crate::codec::FramedWrite;
    use bytes::Bytes;
    use std::alloc::{GlobalAlloc, Layout, System};
    use tokio::io::AsyncWrite;
    use tokio_util::codec::length_delimited;

    /// Counts the bytes this thread holds on the heap, so a test can see
    /// what a reader pins.
    struct Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            LIVE.with(|l| l.set(l.get() + layout.size() as isize));
            System.alloc(layout)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.with(|l| l.set(l.get() - layout.size() as isize));
            System.dealloc(ptr, layout)
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    fn live() -> isize {
        LIVE.with(Cell::get)
    }

    /// Hands out `data` in pieces of the next of `steps` bytes (cycled),
    /// `Pending` before each piece; the end of `data` is the end of the
    /// stream.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        steps: Vec<usize>,
        next: usize,
        waited: bool,
    }

    impl Trickle {
        fn new(data: Vec<u8>, steps: Vec<usize>) -> Self {
            Trickle {
                data,
                pos: 0,
                steps,
                next: 0,
                waited: false,
            }
        }
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if !self.waited {
                self.waited = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.waited = false;
            let step = self.steps[self.next % self.steps.len()];
            self.next += 1;
            let n = step.min(buf.remaining()).min(self.data.len() - self.pos);
            buf.put_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, 0]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn reader(io: Trickle) -> FramedRead<FramedWrite<Trickle, Bytes>> {
        FramedRead::new(FramedWrite::new(io))
    }

    /// Polls `f` until it is ready (the trickle wakes itself each time).
    fn ready<R>(mut f: impl FnMut(&mut Context<'_>) -> Poll<R>) -> R {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..1_000_000 {
            if let Poll::Ready(r) = f(&mut cx) {
                return r;
            }
        }
        panic!("no progress");
    }

    /// EDGE-PATCH third: frames kept from many reads pin what those reads
    /// brought, not a buffer each, however the reads cut them: a frame
    /// whole per read, its head cut (the rest then read into an allocation
    /// of the frame's size), its head whole and its payload cut, a byte at
    /// a time. A reader that took a new 8 KiB block per read (a first
    /// version of EDGE-PATCH second) let a client pin 8 KiB with every
    /// 1-byte frame it sent after a pause: 1.6 MB here; one that grew a
    /// held head's buffer in place, about as much (bytes gives a grown
    /// buffer at least its first one's size).
    #[test]
    fn frames_kept_from_many_reads_pin_only_what_came() {
        let count = 200;
        for (payload, steps) in [
            (1, vec![10]),
            (1, vec![5, 5]),
            (1, vec![3]),
            (1, vec![1]),
            (1, vec![9, 1]),
            (10, vec![12, 7]),
            (10, vec![4, 15]),
            (1, vec![8_192, 5, 5]),
        ] {
            let mut wire = Vec::new();
            // A large frame first, so a grown buffer would inherit its size.
            wire.extend(frame(0, 3, &[7; 8_000]));
            for i in 0..count {
                wire.extend(frame(0, 1, &vec![i as u8; payload]));
            }
            let mut read = reader(Trickle::new(wire, steps.clone()));
            let mut kept = Vec::with_capacity(count);
            // The thread's scratch block is taken by the first read.
            match ready(|cx| Pin::new(&mut read).poll_next(cx)) {
                Some(Ok(Frame::Data(d))) => assert_eq!(d.payload().len(), 8_000),
                other => panic!("{other:?}"),
            }
            let before = live();
            while kept.len() < count {
                let f = ready(|cx| Pin::new(&mut read).poll_next(cx));
                kept.push(f.unwrap().unwrap());
            }
            let pinned = live() - before;
            for (i, f) in kept.iter().enumerate() {
                match f {
                    Frame::Data(d) => assert_eq!(d.payload()[..], vec![i as u8; payload][..]),
                    other => panic!("{other:?}"),
                }
            }
            let each = frame::HEADER_LEN + payload + 64;
            assert!(
                pinned < (each * count) as isize,
                "{payload}-byte frames read {steps:?}: {count} pin {pinned} bytes"
            );
        }
    }

    /// EDGE-PATCH third: once every frame read is cut and dropped, a
    /// reader that waits holds no buffer, whether the reads were small
    /// (copied from the scratch block) or filled their room (read in
    /// place); a partly read frame is held until the rest comes.
    #[test]
    fn a_waiting_reader_holds_nothing_once_its_frames_are_gone() {
        for (payload, steps) in [
            (20, vec![29]),
            (20, vec![5, 7]),
            (16_384, vec![8_192]),
            (16_384, vec![9_000, 100]),
            (3, vec![1]),
        ] {
            let wire: Vec<u8> = (0..3).flat_map(|i| frame(0, 1, &vec![i as u8; payload])).collect();
            let total = wire.len();
            let mut read = reader(Trickle::new(wire, steps.clone()));
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut got = 0;
            let mut bytes_seen = 0;
            loop {
                match Pin::new(&mut read).poll_next(&mut cx) {
                    Poll::Ready(Some(Ok(Frame::Data(d)))) => {
                        got += 1;
                        bytes_seen += frame::HEADER_LEN + d.payload().len();
                    }
                    Poll::Ready(None) => break,
                    Poll::Ready(other) => panic!("{other:?}"),
                    Poll::Pending => {
                        let held = read.inner.buffer.len();
                        let whole = bytes_seen + held == read.get_mut().get_mut().pos;
                        assert!(whole, "{payload} {steps:?}: bytes lost");
                        if held == 0 {
                            assert_eq!(read.inner.buffer.capacity(), 0, "{payload} {steps:?}");
                        }
                    }
                }
            }
            assert_eq!((got, bytes_seen), (3, total), "{payload} {steps:?}");
        }
    }

    /// EDGE-PATCH third: the frames cut are tokio-util's
    /// `length_delimited` codec's (as h2 configured it), byte for byte,
    /// over random frame sizes (up to the default maximum) and reads of
    /// random sizes, those that fill the scratch block among them.
    #[test]
    fn frames_are_cut_as_the_length_delimited_codec_cut_them() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for round in 0..300 {
            let mut wire = Vec::new();
            for i in 0..next(12) + 1 {
                let len = match next(4) {
                    0 => next(16),
                    1 => next(300),
                    2 => 16_384 - next(3),
                    _ => next(16_385),
                };
                let payload: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
                wire.extend(frame(next(10) as u8, next(5) as u32, &payload));
            }
            let steps: Vec<usize> = (0..next(5) + 1)
                .map(|_| match next(5) {
                    0 => 1 + next(9),
                    1 => 8_192,
                    2 => 16_393 + next(100),
                    _ => 1 + next(20_000),
                })
                .collect();

            let mut ours = RawFrames::new(Trickle::new(wire.clone(), steps.clone()));
            let mut theirs = length_delimited::Builder::new()
                .big_endian()
                .length_field_length(3)
                .length_adjustment(9)
                .num_skip(0)
                .new_read(Trickle::new(wire.clone(), steps.clone()));
            loop {
                let a = ready(|cx| ours.poll_next_raw(cx));
                let b = ready(|cx| Pin::new(&mut theirs).poll_next(cx));
                match (a, b) {
                    (Some(Ok(a)), Some(Ok(b))) => assert_eq!(a, b, "round {round}"),
                    (None, None) => break,
                    (a, b) => panic!("round {round}: {a:?} against {b:?}"),
                }
            }
        }
    }

    /// EDGE-PATCH third: what ends a connection's frames: a length above
    /// the maximum (FRAME_SIZE_ERROR, also after the maximum is raised
    /// and lowered), the stream ending inside a frame's head or payload (an
    /// error, as tokio-util's "bytes remaining on stream"), or between
    /// frames (the end); after an error, the next poll is the end.
    #[test]
    fn what_ends_the_frames() {
        let big = frame(0, 1, &vec![7; 16_385]);
        let mut read = RawFrames::new(Trickle::new(big.clone(), vec![100]));
        match ready(|cx| read.poll_next_raw(cx)) {
            Some(Err(Error::GoAway(_, Reason::FRAME_SIZE_ERROR, _))) => {}
            other => panic!("{other:?}"),
        }
        assert!(ready(|cx| read.poll_next_raw(cx)).is_none());

        let mut read = RawFrames::new(Trickle::new(big.clone(), vec![100]));
        read.max_frame_size = 16_385;
        assert_eq!(ready(|cx| read.poll_next_raw(cx)).unwrap().unwrap()[..], big[..]);

        for cut in [1, 5, 8, 9, 10, 100, big.len() - 1] {
            let mut read = RawFrames::new(Trickle::new(big[..cut].to_vec(), vec![3, 4_000]));
            read.max_frame_size = 20_000;
            match ready(|cx| read.poll_next_raw(cx)) {
                Some(Err(Error::Io(_, _))) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
            assert!(ready(|cx| read.poll_next_raw(cx)).is_none(), "cut at {cut}");
        }
        let two: Vec<u8> = [frame(4, 0, &[]), frame(8, 0, &[0, 0, 1, 0])].concat();
        let mut read = RawFrames::new(Trickle::new(two, vec![2]));
        assert_eq!(ready(|cx| read.poll_next_raw(cx)).unwrap().unwrap().len(), 9);
        assert_eq!(ready(|cx| read.poll_next_raw(cx)).unwrap().unwrap().len(), 13);
        assert!(ready(|cx| read.poll_next_raw(cx)).is_none());
    }
}
