//! A thread's spare read buffer of one kind, as nginx keeps one receive
//! buffer per worker: a connection lets its buffer go while it waits for
//! its next request (an idle connection holds none, issue 17's idle
//! target) and the next read on the thread takes it back, where a new
//! buffer per request cost about 450 instructions (an allocation of a few
//! KiB, above the allocator's small sizes, and its free;
//! `benches/callgrind/instr.sh`).

use std::cell::Cell;
use std::thread::LocalKey;

use bytes::BytesMut;

/// One thread-local slot of spare buffers of one kind.
pub(super) type Slot = LocalKey<Cell<Option<BytesMut>>>;

/// Lets go of `buffer` (its bytes are no longer wanted): it becomes the
/// slot's spare if it has `size` bytes of room (`try_reclaim`: room ahead
/// of it, or the whole allocation back when nothing else shares it) and
/// no more than twice that, else it is freed. A spare that shares its
/// allocation with bytes still alive is safe: its room lies past every
/// part split off, and `bytes` moves data back to the start only for an
/// allocation nothing shares. At most one spare per slot and thread.
pub(super) fn give(slot: &'static Slot, mut buffer: BytesMut, size: usize) {
    buffer.clear();
    if buffer.capacity() != 0 && buffer.try_reclaim(size) && buffer.capacity() <= 2 * size {
        // As the thread ends (its locals gone), dropped.
        let _ = slot.try_with(|s| s.set(Some(buffer)));
    }
}

/// An empty buffer with room for `size` bytes: the slot's spare, or a new
/// one.
pub(super) fn take(slot: &'static Slot, size: usize) -> BytesMut {
    match slot.try_with(Cell::take).ok().flatten() {
        Some(mut spare) => {
            spare.reserve(size);
            spare
        }
        None => BytesMut::with_capacity(size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static SLOT: Cell<Option<BytesMut>> = const { Cell::new(None) };
    }

    /// A buffer let go is the next taker's, empty, when it has the room
    /// and is not outsized; a part split off and still alive keeps its
    /// bytes; one slot holds one spare.
    #[test]
    fn a_buffer_let_go_is_the_next_takers_when_it_is_whole_and_not_outsized() {
        let fresh = take(&SLOT, 64);
        assert!(fresh.capacity() >= 64);

        // Whole, emptied: taken back with its bytes gone.
        let mut a = BytesMut::with_capacity(64);
        a.extend_from_slice(b"request");
        let at = a.as_ptr();
        give(&SLOT, a, 64);
        let kept = SLOT.take();
        assert_eq!(kept.as_ref().map(|k| (k.as_ptr(), k.len())), Some((at, 0)));
        SLOT.set(kept);
        let again = take(&SLOT, 64);
        assert_eq!((again.as_ptr(), again.len()), (at, 0));
        assert!(SLOT.take().is_none(), "taken: the slot is empty");

        // A head split off and alive: the spare is the room past it, and
        // the head keeps its bytes.
        let mut b = BytesMut::with_capacity(64);
        b.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = b.split_to(b.len()).freeze();
        give(&SLOT, b, 32);
        let kept = SLOT.take();
        assert!(kept.as_ref().is_some_and(|k| k.capacity() >= 32));
        SLOT.set(kept);
        let mut spare = take(&SLOT, 32);
        spare.extend_from_slice(&[b'x'; 32]);
        assert_eq!(&head[..], b"GET / HTTP/1.1\r\n\r\n");

        // Outsized, or never allocated: freed, not kept.
        give(&SLOT, BytesMut::with_capacity(1024), 64);
        assert!(SLOT.take().is_none());
        give(&SLOT, BytesMut::new(), 64);
        assert!(SLOT.take().is_none());
    }
}
