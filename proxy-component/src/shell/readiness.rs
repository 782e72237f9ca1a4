//! Telling the event loop that a socket is drained, without a read that
//! finds nothing.
//!
//! In the component, tokio runs on mio's `poll(2)` selector (wasi-libc's
//! `poll` over `wasi:io/poll`), which emulates edge-triggered events: once
//! it has reported a socket readable it stops asking, until a read that
//! would block asks again. tokio keeps a socket readable until a read would
//! block, too; unlike with epoll, a short read does not clear it. So every
//! read that emptied a socket was followed by one more that found nothing,
//! at the cost of a host call (and, for TCP, a buffer allocated and zeroed
//! on the host). [`Drained::drained`] does what that read did, for free:
//! it clears tokio's readiness and re-arms mio's reading side only
//! (`mio::would_block`, vendor/mio patch 2). Nothing is lost: the
//! re-armed side is polled again, and `poll` reports data that came in
//! since at once.
//!
//! Natively (epoll) tokio clears the readiness after a short read itself,
//! and an edge that came since must not be cleared (epoll would not report
//! it again), so there this does nothing.

/// A socket that can be told it is drained.
pub trait Drained {
    /// The last read took everything the socket had (a short read, a short
    /// batch of datagrams) or found nothing: wait for the next data before
    /// reading again. Call it before the task waits or yields, with no
    /// read in between.
    fn drained(&self);
}

/// tokio's `try_io` with an error that names the reading side.
#[cfg(target_os = "wasi")]
macro_rules! clear_readable {
    ($sock:expr) => {
        let _ = $sock.try_io(tokio::io::Interest::READABLE, || {
            Err::<(), _>(mio::would_block(mio::Interest::READABLE))
        });
    };
}

impl Drained for tokio::net::UdpSocket {
    fn drained(&self) {
        #[cfg(target_os = "wasi")]
        clear_readable!(self);
    }
}

impl Drained for tokio::net::TcpStream {
    fn drained(&self) {
        #[cfg(target_os = "wasi")]
        clear_readable!(self);
    }
}

/// A stream whose short reads tell it that it is drained (see the module's
/// notes): the upstream TLS connections' TCP stream, read by rustls, which
/// only knows `AsyncRead`.
#[derive(Debug)]
pub struct DrainingReads<S>(pub S);

impl<S> tokio::io::AsyncRead for DrainingReads<S>
where
    S: tokio::io::AsyncRead + Drained + Unpin,
{
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let room = buf.remaining();
        let before = buf.filled().len();
        std::task::ready!(std::pin::Pin::new(&mut self.0).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        // Zero bytes is the end of the stream: nothing more to wait for.
        if n > 0 && n < room {
            self.0.drained();
        }
        std::task::Poll::Ready(Ok(()))
    }
}

/// Writes go to the host in one call that never waits
/// ([`crate::shell::send`]); `write_vectored` is not offered, so rustls
/// hands over one record at a time.
impl tokio::io::AsyncWrite for DrainingReads<tokio::net::TcpStream> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        crate::shell::send::poll_write(&self.0, cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
