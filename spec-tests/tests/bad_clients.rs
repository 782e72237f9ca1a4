//! Bad clients: garbage datagrams, zero-length and oversized TCP frames, slow
//! half-sent frames held open, more connections than `max_tcp_clients`. The proxy
//! answers what deserves an answer (FORMERR), drops or closes the rest, and keeps
//! serving everyone else. (Attacks with bounds on memory and time: `hostile.rs`.)

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use spec_tests::dns;
use spec_tests::proxy::Proxy;
use spec_tests::{Chain, Kind, zone};

fn still_serves(addr: SocketAddr) {
    let udp = dns::query_udp(addr, zone::A_NAME, RecordType::A);
    assert_eq!(dns::a_records(&udp), [zone::A_ADDR]);
    let tcp = dns::query_tcp(addr, zone::A_NAME, RecordType::A);
    assert_eq!(dns::a_records(&tcp), [zone::A_ADDR]);
}

/// Whether the peer closed `stream` within `within` (EOF or reset on read).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream
        .set_read_timeout(Some(within))
        .expect("set a read timeout");
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn rfc1035_garbage_datagrams_get_formerr_or_nothing_and_the_proxy_keeps_serving() {
    let resolver = Kind::Fixture.start(Chain::DotTest);
    let proxy = Proxy::in_front_of(&[&*resolver], &[]);
    let addr = proxy.addr();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..700), |bytes| {
            sock.send_to(&bytes, addr).expect("send");
            Ok(())
        })
        .expect("sending garbage");
    // Then a real query: once it is answered, every garbage datagram before it has
    // been read, and what the proxy said to them (made locally, with no upstream
    // round trip) has been sent. Whatever came back is a well-formed response.
    let sentinel = dns::query(zone::A_NAME, RecordType::A);
    sock.send_to(&dns::encode(&sentinel), addr).expect("send");
    sock.set_read_timeout(Some(dns::DEFAULT_TIMEOUT))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let mut replies = 0;
    loop {
        let (n, _) = sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("the query after the garbage got no answer: {e}"));
        let reply = dns::decode(&buf[..n]);
        assert!(reply.message_type() == hickory_proto::op::MessageType::Response);
        if reply.id() == sentinel.id() && reply.queries() == sentinel.queries() {
            assert_eq!(dns::a_records(&reply), [zone::A_ADDR]);
            break;
        }
        replies += 1;
        assert!(
            matches!(
                reply.response_code(),
                ResponseCode::FormErr
                    | ResponseCode::NotImp
                    | ResponseCode::ServFail
                    | ResponseCode::Refused
                    | ResponseCode::NoError
                    | ResponseCode::NXDomain
            ),
            "{reply:?}"
        );
    }
    eprintln!("{replies} replies to 200 garbage datagrams");
    still_serves(addr);
}

#[test]
fn rfc7766_zero_length_and_oversized_tcp_frames_close_only_that_connection() {
    let resolver = Kind::Fixture.start(Chain::DotTest);
    let proxy = Proxy::in_front_of(&[&*resolver], &[]);
    // A zero-length frame.
    let mut zero = dns::connect_tcp(proxy.addr()).expect("connect");
    zero.write_all(&[0, 0]).expect("write");
    assert!(
        closed_within(&mut zero, Duration::from_secs(3)),
        "zero-length frame"
    );
    // The largest frame there is (65535 bytes), of garbage: client query frames are
    // capped at 4,096 bytes, so the connection is closed without an answer (writing
    // the rest may fail once it is).
    let mut big = dns::connect_tcp(proxy.addr()).expect("connect");
    let mut frame = vec![0xff, 0xff];
    frame.extend(std::iter::repeat_n(0x5a, 65535));
    let _ = big.write_all(&frame);
    let mut buf = [0u8; 512];
    big.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    match big.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("a 65535-byte frame got {n} bytes back, not a close"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "a 65535-byte frame: no close within 3 s"
        ),
    }
    // Just over the cap, with a valid query at its start: closed all the same.
    let mut over = dns::connect_tcp(proxy.addr()).expect("connect");
    let mut frame = 4097u16.to_be_bytes().to_vec();
    let mut body = dns::encode(&dns::query(zone::A_NAME, RecordType::A));
    body.resize(4097, 0);
    frame.extend(body);
    let _ = over.write_all(&frame);
    assert!(
        closed_within(&mut over, Duration::from_secs(3)),
        "a 4097-byte frame"
    );
    still_serves(proxy.addr());
}

#[test]
fn rfc7766_slow_half_sent_frames_do_not_block_others_and_are_closed_when_idle() {
    let resolver = Kind::Fixture.start(Chain::DotTest);
    let proxy = Proxy::in_front_of(
        &[&*resolver],
        &[("TCP_IDLE_TIMEOUT", "2s"), ("MAX_TCP_CLIENTS", "64")],
    );
    // 40 clients send one byte of a length prefix, or a prefix and half a query,
    // and hold their connections open.
    let query = dns::encode(&dns::query(zone::A_NAME, RecordType::A));
    let mut held: Vec<TcpStream> = (0..40)
        .map(|i| {
            let mut s = dns::connect_tcp(proxy.addr()).expect("connect");
            if i % 2 == 0 {
                s.write_all(&[0]).expect("write");
            } else {
                let mut partial = u16::try_from(query.len())
                    .expect("small")
                    .to_be_bytes()
                    .to_vec();
                partial.extend_from_slice(&query[..query.len() / 2]);
                s.write_all(&partial).expect("write");
            }
            s
        })
        .collect();
    // Everyone else is served meanwhile.
    for _ in 0..3 {
        still_serves(proxy.addr());
    }
    // The idle timeout closes the slow ones.
    let started = Instant::now();
    for s in &mut held {
        let left = Duration::from_secs(6).saturating_sub(started.elapsed());
        assert!(
            closed_within(s, left.max(Duration::from_millis(10))),
            "a half-sent frame held open past the idle timeout"
        );
    }
    still_serves(proxy.addr());
}

#[test]
fn at_max_tcp_clients_the_stalest_connection_is_evicted_and_the_new_client_served() {
    let resolver = Kind::Fixture.start(Chain::DotTest);
    // At the limit the idle timeout is a hundredth of the configured one: 3 s
    // with 300 s, longer than the test holds its clients idle.
    let proxy = Proxy::in_front_of(
        &[&*resolver],
        &[("MAX_TCP_CLIENTS", "4"), ("TCP_IDLE_TIMEOUT", "300s")],
    );
    // Four clients, each served once in turn (so the proxy has accepted each, and
    // the first is the stalest), then idle.
    let q = dns::query(zone::A_NAME, RecordType::A);
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = dns::connect_tcp(proxy.addr()).expect("connect");
            let a = dns::tcp_exchange(&mut s, std::slice::from_ref(&q));
            assert_eq!(dns::a_records(&a[0]), [zone::A_ADDR]);
            s
        })
        .collect();
    // UDP is not affected.
    let udp = dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
    assert_eq!(dns::a_records(&udp), [zone::A_ADDR]);
    // A fifth TCP client is served: the stalest connection makes room.
    let started = Instant::now();
    let tcp = dns::query_tcp(proxy.addr(), zone::A_NAME, RecordType::A);
    assert_eq!(dns::a_records(&tcp), [zone::A_ADDR], "{}", proxy.log());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "served after {:?}",
        started.elapsed()
    );
    assert!(
        closed_within(&mut held[0], Duration::from_secs(2)),
        "the stalest connection was not evicted"
    );
    // The others are still served on their connections.
    for s in &mut held[1..] {
        let a = dns::tcp_exchange(s, std::slice::from_ref(&q));
        assert_eq!(dns::a_records(&a[0]), [zone::A_ADDR]);
    }
}
