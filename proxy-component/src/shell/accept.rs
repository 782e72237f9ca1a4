//! The TCP listener.
//!
//! Natively this is `tokio::net::TcpListener`. On wasm32-wasip2 tokio's
//! accept cannot work yet: mio sets O_NONBLOCK on every accepted socket with
//! `fcntl(F_SETFL)`, which the wasi-libc shipped with rustc 1.95 rejects on
//! sockets (EINVAL), and the connection is dropped. `ioctl(FIONBIO)` (what
//! std's `set_nonblocking` uses there) works. So in the component we wait for
//! readiness through tokio and call std's accept ourselves.
//!
//! Remove the wasi half (use `tokio::net::TcpListener` everywhere) once the
//! toolchain's wasi-libc includes WebAssembly/wasi-libc#742.

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// A bound, listening TCP socket.
#[derive(Debug)]
pub struct Acceptor {
    #[cfg(not(target_os = "wasi"))]
    inner: tokio::net::TcpListener,
    /// The listening socket, registered with tokio for readiness only. It
    /// is wrapped as a stream because tokio has no other public way to wait
    /// for readiness of an arbitrary socket on WASI; no stream I/O is ever
    /// done on it.
    #[cfg(target_os = "wasi")]
    inner: TcpStream,
}

impl Acceptor {
    /// Binds and listens.
    #[cfg(not(target_os = "wasi"))]
    pub fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let std = std::net::TcpListener::bind(addr)?;
        std.set_nonblocking(true)?;
        Ok(Self {
            inner: tokio::net::TcpListener::from_std(std)?,
        })
    }

    /// Accepts the next client, with TCP_NODELAY (in the component the
    /// host sets it: WASI 0.2 cannot).
    #[cfg(not(target_os = "wasi"))]
    pub async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }

    /// Binds and listens.
    #[cfg(target_os = "wasi")]
    pub fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        use std::os::fd::OwnedFd;

        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let fd = OwnedFd::from(listener);
        Ok(Self {
            inner: TcpStream::from_std(std::net::TcpStream::from(fd))?,
        })
    }

    /// Accepts the next client.
    #[cfg(target_os = "wasi")]
    pub async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        loop {
            self.inner.readable().await?;
            match self.inner.try_io(tokio::io::Interest::READABLE, || {
                accept_nonblocking(&self.inner)
            }) {
                Ok((stream, peer)) => return Ok((TcpStream::from_std(stream)?, peer)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(target_os = "wasi")]
#[allow(unsafe_code)]
fn accept_nonblocking(listening: &TcpStream) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    use std::mem::ManuallyDrop;
    use std::os::fd::{AsRawFd, FromRawFd};

    // SAFETY: the descriptor is the listening socket owned by `listening`,
    // open for as long as that borrow lives; `ManuallyDrop` keeps this second
    // view from closing it.
    let listener =
        ManuallyDrop::new(unsafe { std::net::TcpListener::from_raw_fd(listening.as_raw_fd()) });
    let (stream, peer) = listener.accept()?;
    stream.set_nonblocking(true)?;
    Ok((stream, peer))
}
