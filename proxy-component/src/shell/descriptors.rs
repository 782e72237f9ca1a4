//! wasi-libc's descriptor table, read for the `wasi:sockets` handles under
//! a socket descriptor: what wasi-libc does not let its callers reach
//! (batched datagrams, [`crate::shell::datagrams`]; quick ACKs,
//! [`crate::shell::quick_ack`]).
//!
//! Only with the wasi-libc whose layouts were read off its debug
//! information (wasi-sdk 30, `build.rs` sets `wasi_libc_descriptors`).

// wasi-libc's descriptor table is C; reading it needs raw pointers.
#![allow(unsafe_code)]

/// wasi-libc's `descriptor_table_entry_t` (wasi-sdk 30): the socket's
/// state and the functions that serve it.
#[repr(C)]
struct Entry {
    data: *const std::ffi::c_void,
    vtable: *const std::ffi::c_void,
}

unsafe extern "C" {
    /// NULL when `fd` is not open.
    fn descriptor_table_get_ref(fd: i32) -> *const Entry;
}

/// The state wasi-libc keeps for descriptor `fd` (its `udp_socket_t`,
/// `tcp_socket_t`, ...), or NULL when `fd` is not open. Read again for
/// every use (a table lookup, no host call), so a closed or renumbered
/// descriptor is never used; what it points at is the caller's to know
/// and to read before the descriptor closes.
pub(crate) fn state(fd: std::os::fd::RawFd) -> *const std::ffi::c_void {
    // SAFETY: wasi-libc's table gives the entry of an open descriptor or
    // NULL, and an entry's `data` is its state. The component is single
    // threaded, so nothing changes the table while this reads it.
    unsafe {
        let entry = descriptor_table_get_ref(fd);
        if entry.is_null() {
            return std::ptr::null();
        }
        (*entry).data
    }
}
