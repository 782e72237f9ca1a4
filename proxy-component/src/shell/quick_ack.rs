//! Acknowledging an upstream's answers at once while more are owed.
//!
//! A server that leaves Nagle's algorithm on (unbound does) holds each
//! small answer until the one before is acknowledged, and Linux delays an
//! ACK until data goes the other way or up to 40 ms: behind unbound at
//! 1,000 qps that added 1.1 ms on average and up to 45 ms. So while answers
//! are still owed on a connection (the core decides:
//! [`UpstreamConn::acks_at_once`](crate::core::upstream_conn::UpstreamConn::acks_at_once)),
//! the reader acknowledges each read at once with [`QuickAck::now`]
//! (Linux's `TCP_QUICKACK`, which the kernel clears by itself, hence after
//! every such read). With none owed, the ACK rides on the next query
//! instead of going out as a segment of its own.
//!
//! Natively that is a `setsockopt` after the read. The component has no
//! socket options (WASI 0.2): the host sets it on the `wasi:sockets`
//! socket under the wasi-libc descriptor, once the event loop is about to
//! wait, and only if no query written on the stream since the read has
//! carried the ACK ([`crate::shell::watch::ack_before_wait`]): at
//! saturation a turn that reads answers usually writes queries too, and
//! an ACK per read was a host call and a system call for a quarter of the
//! queries. With a wasi-libc whose layout is not known (`build.rs`) the
//! component cannot name the socket and does nothing: answers behind such
//! a server then wait for delayed ACKs.

use std::os::fd::RawFd;

/// The quick ACKs of one TCP stream, by its descriptor. Not `Clone`: it is
/// given to the connection's reader, which holds the stream open while it
/// uses it.
#[derive(Debug, Default)]
pub struct QuickAck {
    fd: Option<RawFd>,
}

impl QuickAck {
    /// For `stream`'s descriptor.
    pub fn of(stream: &tokio::net::TcpStream) -> Self {
        Self {
            fd: Some(std::os::fd::AsRawFd::as_raw_fd(stream)),
        }
    }

    /// For a stream that is not a socket (the tests' in-memory streams).
    pub fn none() -> Self {
        Self::default()
    }

    /// Acknowledges what was read now, if an ACK waits, and what arrives
    /// next at once. Best effort: a failure leaves the kernel's delayed
    /// ACKs, which cost latency, not answers.
    pub fn now(&self) {
        let Some(fd) = self.fd else { return };
        #[cfg(target_os = "linux")]
        {
            // SAFETY: the caller's stream owns `fd` and is open while
            // this borrows it (see the type's contract).
            #[allow(unsafe_code)]
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let _ = socket2::SockRef::from(&fd).set_tcp_quickack(true);
        }
        #[cfg(wasi_libc_descriptors)]
        crate::shell::watch::ack_before_wait(fd);
        #[cfg(not(any(target_os = "linux", wasi_libc_descriptors)))]
        let _ = fd;
    }
}
