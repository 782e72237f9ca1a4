//! The host's TCP interfaces (`tcp-ack`, `tcp-send`: `wit/world.wit`), on
//! the `wasi:sockets` socket under a wasi-libc TCP descriptor
//! ([`crate::shell::descriptors`]): what WASI 0.2 and wasi-libc do not
//! offer. Only with the wasi-libc whose layout is known
//! (`wasi_libc_descriptors`).

// wasi-libc's socket state is C, and its handles are borrowed raw.
#![allow(unsafe_code)]

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::RawFd;

use crate::shell::descriptors;

mod bindings {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    wit_bindgen::generate!({
        path: "../wit",
        world: "host-tcp",
        features: ["clocks-timezone"],
        generate_all,
    });
}

use bindings::dnsproxy::proxy::{tcp_ack, tcp_send};
use bindings::wasi::sockets::network::ErrorCode;
use bindings::wasi::sockets::tcp::TcpSocket as WasiTcpSocket;

/// The socket under TCP descriptor `fd` while it is a connected stream,
/// borrowed: `ManuallyDrop` keeps it wasi-libc's.
fn connected(fd: RawFd) -> Option<ManuallyDrop<WasiTcpSocket>> {
    let socket = descriptors::tcp(fd)?;
    if socket.tag != descriptors::TcpSocket::CONNECTED {
        return None;
    }
    let handle = u32::try_from(socket.socket).ok()?;
    // SAFETY: a live handle of this resource type while the descriptor is
    // open, which the caller's stream holds it for the call.
    Some(ManuallyDrop::new(unsafe {
        WasiTcpSocket::from_handle(handle)
    }))
}

/// Asks the host for a quick ACK on TCP descriptor `fd`, if it is a
/// connected stream.
pub(crate) fn quick_ack(fd: RawFd) {
    if let Some(socket) = connected(fd) {
        tcp_ack::quick_ack(&socket);
    }
}

/// Writes what TCP descriptor `fd`'s send buffer takes of `bytes` now, in
/// one host call that never waits: how many, or `WouldBlock` (named a
/// write to mio, `mio::would_block`) when it takes none. Empty `bytes` are
/// written at once (0), with no host call.
pub(crate) fn send(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    if bytes.is_empty() {
        return Ok(0);
    }
    let Some(socket) = connected(fd) else {
        return Err(io::ErrorKind::NotConnected.into());
    };
    match tcp_send::send(&socket, bytes) {
        Ok(0) => Err(mio::would_block(mio::Interest::WRITABLE)),
        // At most `bytes.len()`, which is a `usize`.
        Ok(n) => Ok(usize::try_from(n).unwrap_or(bytes.len())),
        Err(e) => Err(error(e)),
    }
}

/// What a failed `send` means to a caller of `write(2)`.
fn error(e: ErrorCode) -> io::Error {
    let kind = match e {
        ErrorCode::ConnectionReset => io::ErrorKind::ConnectionReset,
        // Closed: the host's EPIPE (WASI 0.2 has no `connection-broken`).
        ErrorCode::ConnectionAborted => io::ErrorKind::BrokenPipe,
        ErrorCode::InvalidState => io::ErrorKind::NotConnected,
        ErrorCode::WouldBlock => io::ErrorKind::WouldBlock,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("tcp send: {e:?}"))
}
