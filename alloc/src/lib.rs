//! edge's global allocator: mimalloc, asked for plain blocks where the
//! alignment allows.
//!
//! With glibc's allocator, malloc/free were 14% of edge's CPU proxying
//! 1 KiB responses; with mimalloc 5% (benches/RESULTS.md). The `mimalloc`
//! crate's `GlobalAlloc` asks `mi_malloc_aligned` for every block, and
//! mimalloc takes its generic aligned path for any block over 1 KiB whose
//! size is not a power of two (the 16 KB request future, header and body
//! buffers): about 20 such blocks per pass-through request, 3,300
//! instructions of 114,000 under callgrind (`benches/callgrind/instr.sh`).
//! Every mimalloc block is aligned to at least a word, so a layout that
//! asks no more than that gets `mi_malloc` (as std's `System` allocator
//! calls `malloc` below its minimum alignment); stricter ones keep the
//! aligned calls.
//!
//! This is edge's only `unsafe` code, kept in a crate of its own so that
//! every other crate keeps `unsafe_code = "forbid"`.

#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block has (`MI_INTPTR_SIZE`: its blocks
/// are whole machine words).
const WORD: usize = core::mem::size_of::<usize>();

/// Use as `#[global_allocator] static GLOBAL: Mimalloc = Mimalloc;`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mimalloc;

// SAFETY: every call forwards to mimalloc with the layout's size and, where
// the alignment is stricter than a word, its alignment (a plain block is
// word-aligned, so it meets any alignment up to a word); blocks of either
// kind are freed by `mi_free` and resized by `mi_realloc[_aligned]`, which
// keep the contents and the alignment asked.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: the caller's layout, as `GlobalAlloc` requires.
            unsafe { mi::mi_malloc(layout.size()).cast() }
        } else {
            // SAFETY: the caller's layout, as `GlobalAlloc` requires.
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()).cast() }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: the caller's layout, as `GlobalAlloc` requires.
            unsafe { mi::mi_zalloc(layout.size()).cast() }
        } else {
            // SAFETY: the caller's layout, as `GlobalAlloc` requires.
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()).cast() }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (`GlobalAlloc::dealloc`'s contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: the caller's layout, as `GlobalAlloc` requires.
            unsafe { mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast() }
        } else {
            // SAFETY: the caller's layout, as `GlobalAlloc` requires.
            unsafe { mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast() }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    /// Every size and alignment a Rust layout may ask, through all four
    /// calls: the block is aligned, holds its bytes, zeroed when asked,
    /// and keeps its contents across `realloc`.
    #[test]
    fn blocks_are_aligned_and_hold_their_bytes() {
        let a = Mimalloc;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [
                1usize, 7, 8, 9, 16, 24, 100, 1000, 1024, 1025, 4000, 15_920, 70_000,
            ] {
                let size = size.div_ceil(align) * align;
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; each block is freed once with the
                // layout it has.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "{size} {align}");
                    std::ptr::write_bytes(p, 0xab, size);
                    let grown = size * 3 + 5;
                    let q = a.realloc(p, layout, grown);
                    assert_eq!(q as usize % align, 0, "realloc {size} {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xab));
                    a.dealloc(q, Layout::from_size_align(grown, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size} {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
