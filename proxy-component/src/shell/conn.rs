//! One persistent, pipelined TLS connection to an upstream (RFC 7766 §6.2.1.1,
//! RFC 7858 §3.3).
//!
//! Callers register a query in the in-flight table (which rewrites its ID to
//! one unique on this connection) and hand the bytes to the writer task, which
//! coalesces everything queued into one TLS write (one record, one system
//! call; the host sets TCP_NODELAY, which WASI 0.2 cannot). While the core's
//! window is full (or others wait already) a query waits instead, in a
//! [`FairQueue`] under its client's source, and the writer takes waiting
//! queries source by source as answers make room. The reader task
//! matches answers by ID in any order. When the connection closes (EOF, a
//! read or write error, a framing error, or the core's [`UpstreamConn`]
//! timers: idle, stalled) every query still in flight gets
//! [`ConnError::Lost`] so the caller can resend it. The caller, which parses
//! the answer, reports the upstream's edns-tcp-keepalive timeout (RFC 7828)
//! with [`Conn::on_keepalive`]. This file only moves bytes and reports events
//! to the core.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::core::admission::SourceKey;
use crate::core::fair_queue::FairQueue;
use crate::core::framing::{Deframer, MAX_MESSAGE_LEN, frame_into};
use crate::core::inflight::{CounterIds, InFlight};
use crate::core::message;
use crate::core::upstream_conn::{Close, Tally, UpstreamConn, UpstreamTimeouts};
use crate::core::window::{PROBE_GRID, ProbeCause};
use crate::shell::deadline::Deadline;
use crate::shell::quick_ack::QuickAck;
use crate::shell::reply;
use crate::shell::signal::Signal;

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

/// An answer, and the clock reading taken when it was read.
type Answered = (Vec<u8>, std::time::Instant);

type Reply = reply::Sender<Answered>;

/// A query on the connection.
struct Slot {
    /// Where its answer goes.
    reply: Reply,
    /// Its frame, while it waits for the window; `None` once written.
    waiting: Option<Vec<u8>>,
    /// When it was written (its answer's round trip counts from then).
    written: Option<std::time::Instant>,
}

/// What a connection tells when its window begins a probe.
type OnProbe = Box<dyn Fn(ProbeCause)>;

/// What a connection tells when it has closed, with its final state.
type OnClose = Box<dyn Fn(&UpstreamConn)>;

struct Shared {
    inflight: RefCell<InFlight<Slot>>,
    /// The timers, the window and the close reason: the core decides.
    state: RefCell<UpstreamConn>,
    /// The wire IDs of the queries waiting for the window, by source.
    waiting: RefCell<FairQueue<SourceKey, u16>>,
    /// Queries framed for the writer while the window had room, in the
    /// order they were sent. The window bounds them.
    outgoing: RefCell<Vec<u8>>,
    /// Every [`Conn`] is gone: the writer writes what is queued and closes.
    dropped: Cell<bool>,
    /// Wakes the reader so it re-evaluates its deadline.
    wake: Signal,
    /// Wakes the writer: queries are framed in `outgoing`, or the window
    /// has room and queries wait, or every handle is gone.
    pump: Signal,
    /// Closed by the reader on shutdown.
    close: Signal,
    /// Told when the window begins a probe (the resolver logs and counts
    /// it).
    on_probe: RefCell<Option<OnProbe>>,
    /// Told when the connection has closed (the resolver learns its
    /// upstream's query budget from it).
    on_close: RefCell<Option<OnClose>>,
}

/// Whether the query with `wire_id` is still waiting to be written (not
/// given up on, and its ID not taken by a query written since).
fn is_waiting(inflight: &InFlight<Slot>, wire_id: u16) -> bool {
    inflight
        .get(wire_id)
        .is_some_and(|slot| slot.waiting.is_some())
}

impl Shared {
    /// Wakes the writer if queries wait and the window has room.
    fn pump_if_room(&self) {
        if !self.waiting.borrow().is_empty() && self.state.borrow().may_write() {
            self.pump.notify();
        }
    }

    /// Moves waiting queries into `batch`, source by source, while the
    /// window has room (and the batch is under `limit` bytes), written at
    /// `now`.
    fn take_waiting(&self, batch: &mut Vec<u8>, limit: usize) {
        if self.waiting.borrow().is_empty() {
            return;
        }
        let now = now();
        let mut inflight = self.inflight.borrow_mut();
        let mut waiting = self.waiting.borrow_mut();
        self.report(|state| {
            while batch.len() < limit && state.may_write() {
                let Some(id) = waiting.pop(|&id| is_waiting(&inflight, id)) else {
                    break;
                };
                let Some(slot) = inflight.get_mut(id) else {
                    continue;
                };
                if let Some(frame) = slot.waiting.take() {
                    batch.extend_from_slice(&frame);
                    slot.written = Some(now);
                    state.on_sent(now);
                }
            }
        });
        // A full batch: the rest go in the next one.
        if batch.len() >= limit && !waiting.is_empty() {
            self.pump.notify();
        }
    }

    /// Reports an event from outside the reader, and wakes the reader if
    /// its deadline moved earlier (or the connection closed: `None` sorts
    /// first); otherwise it sleeps on until the old deadline and asks again.
    fn report(&self, event: impl FnOnce(&mut UpstreamConn)) {
        let mut state = self.state.borrow_mut();
        let before = state.deadline();
        event(&mut state);
        if state.deadline() < before {
            self.wake.notify();
        }
    }
}

/// The clock the core is fed.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// A point of the windows' probe grid ([`PROBE_GRID`]): when the wall clock
/// last read a whole number of grid steps since the Unix epoch. Every
/// worker, and every proxy whose clock agrees, finds the same grid, so
/// their connections to an upstream probe it at the same moments, when all
/// of them hold back, instead of each finding the others' queue there.
fn probe_grid() -> std::time::Instant {
    // The two readings of one moment: the component's monotonic clock is
    // read once per wake-up (`shell::clock`), the wall clock every time.
    crate::shell::clock::refresh();
    let now = now();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let phase = wall.as_nanos() % PROBE_GRID.as_nanos();
    // Under a step: it fits.
    let phase = Duration::from_nanos(u64::try_from(phase).unwrap_or(0));
    now.checked_sub(phase).unwrap_or(now)
}

/// A handle to a live connection; clones share it. When the last one is
/// dropped the writer closes the stream.
#[derive(Clone)]
pub struct Conn {
    handle: Rc<Handle>,
}

/// What every clone of a [`Conn`] holds: the writer learns from its drop
/// that nobody can send on the connection any more.
struct Handle {
    shared: Rc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.dropped.set(true);
        self.shared.pump.notify();
    }
}

impl Conn {
    /// Starts the reader and writer tasks over an established stream, whose
    /// reads `ack` acknowledges at once while answers are owed. Must be
    /// called where `spawn_local` works (a `LocalRuntime` or a `LocalSet`).
    pub fn spawn<S>(stream: S, ack: QuickAck, capacity: usize, timeouts: UpstreamTimeouts) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let shared = Rc::new(Shared {
            inflight: RefCell::new(InFlight::new(capacity, CounterIds::new(0))),
            state: RefCell::new(UpstreamConn::new(now(), timeouts, capacity, probe_grid())),
            waiting: RefCell::new(FairQueue::new()),
            outgoing: RefCell::new(Vec::new()),
            dropped: Cell::new(false),
            wake: Signal::default(),
            pump: Signal::default(),
            close: Signal::default(),
            on_probe: RefCell::new(None),
            on_close: RefCell::new(None),
        });
        let (rd, wr) = tokio::io::split(stream);
        tokio::task::spawn_local(write_loop(wr, shared.clone()));
        tokio::task::spawn_local(read_loop(rd, ack, shared.clone()));
        Self {
            handle: Rc::new(Handle { shared }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// False once the connection has closed, or the upstream asked for it
    /// to close (RFC 7828 §3.3.2: TIMEOUT 0; it stays open for the answers
    /// owed): no new query goes on it, and it is replaced.
    pub fn is_alive(&self) -> bool {
        self.shared().state.borrow().accepts_queries()
    }

    /// An answer on this connection carried an edns-tcp-keepalive option
    /// with this TIMEOUT (RFC 7828 §3.3.2); the core decides what it does to
    /// the idle timeout.
    pub fn on_keepalive(&self, timeout: std::time::Duration) {
        self.shared().report(|s| s.on_keepalive(timeout));
    }

    /// Sends one query from a client of `source` (its ID is rewritten here)
    /// at `sent` (the caller's clock reading, so the clock is read once for
    /// both) and waits for the answer, which comes back with the wire ID;
    /// the caller restores its own. While the window is full the query
    /// waits for its source's turn. Dropping the future abandons the query
    /// and frees its ID. The answer comes with the reader's clock reading
    /// for the read it came in (one reading for every answer of a read, so
    /// the caller need not take one of its own).
    pub async fn exchange(
        &self,
        query: &[u8],
        sent: std::time::Instant,
        source: SourceKey,
    ) -> Result<Answered, ConnError> {
        if !self.is_alive() {
            return Err(ConnError::Lost("closed"));
        }
        let (tx, rx) = reply::channel();
        // Straight to the writer while the window has room and nobody
        // waits; otherwise behind the others, in turn.
        let write_now =
            self.shared().waiting.borrow().is_empty() && self.shared().state.borrow().may_write();
        let slot = Slot {
            reply: tx,
            waiting: None,
            written: write_now.then_some(sent),
        };
        let wire_id = self
            .shared()
            .inflight
            .borrow_mut()
            .insert(slot)
            .map_err(|_| ConnError::Full)?;
        let mut pending = Pending {
            shared: self.shared(),
            wire_id,
            rx,
        };
        if write_now {
            // Framed in place: the writer takes the bytes of every query
            // sent since its last write at once.
            let mut out = self.shared().outgoing.borrow_mut();
            let start = out.len();
            frame_into(&mut out, query);
            message::set_id(&mut out[start + 2..], wire_id);
            drop(out);
            self.shared().report(|s| s.on_sent(sent));
            self.shared().pump.notify();
        } else {
            let mut framed = Vec::with_capacity(query.len() + 2);
            frame_into(&mut framed, query);
            message::set_id(&mut framed[2..], wire_id);
            self.shared().state.borrow_mut().on_limited();
            if let Some(slot) = self.shared().inflight.borrow_mut().get_mut(wire_id) {
                slot.waiting = Some(framed);
            }
            self.shared().waiting.borrow_mut().push(source, wire_id);
            self.shared().pump_if_room();
        }
        (&mut pending.rx)
            .await
            .map_err(|_| ConnError::Lost("closed with the query in flight"))
    }

    /// Why the connection takes no new query, once it does not: why it
    /// closed, or the upstream asked for it to close.
    pub fn close_reason(&self) -> Option<Close> {
        self.shared().state.borrow().retired()
    }

    /// Queries written on it and waiting for their answer (the load
    /// [`spread`](crate::core::spread) weighs: a connection whose window
    /// holds fewer than it counts as saturated is not, however many wait).
    pub fn inflight(&self) -> usize {
        self.shared().state.borrow().inflight()
    }

    /// Queries waiting for the window.
    pub fn waiting(&self) -> usize {
        self.shared().waiting.borrow().len()
    }

    /// The window now (see [`crate::core::window`]).
    pub fn window(&self) -> usize {
        self.shared().state.borrow().window()
    }

    /// Writes at most `budget` queries, if limited
    /// ([`QueryBudget`](crate::core::upstream_conn::QueryBudget)); call
    /// before the first query.
    pub fn set_budget(&self, budget: Option<u64>) {
        self.shared().state.borrow_mut().set_budget(budget);
    }

    /// Whether it has written its query budget. The queries that waited for
    /// it when it closed are no failure of the upstream: they are sent again
    /// on another connection.
    pub fn spent_budget(&self) -> bool {
        self.shared().state.borrow().budget_spent()
    }

    /// Calls `f` once the connection has closed, with its final state.
    pub fn on_close(&self, f: impl Fn(&UpstreamConn) + 'static) {
        *self.shared().on_close.borrow_mut() = Some(Box::new(f));
    }

    /// Calls `f` each time the window begins a probe, with why.
    pub fn on_window_probe(&self, f: impl Fn(ProbeCause) + 'static) {
        *self.shared().on_probe.borrow_mut() = Some(Box::new(f));
    }

    /// What it carried ([`UpstreamConn::tally`]).
    pub fn tally(&self) -> Tally {
        self.shared().state.borrow().tally()
    }

    /// Whether the connection has delivered at least one answer.
    pub fn made_progress(&self) -> bool {
        self.shared().state.borrow().answered()
    }
}

/// A query waiting for its answer. Dropped early (the caller's deadline), it
/// frees its wire ID, unless the ID was already answered and handed to a
/// newer query: only an entry whose receiver is gone (ours) is removed.
struct Pending<'a> {
    shared: &'a Shared,
    wire_id: u16,
    rx: reply::Receiver<Answered>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.rx.close();
        let mut inflight = self.shared.inflight.borrow_mut();
        let Some(slot) = inflight.remove_if(self.wire_id, |slot| slot.reply.is_closed()) else {
            return;
        };
        if slot.written.is_some() {
            drop(inflight);
            self.shared.report(|s| s.on_abandoned(now()));
            self.shared.pump_if_room();
        } else {
            // Never written: only its place in the queue is left.
            self.shared
                .waiting
                .borrow_mut()
                .forget(|&id| is_waiting(&inflight, id));
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, shared: Rc<Shared>) {
    const BATCH: usize = 64 * 1024;
    let mut batch = Vec::with_capacity(16 * 1024);
    let ended = loop {
        batch.clear();
        // Everything sent since the last write goes in this one, then
        // queries that waited for the window, while it has room.
        std::mem::swap(&mut batch, &mut *shared.outgoing.borrow_mut());
        shared.take_waiting(&mut batch, BATCH);
        if batch.is_empty() {
            if shared.dropped.get() {
                break Some(Close::Dropped);
            }
            tokio::select! {
                () = shared.pump.notified() => {}
                () = shared.close.notified() => break None,
            }
            continue;
        }
        if wr.write_all(&batch).await.is_err() || wr.flush().await.is_err() {
            break Some(Close::WriteFailed);
        }
    };
    if let Some(why) = ended {
        shared.report(|s| s.close(why));
    }
    let _ = wr.shutdown().await;
}

/// Reads answers and hands them over until the connection closes; `ack`
/// is used only here, while `rd` holds the stream open.
async fn read_loop<R: AsyncRead + Unpin>(mut rd: R, ack: QuickAck, shared: Rc<Shared>) {
    let mut deframer = Deframer::new(MAX_MESSAGE_LEN);
    let mut buf = vec![0u8; 32 * 1024];
    let mut timer = Deadline::default();
    let why = loop {
        {
            let state = shared.state.borrow();
            if let Some(why) = state.closed() {
                break why;
            }
            timer.set(state.deadline().map(Instant::from_std));
        }
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) => break Close::ClosedByUpstream,
                Err(_) => break Close::ReadFailed,
                Ok(n) => {
                    // One clock reading for the read and every answer in it.
                    let now = now();
                    shared.state.borrow_mut().on_received(now);
                    deframer.push(&buf[..n]);
                    if dispatch(&mut deframer, &shared, now).is_err() {
                        break Close::BadFrame;
                    }
                    if shared.state.borrow().acks_at_once() {
                        ack.now();
                    }
                }
            },
            () = timer.fired() => {
                if let Some(why) = shared.state.borrow_mut().poll(now()) {
                    break why;
                }
            }
            () = shared.wake.notified() => {}
        }
    };
    shared.state.borrow_mut().close(why);
    if let Some(f) = &*shared.on_close.borrow() {
        f(&shared.state.borrow());
    }
    shared.close.notify();
    // Dropping the senders fails every query still in flight or waiting
    // with `Lost`. Those waiting go first, one source at a time as they
    // would have been written: each is sent again in the order it is
    // woken, so the next connection writes them source by source too (a
    // connection that spent its query budget leaves hundreds waiting).
    let mut inflight = shared.inflight.borrow_mut();
    let mut waiting = shared.waiting.borrow_mut();
    while let Some(id) = waiting.pop(|&id| is_waiting(&inflight, id)) {
        drop(inflight.remove_if(id, |slot| slot.waiting.is_some()));
    }
    waiting.clear();
    drop(inflight.drain());
}

/// Hands every complete answer in `deframer` to its query, all read at `now`.
fn dispatch(deframer: &mut Deframer, shared: &Shared, now: std::time::Instant) -> Result<(), ()> {
    loop {
        match deframer.next_message() {
            Ok(Some(answer)) => {
                let Some(id) = message::id(&answer) else {
                    return Err(());
                };
                // An unknown ID is a late answer to an abandoned query: drop
                // it. So is one whose ID a query waiting to be written has
                // now: that query was not sent yet.
                let slot = shared
                    .inflight
                    .borrow_mut()
                    .remove_if(id, |slot| slot.written.is_some());
                let Some((slot, written)) = slot.and_then(|s| s.written.map(|w| (s, w))) else {
                    shared.state.borrow_mut().on_late_answer();
                    continue;
                };
                let rtt = now.saturating_duration_since(written);
                let probe = shared.state.borrow_mut().on_answered(now, rtt);
                if let (Some(cause), Some(f)) = (probe, &*shared.on_probe.borrow()) {
                    f(cause);
                }
                let _ = slot.reply.send((answer, now));
            }
            Ok(None) => {
                shared.pump_if_room();
                return Ok(());
            }
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
    use std::time::Duration;

    use tokio::io::DuplexStream;

    use super::*;

    fn run<F: Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    fn timeouts(stall_ms: u64) -> UpstreamTimeouts {
        UpstreamTimeouts {
            idle: Duration::from_secs(30),
            stall: Duration::from_millis(stall_ms),
        }
    }

    #[test]
    fn rfc7766_idle_connection_is_closed_after_its_last_answer() {
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(64 * 1024);
            let idle = Duration::from_millis(200);
            let conn = Conn::spawn(
                ours,
                QuickAck::none(),
                16,
                UpstreamTimeouts {
                    idle,
                    ..timeouts(5_000)
                },
            );
            answer_one(&conn, &mut upstream).await;
            let answered = Instant::now();
            // The server sees the close as EOF.
            let mut rest = Vec::new();
            upstream.read_to_end(&mut rest).await.unwrap();
            assert!(answered.elapsed() >= idle - Duration::from_millis(20));
            assert!(answered.elapsed() < Duration::from_secs(2));
            assert_eq!(conn.close_reason(), Some(Close::Idle));
            assert!(conn.made_progress());
        });
    }

    #[test]
    fn rfc7828_the_upstreams_timeout_closes_the_connection_sooner() {
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(64 * 1024);
            let conn = Conn::spawn(ours, QuickAck::none(), 16, timeouts(5_000));
            answer_one(&conn, &mut upstream).await;
            // What the caller found in the answer: 200 ms, not 30 s.
            conn.on_keepalive(Duration::from_millis(200));
            let reported = Instant::now();
            let mut rest = Vec::new();
            upstream.read_to_end(&mut rest).await.unwrap();
            assert!(reported.elapsed() < Duration::from_secs(2));
            assert_eq!(conn.close_reason(), Some(Close::KeepaliveTimeout));

            // TIMEOUT 0 on an idle connection: closed at once.
            let (ours, mut upstream) = tokio::io::duplex(64 * 1024);
            let conn = Conn::spawn(ours, QuickAck::none(), 16, timeouts(5_000));
            conn.on_keepalive(Duration::ZERO);
            assert!(!conn.is_alive());
            upstream.read_to_end(&mut rest).await.unwrap();
            assert_eq!(conn.close_reason(), Some(Close::KeepaliveTimeout));
        });
    }

    /// One query through `conn`, answered by `upstream` with the query
    /// itself.
    async fn answer_one(conn: &Conn, upstream: &mut DuplexStream) {
        let call = spawn_exchange(conn, 1, 1);
        let sent = read_frames(upstream, 1).await;
        let mut answer = Vec::new();
        frame_into(&mut answer, &sent[0]);
        upstream.write_all(&answer).await.unwrap();
        call.await.unwrap().unwrap();
    }

    /// A pseudo query: a header with `id`, then one byte that tags it.
    fn query(id: u16, tag: u8) -> Vec<u8> {
        let mut q = vec![0u8; 12];
        q[..2].copy_from_slice(&id.to_be_bytes());
        q.push(tag);
        q
    }

    /// The source of the client that sent the query tagged `tag`.
    fn source(tag: u8) -> SourceKey {
        SourceKey::of(std::net::IpAddr::from([10, 0, 0, tag]))
    }

    /// Sends `query(id, tag)` on `conn` from a task of its own.
    fn spawn_exchange(
        conn: &Conn,
        id: u16,
        tag: u8,
    ) -> tokio::task::JoinHandle<Result<Vec<u8>, ConnError>> {
        let conn = conn.clone();
        tokio::task::spawn_local(async move {
            let answered = conn.exchange(&query(id, tag), now(), source(tag)).await;
            answered.map(|(answer, _)| answer)
        })
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
            let conn = Conn::spawn(ours, QuickAck::none(), 16, timeouts(5_000));
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
    fn beyond_the_window_queries_wait_and_a_lone_source_goes_next() {
        use crate::core::window::INITIAL_WINDOW;
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(1024 * 1024);
            let conn = Conn::spawn(ours, QuickAck::none(), 2048, timeouts(5_000));
            // One source sends 200 at once: the window takes the first ones.
            let flood: Vec<_> = (0..200).map(|i| spawn_exchange(&conn, i, 1)).collect();
            let written = read_frames(&mut upstream, INITIAL_WINDOW).await;
            assert!(written.iter().all(|m| m[12] == 1));
            let more =
                tokio::time::timeout(Duration::from_millis(100), read_frames(&mut upstream, 1))
                    .await;
            assert!(more.is_err(), "nothing past the window is written");
            assert_eq!(conn.inflight(), INITIAL_WINDOW);
            assert_eq!(conn.waiting(), 200 - INITIAL_WINDOW);
            // Another source's one query arrives behind the other's 72.
            let lone = spawn_exchange(&conn, 9, 2);
            tokio::task::yield_now().await;
            // Two answers make room for two: one of each source (the
            // flood's turn came first), not two of the flood's 72.
            let mut answers = Vec::new();
            frame_into(&mut answers, &written[0]);
            frame_into(&mut answers, &written[1]);
            upstream.write_all(&answers).await.unwrap();
            let next = read_frames(&mut upstream, 2).await;
            let tags: Vec<u8> = next.iter().map(|m| m[12]).collect();
            assert_eq!(tags, [1, 2], "the lone query waited for the backlog");
            let mut answer = Vec::new();
            frame_into(&mut answer, &next[1]);
            upstream.write_all(&answer).await.unwrap();
            assert_eq!(lone.await.unwrap().unwrap()[12], 2);
            // Its answer made room for one more of the flood's: 200, less
            // the first window, less two, wait. Giving up on waiting queries
            // frees them without writing them.
            read_frames(&mut upstream, 1).await;
            assert_eq!(conn.waiting(), 200 - INITIAL_WINDOW - 2);
            for call in &flood[150..] {
                call.abort();
            }
            tokio::task::yield_now().await;
            assert_eq!(conn.waiting(), 200 - INITIAL_WINDOW - 2 - 50);
            drop(flood);
        });
    }

    #[test]
    fn a_connection_writes_its_budget_and_closes_once_answered() {
        use crate::core::window::INITIAL_WINDOW;
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(1024 * 1024);
            let conn = Conn::spawn(ours, QuickAck::none(), 2048, timeouts(5_000));
            let budget = INITIAL_WINDOW + 2;
            conn.set_budget(Some(u64::try_from(budget).expect("small")));
            // A window's worth is written, the rest wait.
            let calls: Vec<_> = (0..200).map(|i| spawn_exchange(&conn, i, 1)).collect();
            let mut written = read_frames(&mut upstream, INITIAL_WINDOW).await;
            // Two answers make room for the budget's last two, and no more.
            let mut answers = Vec::new();
            frame_into(&mut answers, &written[0]);
            frame_into(&mut answers, &written[1]);
            upstream.write_all(&answers).await.unwrap();
            written.extend(read_frames(&mut upstream, 2).await);
            let more =
                tokio::time::timeout(Duration::from_millis(100), read_frames(&mut upstream, 1))
                    .await;
            assert!(more.is_err(), "nothing past the budget is written");
            assert!(conn.spent_budget() && conn.is_alive());
            assert_eq!(conn.waiting(), 200 - budget);
            // Every answer in: it closes, and those that waited are lost,
            // to be sent again elsewhere.
            let mut answers = Vec::new();
            for frame in &written[2..] {
                frame_into(&mut answers, frame);
            }
            upstream.write_all(&answers).await.unwrap();
            let mut results = Vec::new();
            for call in calls {
                results.push(call.await.unwrap());
            }
            assert!(results[..budget].iter().all(Result::is_ok));
            assert!(
                results[budget..]
                    .iter()
                    .all(|r| matches!(r, Err(ConnError::Lost(_))))
            );
            assert_eq!(conn.close_reason(), Some(Close::BudgetSpent));
        });
    }

    #[test]
    fn queries_waiting_when_it_closes_are_let_go_a_source_at_a_time() {
        use crate::core::window::INITIAL_WINDOW;
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(1024 * 1024);
            let conn = Conn::spawn(ours, QuickAck::none(), 2048, timeouts(5_000));
            // The order in which callers learn their query was lost: the
            // order they send it again in.
            let order = Rc::new(RefCell::new(Vec::new()));
            let call = |id: u16, tag: u8| {
                let (conn, order) = (conn.clone(), order.clone());
                tokio::task::spawn_local(async move {
                    let result = conn.exchange(&query(id, tag), now(), source(tag)).await;
                    assert!(matches!(result, Err(ConnError::Lost(_))), "{result:?}");
                    order.borrow_mut().push(tag);
                })
            };
            let mut calls: Vec<_> = (0..200).map(|i| call(i, 1)).collect();
            read_frames(&mut upstream, INITIAL_WINDOW).await;
            // Another source's query waits behind the flood's 72.
            calls.push(call(999, 2));
            tokio::task::yield_now().await;
            assert_eq!(conn.waiting(), 200 - INITIAL_WINDOW + 1);
            drop(upstream);
            for c in calls {
                c.await.unwrap();
            }
            let order = order.borrow();
            let lone = order.iter().position(|&tag| tag == 2);
            assert_eq!(lone, Some(1), "the lone query is let go second, not last");
        });
    }

    #[test]
    fn a_waiting_query_given_up_on_is_never_written() {
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(1024 * 1024);
            let conn = Conn::spawn(ours, QuickAck::none(), 2048, timeouts(5_000));
            let window = conn.window();
            let first: Vec<_> = (0..window)
                .map(|i| spawn_exchange(&conn, i as u16, 1))
                .collect();
            let written = read_frames(&mut upstream, window).await;
            // One more waits, and its caller gives up.
            let gone = spawn_exchange(&conn, 999, 3);
            tokio::task::yield_now().await;
            assert_eq!(conn.waiting(), 1);
            gone.abort();
            let _ = gone.await;
            // Room comes: nothing is written, for nobody waits any more.
            let mut answers = Vec::new();
            for m in &written {
                frame_into(&mut answers, m);
            }
            upstream.write_all(&answers).await.unwrap();
            for call in first {
                call.await.unwrap().unwrap();
            }
            let more =
                tokio::time::timeout(Duration::from_millis(100), read_frames(&mut upstream, 1))
                    .await;
            assert!(more.is_err(), "the abandoned query was written");
            assert_eq!(conn.waiting(), 0);
            assert_eq!(conn.inflight(), 0);
        });
    }

    #[test]
    fn answer_comes_with_the_readers_clock_reading() {
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(64 * 1024);
            let conn = Conn::spawn(ours, QuickAck::none(), 16, timeouts(5_000));
            let sent = now();
            let call = {
                let conn = conn.clone();
                tokio::task::spawn_local(async move {
                    conn.exchange(&query(1, 1), sent, source(1)).await
                })
            };
            let written = read_frames(&mut upstream, 1).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
            let before = now();
            let mut answer = Vec::new();
            frame_into(&mut answer, &written[0]);
            upstream.write_all(&answer).await.unwrap();
            let (answer, read_at) = call.await.unwrap().unwrap();
            assert_eq!(answer, written[0]);
            // Read after the upstream wrote, not when the query was sent.
            assert!(read_at >= before, "{read_at:?} < {before:?}");
            assert!(read_at <= now());
        });
    }

    #[test]
    fn stalled_connection_fails_queries_in_flight_and_dies() {
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(64 * 1024);
            let conn = Conn::spawn(ours, QuickAck::none(), 16, timeouts(100));
            let call = spawn_exchange(&conn, 1, 1);
            read_frames(&mut upstream, 1).await;
            let started = Instant::now();
            let result = call.await.unwrap();
            assert!(matches!(result, Err(ConnError::Lost(_))), "{result:?}");
            assert!(started.elapsed() < Duration::from_secs(2));
            assert!(!conn.is_alive());
            assert_eq!(conn.close_reason(), Some(Close::Stalled));
        });
    }

    #[test]
    fn abandoned_query_frees_its_id() {
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(64 * 1024);
            let conn = Conn::spawn(ours, QuickAck::none(), 1, timeouts(5_000));
            let first = tokio::time::timeout(
                Duration::from_millis(50),
                conn.exchange(&query(1, 1), now(), source(1)),
            )
            .await;
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
            let conn = Conn::spawn(ours, QuickAck::none(), 16, timeouts(5_000));
            let _ = tokio::time::timeout(
                Duration::from_millis(50),
                conn.exchange(&query(1, 1), now(), source(1)),
            )
            .await;
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

    /// The writer learns from the last handle's drop that nobody can send
    /// any more: what was sent goes out first, then the stream is closed.
    #[test]
    fn dropping_every_handle_writes_what_was_sent_and_closes() {
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(64 * 1024);
            let conn = Conn::spawn(ours, QuickAck::none(), 16, timeouts(5_000));
            let other = conn.clone();
            // Polled once (framed for the writer), then given up on, and
            // both handles dropped before the writer has run.
            let sent = tokio::time::timeout(
                Duration::ZERO,
                conn.exchange(&query(7, 7), now(), source(7)),
            )
            .await;
            assert!(sent.is_err(), "no answer yet");
            drop(conn);
            assert!(other.is_alive(), "a handle is left");
            drop(other);
            let frames = read_frames(&mut upstream, 1).await;
            assert_eq!(frames[0][12], 7);
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(2), upstream.read_to_end(&mut rest))
                .await
                .expect("the stream is closed")
                .unwrap();
            assert!(rest.is_empty());
        });
    }

    #[test]
    fn upstream_close_fails_queries_in_flight_with_lost() {
        run(async {
            let (ours, mut upstream) = tokio::io::duplex(64 * 1024);
            let conn = Conn::spawn(ours, QuickAck::none(), 16, timeouts(5_000));
            let call = spawn_exchange(&conn, 1, 1);
            read_frames(&mut upstream, 1).await;
            drop(upstream);
            assert!(matches!(call.await.unwrap(), Err(ConnError::Lost(_))));
            assert_eq!(conn.close_reason(), Some(Close::ClosedByUpstream));
            assert!(matches!(
                conn.exchange(&query(3, 3), now(), source(3)).await,
                Err(ConnError::Lost(_))
            ));
        });
    }
}
