//! The UDP listener. Each datagram is one query; answers larger than the
//! client can take are truncated with TC=1 (RFC 1035 §4.2.1, RFC 6891 §7) so
//! the client retries over TCP.
//!
//! Datagrams come in and go out in batches ([`Datagrams`]): the receive
//! loop takes what the socket has queued (up to [`crate::shell::datagrams::BATCH`]) in
//! one call and reads the clock once for all of them. The answers the batch
//! itself makes (from the cache, or refusals) are sent at the end of the
//! batch, by the receive loop, in one send call. Forwarded queries' answers
//! go into an [`Outbox`] that one task empties with one send call for
//! everything queued since its last turn. Under load that is many datagrams
//! per host call; at low load it is one, and an answer waits for no other.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use tokio::net::UdpSocket;

use crate::core::admission::{Decision, Transport};
use crate::core::message::{self, Response};
use crate::shell::AbortOnDrop;
use crate::shell::context::{Context, FromCache, InflightPermit};
use crate::shell::datagrams::{Batch, Datagrams, Outgoing};
use crate::shell::log::Level;
use crate::shell::signal::Signal;

/// Receive buffer asked of the OS, so a burst is queued, not dropped.
pub const RECV_BUFFER: usize = 4 * 1024 * 1024;

/// Answers queued and not yet sent, at most, before the listener stops
/// reading until they are (then the OS's receive buffer queues, and drops,
/// the next queries). Answers to forwarded queries also hold their in-flight
/// slot until sent, so `max_inflight` bounds them as well; this bounds the
/// answers made without one: cache hits, each at most `max_udp_size`, and
/// REFUSED, FORMERR and NOTIMP, each at most the query
/// ([`crate::core::admission::MAX_QUERY_LEN`]) plus an 11-byte OPT.
pub const OUTBOX_LIMIT: usize = 1024;

/// Binds the UDP socket.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let std = std::net::UdpSocket::bind(addr)?;
    std.set_nonblocking(true)?;
    set_recv_buffer(&std);
    UdpSocket::from_std(std)
}

/// Best effort: the OS may clamp it (Linux: net.core.rmem_max); in the
/// component this is wasi:sockets `set-receive-buffer-size`, which wasmtime
/// passes on to the host socket.
fn set_recv_buffer(sock: &std::net::UdpSocket) {
    let _ = socket2::SockRef::from(sock).set_recv_buffer_size(RECV_BUFFER);
}

/// What an answer carries to the socket: the in-flight slot of its query
/// (if it has one), held until it is sent, and when the query came in
/// (taken when its latency is observed, so it is observed once).
type Held = (Option<InflightPermit>, Option<Instant>);

/// Answers waiting for the socket.
#[derive(Default)]
struct Outbox {
    queue: RefCell<VecDeque<Outgoing<Held>>>,
    /// Something was queued.
    queued: Signal,
    /// The queue was emptied.
    emptied: Signal,
    /// The flushing task holds answers the socket has not taken yet.
    flushing: Cell<bool>,
}

impl Outbox {
    /// Queues an answer for the flushing task.
    fn push(&self, data: Vec<u8>, peer: SocketAddr, hold: Held) {
        self.push_quietly(data, peer, hold);
        self.queued.notify();
    }

    /// Queues an answer that the caller sends with [`Outbox::send_now`]
    /// before it waits: the flushing task is not woken for it.
    fn push_quietly(&self, data: Vec<u8>, peer: SocketAddr, hold: Held) {
        self.queue
            .borrow_mut()
            .push_back(Outgoing { data, peer, hold });
    }

    /// Sends what is queued now, without waiting, from the caller's task:
    /// at low load an answer made while a batch is read goes out without
    /// waking another task for it. What the socket does not take now, and
    /// everything while the flushing task waits on a full socket, is left
    /// to that task.
    fn send_now(&self, sock: &Datagrams, ctx: &Context) {
        if !self.flushing.get() {
            // Sent from the queue itself: nothing else runs meanwhile, and
            // what the socket does not take stays in place, oldest first.
            let mut queue = self.queue.borrow_mut();
            observe_latency(ctx, &mut queue);
            sock.try_send(&mut queue);
        }
        if !self.queue.borrow().is_empty() {
            self.queued.notify();
        }
    }

    /// Returns once fewer than [`OUTBOX_LIMIT`] answers are queued.
    async fn room(&self) {
        while self.queue.borrow().len() >= OUTBOX_LIMIT {
            self.emptied.notified().await;
        }
    }

    /// Sends what is queued, batch by batch, for as long as the listener
    /// lives. Each answer's latency (from its query in to its answer out)
    /// is observed here, from one reading of the clock per batch.
    async fn flush(&self, sock: &Datagrams, ctx: &Context) {
        let mut sending = VecDeque::new();
        loop {
            self.queued.notified().await;
            loop {
                std::mem::swap(&mut sending, &mut *self.queue.borrow_mut());
                if sending.is_empty() {
                    break;
                }
                observe_latency(ctx, &mut sending);
                self.flushing.set(true);
                sock.send(&mut sending).await;
                self.flushing.set(false);
            }
            self.emptied.notify();
        }
    }
}

/// Observes the latency (from its query in to its answer out) of each
/// answer about to be sent that was not observed before, from one reading
/// of the clock.
fn observe_latency(ctx: &Context, sending: &mut VecDeque<Outgoing<Held>>) {
    let now = Instant::now();
    let mut stats = ctx.stats.borrow_mut();
    for out in sending {
        if let Some(received) = out.hold.1.take() {
            stats
                .udp_latency
                .observe(now.saturating_duration_since(received));
        }
    }
}

/// Serves UDP clients until the socket fails.
///
/// What each datagram gets is [`Context::admit`]'s decision; a forwarded
/// query's answer is truncated (TC=1) to what the client advertised, and
/// never larger than `max_udp_size` (RFC 6891 §6.2.5; DNS Flag Day 2020).
pub async fn serve(sock: UdpSocket, ctx: Rc<Context>) {
    let sock = Rc::new(Datagrams::new(sock));
    let outbox = Rc::new(Outbox::default());
    // The flushing task ends with its listener.
    let _flush = {
        let (sock, outbox, ctx) = (sock.clone(), outbox.clone(), ctx.clone());
        AbortOnDrop(tokio::task::spawn_local(async move {
            outbox.flush(&sock, &ctx).await;
        }))
    };
    let mut batch = Batch::default();
    loop {
        outbox.room().await;
        if let Err(e) = sock.recv(&mut batch).await {
            // ICMP errors from earlier sends surface here; keep serving.
            ctx.log
                .event(Level::Debug, "udp receive error", &[("error", &e)]);
        }
        let full = batch.is_full();
        // One reading of the clock and of the configuration for the batch.
        let received = Instant::now();
        let generation = ctx.current();
        // Whether the batch made answers of its own (`send_now` below).
        let mut answered = false;
        for (packet, peer) in batch.drain() {
            // An answer the proxy makes from the query alone (FORMERR,
            // NOTIMP, REFUSED), sent with the batch's.
            let reply = |rcode| {
                let reply = message::synthesize_response(&packet, rcode)?;
                count(&ctx, &reply, false);
                outbox.push_quietly(reply, peer, (None, Some(received)));
                Some(())
            };
            let q = match ctx.admit(&generation, Transport::Udp, peer.ip(), &packet) {
                Decision::Forward(q) => q,
                Decision::Reply(rcode) => {
                    answered |= reply(rcode).is_some();
                    continue;
                }
                Decision::Drop(_) | Decision::Close(_) => continue,
            };
            let limit = q.udp_limit().min(generation.config.max_udp_size);
            let key = match ctx.from_cache(&generation, &q, peer, Transport::Udp, received) {
                FromCache::Answer(answer) => {
                    // A hit holds no slot (`admission::slot`): the outbox's
                    // own bound ([`OUTBOX_LIMIT`]) holds its answer.
                    let to = ReplyTo {
                        peer,
                        limit,
                        hold: (None, Some(received)),
                    };
                    to.send_quietly(&ctx, &outbox, answer);
                    answered = true;
                    continue;
                }
                FromCache::Miss(key) => key,
            };
            let permit = match ctx.slot(peer.ip()) {
                Ok(permit) => permit,
                Err(rcode) => {
                    answered |= reply(rcode).is_some();
                    continue;
                }
            };
            let to = ReplyTo {
                peer,
                limit,
                hold: (Some(permit), Some(received)),
            };
            let (outbox, ctx, generation) = (outbox.clone(), ctx.clone(), generation.clone());
            tokio::task::spawn_local(async move {
                // The outbox reads the clock once for what it sends together.
                let (answer, _) = ctx
                    .resolve(&generation, &q, key, peer, Transport::Udp, received)
                    .await;
                // The old configuration (and its upstream connections) goes as
                // soon as its last query is answered.
                drop(generation);
                // The slot is held until the answer is sent: answers waiting on
                // a full socket stay counted, so they cannot pile up unbounded.
                to.send(&ctx, &outbox, answer);
            });
        }
        // What this batch answered itself goes now, in one send (with any
        // forwarded query's answer queued meanwhile).
        if answered {
            outbox.send_now(&sock, &ctx);
        }
        // A full batch leaves the socket readable, so the next receive
        // does not wait, and under a flood faster than the worker this
        // loop would never give the event loop a turn: not to the worker's
        // other sockets and tasks (the upstream's answers among them), nor
        // to the host's watchdog, which stops a loop that has not waited
        // for a second. So each full batch spends a unit of tokio's
        // cooperative budget, as a read of a tokio socket does: at most
        // 128 batches (2,048 datagrams) in a row, then the loop turns.
        // Yielding after every full batch was fairer to the other sockets
        // but cost the UDP clients under a mixed attack: the `hostile`
        // group's every-attack test lost UDP probes to the kernel's full
        // receive buffer in two runs of three.
        if full {
            tokio::task::consume_budget().await;
        }
    }
}

/// Where a forwarded query's answer goes: its client, the size the client
/// can take (never over `max_udp_size`), and what the answer holds until it
/// is sent (the query's slot, and when the query came in).
struct ReplyTo {
    peer: SocketAddr,
    limit: usize,
    hold: Held,
}

impl ReplyTo {
    /// Queues `answer`, truncated (TC=1) to the limit, and counts it.
    fn send(self, ctx: &Context, outbox: &Outbox, answer: Response) {
        let (data, peer, hold) = self.finish(ctx, answer);
        outbox.push(data, peer, hold);
    }

    /// As [`ReplyTo::send`], for the receive loop, which sends it with
    /// [`Outbox::send_now`] at the end of its batch.
    fn send_quietly(self, ctx: &Context, outbox: &Outbox, answer: Response) {
        let (data, peer, hold) = self.finish(ctx, answer);
        outbox.push_quietly(data, peer, hold);
    }

    fn finish(self, ctx: &Context, mut answer: Response) -> (Vec<u8>, SocketAddr, Held) {
        let truncated = answer.truncate_for_udp(self.limit);
        count(ctx, answer.bytes(), truncated);
        (answer.into_bytes(), self.peer, self.hold)
    }
}

/// Counts an answer to a client: its RCODE and whether it was truncated
/// (its latency is counted when it is sent, [`Outbox::flush`]).
fn count(ctx: &Context, answer: &[u8], truncated: bool) {
    let mut stats = ctx.stats.borrow_mut();
    stats.udp_answers.count(answer);
    stats.truncated += u64::from(truncated);
}
