//! Writing to a TCP stream without ever waiting in a host call.
//!
//! wasi-libc's `write` to a socket makes three host calls: `check-write`,
//! `write` and `blocking-flush`. wasmtime-wasi takes all of a permitted
//! `write` and writes what the kernel does not take at once in the
//! background, and `blocking-flush` waits for that to finish. So when a
//! peer stopped reading while the send buffer was nearly full (an upstream
//! that hung with queries pipelined to it, a client that does not read its
//! answers), the component stopped with it: every connection of its event
//! loop, with no deadline able to fire, until the peer read or closed.
//!
//! In the component, [`try_write`] is one call (the host's `tcp-send`,
//! [`crate::shell::host_tcp`]) that writes what the kernel takes now, and
//! a full buffer is tokio's `WouldBlock`: the task waits for the socket to
//! be writable in the event loop, like every other wait, and the
//! connection's own deadlines decide how long. Natively it is tokio's
//! `try_write`.

use std::io;
use std::task::{Context, Poll, ready};

use tokio::net::TcpStream;

/// Writes what `stream` takes of `bytes` now: how many, or `WouldBlock`
/// (tokio's write readiness cleared, so the next wait for it is real).
pub fn try_write(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    #[cfg(wasi_libc_descriptors)]
    {
        use std::os::fd::AsRawFd;
        let fd = stream.as_raw_fd();
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            crate::shell::host_tcp::send(fd, bytes)
        });
        if matches!(sent, Ok(n) if n > 0) {
            crate::shell::watch::sent(fd);
        }
        sent
    }
    #[cfg(not(wasi_libc_descriptors))]
    stream.try_write(bytes)
}

/// [`try_write`] once `stream` is writable: `AsyncWrite::poll_write`.
pub fn poll_write(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    bytes: &[u8],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match try_write(stream, bytes) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(done),
        }
    }
}
