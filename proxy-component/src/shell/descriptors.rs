//! wasi-libc's descriptor table, read for the `wasi:sockets` handles under
//! a socket descriptor: what wasi-libc does not let its callers reach
//! (batched datagrams, [`crate::shell::datagrams`]; quick ACKs,
//! [`crate::shell::quick_ack`]; the host's watch set,
//! [`crate::shell::watch`]).
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
fn state(fd: std::os::fd::RawFd) -> *const std::ffi::c_void {
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

/// The head of wasi-libc's `tcp_socket_t` (wasi-sdk 30, `wasip2_tcp.c`),
/// read from its debug information. The handles are `wasi:sockets` and
/// `wasi:io` resource handles owned by wasi-libc, live while the
/// descriptor is open and in the state `tag` names.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct TcpSocket {
    /// The `tcp-socket`.
    pub(crate) socket: i32,
    /// Its pollable (a listener's: a connection to accept); 0 when
    /// wasi-libc has not made it.
    pub(crate) socket_pollable: i32,
    blocking: bool,
    fake_nodelay: bool,
    fake_reuseaddr: bool,
    family: u8,
    /// `TCP_SOCKET_STATE_*`.
    pub(crate) tag: u32,
}

impl TcpSocket {
    /// `TCP_SOCKET_STATE_CONNECTED`: a stream.
    pub(crate) const CONNECTED: u32 = 3;
    /// `TCP_SOCKET_STATE_LISTENING`.
    pub(crate) const LISTENING: u32 = 5;
}

/// wasi-libc's `udp_socket_t` (wasi-sdk 30, `wasip2_udp.c`), read from its
/// debug information: the handles are `wasi:sockets` resource handles owned
/// by wasi-libc; the streams are valid while `state` is
/// [`UdpSocket::BOUND_STREAMING`], which the first `recvfrom` or `sendto`
/// of a bound socket reaches.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct UdpSocket {
    socket: i32,
    socket_pollable: i32,
    blocking: bool,
    family: u8,
    pub(crate) state: u32,
    pub(crate) incoming: i32,
    pub(crate) incoming_pollable: i32,
    pub(crate) outgoing: i32,
    outgoing_pollable: i32,
}

impl UdpSocket {
    /// `UDP_SOCKET_STATE_BOUND_STREAMING`.
    pub(crate) const BOUND_STREAMING: u32 = 2;
}

// The layout checks: offsets as the debug information gives them.
const _: () = {
    assert!(std::mem::offset_of!(TcpSocket, socket) == 0x00);
    assert!(std::mem::offset_of!(TcpSocket, socket_pollable) == 0x04);
    assert!(std::mem::offset_of!(TcpSocket, tag) == 0x0c);
    assert!(std::mem::offset_of!(UdpSocket, state) == 0x0c);
    assert!(std::mem::offset_of!(UdpSocket, incoming) == 0x10);
    assert!(std::mem::offset_of!(UdpSocket, incoming_pollable) == 0x14);
    assert!(std::mem::offset_of!(UdpSocket, outgoing) == 0x18);
    assert!(std::mem::size_of::<UdpSocket>() == 0x20);
};

/// The state of `fd` as the caller knows its kind to be, copied out.
///
/// # Safety
/// `fd` must be a descriptor whose state is a `T`: one the caller opened
/// as that kind of socket, or one [`kind`] named so.
unsafe fn read<T: Copy>(fd: std::os::fd::RawFd) -> Option<T> {
    let state = state(fd).cast::<T>();
    // SAFETY: the caller's promise; the component is single threaded, so
    // nothing changes the state while this copies it.
    (!state.is_null()).then(|| unsafe { *state })
}

/// The state of TCP descriptor `fd` (one the caller holds as a TCP
/// socket), or `None` when it is not open.
pub(crate) fn tcp(fd: std::os::fd::RawFd) -> Option<TcpSocket> {
    // SAFETY: the caller's TCP socket: its state is a `tcp_socket_t`.
    unsafe { read(fd) }
}

/// The state of UDP descriptor `fd` (one the caller holds as a UDP
/// socket), or `None` when it is not open.
pub(crate) fn udp(fd: std::os::fd::RawFd) -> Option<UdpSocket> {
    // SAFETY: the caller's UDP socket: its state is a `udp_socket_t`.
    unsafe { read(fd) }
}

/// A socket descriptor's state, by the kind wasi-libc says it is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Socket {
    Tcp(TcpSocket),
    Udp(UdpSocket),
}

/// What descriptor `fd` is, asked of wasi-libc (`SO_TYPE`, answered from
/// its own state without a host call); `None` when it is not an open
/// socket.
pub(crate) fn kind(fd: std::os::fd::RawFd) -> Option<Socket> {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `kind` and `len` are valid for the writes getsockopt makes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            std::ptr::from_mut(&mut kind).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    match kind {
        // SAFETY: wasi-libc says which kind of state it keeps for `fd`.
        libc::SOCK_STREAM => unsafe { read(fd) }.map(Socket::Tcp),
        libc::SOCK_DGRAM => unsafe { read(fd) }.map(Socket::Udp),
        _ => None,
    }
}
