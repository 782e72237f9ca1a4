//! The TCP listener (RFC 7766). A client may pipeline many queries on one
//! connection; they are resolved concurrently and answered as they complete,
//! in any order (RFC 7766 §6.2.1.1).
//!
//! Every decision is the core's: [`Context::admit`] says what a message
//! gets, [`ClientConn`] when to stop reading, when to wake up and when to
//! close, [`choose_victim`] which connection makes room at
//! `max_tcp_clients`, [`Pressure`] and [`Sweeps`] when idle connections
//! close sooner. This file only moves bytes: it waits for readiness and
//! reads into one scratch buffer shared by all connections, so an idle
//! connection holds no read buffer, and it writes answers from one buffer per
//! connection whose size the core bounds.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::core::admission::{Decision, MAX_QUERY_LEN, SourceKey, Transport};
use crate::core::client_conn::{
    Candidate, ClientConn, ClientLimits, Pressure, Sweep, Sweeps, choose_victim,
};
use crate::core::framing::{Deframer, frame_into};
use crate::core::message;
use crate::shell::accept::Acceptor;
use crate::shell::context::{Context, FromCache};
use crate::shell::deadline::Deadline;
use crate::shell::log::Level;
use crate::shell::readiness::Drained;
use crate::shell::send;
use crate::shell::signal::Signal;

/// Bytes read per readiness event, into the scratch buffer.
const READ_CHUNK: usize = 4096;

/// The most handed to the host per write. What the host has taken sits in
/// host memory, outside the component's budget, until the kernel accepts
/// it: wasmtime-wasi lets one write of up to 64 KiB wait per stream, so a
/// client with a zero window could park 64 KiB there, 128 MiB over 2,048
/// clients. 16 KiB keeps that part at a quarter (the README's memory
/// table) and still moves a full-size answer in a few calls.
const WRITE_CHUNK: usize = 16 * 1024;

/// One client connection as the listener and its query tasks see it.
struct Client {
    peer: SocketAddr,
    state: RefCell<ClientConn>,
    out: RefCell<OutBuf>,
    /// Wakes the connection's task: an answer is queued, or it was evicted.
    wake: Signal,
}

/// Framed answers not yet accepted by the socket.
#[derive(Default)]
struct OutBuf {
    buf: Vec<u8>,
    start: usize,
}

impl OutBuf {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            // Give a large buffer back once drained: memory is the budget
            // (the README counts at most 4 KiB kept per idle client).
            if self.buf.capacity() > 4 * 1024 {
                self.buf = Vec::new();
            }
        }
    }
}

impl Client {
    /// Queues an answer or reply, if the core lets it; wakes the task either
    /// way (a refusal closes the connection). `now` is the caller's last
    /// clock reading, with no wait since (the query's own `received` for
    /// one answered in the same turn), for the latency and the core.
    fn queue(&self, ctx: &Context, msg: &[u8], answer: bool, received: Instant, now: Instant) {
        {
            let mut stats = ctx.stats.borrow_mut();
            stats.tcp_answers.count(msg);
            stats
                .tcp_latency
                .observe(now.saturating_duration_since(received));
        }
        let len = msg.len() + 2;
        let now = now.into_std();
        let mut budget = ctx.budget.borrow_mut();
        let mut state = self.state.borrow_mut();
        let accepted = if answer {
            state.on_answer(now, len, &mut budget)
        } else {
            state.on_reply(now, len, &mut budget)
        };
        if accepted.is_ok() {
            frame_into(&mut self.out.borrow_mut().buf, msg);
        }
        self.wake.notify();
    }
}

/// The open client connections of every TCP listener, by id:
/// `max_tcp_clients` counts them all.
#[derive(Clone, Default)]
pub struct Clients {
    open: Rc<RefCell<HashMap<u64, Rc<Client>>>>,
    next_id: Rc<std::cell::Cell<u64>>,
    sweeps: Rc<RefCell<Sweeps>>,
}

/// Accepts clients until the listener fails.
pub async fn serve(listener: Acceptor, ctx: Rc<Context>, table: Clients) {
    let clients = table.open.clone();
    let scratch = Rc::new(RefCell::new(vec![0u8; READ_CHUNK]));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                ctx.log
                    .event(Level::Warn, "tcp accept failed", &[("error", &e)]);
                // Out of descriptors and the like: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Read per connection: a reload changes them for new clients.
        let (limits, max_clients) = {
            let config = &ctx.current().config;
            (
                ClientLimits::with_idle_timeout(config.tcp_idle_timeout),
                config.max_tcp_clients,
            )
        };
        make_room(&clients.borrow(), max_clients, &ctx);
        let id = table.next_id.get() + 1;
        table.next_id.set(id);
        let client = Rc::new(Client {
            peer,
            state: RefCell::new(ClientConn::new(
                Instant::now().into_std(),
                limits,
                SourceKey::of(peer.ip()),
            )),
            out: RefCell::default(),
            wake: Signal::default(),
        });
        clients.borrow_mut().insert(id, client.clone());
        ctx.stats.borrow_mut().tcp_clients += 1;
        let open = clients.borrow().len();
        let sweep =
            table
                .sweeps
                .borrow_mut()
                .on_accept(Instant::now().into_std(), open, max_clients);
        if let Some(sweep) = sweep {
            wake_idle(&clients.borrow(), sweep, max_clients, &limits, &ctx);
        }
        let (ctx, clients, scratch) = (ctx.clone(), clients.clone(), scratch.clone());
        tokio::task::spawn_local(async move {
            ctx.log.event(
                Level::Debug,
                "connected by",
                &[("client", &peer), ("proto", &"tcp")],
            );
            let occupancy = Occupancy {
                open: &clients,
                max: max_clients,
            };
            let reason = serve_client(&stream, &client, &ctx, &scratch, occupancy).await;
            client
                .state
                .borrow_mut()
                .release(&mut ctx.budget.borrow_mut());
            clients.borrow_mut().remove(&id);
            let mut stats = ctx.stats.borrow_mut();
            stats.tcp_clients = stats.tcp_clients.saturating_sub(1);
            drop(stats);
            ctx.log.event(
                Level::Debug,
                "client closed",
                &[("client", &peer), ("reason", &reason)],
            );
        });
    }
}

/// At `max_tcp_clients`, evicts the connection the core chooses (RFC 7766
/// §6.2.3 lets a server close idle connections under pressure); the new
/// client is then served at once.
fn make_room(clients: &HashMap<u64, Rc<Client>>, max: usize, ctx: &Context) {
    if clients.len() < max {
        return;
    }
    let open: Vec<Candidate<u64>> = clients
        .iter()
        .filter_map(|(&id, c)| {
            let state = c.state.borrow();
            state.closed().is_none().then(|| Candidate {
                id,
                source: SourceKey::of(c.peer.ip()),
                last_activity: state.last_activity(),
                idle: state.is_idle(),
            })
        })
        .collect();
    if open.len() < max {
        return;
    }
    if let Some(victim) = choose_victim(&open).and_then(|id| clients.get(&id)) {
        ctx.log.event(
            Level::Debug,
            "tcp client limit reached, evicting",
            &[("client", &victim.peer)],
        );
        victim.state.borrow_mut().evict();
        victim.wake.notify();
    }
}

/// The pressure has risen: every idle connection is woken to take its
/// shorter idle timeout (those idle past it close at once). The core rate-
/// limits the calls ([`Sweeps`]); the log line is `info` only when the
/// pressure rose, so an attack that keeps it up does not flood the log.
fn wake_idle(
    clients: &HashMap<u64, Rc<Client>>,
    sweep: Sweep,
    max: usize,
    limits: &ClientLimits,
    ctx: &Context,
) {
    let mut idle = 0usize;
    for c in clients.values() {
        if c.state.borrow().is_idle() {
            idle += 1;
            c.wake.notify();
        }
    }
    let pressure = sweep.pressure;
    ctx.log.event(
        if sweep.rose {
            Level::Info
        } else {
            Level::Debug
        },
        "tcp clients under pressure, idle timeout shortened",
        &[
            ("pressure", &pressure.as_str()),
            ("open", &clients.len()),
            ("max", &max),
            ("idle", &idle),
            (
                "idle_timeout",
                &format!("{:?}", pressure.idle_timeout(limits.idle_timeout)),
            ),
        ],
    );
}

/// The listener's open connections and its `max_tcp_clients` (this
/// worker's share), for the [`Pressure`].
#[derive(Clone, Copy)]
struct Occupancy<'a> {
    open: &'a RefCell<HashMap<u64, Rc<Client>>>,
    max: usize,
}

impl Occupancy<'_> {
    fn pressure(self) -> Pressure {
        Pressure::of(self.open.borrow().len(), self.max)
    }
}

/// Serves one connection until the core closes it or the client leaves;
/// returns why, for the log.
async fn serve_client(
    stream: &TcpStream,
    client: &Rc<Client>,
    ctx: &Rc<Context>,
    scratch: &RefCell<Vec<u8>>,
    occupancy: Occupancy<'_>,
) -> &'static str {
    let mut deframer = Deframer::new(MAX_QUERY_LEN);
    // The client half-closed: answer what it sent, then close.
    let mut eof = false;
    let mut timer = Deadline::default();
    loop {
        if let Some(why) = take_queries(&mut deframer, client, ctx, false) {
            return why;
        }
        let (may_read, done) = {
            let mut state = client.state.borrow_mut();
            state.on_pressure(occupancy.pressure());
            if let Some(close) = state.closed() {
                return close.as_str();
            }
            let may_read = !eof && state.may_read(&ctx.budget.borrow());
            let done = eof && state.inflight() == 0 && state.backlog() == 0;
            timer.set(state.deadline().map(Instant::from_std));
            (may_read, done)
        };
        if done {
            return "closed by client";
        }
        let has_out = !client.out.borrow().pending().is_empty();
        tokio::select! {
            () = client.wake.notified() => {}
            ready = stream.readable(), if may_read => {
                if ready.is_err() {
                    return "read error";
                }
                let read = {
                    let mut buf = scratch.borrow_mut();
                    match stream.try_read(&mut buf) {
                        Ok(n) => {
                            deframer.push(&buf[..n]);
                            // A short read took all there was: the next
                            // waits for more instead of finding none.
                            if 0 < n && n < buf.len() {
                                stream.drained();
                            }
                            Ok(n)
                        }
                        Err(e) => Err(e),
                    }
                };
                match read {
                    Ok(0) => eof = true,
                    Ok(_) => {
                        if let Some(why) = take_queries(&mut deframer, client, ctx, true) {
                            return why;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return "read error",
                }
            }
            ready = stream.writable(), if has_out => {
                if ready.is_err() {
                    return "write error";
                }
                let written = {
                    let out = client.out.borrow();
                    let pending = out.pending();
                    send::try_write(stream, &pending[..pending.len().min(WRITE_CHUNK)])
                };
                match written {
                    Ok(n) => {
                        client.out.borrow_mut().consume(n);
                        client.state.borrow_mut().on_written(
                            Instant::now().into_std(),
                            n,
                            &mut ctx.budget.borrow_mut(),
                        );
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return "write error",
                }
            }
            () = timer.fired() => {
                let now = Instant::now().into_std();
                let mut state = client.state.borrow_mut();
                state.on_pressure(occupancy.pressure());
                if let Some(close) = state.on_timer(now) {
                    return close.as_str();
                }
            }
        }
    }
}

/// Takes the complete queries the deframer holds, as far as the core lets
/// the connection take more, and starts a task for each forwarded one; tells
/// the core what was read when `just_read` (or when messages were taken).
/// `Some` closes the connection.
fn take_queries(
    deframer: &mut Deframer,
    client: &Rc<Client>,
    ctx: &Rc<Context>,
    just_read: bool,
) -> Option<&'static str> {
    let mut messages = 0;
    // One clock reading for every message taken in this call (they came in
    // with the same read), taken when the first is, or for the read.
    let mut clock = None;
    while client.state.borrow().may_take_query() {
        let msg = match deframer.next_message() {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(_) => return Some("bad frame"),
        };
        messages += 1;
        let received = *clock.get_or_insert_with(Instant::now);
        let generation = ctx.current();
        // An answer the proxy makes from the query alone (FORMERR, NOTIMP,
        // REFUSED).
        let reply = |rcode| {
            if let Some(reply) = message::synthesize_response(&msg, rcode) {
                client.queue(ctx, &reply, false, received, received);
            }
        };
        let q = match ctx.admit(&generation, Transport::Tcp, client.peer.ip(), &msg) {
            Decision::Forward(q) => q,
            Decision::Reply(rcode) => {
                reply(rcode);
                continue;
            }
            Decision::Close(why) => return Some(why.as_str()),
            Decision::Drop(_) => continue,
        };
        let key = match ctx.from_cache(
            &generation,
            &q,
            client.peer,
            Transport::Tcp,
            received.into_std(),
        ) {
            // A hit holds no slot (`admission::slot`).
            FromCache::Answer(answer) => {
                client.state.borrow_mut().on_forwarded();
                client.queue(ctx, answer.bytes(), true, received, received);
                continue;
            }
            FromCache::Miss(key) => key,
        };
        let permit = match ctx.slot(client.peer.ip()) {
            Ok(permit) => permit,
            Err(rcode) => {
                reply(rcode);
                continue;
            }
        };
        client.state.borrow_mut().on_forwarded();
        let (client, ctx) = (client.clone(), ctx.clone());
        tokio::task::spawn_local(async move {
            let (answer, now) = ctx
                .resolve(
                    &generation,
                    &q,
                    key,
                    client.peer,
                    Transport::Tcp,
                    received.into_std(),
                )
                .await;
            drop(generation);
            drop(permit);
            client.queue(&ctx, answer.bytes(), true, received, now.into());
        });
    }
    if just_read || messages > 0 {
        let now = *clock.get_or_insert_with(Instant::now);
        client
            .state
            .borrow_mut()
            .on_read(now.into_std(), messages, deframer.holds_partial_frame());
    }
    None
}
