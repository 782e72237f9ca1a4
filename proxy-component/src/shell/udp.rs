//! The UDP listener. Each datagram is one query; answers larger than the
//! client can take are truncated with TC=1 (RFC 1035 §4.2.1, RFC 6891 §7) so
//! the client retries over TCP.
//!
//! Datagrams come in and go out in batches ([`Datagrams`]): the receive
//! loop takes what the socket has queued (up to [`crate::shell::datagrams::BATCH`]) in
//! one call and reads the clock once for all of them; answers go into an
//! [`Outbox`] that one task empties with one send call for everything queued
//! since its last turn. Under load that is many datagrams per host call; at
//! low load it is one, and an answer waits for no other.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::core::admission::{Decision, Transport};
use crate::core::message::{self, Response};
use crate::shell::AbortOnDrop;
use crate::shell::context::{Admitted, Context, FromCache, InflightPermit};
use crate::shell::datagrams::{Batch, Datagrams, Outgoing};
use crate::shell::log::Level;

/// Receive buffer asked of the OS, so a burst is queued, not dropped.
pub const RECV_BUFFER: usize = 4 * 1024 * 1024;

/// Answers queued and not yet sent, at most, before the listener stops
/// reading until they are (then the OS's receive buffer queues, and drops,
/// the next queries). Answers to forwarded queries also hold their in-flight
/// slot until sent, so `max_inflight` bounds them as well; this bounds the
/// answers made without one (REFUSED, FORMERR, NOTIMP): each at most the
/// query ([`crate::core::admission::MAX_QUERY_LEN`]) plus an 11-byte OPT.
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
/// (if it has one), held until it is sent, and when the query came in.
type Held = (Option<InflightPermit>, Instant);

/// Answers waiting for the socket.
#[derive(Default)]
struct Outbox {
    queue: RefCell<VecDeque<Outgoing<Held>>>,
    /// Something was queued.
    queued: Notify,
    /// The queue was emptied.
    emptied: Notify,
}

impl Outbox {
    fn push(&self, data: Vec<u8>, peer: SocketAddr, hold: Held) {
        self.queue
            .borrow_mut()
            .push_back(Outgoing { data, peer, hold });
        self.queued.notify_one();
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
                {
                    let now = Instant::now();
                    let mut stats = ctx.stats.borrow_mut();
                    for out in &sending {
                        stats
                            .udp_latency
                            .observe(now.saturating_duration_since(out.hold.1));
                    }
                }
                sock.send(&mut sending).await;
            }
            self.emptied.notify_waiters();
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
        // One reading of the clock and of the configuration for the batch.
        let received = Instant::now();
        let generation = ctx.current();
        for (packet, peer) in batch.drain() {
            let (q, permit) = match ctx.admit(&generation, Transport::Udp, peer.ip(), &packet) {
                Admitted::Forward(q, permit) => (q, permit),
                Admitted::Other(Decision::Reply(rcode)) => {
                    if let Some(reply) = message::synthesize_response(&packet, rcode) {
                        count(&ctx, &reply, false);
                        outbox.push(reply, peer, (None, received));
                    }
                    continue;
                }
                Admitted::Other(_) => continue,
            };
            let to = ReplyTo {
                peer,
                limit: q.udp_limit().min(generation.config.max_udp_size),
                hold: (Some(permit), received),
            };
            let key = match ctx.from_cache(&generation, &q, peer, Transport::Udp, received) {
                FromCache::Answer(answer) => {
                    to.send(&ctx, &outbox, answer);
                    continue;
                }
                FromCache::Miss(key) => key,
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
    fn send(self, ctx: &Context, outbox: &Outbox, mut answer: Response) {
        let truncated = answer.truncate_for_udp(self.limit);
        count(ctx, answer.bytes(), truncated);
        outbox.push(answer.into_bytes(), self.peer, self.hold);
    }
}

/// Counts an answer to a client: its RCODE and whether it was truncated
/// (its latency is counted when it is sent, [`Outbox::flush`]).
fn count(ctx: &Context, answer: &[u8], truncated: bool) {
    let mut stats = ctx.stats.borrow_mut();
    stats.udp_answers.count(answer);
    stats.truncated += u64::from(truncated);
}
