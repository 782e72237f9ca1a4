//! Framing, as properties (proptest) over real sockets: the real proxy in front of
//! Debian's unbound in a container.
//!
//! - TCP (RFC 7766 §8, RFC 1035 §4.2.2): any split of a burst of pipelined,
//!   length-prefixed queries, written piece by piece, gets every query answered, each
//!   answer with its query's ID and question.
//! - UDP (RFC 1035 §4.2.1, RFC 6891 §6.2.5): for any EDNS payload size (or none), the
//!   answer fits the client's size; if it does not fit, it is truncated (TC=1) and keeps
//!   the question; if it is not truncated, it is complete.

use std::io::Write as _;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RecordType;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use spec_tests::dns::{self, QueryBuilder};
use spec_tests::proxy::Proxy;
use spec_tests::{Chain, Kind, zone};

/// Names of the zone with their answer sizes: small, ~1.1 KB, ~8.5 KB, NXDOMAIN.
const NAMES: [(&str, RecordType); 5] = [
    (zone::A_NAME, RecordType::A),
    (zone::MULTI_NAME, RecordType::A),
    (zone::MEDIUM_NAME, RecordType::TXT),
    (zone::BIG_NAME, RecordType::TXT),
    (zone::NX_NAME, RecordType::A),
];

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        // Shrinking re-runs against the live proxy; keep it bounded.
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    })
}

fn assert_answers(query: &Message, answer: &Message) -> Result<(), TestCaseError> {
    prop_assert_eq!(answer.id(), query.id());
    prop_assert_eq!(answer.message_type(), MessageType::Response);
    prop_assert_eq!(answer.queries(), query.queries());
    let q = &query.queries()[0];
    let expected = if q.name().to_ascii() == zone::NX_NAME {
        ResponseCode::NXDomain
    } else {
        ResponseCode::NoError
    };
    prop_assert_eq!(answer.response_code(), expected);
    Ok(())
}

#[test]
fn rfc7766_any_split_of_pipelined_tcp_queries_gets_every_answer() {
    let resolver = Kind::Unbound.start(Chain::DotTest);
    let proxy = Proxy::in_front_of(&[&*resolver], &[]);
    let strategy = (
        prop::collection::vec((0..NAMES.len(), any::<u16>()), 1..24),
        prop::collection::vec(1usize..300, 1..12),
    );
    runner(24)
        .run(&strategy, |(picks, cuts)| {
            // Unique IDs on one connection (a client must not reuse one in flight).
            let mut ids = std::collections::HashSet::new();
            let queries: Vec<Message> = picks
                .iter()
                .filter(|(_, id)| ids.insert(*id))
                .map(|&(i, id)| QueryBuilder::new(NAMES[i].0, NAMES[i].1).id(id).build())
                .collect();
            let mut burst = Vec::new();
            for q in &queries {
                let bytes = dns::encode(q);
                burst.extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(0).to_be_bytes());
                burst.extend_from_slice(&bytes);
            }
            let mut stream = dns::connect_tcp(proxy.addr()).expect("connect to the proxy");
            // Write the burst in pieces of the generated sizes (the last piece takes
            // the rest), with a pause between pieces so each is a separate segment.
            let mut rest = &burst[..];
            for cut in cuts {
                if rest.is_empty() {
                    break;
                }
                let (piece, tail) = rest.split_at(cut.min(rest.len()));
                stream.write_all(piece).expect("write a piece");
                stream.flush().expect("flush");
                std::thread::sleep(Duration::from_millis(2));
                rest = tail;
            }
            stream.write_all(rest).expect("write the rest");
            let mut answers = Vec::new();
            for _ in &queries {
                let bytes = dns::read_framed(&mut stream).expect("an answer for every query");
                answers.push(dns::decode(&bytes));
            }
            for q in &queries {
                let a = answers
                    .iter()
                    .find(|a| a.id() == q.id())
                    .ok_or_else(|| TestCaseError::fail(format!("no answer with ID {}", q.id())))?;
                assert_answers(q, a)?;
                // TCP answers are never truncated.
                prop_assert!(!a.truncated());
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}\nproxy log:\n{}", proxy.log()));
}

#[test]
fn rfc6891_udp_answers_fit_the_clients_payload_size_or_are_truncated() {
    let resolver = Kind::Unbound.start(Chain::DotTest);
    let proxy = Proxy::in_front_of(&[&*resolver], &[]);
    let strategy = (0..NAMES.len(), prop::option::of(0u16..=65535));
    runner(48)
        .run(&strategy, |(i, edns)| {
            let mut builder = QueryBuilder::new(NAMES[i].0, NAMES[i].1);
            if let Some(size) = edns {
                builder = builder.edns(size);
            }
            let query = builder.build();
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            sock.set_read_timeout(Some(dns::DEFAULT_TIMEOUT))
                .expect("timeout");
            sock.send_to(&dns::encode(&query), proxy.addr())
                .expect("send");
            let mut buf = vec![0u8; 65535];
            let (n, _) = sock.recv_from(&mut buf).expect("a UDP answer");
            let answer = dns::decode(&buf[..n]);
            assert_answers(&query, &answer)?;
            // RFC 6891 §6.2.3: sizes below 512 are treated as 512.
            let limit = edns.map_or(512, |s| usize::from(s).max(512));
            prop_assert!(n <= limit, "{} bytes for a limit of {}", n, limit);
            if answer.truncated() {
                prop_assert_eq!(
                    answer.queries().len(),
                    1,
                    "a truncated answer keeps its question"
                );
            } else if NAMES[i].0 == zone::BIG_NAME || NAMES[i].0 == zone::MEDIUM_NAME {
                // Complete, in any order (unbound rotates RRsets).
                let mut got = dns::txt_strings(&answer);
                got.sort();
                let expected = if NAMES[i].0 == zone::BIG_NAME {
                    zone::big_txt()
                } else {
                    zone::medium_txt()
                };
                prop_assert_eq!(got, expected);
            }
            // EDNS in, EDNS out (RFC 6891 §7); none in, none out.
            prop_assert_eq!(answer.extensions().is_some(), edns.is_some());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}\nproxy log:\n{}", proxy.log()));
}
