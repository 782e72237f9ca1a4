//! The UDP listener. Each datagram is one query; answers larger than the
//! client can take are truncated with TC=1 (RFC 1035 §4.2.1, RFC 6891 §7) so
//! the client retries over TCP.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use tokio::net::UdpSocket;

use crate::core::admission::{Decision, Transport};
use crate::core::message::{self, Query, Response};
use crate::shell::context::{Admitted, Context, FromCache};
use crate::shell::log::Level;

/// Receive buffer asked of the OS, so a burst is queued, not dropped.
pub const RECV_BUFFER: usize = 4 * 1024 * 1024;

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

/// Serves UDP clients until the socket fails.
///
/// What each datagram gets is [`Context::admit`]'s decision; a forwarded
/// query's answer is truncated (TC=1) to what the client advertised, and
/// never larger than `max_udp_size` (RFC 6891 §6.2.5; DNS Flag Day 2020).
pub async fn serve(sock: UdpSocket, ctx: Rc<Context>) {
    let sock = Rc::new(sock);
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here; keep serving.
                ctx.log
                    .event(Level::Debug, "udp receive error", &[("error", &e)]);
                continue;
            }
        };
        let packet = &buf[..n];
        let received = Instant::now();
        let generation = ctx.current();
        let (q, permit) = match ctx.admit(&generation, Transport::Udp, peer.ip(), packet) {
            Admitted::Forward(q, permit) => (q, permit),
            Admitted::Other(Decision::Reply(rcode)) => {
                let reply = message::synthesize_response(packet, rcode);
                if let Some(reply) = &reply {
                    count(&ctx, reply, false, received);
                }
                send(&sock, reply, peer).await;
                continue;
            }
            Admitted::Other(_) => continue,
        };
        let key = match ctx.from_cache(&generation, &q, peer, Transport::Udp) {
            FromCache::Answer(answer) => {
                let max_udp_size = generation.config.max_udp_size;
                reply(&ctx, &sock, answer, &q, max_udp_size, peer, received).await;
                drop(permit);
                continue;
            }
            FromCache::Miss(key) => key,
        };
        let (sock, ctx) = (sock.clone(), ctx.clone());
        tokio::task::spawn_local(async move {
            let answer = ctx
                .resolve(&generation, &q, key, peer, Transport::Udp, received)
                .await;
            let max_udp_size = generation.config.max_udp_size;
            // The old configuration (and its upstream connections) goes as
            // soon as its last query is answered.
            drop(generation);
            // The slot is held until the answer is sent: answers waiting on
            // a full socket stay counted, so they cannot pile up unbounded.
            reply(&ctx, &sock, answer, &q, max_udp_size, peer, received).await;
            drop(permit);
        });
    }
}

/// Sends `answer` to `peer`, truncated (TC=1) to what the query's client
/// can take and never over `max_udp_size`, and counts it.
async fn reply(
    ctx: &Context,
    sock: &UdpSocket,
    mut answer: Response,
    query: &Query,
    max_udp_size: usize,
    peer: SocketAddr,
    received: Instant,
) {
    let truncated = answer.truncate_for_udp(query.udp_limit().min(max_udp_size));
    count(ctx, answer.bytes(), truncated, received);
    send(sock, Some(answer.into_bytes()), peer).await;
}

/// Counts an answer to a client (its RCODE, whether it was truncated, and
/// the time since its query came in).
fn count(ctx: &Context, answer: &[u8], truncated: bool, received: Instant) {
    let mut stats = ctx.stats.borrow_mut();
    stats.udp_answers.count(answer);
    stats.udp_latency.observe(received.elapsed());
    stats.truncated += u64::from(truncated);
}

async fn send(sock: &UdpSocket, reply: Option<Vec<u8>>, peer: SocketAddr) {
    if let Some(reply) = reply {
        // A lost UDP answer is the client's to retry; nothing to do here.
        let _ = sock.send_to(&reply, peer).await;
    }
}
