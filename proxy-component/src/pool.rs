//! The component's allocator: free lists of small blocks in front of
//! wasi-libc's `malloc`.
//!
//! The component allocates about eighteen times per query it forwards over
//! TCP (buffers, frames, tasks, timers), most of them under a kilobyte, and
//! wasi-libc's dlmalloc spends some 390 instructions on each allocation and
//! its free: 7k of a query's 45.6k (`make profile PROFILE_ARGS=--tcp`), more
//! for tokio's tasks, whose alignment takes `posix_memalign`'s slower path. A
//! freed block of at most [`LARGEST`] bytes goes on a list for its size,
//! rounded up to [`GRAIN`], and the next allocation of that size takes it back
//! in a few instructions. Blocks aligned to more than [`ALIGN`] (up to
//! [`MAX_ALIGN`]) have lists of their own, whose blocks are all aligned to
//! `MAX_ALIGN`. Larger blocks go to `malloc` directly.
//!
//! **At the limit.** The lists keep at most [`KEPT`] bytes of free blocks
//! together, and one list at most [`KEPT_PER_CLASS`]; a block freed beyond
//! either goes back to `malloc`. So at most 4 MiB lie idle here, where
//! `malloc` could have lent them to another size. Under load the blocks of
//! the queries in flight come and go in bursts (a thousand of tokio's task
//! cells, each holding a 720-byte query future, finish, and a thousand
//! start), so a list must hold a burst's worth: with 32 KiB a list, at
//! saturation most of them went back to `malloc` and came from it again. WebAssembly memory never shrinks, so
//! nothing else is lost.
//!
//! **Still `malloc`'s blocks.** Every block comes from the backing allocator
//! with its list's size, so a block may be released with `free` by C code.
//! That matters: the component's `cabi_realloc` is Rust std's and allocates
//! here, and wasi-libc frees what the host returns through it with `free`
//! (see `wasi_libc_udp_leak.rs`). A block only goes on a list from
//! [`GlobalAlloc::dealloc`], whose layout says which list; C's blocks are
//! never freed here.
//!
//! **One thread.** The lists are not locked: a WebAssembly component without
//! the `atomics` feature runs on one thread, which is the only build that
//! installs the pool as the global allocator.

// An allocator is raw memory by definition; every unsafe block below says
// what it relies on.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

/// Block sizes are multiples of this (dlmalloc's own granularity on wasm32).
pub(crate) const GRAIN: usize = 16;
/// The largest block kept on a list.
pub(crate) const LARGEST: usize = 1024;
/// The alignment of the plain lists' blocks. Rust's `System` takes `malloc`
/// for an alignment up to 8 on wasm32 and `posix_memalign` above it.
pub(crate) const ALIGN: usize = 8;
/// The alignment of the aligned lists' blocks, and the most any list serves
/// (tokio's task cells ask for 64 or 128, by the target).
pub(crate) const MAX_ALIGN: usize = 128;
/// The most bytes of free blocks all lists keep together.
pub(crate) const KEPT: usize = 4 << 20;
/// The most bytes of free blocks one list keeps.
pub(crate) const KEPT_PER_CLASS: usize = KEPT / 4;
/// The number of lists of each kind.
const CLASSES: usize = LARGEST / GRAIN;

/// Free lists in front of `backing`.
pub(crate) struct Pool<A> {
    backing: A,
    lists: UnsafeCell<Lists>,
}

/// The plain lists, then the aligned ones, and the bytes they hold.
struct Lists {
    by_class: [List; 2 * CLASSES],
    kept: usize,
}

/// One size's free blocks, linked through their first word.
#[derive(Clone, Copy)]
struct List {
    head: *mut Free,
    len: usize,
    bytes: usize,
}

/// What a free block holds while it waits on a list.
struct Free {
    next: *mut Free,
}

// The pool is only installed where there is one thread (see the module's
// notes); everywhere else it is a local value (the tests), never shared.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for Pool<A> {}

impl<A: GlobalAlloc> Pool<A> {
    /// A pool with empty lists, taking new blocks from `backing`.
    pub(crate) const fn new(backing: A) -> Self {
        Self {
            backing,
            lists: UnsafeCell::new(Lists {
                by_class: [List {
                    head: ptr::null_mut(),
                    len: 0,
                    bytes: 0,
                }; 2 * CLASSES],
                kept: 0,
            }),
        }
    }

    /// The list that serves `layout`, if one does.
    fn class(layout: Layout) -> Option<usize> {
        let aligned = match layout.align() {
            ..=ALIGN => 0,
            a if a <= MAX_ALIGN => CLASSES,
            _ => return None,
        };
        (layout.size() <= LARGEST).then(|| aligned + layout.size().max(1).div_ceil(GRAIN) - 1)
    }

    /// The layout of the blocks on list `class`.
    fn block(class: usize) -> Layout {
        let (size, align) = match class.checked_sub(CLASSES) {
            None => ((class + 1) * GRAIN, ALIGN),
            Some(aligned) => ((aligned + 1) * GRAIN, MAX_ALIGN),
        };
        // The size is at most LARGEST and the alignment a power of two.
        unsafe { Layout::from_size_align_unchecked(size, align) }
    }

    /// The lists.
    ///
    /// # Safety
    ///
    /// No other reference to the lists may be alive: the pool runs on one
    /// thread and none of its methods calls another while holding one.
    #[allow(clippy::mut_from_ref)]
    unsafe fn lists(&self) -> &mut Lists {
        unsafe { &mut *self.lists.get() }
    }

    /// How many free blocks list `class` holds (for the tests).
    #[cfg(test)]
    fn kept(&self, class: usize) -> usize {
        unsafe { self.lists().by_class[class].len }
    }
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for Pool<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = Self::class(layout) else {
            return unsafe { self.backing.alloc(layout) };
        };
        let lists = unsafe { self.lists() };
        let list = &mut lists.by_class[class];
        if list.head.is_null() {
            return unsafe { self.backing.alloc(Self::block(class)) };
        }
        // A listed block is one of this size whose owner freed it.
        let block = list.head;
        list.head = unsafe { (*block).next };
        list.len -= 1;
        list.bytes -= Self::block(class).size();
        lists.kept -= Self::block(class).size();
        block.cast()
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match Self::class(layout) {
            None => unsafe { self.backing.alloc_zeroed(layout) },
            Some(_) => {
                let p = unsafe { self.alloc(layout) };
                if !p.is_null() {
                    unsafe { ptr::write_bytes(p, 0, layout.size()) };
                }
                p
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = Self::class(layout) else {
            return unsafe { self.backing.dealloc(ptr, layout) };
        };
        let size = Self::block(class).size();
        let lists = unsafe { self.lists() };
        let list = &mut lists.by_class[class];
        if list.bytes + size > KEPT_PER_CLASS || lists.kept + size > KEPT {
            return unsafe { self.backing.dealloc(ptr, Self::block(class)) };
        }
        // The block is at least GRAIN bytes, aligned to ALIGN, and its owner
        // is done with it: its first word can hold the link.
        let block = ptr.cast::<Free>();
        unsafe { block.write(Free { next: list.head }) };
        list.head = block;
        list.len += 1;
        list.bytes += size;
        lists.kept += size;
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The caller guarantees that new_size, rounded up to the alignment,
        // does not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (Self::class(layout), Self::class(new_layout)) {
            // The block was allocated with the list's size, which fits both.
            (Some(old), Some(new)) if old == new => ptr,
            (None, None) => unsafe { self.backing.realloc(ptr, layout, new_size) },
            _ => {
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    unsafe {
                        ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::alloc::System;
    use std::cell::Cell;

    /// `System`, counting what reaches it.
    #[derive(Default)]
    struct Counting {
        allocs: Cell<usize>,
        frees: Cell<usize>,
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.allocs.set(self.allocs.get() + 1);
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            self.frees.set(self.frees.get() + 1);
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("a valid layout")
    }

    #[test]
    fn a_freed_block_serves_the_next_allocation_of_its_size() {
        let pool = Pool::new(Counting::default());
        unsafe {
            let a = pool.alloc(layout(40, 8));
            pool.dealloc(a, layout(40, 8));
            // 33 to 48 bytes share a list.
            let b = pool.alloc(layout(33, 1));
            assert_eq!(a, b, "the freed block comes back");
            let c = pool.alloc(layout(48, 4));
            assert_ne!(b, c, "a block is handed out once");
            pool.dealloc(b, layout(33, 1));
            pool.dealloc(c, layout(48, 4));
        }
        assert_eq!(pool.backing.allocs.get(), 2);
        assert_eq!(pool.backing.frees.get(), 0, "both kept for reuse");
        assert_eq!(pool.kept(2), 2);
    }

    #[test]
    fn large_or_overaligned_blocks_are_not_kept() {
        let pool = Pool::new(Counting::default());
        for l in [layout(LARGEST + 1, 1), layout(64, 2 * MAX_ALIGN)] {
            unsafe {
                let p = pool.alloc(l);
                assert_eq!(p as usize % l.align(), 0);
                pool.dealloc(p, l);
            }
        }
        assert_eq!(pool.backing.frees.get(), 2, "both went back at once");
        assert!((0..2 * CLASSES).all(|c| pool.kept(c) == 0));
    }

    #[test]
    fn aligned_blocks_have_lists_of_their_own() {
        let pool = Pool::new(Counting::default());
        unsafe {
            let plain = pool.alloc(layout(64, 8));
            pool.dealloc(plain, layout(64, 8));
            let a = pool.alloc(layout(64, 64));
            assert_ne!(a, plain, "a plain block is not aligned enough");
            assert_eq!(a as usize % MAX_ALIGN, 0);
            pool.dealloc(a, layout(64, 64));
            let b = pool.alloc(layout(50, 16));
            assert_eq!(b, a, "any alignment up to MAX_ALIGN shares the list");
            pool.dealloc(b, layout(50, 16));
        }
        assert_eq!(pool.kept(3), 1);
        assert_eq!(pool.kept(CLASSES + 3), 1);
        assert_eq!(pool.backing.frees.get(), 0);
    }

    /// Frees `n` blocks of `l` at once (a burst ending), all taken first.
    fn burst(pool: &Pool<Counting>, l: Layout, n: usize) {
        let blocks: Vec<_> = (0..n).map(|_| unsafe { pool.alloc(l) }).collect();
        for p in blocks {
            unsafe { pool.dealloc(p, l) };
        }
    }

    #[test]
    fn a_list_keeps_at_most_its_bytes() {
        let pool = Pool::new(Counting::default());
        let l = layout(LARGEST, 8);
        let fit = KEPT_PER_CLASS / LARGEST;
        burst(&pool, l, fit + 3);
        assert_eq!(pool.kept(CLASSES - 1), fit);
        assert_eq!(pool.backing.frees.get(), 3, "the rest went back");
    }

    #[test]
    fn all_lists_keep_at_most_their_bytes() {
        let pool = Pool::new(Counting::default());
        // Four lists full fill the pool: two of kilobyte blocks, two of
        // half-kilobyte ones, plain and aligned.
        let full = [
            (LARGEST, 8),
            (LARGEST, 64),
            (LARGEST / 2, 8),
            (LARGEST / 2, 64),
        ];
        assert_eq!(full.len() * KEPT_PER_CLASS, KEPT);
        for (size, align) in full {
            burst(&pool, layout(size, align), KEPT_PER_CLASS / size);
        }
        assert_eq!(pool.backing.frees.get(), 0, "every block of those kept");
        // A burst of another size finds no room left.
        burst(&pool, layout(100, 8), 10);
        assert_eq!(pool.kept(6), 0);
        assert_eq!(pool.backing.frees.get(), 10, "freed to malloc");
        // Taking a block out makes room.
        unsafe {
            let big = pool.alloc(layout(LARGEST, 8));
            let small = pool.alloc(layout(100, 8));
            pool.dealloc(small, layout(100, 8));
            assert_eq!(pool.kept(6), 1, "a kilobyte out, 112 bytes in");
            pool.dealloc(big, layout(LARGEST, 8));
        }
        assert_eq!(pool.backing.frees.get(), 11, "the kilobyte no longer fits");
        assert_eq!(pool.kept(CLASSES - 1), KEPT_PER_CLASS / LARGEST - 1);
    }

    #[test]
    fn growing_within_a_list_keeps_the_block_and_beyond_it_moves_the_bytes() {
        let pool = Pool::new(Counting::default());
        unsafe {
            let p = pool.alloc(layout(17, 1));
            ptr::write_bytes(p, 0xab, 17);
            assert_eq!(
                pool.realloc(p, layout(17, 1), 32),
                p,
                "17 and 32 share a list"
            );
            let q = pool.realloc(p, layout(32, 1), 3000);
            assert_ne!(q, p);
            assert!(std::slice::from_raw_parts(q, 17).iter().all(|&b| b == 0xab));
            assert_eq!(pool.kept(1), 1, "the small block was kept");
            let r = pool.realloc(q, layout(3000, 1), 20);
            assert_eq!(r, p, "shrinking back reuses the kept block");
            assert!(std::slice::from_raw_parts(r, 17).iter().all(|&b| b == 0xab));
            pool.dealloc(r, layout(20, 1));
        }
    }

    #[test]
    fn a_reused_block_is_zeroed_when_asked() {
        let pool = Pool::new(System);
        unsafe {
            let p = pool.alloc(layout(100, 8));
            ptr::write_bytes(p, 0xff, 100);
            pool.dealloc(p, layout(100, 8));
            let q = pool.alloc_zeroed(layout(100, 8));
            assert_eq!(q, p);
            assert!(std::slice::from_raw_parts(q, 100).iter().all(|&b| b == 0));
            pool.dealloc(q, layout(100, 8));
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc { size: usize, align: usize },
        Free(usize),
        Realloc(usize, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                1..2 * LARGEST,
                prop::sample::select(vec![1, 2, 4, 8, 16, 64, 128, 256])
            )
                .prop_map(|(size, align)| Op::Alloc { size, align }),
            any::<usize>().prop_map(Op::Free),
            (any::<usize>(), 1..2 * LARGEST).prop_map(|(i, size)| Op::Realloc(i, size)),
        ]
    }

    proptest! {
        /// Live blocks never overlap, keep their bytes through reallocation
        /// and are aligned as asked, whatever the order of operations.
        #[test]
        fn live_blocks_keep_their_bytes(ops in prop::collection::vec(op(), 1..300)) {
            let pool = Pool::new(System);
            // (pointer, layout, fill byte)
            let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
            let check = |p: *mut u8, l: Layout, fill: u8| unsafe {
                std::slice::from_raw_parts(p, l.size()).iter().all(|&b| b == fill)
            };
            for (n, op) in ops.into_iter().enumerate() {
                let fill = n as u8;
                match op {
                    Op::Alloc { size, align } => {
                        let l = layout(size, align);
                        let p = unsafe { pool.alloc(l) };
                        prop_assert!(!p.is_null());
                        prop_assert_eq!(p as usize % align, 0);
                        unsafe { ptr::write_bytes(p, fill, size) };
                        live.push((p, l, fill));
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let (p, l, f) = live.swap_remove(i % live.len());
                        prop_assert!(check(p, l, f), "a block was overwritten");
                        unsafe { pool.dealloc(p, l) };
                    }
                    Op::Realloc(i, size) if !live.is_empty() => {
                        let i = i % live.len();
                        let (p, l, f) = live[i];
                        prop_assert!(check(p, l, f), "a block was overwritten");
                        let q = unsafe { pool.realloc(p, l, size) };
                        prop_assert!(!q.is_null());
                        let kept = l.size().min(size);
                        let moved = unsafe { std::slice::from_raw_parts(q, kept) };
                        prop_assert!(moved.iter().all(|&b| b == f), "bytes lost in a move");
                        let nl = layout(size, l.align());
                        prop_assert_eq!(q as usize % l.align(), 0);
                        unsafe { ptr::write_bytes(q, fill, size) };
                        live[i] = (q, nl, fill);
                    }
                    _ => {}
                }
            }
            for (p, l, f) in live {
                prop_assert!(check(p, l, f), "a block was overwritten");
                unsafe { pool.dealloc(p, l) };
            }
        }
    }
}
