//! Large bodies in memory mappings of their own (issue 17), so that a RAM
//! hit over plain HTTP/1 can hand the kernel the pages themselves
//! (vmsplice(2) into a pipe, splice(2) into the socket: no copy of each
//! byte into the socket's buffers, as nginx's `sendfile` of its cache
//! files avoids it).
//!
//! The kernel keeps references to those pages until the client has the
//! bytes, past the write that sent them and past the object's eviction.
//! A body on the allocator's heap cannot be sent that way: freed, its
//! bytes are handed to the next allocation and written over while the
//! kernel may still send them. A body here is copied once into an
//! anonymous private mapping made read-only (pingora-core's
//! [`SealedPages`]), is never written again, and is unmapped (never
//! reused) when its last [`Bytes`] and the object go: pages still in the
//! kernel's hands stay as they were until sent.
//!
//! Only bodies of [`MAPPED_MIN`] bytes or more are mapped (a mapping is a
//! system call at fill and at eviction, and rounds up to a page), and at
//! most [`MAPPED_MAX_LIVE`] at once (each is one or more of the process's
//! `vm.max_map_count` areas, 65,530 by default, which the allocator and
//! thread stacks need too); past either, and where mmap fails, the body
//! stays on the heap and is written as before.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytes::{Bytes, BytesMut};
use pingora_core::protocols::l4::splice::SealedPages;

/// Bodies below this many bytes stay on the heap.
pub const MAPPED_MIN: usize = 64 * 1024;

/// Mapped bodies alive at once, at most (at 2 MiB each, 32 GiB).
pub const MAPPED_MAX_LIVE: usize = 16 * 1024;

/// Mapped bodies alive now.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Mapped bodies alive now (for tests and the curious).
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// A stored body's bytes and, when they are in a mapping of their own,
/// that mapping ([`Body::pages`]: its pages may be given to the kernel by
/// reference).
#[derive(Clone, Debug, Default)]
pub struct Body {
    bytes: Bytes,
    pages: Option<Arc<Pages>>,
}

/// A body's mapping, counted in [`LIVE`] and listed in [`REGISTRY`]
/// while it lasts.
#[derive(Debug)]
pub struct Pages(SealedPages);

impl Pages {
    /// The sealed mapping (what `Pipe::fill_from_sealed` takes).
    pub fn sealed(&self) -> &SealedPages {
        &self.0
    }
}

/// The mappings alive, by start address: how a hit finds the mapping of a
/// body (or a slice of one) it holds, without a field in every object
/// (an object is 104 bytes, and most bodies are not mapped). Written at
/// each mapping's making and end, read per hit of 16 KiB or more sent
/// over plain HTTP/1.
static REGISTRY: parking_lot::RwLock<BTreeMap<usize, Weak<Pages>>> =
    parking_lot::RwLock::new(BTreeMap::new());

/// The mapping `bytes` lie within, if they are (part of) a mapped body
/// still alive. Bytes a caller holds are alive, and so is the memory
/// under them: a mapping found alive around them is theirs (live
/// mappings and heap blocks never overlap).
pub fn pages_of(bytes: &[u8]) -> Option<Arc<Pages>> {
    if bytes.is_empty() || LIVE.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let at = bytes.as_ptr() as usize;
    let pages = REGISTRY.read().range(..=at).next_back()?.1.upgrade()?;
    let start = pages.0.as_ptr() as usize;
    (at + bytes.len() <= start + pages.0.len()).then_some(pages)
}

impl Drop for Pages {
    fn drop(&mut self) {
        // Out of the registry while still mapped: no other mapping can
        // have this address until the unmapping that follows this.
        REGISTRY.write().remove(&(self.0.as_ptr() as usize));
        LIVE.fetch_sub(1, Ordering::Relaxed);
        #[cfg(test)]
        tests::UNMAPPED.with(|n| n.set(n.get() + 1));
    }
}

/// What a mapped body's [`Bytes`] are made from: the mapping, shared with
/// the [`Body`].
struct Owner(Arc<Pages>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.0 .0
    }
}

impl Body {
    /// Bytes on the heap (or static): never given by reference.
    pub fn heap(bytes: Bytes) -> Body {
        Body { bytes, pages: None }
    }

    /// The bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The bytes and their mapping, if they are in one of their own.
    pub fn into_parts(self) -> (Bytes, Option<Arc<Pages>>) {
        (self.bytes, self.pages)
    }

    /// The bytes, as a buffer of their own.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The read-only mapping the bytes (and every slice of them) are in,
    /// if they are in one of their own.
    pub fn pages(&self) -> Option<&Arc<Pages>> {
        self.pages.as_ref()
    }

    /// Whether the bytes are in a mapping of their own.
    pub fn is_mapped(&self) -> bool {
        self.pages.is_some()
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A body of `len` bytes that `write` fills, in a mapping of its own when
/// it is long enough and one can be had, else on the heap (zeroed first;
/// `write` runs a second time there if a mapping it filled could not be
/// made read-only). Errors: `write`'s.
pub fn filled<E>(len: usize, mut write: impl FnMut(&mut [u8]) -> Result<(), E>) -> Result<Body, E> {
    if let Some(slot) = Slot::take(len) {
        // A failing or panicking `write` gives the slot back (`Slot`'s drop).
        if let Some(sealed) = SealedPages::new(len, &mut write)? {
            // Counted from now on by the pages (`Pages`' drop).
            std::mem::forget(slot);
            let pages = Arc::new(Pages(sealed));
            REGISTRY
                .write()
                .insert(pages.0.as_ptr() as usize, Arc::downgrade(&pages));
            return Ok(Body {
                bytes: Bytes::from_owner(Owner(pages.clone())),
                pages: Some(pages),
            });
        }
        tracing::debug!(len, "no mapping for a body: kept on the heap");
    }
    let mut buf = BytesMut::zeroed(len);
    write(&mut buf)?;
    Ok(Body::heap(buf.freeze()))
}

/// `parts` one after the other as one body (mapped as [`filled`] says);
/// one part below [`MAPPED_MIN`] is shared, not copied.
pub fn joined(parts: &[Bytes]) -> Body {
    let len: usize = parts.iter().map(Bytes::len).sum();
    match parts {
        [] => return Body::default(),
        [one] if len < MAPPED_MIN => return Body::heap(one.clone()),
        _ => {}
    }
    let copy = |out: &mut [u8]| {
        let mut at = 0;
        for p in parts {
            out[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        Ok::<(), std::convert::Infallible>(())
    };
    match filled(len, copy) {
        Ok(body) => body,
        Err(never) => match never {},
    }
}

/// One of the [`MAPPED_MAX_LIVE`] places in [`LIVE`], given back when
/// dropped unless its mapping was made (then [`Pages`] gives it back).
struct Slot;

impl Slot {
    /// A place for a body of `len` bytes: at least [`MAPPED_MIN`], and
    /// fewer than [`MAPPED_MAX_LIVE`] alive.
    fn take(len: usize) -> Option<Slot> {
        if len < MAPPED_MIN {
            return None;
        }
        if LIVE.fetch_add(1, Ordering::Relaxed) >= MAPPED_MAX_LIVE {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Mappings this thread let go of (other tests map bodies on
        /// their threads at the same time: [`live`] is theirs too).
        pub(super) static UNMAPPED: Cell<usize> = const { Cell::new(0) };
    }

    fn unmapped() -> usize {
        UNMAPPED.with(Cell::get)
    }

    /// Long bodies are mapped and unmapped with their last slice, short
    /// ones shared or on the heap; the bytes are the parts'.
    #[test]
    fn long_bodies_are_mapped_and_unmapped_with_their_last_slice() {
        let short = Bytes::from(vec![7u8; MAPPED_MIN - 1]);
        let body = joined(std::slice::from_ref(&short));
        assert!(!body.is_mapped());
        assert_eq!(body.bytes().as_ptr(), short.as_ptr());

        let before = unmapped();
        let parts: Vec<Bytes> = (0..5u8)
            .map(|i| Bytes::from(vec![i; MAPPED_MIN / 2 + usize::from(i)]))
            .collect();
        let body = joined(&parts);
        assert!(body.is_mapped());
        let want: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(body.bytes()[..], want[..]);
        let pages = body.pages().unwrap();
        assert_eq!(pages.sealed().as_ptr(), body.bytes().as_ptr());
        assert_eq!(pages.sealed().len(), want.len());
        // Found from the bytes, or a slice of them long enough to send so.
        let found = pages_of(body.bytes()).unwrap();
        assert!(Arc::ptr_eq(&found, pages));
        drop(found);
        let tail = body.bytes().slice(want.len() - 20_000..);
        assert!(Arc::ptr_eq(&pages_of(&tail).unwrap(), pages));
        drop(tail);
        assert!(Arc::ptr_eq(
            &pages_of(&body.bytes()[7..100]).unwrap(),
            pages
        ));
        assert!(pages_of(&[]).is_none());
        assert!(pages_of(&want).is_none(), "heap bytes");
        let slice = body.bytes().slice(100..200);
        drop(body);
        assert_eq!(unmapped(), before);
        assert_eq!(slice[..], want[100..200]);
        drop(slice);
        assert_eq!(unmapped(), before + 1);

        // One long part is mapped too (a copy: its buffer is the heap's).
        let one = Bytes::from(vec![9u8; MAPPED_MIN]);
        let body = joined(std::slice::from_ref(&one));
        assert!(body.is_mapped());
        assert_eq!(body.bytes()[..], one[..]);

        assert!(joined(&[]).is_empty());
    }

    /// A failing fill is the fill's error, and nothing stays mapped.
    #[test]
    fn a_failed_fill_leaves_nothing_mapped() {
        let before = unmapped();
        let got = filled(MAPPED_MIN * 2, |_| Err("read failed"));
        assert_eq!(got.unwrap_err(), "read failed");
        // Never sealed: no mapping kept, none dropped.
        assert_eq!(unmapped(), before);
        let small = filled(10, |b| {
            b.copy_from_slice(b"0123456789");
            Ok::<_, ()>(())
        })
        .unwrap();
        assert!(!small.is_mapped());
        assert_eq!(&small.bytes()[..], b"0123456789");
    }
}
