//! The vendored wasmtime-wasi's batched datagram calls
//! (`vendor/wasmtime-wasi/src/sockets/mmsg.rs`, `recvmmsg` and `sendmmsg`),
//! which carry every UDP datagram the component receives and sends, against
//! real loopback sockets: what a batch holds, in what order, from and to
//! whom, and the byte budget of one `receive`.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use wasmtime_wasi::sockets::mmsg::{Inbox, MAX_BATCH, recv_batch, send_batch};

/// Loopback delivers a datagram before `send` returns on Linux; this is the
/// margin for a busy machine before a socket is read.
const SETTLE: Duration = Duration::from_millis(50);

async fn socket(addr: &str) -> UdpSocket {
    UdpSocket::bind(addr).await.expect("bind a loopback socket")
}

/// Distinct bytes for the `i`th datagram, `len` long.
fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

/// Receives until `n` datagrams came or a second passed; the sizes of the
/// batches as well.
async fn recv_all(sock: &UdpSocket, n: usize) -> (Vec<(Vec<u8>, SocketAddr)>, Vec<usize>) {
    let mut got = VecDeque::new();
    let mut batches = Vec::new();
    tokio::time::timeout(Duration::from_secs(1), async {
        while got.len() < n {
            sock.readable().await.expect("readiness");
            match recv_batch(sock, MAX_BATCH, &mut got) {
                Ok(k) => batches.push(k),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv_batch: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {n} datagrams came", got.len()));
    (got.into(), batches)
}

#[tokio::test]
async fn a_batch_is_what_was_queued_oldest_first_each_whole_with_its_sender() {
    let rx = socket("127.0.0.1:0").await;
    let (a, b) = (socket("127.0.0.1:0").await, socket("127.0.0.1:0").await);
    let to = rx.local_addr().unwrap();
    // Sizes from one byte to the largest IPv4 datagram, from two senders.
    let sizes = [
        1, 12, 512, 1232, 4096, 65_507, 17, 1500, 300, 2, 9000, 40, 1, 700, 64, 65_000, 3, 999,
        128, 33,
    ];
    let mut sent = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let from = if i % 3 == 0 { &b } else { &a };
        from.send_to(&payload(i, len), to).await.unwrap();
        sent.push((payload(i, len), from.local_addr().unwrap()));
    }
    tokio::time::sleep(SETTLE).await;
    let (got, batches) = recv_all(&rx, sizes.len()).await;
    assert_eq!(got, sent);
    // Everything was queued: a full batch, then the rest.
    assert_eq!(batches, [MAX_BATCH, sizes.len() - MAX_BATCH]);
    // Drained: would block, and asks for nothing past `MAX_BATCH`.
    let mut none = VecDeque::new();
    let drained = recv_batch(&rx, MAX_BATCH, &mut none).unwrap_err();
    assert_eq!(drained.kind(), ErrorKind::WouldBlock);
    assert!(none.is_empty());
}

#[tokio::test]
async fn a_batch_takes_no_more_than_asked() {
    let rx = socket("127.0.0.1:0").await;
    let tx = socket("127.0.0.1:0").await;
    for i in 0..5 {
        tx.send_to(&payload(i, 10), rx.local_addr().unwrap())
            .await
            .unwrap();
    }
    tokio::time::sleep(SETTLE).await;
    rx.readable().await.unwrap();
    let mut got = VecDeque::new();
    assert_eq!(recv_batch(&rx, 2, &mut got).unwrap(), 2);
    assert_eq!(recv_batch(&rx, 0, &mut got).unwrap(), 0);
    assert_eq!(recv_batch(&rx, 100, &mut got).unwrap(), 3);
    let got: Vec<_> = got.into_iter().map(|(data, _)| data).collect();
    assert_eq!(got, (0..5).map(|i| payload(i, 10)).collect::<Vec<_>>());
}

#[tokio::test]
async fn ipv6_senders_come_back_as_they_are() {
    let rx = socket("[::1]:0").await;
    let tx = socket("[::1]:0").await;
    tx.send_to(b"six", rx.local_addr().unwrap()).await.unwrap();
    let (got, _) = recv_all(&rx, 1).await;
    assert_eq!(got, [(b"six".to_vec(), tx.local_addr().unwrap())]);
    // And a batch goes out to IPv6 addresses.
    let sent = send_batch(&rx, &[(b"back", Some(tx.local_addr().unwrap()))]).unwrap();
    assert_eq!(sent, 1);
    let mut buf = [0; 16];
    let (n, from) = tx.recv_from(&mut buf).await.unwrap();
    assert_eq!((&buf[..n], from), (&b"back"[..], rx.local_addr().unwrap()));
}

/// The receive headers are set up once per thread and reused: each receive
/// must offer every slot the room of the largest address again, or an IPv6
/// sender after an IPv4 one (whose 16 bytes the kernel wrote as the
/// slot's length) would come back cut to 16 bytes, its address part stale.
#[tokio::test]
async fn an_ipv6_sender_after_an_ipv4_one_comes_back_whole() {
    let four = (socket("127.0.0.1:0").await, socket("127.0.0.1:0").await);
    let six = (socket("[::1]:0").await, socket("[::1]:0").await);
    // Each pair is (receiver, sender); the same thread receives on both.
    for round in 0..2 {
        for (rx, tx) in [&four, &six] {
            tx.send_to(b"hello", rx.local_addr().unwrap())
                .await
                .unwrap();
            let (got, _) = recv_all(rx, 1).await;
            let want = [(b"hello".to_vec(), tx.local_addr().unwrap())];
            assert_eq!(got, want, "round {round}");
        }
    }
}

#[tokio::test]
async fn one_receive_returns_at_most_its_budget_and_keeps_the_rest_for_the_next() {
    let rx = socket("127.0.0.1:0").await;
    let tx = socket("127.0.0.1:0").await;
    for i in 0..3 {
        tx.send_to(&payload(i, 40_000), rx.local_addr().unwrap())
            .await
            .unwrap();
    }
    tokio::time::sleep(SETTLE).await;
    rx.readable().await.unwrap();
    let mut inbox = Inbox::default();
    let budget = 64 * 1024;
    // 40,001 bytes is under the budget, so a second comes; 80,002 is over.
    let first = inbox.receive(&rx, MAX_BATCH, budget, |_| true).unwrap();
    assert_eq!(first.len(), 2);
    assert!(
        inbox.has_pending(),
        "the third is off the socket, held here"
    );
    let second = inbox.receive(&rx, MAX_BATCH, budget, |_| true).unwrap();
    assert_eq!(second.len(), 1);
    assert!(!inbox.has_pending());
    let all: Vec<_> = first
        .into_iter()
        .chain(second)
        .map(|(data, _)| data)
        .collect();
    assert_eq!(all, (0..3).map(|i| payload(i, 40_000)).collect::<Vec<_>>());
    let drained = inbox.receive(&rx, MAX_BATCH, budget, |_| true).unwrap_err();
    assert_eq!(drained.kind(), ErrorKind::WouldBlock);
    // A budget smaller than one datagram still returns one.
    tx.send_to(&payload(9, 100), rx.local_addr().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(SETTLE).await;
    let one = inbox.receive(&rx, MAX_BATCH, 1, |_| true).unwrap();
    assert_eq!(one, [(payload(9, 100), tx.local_addr().unwrap())]);
}

#[tokio::test]
async fn datagrams_from_refused_senders_are_dropped_and_never_handed_out() {
    let rx = socket("127.0.0.1:0").await;
    let (friend, stranger) = (socket("127.0.0.1:0").await, socket("127.0.0.1:0").await);
    let to = rx.local_addr().unwrap();
    let allowed = friend.local_addr().unwrap();
    for i in 0..4 {
        stranger.send_to(&payload(i, 8), to).await.unwrap();
        friend.send_to(&payload(i + 100, 8), to).await.unwrap();
    }
    // A whole batch of strangers, then one friend: the receive goes on past
    // the refused batch.
    for i in 0..MAX_BATCH {
        stranger.send_to(&payload(i, 8), to).await.unwrap();
    }
    friend.send_to(b"last", to).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    rx.readable().await.unwrap();
    let mut inbox = Inbox::default();
    let accept = |from: SocketAddr| from == allowed;
    let got = inbox.receive(&rx, MAX_BATCH, usize::MAX, accept).unwrap();
    assert_eq!(
        got,
        (0..4)
            .map(|i| (payload(i + 100, 8), allowed))
            .collect::<Vec<_>>()
    );
    let got = inbox.receive(&rx, MAX_BATCH, usize::MAX, accept).unwrap();
    assert_eq!(got, [(b"last".to_vec(), allowed)]);
    // Only strangers queued: nothing to hand out.
    stranger.send_to(b"no", to).await.unwrap();
    tokio::time::sleep(SETTLE).await;
    let refused = inbox
        .receive(&rx, MAX_BATCH, usize::MAX, accept)
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::WouldBlock);
}

#[tokio::test]
async fn a_batch_goes_out_in_order_each_to_its_address_or_the_connected_peer() {
    let tx = socket("127.0.0.1:0").await;
    let (p, q) = (socket("127.0.0.1:0").await, socket("127.0.0.1:0").await);
    let (pa, qa) = (p.local_addr().unwrap(), q.local_addr().unwrap());
    let batch: Vec<(Vec<u8>, SocketAddr)> = (0..MAX_BATCH + 4)
        .map(|i| (payload(i, 50 + i * 100), if i % 2 == 0 { pa } else { qa }))
        .collect();
    let refs: Vec<(&[u8], Option<SocketAddr>)> = batch
        .iter()
        .map(|(data, to)| (&data[..], Some(*to)))
        .collect();
    tx.writable().await.unwrap();
    // One call sends a batch at most: the caller sends the rest next.
    assert_eq!(send_batch(&tx, &refs).unwrap(), MAX_BATCH);
    assert_eq!(send_batch(&tx, &refs[MAX_BATCH..]).unwrap(), 4);
    assert_eq!(send_batch(&tx, &[]).unwrap(), 0);
    for (sock, addr) in [(&p, pa), (&q, qa)] {
        let want: Vec<_> = batch
            .iter()
            .filter(|(_, to)| *to == addr)
            .map(|(d, _)| d.clone())
            .collect();
        let (got, _) = recv_all(sock, want.len()).await;
        assert!(
            got.iter()
                .all(|(_, from)| *from == tx.local_addr().unwrap())
        );
        assert_eq!(got.into_iter().map(|(d, _)| d).collect::<Vec<_>>(), want);
    }
    // Connected: no address goes to the peer.
    tx.connect(pa).await.unwrap();
    assert_eq!(
        send_batch(&tx, &[(b"one", None), (b"two", None)]).unwrap(),
        2
    );
    let (got, _) = recv_all(&p, 2).await;
    assert_eq!(
        got,
        [
            (b"one".to_vec(), tx.local_addr().unwrap()),
            (b"two".to_vec(), tx.local_addr().unwrap())
        ]
    );
}

#[tokio::test]
async fn a_send_the_os_refuses_ends_the_batch_and_is_the_next_calls_error() {
    // UDP to port 0 is refused by the OS (EINVAL).
    let tx = socket("127.0.0.1:0").await;
    let rx = socket("127.0.0.1:0").await;
    let (good, bad) = (
        Some(rx.local_addr().unwrap()),
        Some("127.0.0.1:0".parse().unwrap()),
    );
    tx.writable().await.unwrap();
    let batch: [(&[u8], Option<SocketAddr>); 3] = [(b"1", good), (b"2", bad), (b"3", good)];
    // What was sent before the refusal counts; the rest is left.
    assert_eq!(send_batch(&tx, &batch).unwrap(), 1);
    let err = send_batch(&tx, &batch[1..]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(send_batch(&tx, &batch[2..]).unwrap(), 1);
    let (got, _) = recv_all(&rx, 2).await;
    assert_eq!(
        got.into_iter().map(|(d, _)| d).collect::<Vec<_>>(),
        [b"1".to_vec(), b"3".to_vec()]
    );
}

#[tokio::test]
async fn after_a_short_batch_the_next_datagram_still_wakes_the_socket() {
    let rx = socket("127.0.0.1:0").await;
    let tx = socket("127.0.0.1:0").await;
    let to = rx.local_addr().unwrap();
    for round in 0..3 {
        tx.send_to(&payload(round, 20), to).await.unwrap();
        // A short batch (one of 16) leaves the socket not readable...
        let (got, batches) = recv_all(&rx, 1).await;
        assert_eq!((got[0].0.clone(), batches), (payload(round, 20), vec![1]));
        let mut none = VecDeque::new();
        let err = recv_batch(&rx, MAX_BATCH, &mut none).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock);
        // ...until the next datagram comes, which wakes it.
        tx.send_to(b"next", to).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), rx.readable())
            .await
            .expect("the socket woke for the new datagram")
            .unwrap();
        let (got, _) = recv_all(&rx, 1).await;
        assert_eq!(got[0].0, b"next");
    }
}
