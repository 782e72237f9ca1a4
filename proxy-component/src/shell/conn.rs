//! One persistent, pipelined TLS connection to an upstream (RFC 7766 §6.2.1.1,
//! RFC 7858 §3.3).
//!
//! Callers register a query in the in-flight table (which rewrites its ID to
//! one unique on this connection) and hand the bytes to the writer task, which
//! coalesces everything queued into one TLS write: WASI 0.2 has no
//! TCP_NODELAY, so small separate writes would stall on Nagle. The reader task
//! matches answers by ID in any order. The connection dies on EOF, a read or
//! write error, a framing error, when it has been idle for the idle timeout,
//! or when queries are outstanding and nothing has arrived for the stall
//! timeout (a half-open connection); every query still in flight then gets
//! [`ConnError::Lost`] so the caller can resend it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::core::framing::{Deframer, MAX_MESSAGE_LEN, frame_into};
use crate::core::inflight::{CounterIds, InFlight};
use crate::core::message;

/// Why a query on a connection got no answer.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// The connection closed or broke with the query in flight.
    #[error("connection lost: {0}")]
    Lost(&'static str),
    /// The connection has as many queries in flight as it may.
    #[error("too many queries in flight on the connection")]
    Full,
}

type Reply = oneshot::Sender<Vec<u8>>;

struct Shared {
    inflight: RefCell<InFlight<Reply>>,
    alive: Cell<bool>,
    /// When the reader last made progress, or the connection last went from
    /// idle to busy: the stall clock runs from here.
    last_progress: Cell<Instant>,
    /// Wakes the reader so it re-evaluates its deadline.
    wake: Notify,
    /// Closed by the reader on shutdown.
    close: Notify,
    close_reason: Cell<Option<&'static str>>,
    /// Whether any answer came back on this connection: a connection closed
    /// after answering is a server's choice (RFC 7766 §6.2.3), one closed
    /// before is a failure.
    answered: Cell<bool>,
}

/// Timeouts of a connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnTimeouts {
    /// Close after this long with nothing in flight.
    pub idle: Duration,
    /// Declare the connection dead after this long with queries in flight and
    /// no bytes received.
    pub stall: Duration,
}

/// A handle to a live connection; clones share it.
#[derive(Clone)]
pub struct Conn {
    shared: Rc<Shared>,
    to_writer: mpsc::UnboundedSender<Vec<u8>>,
}

impl Conn {
    /// Starts the reader and writer tasks over an established stream. Must be
    /// called inside a `LocalSet`.
    pub fn spawn<S>(stream: S, capacity: usize, timeouts: ConnTimeouts) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let shared = Rc::new(Shared {
            inflight: RefCell::new(InFlight::new(capacity, CounterIds::new(0))),
            alive: Cell::new(true),
            last_progress: Cell::new(Instant::now()),
            wake: Notify::new(),
            close: Notify::new(),
            close_reason: Cell::new(None),
            answered: Cell::new(false),
        });
        let (rd, wr) = tokio::io::split(stream);
        let (to_writer, from_callers) = mpsc::unbounded_channel();
        tokio::task::spawn_local(write_loop(wr, from_callers, shared.clone()));
        tokio::task::spawn_local(read_loop(rd, shared.clone(), timeouts));
        Self { shared, to_writer }
    }

    /// False once the connection has died; a dead connection is replaced.
    pub fn is_alive(&self) -> bool {
        self.shared.alive.get()
    }

    /// Sends one query (its ID is rewritten here) and waits for the answer,
    /// which comes back with the wire ID; the caller restores its own.
    /// Dropping the future abandons the query and frees its ID.
    pub async fn exchange(&self, query: &[u8]) -> Result<Vec<u8>, ConnError> {
        if !self.is_alive() {
            return Err(ConnError::Lost("closed"));
        }
        let (tx, rx) = oneshot::channel();
        let wire_id = {
            let mut inflight = self.shared.inflight.borrow_mut();
            if inflight.is_empty() {
                self.shared.last_progress.set(Instant::now());
                self.shared.wake.notify_one();
            }
            inflight.insert(tx).map_err(|_| ConnError::Full)?
        };
        let mut pending = Pending {
            shared: &self.shared,
            wire_id,
            rx,
        };
        let mut framed = Vec::with_capacity(query.len() + 2);
        frame_into(&mut framed, query);
        message::set_id(&mut framed[2..], wire_id);
        if self.to_writer.send(framed).is_err() {
            return Err(ConnError::Lost("writer closed"));
        }
        (&mut pending.rx)
            .await
            .map_err(|_| ConnError::Lost("closed with the query in flight"))
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<&'static str> {
        self.shared.close_reason.get()
    }

    /// Whether the connection has delivered at least one answer.
    pub fn made_progress(&self) -> bool {
        self.shared.answered.get()
    }
}

/// A query waiting for its answer. Dropped early (the caller's deadline), it
/// frees its wire ID, unless the ID was already answered and handed to a
/// newer query: only an entry whose receiver is gone (ours) is removed.
struct Pending<'a> {
    shared: &'a Shared,
    wire_id: u16,
    rx: oneshot::Receiver<Vec<u8>>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.rx.close();
        let mut inflight = self.shared.inflight.borrow_mut();
        if inflight.get(self.wire_id).is_some_and(|tx| tx.is_closed()) {
            inflight.remove(self.wire_id);
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut from_callers: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Rc<Shared>,
) {
    let mut batch = Vec::with_capacity(16 * 1024);
    loop {
        let first = tokio::select! {
            m = from_callers.recv() => m,
            () = shared.close.notified() => None,
        };
        let Some(first) = first else { break };
        batch.clear();
        batch.extend_from_slice(&first);
        // Coalesce whatever else is already queued into the same write.
        while batch.len() < 64 * 1024 {
            match from_callers.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if wr.write_all(&batch).await.is_err() || wr.flush().await.is_err() {
            break;
        }
    }
    shared.alive.set(false);
    shared.wake.notify_one();
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(mut rd: R, shared: Rc<Shared>, timeouts: ConnTimeouts) {
    let mut deframer = Deframer::new(MAX_MESSAGE_LEN);
    let mut buf = vec![0u8; 32 * 1024];
    let mut last_busy = Instant::now();
    let reason: &'static str = loop {
        if !shared.alive.get() {
            break "write failed";
        }
        let busy = !shared.inflight.borrow().is_empty();
        if busy {
            last_busy = Instant::now();
        }
        let deadline = if busy {
            shared.last_progress.get() + timeouts.stall
        } else {
            last_busy + timeouts.idle
        };
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) => break "closed by upstream",
                Err(_) => break "read error",
                Ok(n) => {
                    shared.last_progress.set(Instant::now());
                    deframer.push(&buf[..n]);
                    if dispatch(&mut deframer, &shared).is_err() {
                        break "bad frame from upstream";
                    }
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                if Instant::now() >= deadline {
                    break if busy { "stalled: no answer within the upstream timeout" } else { "idle" };
                }
            }
            () = shared.wake.notified() => {}
        }
    };
    shared.alive.set(false);
    shared.close.notify_one();
    // Dropping the senders fails every query still in flight with `Lost`.
    shared.close_reason.set(Some(reason));
    drop(shared.inflight.borrow_mut().drain());
}

fn dispatch(deframer: &mut Deframer, shared: &Shared) -> Result<(), ()> {
    loop {
        match deframer.next_message() {
            Ok(Some(answer)) => {
                let Some(id) = message::id(&answer) else {
                    return Err(());
                };
                // An unknown ID is a late answer to an abandoned query: drop it.
                if let Some(reply) = shared.inflight.borrow_mut().remove(id) {
                    shared.answered.set(true);
                    let _ = reply.send(answer);
                }
            }
            Ok(None) => return Ok(()),
            Err(_) => return Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The connection against an upstream played by the test over an
    //! in-memory stream, for the orders and failures a real resolver does
    //! not produce on demand (the end-to-end tests cover the happy path).

    use std::future::Future;

    use tokio::io::DuplexStream;

    use super::*;

    fn run<F: Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    fn timeouts(stall_ms: u64) -> ConnTimeouts {
        ConnTimeouts {
            idle: Duration::from_secs(30),
            stall: Duration::from_millis(stall_ms),
        }
    }

    /// A pseudo query: a header with `id`, then one byte that tags it.
    fn query(id: u16, tag: u8) -> Vec<u8> {
        let mut q = vec![0u8; 12];
        q[..2].copy_from_slice(&id.to_be_bytes());
        q.push(tag);
        q
    }

    /// Sends `query(id, tag)` on `conn` from a task of its own.
    fn spawn_exchange(
        conn: &Conn,
        id: u16,
        tag: u8,
    ) -> tokio::task::JoinHandle<Result<Vec<u8>, ConnError>> {
        let conn = conn.clone();
        tokio::task::spawn_local(async move { conn.exchange(&query(id, tag)).await })
    }

    async fn read_frames(upstream: &mut DuplexStream, n: usize) -> Vec<Vec<u8>> {
        let mut deframer = Deframer::new(MAX_MESSAGE_LEN);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while out.len() < n {
            let got = upstream.read(&mut buf).await.unwrap();
            assert!(got > 0, "connection closed early");
            deframer.push(&buf[..got]);
            while let Some(m) = deframer.next_message().unwrap() {
                out.push(m);
            }
        }
        out
    }

    #[test]
    fn rfc7766_answers_out_of_order_reach_their_callers() {
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(64 * 1024);
            let conn = Conn::spawn(ours, 16, timeouts(5_000));
            // Three clients that all chose ID 7.
            let calls: Vec<_> = (1..=3u8).map(|tag| spawn_exchange(&conn, 7, tag)).collect();
            let sent = read_frames(&mut upstream, 3).await;
            let mut ids: Vec<u16> = sent.iter().map(|m| message::id(m).unwrap()).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 3, "each query has its own ID on the connection");
            let mut answers = Vec::new();
            for m in sent.iter().rev() {
                frame_into(&mut answers, m);
            }
            upstream.write_all(&answers).await.unwrap();
            for (tag, call) in (1..=3u8).zip(calls) {
                let answer = call.await.unwrap().unwrap();
                assert_eq!(answer[12], tag, "caller {tag} got its own answer");
            }
        });
    }

    #[test]
    fn stalled_connection_fails_queries_in_flight_and_dies() {
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(64 * 1024);
            let conn = Conn::spawn(ours, 16, timeouts(100));
            let call = spawn_exchange(&conn, 1, 1);
            read_frames(&mut upstream, 1).await;
            let started = Instant::now();
            let result = call.await.unwrap();
            assert!(matches!(result, Err(ConnError::Lost(_))), "{result:?}");
            assert!(started.elapsed() < Duration::from_secs(2));
            assert!(!conn.is_alive());
            assert!(conn.close_reason().unwrap().starts_with("stalled"));
        });
    }

    #[test]
    fn abandoned_query_frees_its_id() {
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(64 * 1024);
            let conn = Conn::spawn(ours, 1, timeouts(5_000));
            let first =
                tokio::time::timeout(Duration::from_millis(50), conn.exchange(&query(1, 1))).await;
            assert!(first.is_err(), "no answer: the caller gives up");
            let second = spawn_exchange(&conn, 2, 2);
            let sent = read_frames(&mut upstream, 2).await;
            let mut answer = Vec::new();
            frame_into(&mut answer, &sent[1]);
            upstream.write_all(&answer).await.unwrap();
            let answer = second.await.unwrap().expect("the only slot was freed");
            assert_eq!(answer[12], 2);
        });
    }

    #[test]
    fn late_answer_to_an_abandoned_query_is_dropped() {
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(64 * 1024);
            let conn = Conn::spawn(ours, 16, timeouts(5_000));
            let _ =
                tokio::time::timeout(Duration::from_millis(50), conn.exchange(&query(1, 1))).await;
            let sent = read_frames(&mut upstream, 1).await;
            let second = spawn_exchange(&conn, 2, 2);
            let both = read_frames(&mut upstream, 1).await;
            let mut answers = Vec::new();
            frame_into(&mut answers, &sent[0]);
            frame_into(&mut answers, &both[0]);
            upstream.write_all(&answers).await.unwrap();
            assert_eq!(second.await.unwrap().unwrap()[12], 2);
            assert!(conn.is_alive());
        });
    }

    #[test]
    fn upstream_close_fails_queries_in_flight_with_lost() {
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(64 * 1024);
            let conn = Conn::spawn(ours, 16, timeouts(5_000));
            let call = spawn_exchange(&conn, 1, 1);
            read_frames(&mut upstream, 1).await;
            drop(upstream);
            assert!(matches!(call.await.unwrap(), Err(ConnError::Lost(_))));
            assert_eq!(conn.close_reason(), Some("closed by upstream"));
            assert!(matches!(
                conn.exchange(&query(3, 3)).await,
                Err(ConnError::Lost(_))
            ));
        });
    }
}
