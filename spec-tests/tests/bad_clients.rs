//! Bad clients: garbage datagrams, zero-length and oversized TCP frames, slow
//! half-sent frames held open. The proxy answers what deserves an answer (FORMERR),
//! drops or closes the rest, and keeps serving everyone else.

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
    // Whatever came back is a well-formed response with an ID that was sent.
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        let reply = dns::decode(&buf[..n]);
        assert!(reply.message_type() == hickory_proto::op::MessageType::Response);
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
    // The largest frame there is (65535 bytes), of garbage, sent in full: the
    // header makes it a query with an unknown OPCODE, so it is answered NOTIMP (or
    // FORMERR), or the connection is closed; either way nothing hangs.
    let mut big = dns::connect_tcp(proxy.addr()).expect("connect");
    let mut frame = vec![0xff, 0xff];
    frame.extend(std::iter::repeat_n(0x5a, 65535));
    big.write_all(&frame).expect("write");
    match dns::read_framed(&mut big) {
        Ok(bytes) => assert!(
            matches!(
                dns::decode(&bytes).response_code(),
                ResponseCode::NotImp | ResponseCode::FormErr
            ),
            "{:?}",
            dns::decode(&bytes)
        ),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "no answer and no close: {e}"
        ),
    }
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
fn clients_beyond_max_tcp_clients_are_turned_away_and_service_resumes() {
    let resolver = Kind::Fixture.start(Chain::DotTest);
    let proxy = Proxy::in_front_of(
        &[&*resolver],
        &[("TCP_IDLE_TIMEOUT", "2s"), ("MAX_TCP_CLIENTS", "4")],
    );
    let held: Vec<TcpStream> = (0..4)
        .map(|_| dns::connect_tcp(proxy.addr()).expect("connect"))
        .collect();
    // Give the proxy a moment to accept all four.
    std::thread::sleep(Duration::from_millis(200));
    // UDP is not affected.
    let udp = dns::query_udp(proxy.addr(), zone::A_NAME, RecordType::A);
    assert_eq!(dns::a_records(&udp), [zone::A_ADDR]);
    // A fifth TCP client is closed, or answered REFUSED, but never hangs.
    let mut fifth = dns::connect_tcp(proxy.addr()).expect("connect");
    let q = dns::query(zone::A_NAME, RecordType::A);
    let wrote = dns::write_framed(&mut fifth, &dns::encode(&q));
    if wrote.is_ok() {
        match dns::read_framed(&mut fifth) {
            Ok(bytes) => assert_eq!(dns::decode(&bytes).response_code(), ResponseCode::Refused),
            Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "it hung"),
        }
    }
    drop(held);
    // Once the held connections are gone, TCP serves again.
    let started = Instant::now();
    loop {
        let mut s = dns::connect_tcp(proxy.addr()).expect("connect");
        let ok = dns::write_framed(&mut s, &dns::encode(&q)).is_ok()
            && dns::read_framed(&mut s)
                .map(|b| dns::decode(&b).response_code() == ResponseCode::NoError)
                .unwrap_or(false);
        if ok {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
