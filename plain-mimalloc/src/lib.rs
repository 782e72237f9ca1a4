//! mimalloc as the global allocator, asked for alignment only when its
//! plain blocks would not already have it: the host's, and the native build
//! of the component's shell (the bench's `native` row), so that the two
//! differ only by the sandbox.
//!
//! The `mimalloc` crate's `GlobalAlloc` sends every request through
//! `mi_malloc_aligned`, since Rust names an alignment with each. mimalloc
//! 3's aligned path takes its fast path only when the next free block of
//! the size's bin happens to be aligned; otherwise (the bin's page has no
//! free block at hand, or the bin's block size is not a power of two) it
//! falls back to over-allocation: a larger block, from another bin, whose
//! address inside is aligned. In the host that was half of all
//! allocations, at 80 to 150 instructions each against some 25, and every
//! such block a bin larger than asked (`bench/profile.sh`: about 1,000
//! host instructions per cache hit at 2,000 qps went to allocating).
//!
//! Plain `mi_malloc` blocks are already aligned enough: on x86_64 and
//! aarch64 (`MI_MAX_ALIGN_SIZE` 16, more than a pointer) mimalloc rounds
//! block sizes above 8 bytes up to multiples of 16 and starts each page's
//! first block on 16 bytes, so a block is 16-aligned, or 8-aligned for the
//! 8-byte bin. A request whose alignment is at most 16 and at most its size
//! therefore takes the plain call (`mi_malloc`, `mi_zalloc`, `mi_realloc`),
//! and anything else the aligned one, as before. `mi_free` frees both.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The largest alignment every plain mimalloc block of at least that size
/// has (mimalloc's `MI_MAX_ALIGN_SIZE` where a pointer is 8 bytes).
const PLAIN_ALIGN: usize = 16;

/// mimalloc, through its plain calls wherever they give the alignment asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct MiMalloc;

/// Whether a plain block of `size` bytes is aligned to `align`.
#[inline]
const fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: every block comes from mimalloc, which returns null on failure
// and a block of at least the size asked otherwise; `plain` holds only
// where mimalloc's plain blocks have the layout's alignment (the module's
// notes), and elsewhere the aligned calls are given it. `mi_free` and
// `mi_realloc` accept blocks from either kind of call.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation calls take any size and alignment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                libmimalloc_sys::mi_malloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                libmimalloc_sys::mi_zalloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned.
        unsafe { libmimalloc_sys::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a block this allocator returned, with
        // the layout it was allocated with; the new block is aligned as
        // that layout asks (plain blocks of `new_size` are, where `plain`
        // holds).
        unsafe {
            if plain(new_size, layout.align()) {
                libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    /// Every size up to 4 KiB and some larger ones, at every alignment up
    /// to 4 KiB, and growing and shrinking each: the block is aligned as
    /// asked, holds what was written, and keeps it through `realloc`. Many
    /// blocks of one layout are held at once, so bins' pages fill and new
    /// ones are taken (the case where the aligned path over-allocated).
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes() {
        let sizes = (1..=4096).chain([6000, 16 << 10, 100 << 10, 1 << 20, 3 << 20]);
        let a = MiMalloc;
        for size in sizes {
            for shift in 0..=12 {
                let align = 1usize << shift;
                let layout = Layout::from_size_align(size, align).unwrap();
                let count = if size <= 256 && shift <= 5 { 64 } else { 2 };
                let mut held = Vec::with_capacity(count);
                for i in 0..count {
                    // SAFETY: a non-zero size; freed below.
                    let p = unsafe {
                        if i % 2 == 0 {
                            a.alloc(layout)
                        } else {
                            a.alloc_zeroed(layout)
                        }
                    };
                    assert!(!p.is_null(), "{layout:?}");
                    assert_eq!(p as usize % align, 0, "{layout:?}");
                    if i % 2 == 1 {
                        // SAFETY: `size` bytes are ours.
                        let bytes = unsafe { std::slice::from_raw_parts(p, size) };
                        assert!(bytes.iter().all(|b| *b == 0), "{layout:?} not zeroed");
                    }
                    // SAFETY: as above.
                    unsafe { p.write_bytes(i as u8, size) };
                    held.push(p);
                }
                for (i, p) in held.into_iter().enumerate() {
                    let grown = size * 2 + 8;
                    // SAFETY: `p` came from `layout`; the new size is not 0.
                    let q = unsafe { a.realloc(p, layout, grown) };
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "{layout:?} grown to {grown}");
                    // SAFETY: `size` bytes kept, `grown` ours.
                    let bytes = unsafe { std::slice::from_raw_parts(q, size) };
                    assert!(bytes.iter().all(|b| *b == i as u8), "{layout:?} lost bytes");
                    let shrunk = size.div_ceil(3);
                    let grown_layout = Layout::from_size_align(grown, align).unwrap();
                    // SAFETY: `q` came from `grown_layout`.
                    let r = unsafe { a.realloc(q, grown_layout, shrunk) };
                    assert_eq!(r as usize % align, 0, "{layout:?} shrunk to {shrunk}");
                    // SAFETY: `shrunk` bytes kept.
                    let bytes = unsafe { std::slice::from_raw_parts(r, shrunk) };
                    assert!(bytes.iter().all(|b| *b == i as u8), "{layout:?} lost bytes");
                    let shrunk_layout = Layout::from_size_align(shrunk, align).unwrap();
                    // SAFETY: `r` came from `shrunk_layout`.
                    unsafe { a.dealloc(r, shrunk_layout) };
                }
            }
        }
    }

    #[test]
    fn plain_only_where_plain_blocks_are_aligned() {
        assert!(plain(8, 8));
        assert!(plain(48, 16));
        assert!(plain(1, 1));
        assert!(!plain(8, 16), "an 8-byte block is only 8-aligned");
        assert!(!plain(64, 32));
        assert!(!plain(4096, 4096));
    }
}
