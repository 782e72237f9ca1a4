//! Writes the seed inputs of every fuzz target into `<dir>/<target>/seed-*`
//! (`make fuzz-seed` puts them in `fuzz/corpus/`): real DNS messages encoded
//! by hickory-proto, in each target's input format, and the repository's
//! settings.ini. Fuzzing and corpus minimisation then keep those that reach
//! code no other input reaches.
//!
//! Usage: `cargo run -p fuzz-checks --example seed_corpora -- DIR`

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: seed_corpora DIR"));
    let queries = queries();
    let responses = responses();

    for (name, q) in &queries {
        write(&dir, "query", name, q);
        write(
            &dir,
            "padding",
            &format!("{name}-128"),
            &[&[128], q.as_slice()].concat(),
        );
        write(
            &dir,
            "padding",
            &format!("{name}-468"),
            &[&[255], q.as_slice()].concat(),
        );
    }
    // Admission: `[flags, slots, mask, address.., message]`: every query from
    // an allowed IPv4 source over UDP and an allowed IPv6 one over TCP, then
    // one of each other decision.
    let v4 = [192, 0, 2, 1];
    let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets();
    for (name, q) in &queries {
        let udp = [&[0b010, 0x07, 0], &v4[..], q].concat();
        write(&dir, "admission", &format!("{name}-udp"), &udp);
        let tcp = [&[0b111, 0x07, 0], &v6[..], q].concat();
        write(&dir, "admission", &format!("{name}-tcp-v6"), &tcp);
    }
    let q = &queries[0].1;
    let admission =
        |flags: u8, slots: u8, msg: &[u8]| [&[flags, slots, 0xFF], &v4[..], msg].concat();
    write(
        &dir,
        "admission",
        "outsider-tcp",
        &admission(0b001, 0x07, q),
    );
    // Two slots, both taken by the source: REFUSED.
    write(&dir, "admission", "no-room", &admission(0b010, 0x21, q));
    let mut response = q.clone();
    response[2] |= 0x80;
    write(
        &dir,
        "admission",
        "response",
        &admission(0b011, 0x07, &response),
    );
    let mut status = q.clone();
    status[2] |= 2 << 3;
    write(
        &dir,
        "admission",
        "opcode-status",
        &admission(0b010, 0x07, &status),
    );
    let mut long = q.clone();
    long.resize(4097, 0);
    write(
        &dir,
        "admission",
        "too-long",
        &admission(0b011, 0x07, &long),
    );

    for (name, r) in &responses {
        write(&dir, "padding", name, &[&[128], r.as_slice()].concat());
        for limit in [512u16, 1232] {
            let input = [&limit.to_be_bytes(), r.as_slice()].concat();
            write(&dir, "truncate", &format!("{name}-{limit}"), &input);
        }
    }
    for ((qname, q), (rname, r)) in queries.iter().zip(&responses) {
        let len = u16::try_from(q.len()).expect("small query");
        let input = [&len.to_be_bytes(), q.as_slice(), r.as_slice()].concat();
        write(&dir, "answer", &format!("{qname}-{rname}"), &input);
    }
    let q = &queries[0].1;
    let len = u16::try_from(q.len()).expect("small query");
    let mut reply = q.clone();
    reply[2] |= 0x80;
    let input = [&len.to_be_bytes(), q.as_slice(), &reply].concat();
    write(&dir, "answer", "query-echoed", &input);

    // Cache: `[flags, response]`: every response, then answers the cache
    // keeps, served to queries with and without OPT, DO, AD, CD, in another
    // spelling, under each clamp (see `fuzz_checks::cache`).
    for (name, r) in &responses {
        write(
            &dir,
            "cache",
            name,
            &[&[0b0001_0001], r.as_slice()].concat(),
        );
    }
    for (i, (name, r)) in cache_responses().iter().enumerate() {
        let flags = [0b0000_0000, 0b0011_0011, 0b0101_0101, 0b0111_1111];
        let input = [&[flags[i % flags.len()]], r.as_slice()].concat();
        write(&dir, "cache", name, &input);
    }

    // Record: `[suite, seq(8), cut(2), bytes]`: each of the six suites with
    // a response as the record (forged) and its plaintext (cut at its
    // length), at sequence numbers 0, 1 and the last; one record larger than
    // a TLS record may be, and one too short for a tag.
    for (i, (name, r)) in responses.iter().enumerate() {
        let suite = u8::try_from(i % 6).expect("small index");
        let seq: u64 = [0, 1, u64::MAX][i % 3];
        let cut = u16::try_from(r.len()).expect("small message");
        let input = [&[suite], &seq.to_be_bytes()[..], &cut.to_be_bytes(), r].concat();
        write(&dir, "record", name, &input);
    }
    for suite in 0..6u8 {
        let large = [&[suite], &[0; 8][..], &[0xff, 0xff], &vec![0x17; 16_400]].concat();
        write(&dir, "record", &format!("oversized-{suite}"), &large);
        let short = [&[suite], &[0; 8][..], &[0, 0], &[0x17; 15][..]].concat();
        write(&dir, "record", &format!("short-{suite}"), &short);
    }

    // Packed: the queries and the responses laid out as the host's
    // datagram batches, from and to IPv4 and IPv6 peers; one batch of all
    // of them, one cut inside a header and one inside a payload.
    let peers: [std::net::SocketAddr; 3] = [
        (Ipv4Addr::new(192, 0, 2, 1), 5353).into(),
        (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 53).into(),
        std::net::SocketAddrV6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1), 40_000, 7, 2)
            .into(),
    ];
    let mut all = Vec::new();
    for (i, (name, m)) in queries.iter().chain(&responses).enumerate() {
        let mut one = Vec::new();
        packed_datagrams::push(&mut one, m, peers[i % peers.len()]).expect("a small message");
        write(&dir, "packed", name, &one);
        all.extend_from_slice(&one);
    }
    write(&dir, "packed", "all", &all);
    write(&dir, "packed", "cut-in-a-header", &all[..all.len().min(20)]);
    write(
        &dir,
        "packed",
        "cut-in-a-payload",
        &all[..all.len().min(40)],
    );

    // Deframer: the messages framed back to back, fed in a few chunk sizes.
    let mut stream = Vec::new();
    for m in queries.iter().chain(&responses).map(|(_, m)| m) {
        let len = u16::try_from(m.len()).expect("small message");
        stream.extend_from_slice(&len.to_be_bytes());
        stream.extend_from_slice(m);
    }
    let framed = |cap: u16, sizes: &[u8], repeat: u8, stream: &[u8]| {
        let n = u8::try_from(sizes.len()).expect("few sizes");
        [&cap.to_be_bytes(), &[n, repeat], sizes, stream].concat()
    };
    write(
        &dir,
        "deframer",
        "stream",
        &framed(u16::MAX, &[], 0, &stream),
    );
    write(
        &dir,
        "deframer",
        "chunks",
        &framed(4096, &[1, 7, 0, 200], 3, &stream),
    );
    write(
        &dir,
        "deframer",
        "too-large",
        &framed(512, &[3], 0, &stream),
    );
    let zero = [&stream[..40], &[0, 0], &stream[40..]].concat();
    write(
        &dir,
        "deframer",
        "zero-length",
        &framed(u16::MAX, &[2, 5], 0, &zero),
    );
    let half = &stream[..stream.len() - 9];
    write(
        &dir,
        "deframer",
        "half-frame",
        &framed(u16::MAX, &[64], 7, half),
    );

    let settings = Path::new(env!("CARGO_MANIFEST_DIR")).join("../settings.ini");
    write(
        &dir,
        "ini",
        "settings",
        &fs::read(settings).expect("settings.ini"),
    );
    let ini_seeds: [(&str, &str); 4] = [
        (
            "syntax",
            "\u{feff}# c\n; c\n\n[LOCAL_SERVER]\n  Local_Host =  \nlocal_port: 53\n[TLS_SERVER]\nSPKI=a=b\r\n",
        ),
        (
            "continuation",
            "[S]\nnets = 10.0.0.0/8,\n  # note\n    192.168.0.0/16\n\nnext = 1\n[TLS_SERVER quad9] # x\n",
        ),
        ("duplicates", "[S]\nkey = 1\nKEY = 2\n[S]\n"),
        ("malformed", "key = 1\n[A] junk\n[]\n[A\njust words\n= v\n"),
    ];
    for (name, text) in ini_seeds {
        write(&dir, "ini", name, text.as_bytes());
    }
}

fn write(dir: &Path, target: &str, name: &str, data: &[u8]) {
    let dir = dir.join(target);
    fs::create_dir_all(&dir).expect("corpus directory");
    fs::write(dir.join(format!("seed-{name}")), data).expect("seed written");
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("valid name")
}

fn message(id: u16, kind: MessageType, qname: &str, qtype: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(kind)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(name(qname), qtype));
    m
}

fn edns(payload: u16, dnssec_ok: bool, options: Vec<EdnsOption>) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(payload).set_dnssec_ok(dnssec_ok);
    for o in options {
        e.options_mut().insert(o);
    }
    e
}

fn encode(m: &Message) -> Vec<u8> {
    m.to_vec().expect("hickory-proto encodes")
}

/// Client queries: plain, EDNS with DO, cookie, padding, signed, long name.
fn queries() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let m = message(
        0x4242,
        MessageType::Query,
        "www.example.com.",
        RecordType::A,
    );
    out.push(("plain".into(), encode(&m)));

    let mut m = message(7, MessageType::Query, "Example.ORG.", RecordType::AAAA);
    m.set_edns(edns(4096, true, vec![]));
    out.push(("edns-do".into(), encode(&m)));

    let mut m = message(8, MessageType::Query, "mail.example.net.", RecordType::MX);
    let cookie = EdnsOption::Unknown(10, vec![9; 8]);
    m.set_edns(edns(1232, false, vec![cookie]));
    out.push(("cookie".into(), encode(&m)));

    let mut m = message(9, MessageType::Query, "a.b.", RecordType::TXT);
    m.set_edns(edns(
        1232,
        false,
        vec![EdnsOption::Unknown(12, vec![0; 40])],
    ));
    out.push(("padded".into(), encode(&m)));

    // A TSIG record after the OPT: never padded.
    let mut q = encode(&message(
        10,
        MessageType::Query,
        "example.com.",
        RecordType::SOA,
    ));
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(&[
        3, b'k', b'e', b'y', 0, 0, 250, 0, 255, 0, 0, 0, 0, 0, 2, 0xAB, 0xCD,
    ]);
    q[11] = 2;
    out.push(("tsig".into(), q));

    let x63 = "x".repeat(63);
    let long = format!("{x63}.{x63}.{x63}.{}.", "y".repeat(61));
    let m = message(11, MessageType::Query, &long, RecordType::A);
    out.push(("name-255".into(), encode(&m)));
    out
}

/// Upstream responses: many answers (for truncation), an OPT with padding, an
/// OPT before other additional records (compression pointers after it), and
/// common record types whose RDATA holds compressed names.
fn responses() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut m = message(
        0x4242,
        MessageType::Response,
        "www.example.com.",
        RecordType::A,
    );
    for i in 0..60 {
        let a = RData::A(A(Ipv4Addr::new(192, 0, 2, i)));
        m.add_answer(Record::from_rdata(name("www.example.com."), 300, a));
    }
    let txt = RData::TXT(TXT::new(vec!["x".repeat(100)]));
    m.add_name_server(Record::from_rdata(name("example.com."), 300, txt));
    m.set_edns(edns(
        1232,
        true,
        vec![EdnsOption::Unknown(12, vec![0; 300])],
    ));
    out.push(("many-answers".into(), encode(&m)));

    let mut m = message(7, MessageType::Response, "example.org.", RecordType::AAAA);
    let aaaa = RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
    m.add_answer(Record::from_rdata(name("example.org."), 60, aaaa));
    m.set_edns(edns(4096, true, vec![EdnsOption::Unknown(10, vec![1; 24])]));
    out.push(("edns-cookie".into(), encode(&m)));

    let mut m = message(
        8,
        MessageType::Response,
        "mail.example.net.",
        RecordType::MX,
    );
    let mx = RData::MX(MX::new(10, name("mx.example.net.")));
    m.add_answer(Record::from_rdata(name("mail.example.net."), 60, mx));
    let cname = RData::CNAME(CNAME(name("mx.example.net.")));
    m.add_answer(Record::from_rdata(name("alias.example.net."), 60, cname));
    let soa = SOA::new(
        name("ns.example.net."),
        name("hostmaster.example.net."),
        1,
        3600,
        600,
        86400,
        60,
    );
    m.add_name_server(Record::from_rdata(
        name("example.net."),
        60,
        RData::SOA(soa),
    ));
    out.push(("compressed-rdata".into(), encode(&m)));

    // Additional: [OPT], ns2 A, and an MX owned by a pointer to ns2 (after
    // the OPT) whose exchange points there too.
    let mut m = message(9, MessageType::Response, "example.com.", RecordType::NS);
    let ns = RData::NS(NS(name("ns1.example.com.")));
    m.add_answer(Record::from_rdata(name("example.com."), 60, ns));
    m.set_edns(edns(1232, false, vec![]));
    let mut r = encode(&m);
    let ns2 = u8::try_from(r.len()).expect("short message");
    r.extend_from_slice(b"\x03ns2\xC0\x0C");
    r.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 2]);
    r.extend_from_slice(&[0xC0, ns2, 0, 15, 0, 1, 0, 0, 0, 60, 0, 4, 0, 10, 0xC0, ns2]);
    r[11] = 3;
    out.push(("opt-in-the-middle".into(), r));

    let mut m = message(10, MessageType::Response, "EXAMPLE.com.", RecordType::SOA);
    m.set_edns(edns(512, false, vec![]));
    out.push(("other-case".into(), encode(&m)));

    let mut m = message(11, MessageType::Response, "nx.example.", RecordType::A);
    m.set_response_code(hickory_proto::op::ResponseCode::NXDomain);
    out.push(("nxdomain".into(), encode(&m)));
    out
}

/// Answers the cache keeps: positive with several TTLs and an OPT holding
/// padding, a cookie and an EDE option; NXDOMAIN and NODATA with the zone's
/// SOA; an NXDOMAIN at the end of a CNAME chain.
fn cache_responses() -> Vec<(String, Vec<u8>)> {
    let soa = |zone: &str, ttl: u32, minimum: u32| {
        let rdata = SOA::new(
            name(&format!("ns.{zone}")),
            name(&format!("hostmaster.{zone}")),
            2024,
            3600,
            600,
            86400,
            minimum,
        );
        Record::from_rdata(name(zone), ttl, RData::SOA(rdata))
    };
    let mut out = Vec::new();
    let mut m = message(
        0x5151,
        MessageType::Response,
        "www.example.com.",
        RecordType::A,
    );
    m.set_authoritative(true).set_authentic_data(true);
    for (i, ttl) in [300, 30, 86400 * 30].into_iter().enumerate() {
        let octet = u8::try_from(i).expect("few records");
        let a = RData::A(A(Ipv4Addr::new(192, 0, 2, octet)));
        m.add_answer(Record::from_rdata(name("www.example.com."), ttl, a));
    }
    let a = RData::A(A(Ipv4Addr::new(192, 0, 2, 53)));
    m.add_additional(Record::from_rdata(name("ns.example.com."), 600, a));
    let options = vec![
        EdnsOption::Unknown(12, vec![0; 64]),
        EdnsOption::Unknown(10, vec![3; 16]),
        EdnsOption::Unknown(15, vec![0, 3, b's', b't', b'a', b'l', b'e']),
    ];
    m.set_edns(edns(1232, true, options));
    out.push(("answer-ede".into(), encode(&m)));

    let mut m = message(
        0x5252,
        MessageType::Response,
        "nx.example.org.",
        RecordType::A,
    );
    m.set_response_code(hickory_proto::op::ResponseCode::NXDomain);
    m.add_name_server(soa("example.org.", 3600, 300));
    m.set_edns(edns(1232, false, vec![]));
    out.push(("nxdomain-soa".into(), encode(&m)));

    let mut m = message(
        0x5353,
        MessageType::Response,
        "Example.ORG.",
        RecordType::AAAA,
    );
    m.add_name_server(soa("example.org.", 60, 900));
    out.push(("nodata-soa".into(), encode(&m)));

    let mut m = message(
        0x5454,
        MessageType::Response,
        "alias.example.net.",
        RecordType::A,
    );
    m.set_response_code(hickory_proto::op::ResponseCode::NXDomain);
    let cname = RData::CNAME(CNAME(name("gone.example.net.")));
    m.add_answer(Record::from_rdata(name("alias.example.net."), 45, cname));
    m.add_name_server(soa("example.net.", 3600, 120));
    out.push(("cname-to-nxdomain".into(), encode(&m)));
    out
}
