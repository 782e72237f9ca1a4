//! The TCP listener (RFC 7766). A client may pipeline many queries on one
//! connection; they are resolved concurrently and answered as they complete,
//! in any order (RFC 7766 §6.2.1.1). Idle connections are closed
//! (§6.2.3), connections are capped, and each connection has a bound on its
//! queries in flight: at that bound the proxy stops reading from it, which
//! slows that client alone.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

use crate::core::framing::{Deframer, MAX_MESSAGE_LEN, frame_into};
use crate::core::message::{self, QueryError, Rcode};
use crate::shell::Context;
use crate::shell::accept::Acceptor;
use crate::shell::log::Level;

/// Queries one TCP client may have in flight before we stop reading.
pub const PER_CLIENT_INFLIGHT: usize = 128;

/// Accepts clients until the listener fails.
pub async fn serve(listener: Acceptor, ctx: Rc<Context>) {
    let clients = Rc::new(Cell::new(0usize));
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
        if clients.get() >= ctx.config.max_tcp_clients {
            // Closing at once is the defined answer at the cap (RFC 7766
            // §6.2.2 lets a server close connections it cannot serve).
            ctx.log.event(
                Level::Debug,
                "tcp client limit reached, closing",
                &[("client", &peer)],
            );
            drop(stream);
            continue;
        }
        clients.set(clients.get() + 1);
        let (ctx, clients) = (ctx.clone(), clients.clone());
        tokio::task::spawn_local(async move {
            ctx.log.event(
                Level::Debug,
                "connected by",
                &[("client", &peer), ("proto", &"tcp")],
            );
            let reason = client(stream, peer, &ctx).await;
            ctx.log.event(
                Level::Debug,
                "client closed",
                &[("client", &peer), ("reason", &reason)],
            );
            clients.set(clients.get() - 1);
        });
    }
}

async fn client(stream: TcpStream, peer: SocketAddr, ctx: &Rc<Context>) -> &'static str {
    let allowed = ctx.acl.allows(peer.ip());
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::task::spawn_local(write_answers(wr, rx));
    let slots = Arc::new(Semaphore::new(PER_CLIENT_INFLIGHT));
    let mut deframer = Deframer::new(MAX_MESSAGE_LEN);
    let mut buf = vec![0u8; 16 * 1024];
    let idle = ctx.config.tcp_idle_timeout;
    let reason = 'conn: loop {
        let read = tokio::time::timeout(idle, rd.read(&mut buf)).await;
        let n = match read {
            Err(_) if slots.available_permits() == PER_CLIENT_INFLIGHT => break "idle",
            Err(_) => continue, // answers still pending: not idle
            Ok(Err(_)) => break "read error",
            Ok(Ok(0)) => break "closed by client",
            Ok(Ok(n)) => n,
        };
        deframer.push(&buf[..n]);
        loop {
            let msg = match deframer.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => break 'conn "bad frame",
            };
            let reply = |rcode| message::synthesize_response(&msg, rcode);
            if !allowed {
                queue(&tx, reply(Rcode::Refused));
                continue;
            }
            let q = match message::parse_query(&msg) {
                Ok(q) => q,
                Err(QueryError::FormErr(_)) => {
                    queue(&tx, reply(Rcode::FormErr));
                    continue;
                }
                Err(QueryError::NotImp) => {
                    queue(&tx, reply(Rcode::NotImp));
                    continue;
                }
                // Not a query at all (a response, or shorter than a header).
                Err(_) => break 'conn "not a query",
            };
            let Some(permit) = ctx.try_admit() else {
                queue(&tx, reply(Rcode::Refused));
                continue;
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break 'conn "closed";
            };
            let (tx, ctx) = (tx.clone(), ctx.clone());
            tokio::task::spawn_local(async move {
                let answer = ctx.resolver.resolve(&msg, &q).await;
                queue(&tx, Some(answer));
                drop((permit, slot));
            });
        }
    };
    // Answers still being resolved are written before the connection closes;
    // the writer ends when the last sender is gone.
    drop(tx);
    let _ = writer.await;
    reason
}

fn queue(tx: &mpsc::UnboundedSender<Vec<u8>>, answer: Option<Vec<u8>>) {
    if let Some(answer) = answer {
        let _ = tx.send(answer);
    }
}

async fn write_answers(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let mut batch = Vec::with_capacity(8 * 1024);
    while let Some(first) = rx.recv().await {
        batch.clear();
        frame_into(&mut batch, &first);
        while batch.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => frame_into(&mut batch, &more),
                Err(_) => break,
            }
        }
        if wr.write_all(&batch).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}
