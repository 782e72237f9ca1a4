//! Frees the UDP payloads wasi-libc's `recvfrom` leaks (issue #8).
//!
//! wasi-libc (wasm32-wasip2, as shipped with rustc 1.95) receives each datagram
//! with `incoming-datagram-stream.receive(1)`; the host allocates the returned
//! list and, for every datagram, its payload through the component's
//! `cabi_realloc`. After copying the payload out, `recvfrom` calls the
//! generated `udp_list_incoming_datagram_free`, which frees the list but calls
//! a `udp_incoming_datagram_free` whose body forgot the `data` field: the
//! wit-bindgen C generator registers no destructor for a `list<u8>` whose C
//! type (`wasip2_list_u8_t`) another interface defined first, and silently
//! emits nothing for it. Each datagram leaked its length plus malloc's 4-byte
//! header, rounded up to 16 (48 bytes for a 40-byte query, 240 for 225), until
//! the instance hit its memory limit and trapped.
//!
//! `build.rs` links with `--wrap=udp_list_incoming_datagram_free`, so
//! wasi-libc's call lands in [`__wrap_udp_list_incoming_datagram_free`], which
//! frees each payload, clears the field, and hands the list to the original.
//! Clearing the field keeps this safe if a regenerated wasi-libc frees `data`
//! in `udp_incoming_datagram_free` (its list free skips empty lists); a
//! wasi-libc that frees the payload in `recvfrom` itself would need this
//! removed, which is why `build.rs` applies it to known toolchains only.
//! Remove this module and the build script once the toolchain's wasi-libc is
//! fixed.
//!
//! `free` is the right release: the exported `cabi_realloc` on wasip2 is Rust
//! std's (it overrides wasi-libc's weak one; wit-bindgen 0.46 defines none for
//! `target_env = "p2"`) and allocates with the global allocator, `pool::Pool`,
//! whose every block is one of wasi-libc's malloc (see `pool.rs`); wasi-libc
//! frees the list with `free` on the same assumption. A `#[global_allocator]`
//! not backed by malloc would break both.

// The wrapper is called by C with C's types; there is no safe way to write it.
#![allow(unsafe_code)]

use std::ffi::c_void;

/// `wasip2_list_u8_t`: the canonical ABI's `list<u8>` on wasm32.
#[repr(C)]
struct ListU8 {
    ptr: *mut u8,
    len: usize,
}

/// `udp_incoming_datagram_t`, the canonical ABI layout of wasi:sockets/udp
/// `record incoming-datagram { data: list<u8>, remote-address: ip-socket-address }`:
/// the payload first, then the address variant (a tag, and the IPv6 case's 28
/// bytes at offset 4).
#[repr(C)]
struct IncomingDatagram {
    data: ListU8,
    remote_address: [u32; 8],
}

/// `udp_list_incoming_datagram_t`.
#[repr(C)]
struct IncomingDatagramList {
    ptr: *mut IncomingDatagram,
    len: usize,
}

// The size wasm-tools and wit-bindgen give the record; a different layout
// would make the loop below walk the list with the wrong stride.
const _: () = assert!(size_of::<IncomingDatagram>() == 40);

unsafe extern "C" {
    /// The original, reached through the linker's `--wrap`.
    fn __real_udp_list_incoming_datagram_free(list: *mut IncomingDatagramList);
    /// wasi-libc's allocator, behind `System`: the payloads come from it, and
    /// the original frees the list with it.
    fn free(ptr: *mut c_void);
}

/// Frees every datagram's payload, then the list (through the original).
///
/// # Safety
///
/// `list` must point to a list returned by
/// `udp_method_incoming_datagram_stream_receive`, not freed before; wasi-libc's
/// `recvfrom` is the only caller.
#[unsafe(no_mangle)]
unsafe extern "C" fn __wrap_udp_list_incoming_datagram_free(list: *mut IncomingDatagramList) {
    // SAFETY: per the contract above, `list` and its `len` elements are valid,
    // exclusively ours, and each non-empty payload is a live malloc allocation
    // that nothing else frees (the leak being fixed). An empty payload is not
    // an allocation (`cabi_realloc` returns the alignment as a dangling
    // pointer for size 0), as the generated `wasip2_list_u8_free` assumes too.
    unsafe {
        let datagrams = &mut *list;
        for i in 0..datagrams.len {
            let data = &mut (*datagrams.ptr.add(i)).data;
            if data.len > 0 {
                free(data.ptr.cast());
            }
            data.ptr = std::ptr::null_mut();
            data.len = 0;
        }
        __real_udp_list_incoming_datagram_free(list);
    }
}
