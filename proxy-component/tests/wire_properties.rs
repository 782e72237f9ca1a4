//! Property tests of the sans-IO wire core: framing survives any split,
//! in-flight IDs never collide, truncation and padding produce messages that
//! an independent implementation (hickory-proto) parses as expected.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use dnsproxy_core::core::framing::{Deframer, MAX_MESSAGE_LEN, frame_into};
use dnsproxy_core::core::inflight::{CounterIds, Full, IdSource, InFlight};
use dnsproxy_core::core::message::{
    self, HEADER_LEN, Padding, QUERY_PADDING_BLOCK, Rcode, Response, id, set_id,
    synthesize_response,
};

/// Fixed seed: every run explores the same cases, so a failure in CI
/// reproduces locally (house style: determinism in tests).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x00D0_7D05),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn parse(msg: &[u8]) -> Result<Message, TestCaseError> {
    Message::from_vec(msg).map_err(|e| TestCaseError::fail(format!("hickory rejects: {e}")))
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// The layout a response view keeps through its edits is the one a fresh
/// walk of its bytes finds.
fn assert_layout_kept(r: &Response) -> Result<(), TestCaseError> {
    let walked = Response::parse(r.bytes().to_vec());
    prop_assert_eq!(walked.as_ref(), Ok(r));
    Ok(())
}

/// The OPT of the response `spec` describes is in `m` iff it was in the
/// response, with its payload size, DO bit and Cookie, and without Padding.
fn assert_opt_kept_without_padding(m: &Message, spec: &ResponseSpec) -> Result<(), TestCaseError> {
    prop_assert_eq!(m.extensions().is_some(), spec.edns.is_some());
    if let (Some(got), Some(want)) = (m.extensions(), &spec.edns) {
        prop_assert_eq!(got.max_payload(), want.payload);
        prop_assert_eq!(got.flags().dnssec_ok, want.dnssec_ok);
        prop_assert!(got.options().get(EdnsCode::Padding).is_none());
        prop_assert_eq!(got.options().get(EdnsCode::Cookie).is_some(), want.cookie);
    }
    Ok(())
}

// ---------------------------------------------------------------- generators

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,20}"
}

fn domain() -> impl Strategy<Value = Name> {
    prop::collection::vec(label(), 1..5).prop_map(|labels| {
        let mut text = labels.join(".");
        text.push('.');
        Name::from_ascii(&text).expect("generated names are valid")
    })
}

fn qtype() -> impl Strategy<Value = RecordType> {
    prop_oneof![
        Just(RecordType::A),
        Just(RecordType::AAAA),
        Just(RecordType::TXT),
        Just(RecordType::MX),
    ]
}

fn rdata() -> impl Strategy<Value = RData> {
    prop_oneof![
        any::<u32>().prop_map(|a| RData::A(A(Ipv4Addr::from(a)))),
        any::<u128>().prop_map(|a| RData::AAAA(AAAA(Ipv6Addr::from(a)))),
        prop::collection::vec("[ -~]{0,120}", 1..3).prop_map(|t| RData::TXT(TXT::new(t))),
    ]
}

/// EDNS of a message: payload, DO, and extra options (a cookie, padding).
#[derive(Clone, Debug)]
struct EdnsSpec {
    payload: u16,
    dnssec_ok: bool,
    cookie: bool,
    padding: Option<usize>,
}

fn edns_spec(allow_padding: bool) -> impl Strategy<Value = Option<EdnsSpec>> {
    let padding = if allow_padding {
        prop::option::of(0usize..600).boxed()
    } else {
        Just(None).boxed()
    };
    prop::option::of(
        (512u16..=4096, any::<bool>(), any::<bool>(), padding).prop_map(
            |(payload, dnssec_ok, cookie, padding)| EdnsSpec {
                payload,
                dnssec_ok,
                cookie,
                padding,
            },
        ),
    )
}

fn to_edns(spec: &EdnsSpec) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(spec.payload)
        .set_dnssec_ok(spec.dnssec_ok);
    if spec.cookie {
        edns.options_mut()
            .insert(EdnsOption::Unknown(10, vec![0xC0; 8]));
    }
    if let Some(len) = spec.padding {
        edns.options_mut()
            .insert(EdnsOption::Unknown(12, vec![0; len]));
    }
    edns
}

#[derive(Clone, Debug)]
struct ResponseSpec {
    id: u16,
    qname: Name,
    qtype: RecordType,
    /// Owner: the question name (compressed to a pointer) or another name.
    answers: Vec<(bool, Name, RData)>,
    authority: Vec<(Name, RData)>,
    edns: Option<EdnsSpec>,
    ad: bool,
}

fn response_spec() -> impl Strategy<Value = ResponseSpec> {
    (
        any::<u16>(),
        domain(),
        qtype(),
        prop::collection::vec((any::<bool>(), domain(), rdata()), 0..120),
        prop::collection::vec((domain(), rdata()), 0..4),
        edns_spec(true),
        any::<bool>(),
    )
        .prop_map(
            |(id, qname, qtype, answers, authority, edns, ad)| ResponseSpec {
                id,
                qname,
                qtype,
                answers,
                authority,
                edns,
                ad,
            },
        )
}

fn build_response(spec: &ResponseSpec) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(spec.id)
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .set_recursion_available(true)
        .set_authentic_data(spec.ad);
    m.add_query(Query::query(spec.qname.clone(), spec.qtype));
    for (same_owner, owner, data) in &spec.answers {
        let owner = if *same_owner { &spec.qname } else { owner };
        m.add_answer(Record::from_rdata(owner.clone(), 300, data.clone()));
    }
    for (owner, data) in &spec.authority {
        m.add_name_server(Record::from_rdata(owner.clone(), 300, data.clone()));
    }
    if let Some(edns) = &spec.edns {
        m.set_edns(to_edns(edns));
    }
    m.to_vec().expect("hickory encodes what it generates")
}

#[derive(Clone, Debug)]
struct QuerySpec {
    id: u16,
    rd: bool,
    qname: Name,
    qtype: RecordType,
    edns: Option<EdnsSpec>,
}

fn query_spec() -> impl Strategy<Value = QuerySpec> {
    (
        any::<u16>(),
        any::<bool>(),
        domain(),
        qtype(),
        edns_spec(false),
    )
        .prop_map(|(id, rd, qname, qtype, edns)| QuerySpec {
            id,
            rd,
            qname,
            qtype,
            edns,
        })
}

fn build_query(spec: &QuerySpec) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(spec.id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(spec.rd);
    m.add_query(Query::query(spec.qname.clone(), spec.qtype));
    if let Some(edns) = &spec.edns {
        m.set_edns(to_edns(edns));
    }
    m.to_vec().expect("hickory encodes what it generates")
}

// ------------------------------------------------------------------ framing

proptest! {
    #![proptest_config(config())]

    /// RFC 7766 §8: however the stream is cut and coalesced, the same
    /// messages come out, in order.
    #[test]
    fn rfc7766_frames_survive_any_split(
        msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..700), 0..20),
        chunks in prop::collection::vec(1usize..900, 1..40),
    ) {
        let mut wire = Vec::new();
        for m in &msgs {
            frame_into(&mut wire, m);
        }
        let mut deframer = Deframer::new(MAX_MESSAGE_LEN);
        let mut got = Vec::new();
        let mut rest = &wire[..];
        for size in chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            deframer.push(chunk);
            rest = tail;
            while let Some(m) = deframer.next_message().map_err(|e| TestCaseError::fail(e.to_string()))? {
                got.push(m);
            }
        }
        prop_assert_eq!(got, msgs);
        prop_assert_eq!(deframer.buffered(), 0);
    }
}

// ----------------------------------------------------------------- inflight

/// A source that proposes IDs from a tiny range, so collisions with IDs in
/// flight are the common case rather than the exception.
struct Tiny(u16, u16);

impl IdSource for Tiny {
    fn next_id(&mut self) -> u16 {
        self.0 = (self.0 + 1) % self.1;
        self.0
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Send a query: client ID and body.
    Insert(Vec<u8>),
    /// An answer arrives for the n-th in-flight ID (mod count), or a stray one.
    Answer(usize),
    Stray(u16),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::collection::vec(any::<u8>(), HEADER_LEN..40).prop_map(Op::Insert),
            2 => any::<usize>().prop_map(Op::Answer),
            1 => any::<u16>().prop_map(Op::Stray),
        ],
        0..400,
    )
}

fn check_inflight<S: IdSource>(
    mut table: InFlight<(u16, Vec<u8>), S>,
    capacity: usize,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    // Model: wire ID -> (client ID, original query).
    let mut model: HashMap<u16, (u16, Vec<u8>)> = HashMap::new();
    // What went out on the wire, to be echoed back as the "answer".
    let mut sent: HashMap<u16, Vec<u8>> = HashMap::new();
    for op in ops {
        match op {
            Op::Insert(query) => {
                let client_id = id(query).expect("at least a header");
                match table.insert((client_id, query.clone())) {
                    Ok(wire_id) => {
                        prop_assert!(model.len() < capacity);
                        prop_assert!(
                            !model.contains_key(&wire_id),
                            "duplicate wire id {}",
                            wire_id
                        );
                        let mut out = query.clone();
                        set_id(&mut out, wire_id);
                        model.insert(wire_id, (client_id, query.clone()));
                        sent.insert(wire_id, out);
                    }
                    Err(Full) => prop_assert_eq!(model.len(), capacity),
                }
            }
            Op::Answer(n) => {
                let mut ids: Vec<u16> = model.keys().copied().collect();
                if ids.is_empty() {
                    continue;
                }
                ids.sort_unstable();
                let wire_id = ids[n % ids.len()];
                let mut answer = sent.remove(&wire_id).expect("sent");
                prop_assert_eq!(id(&answer), Some(wire_id));
                let (client_id, original) = table.remove(wire_id).expect("in flight");
                prop_assert_eq!(Some(&(client_id, original.clone())), model.get(&wire_id));
                model.remove(&wire_id);
                set_id(&mut answer, client_id);
                prop_assert_eq!(answer, original);
            }
            Op::Stray(wire_id) => {
                let expected = model.remove(wire_id);
                sent.remove(wire_id);
                prop_assert_eq!(table.remove(*wire_id), expected);
            }
        }
        prop_assert_eq!(table.len(), model.len());
    }
    let mut drained = table.drain();
    drained.sort_unstable_by_key(|(wire_id, _)| *wire_id);
    let mut expected: Vec<_> = model.into_iter().collect();
    expected.sort_unstable_by_key(|(wire_id, _)| *wire_id);
    prop_assert_eq!(drained, expected);
    prop_assert!(table.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// RFC 7766 §7: no two queries in flight on a connection share an ID; an
    /// answer maps back to exactly its query, and restoring the client ID
    /// gives back the client's message.
    #[test]
    fn rfc7766_inflight_ids_are_unique_and_answers_map_back(
        capacity in 1usize..48,
        start in any::<u16>(),
        tiny in 1u16..64,
        ops in ops(),
    ) {
        check_inflight(InFlight::new(capacity, CounterIds::new(start)), capacity, &ops)?;
        check_inflight(InFlight::new(capacity, Tiny(start % tiny, tiny)), capacity, &ops)?;
    }
}

// --------------------------------------------------------------- truncation

proptest! {
    #![proptest_config(config())]

    /// RFC 6891 §7 / RFC 1035 §4.2.1: a truncated reply fits the limit, parses,
    /// has TC=1, the same ID and question, and an OPT iff the response had one.
    #[test]
    fn rfc6891_truncated_reply_fits_and_keeps_question_and_opt(
        spec in response_spec(),
        limit in 512usize..=4096,
    ) {
        let resp = build_response(&spec);
        let original = parse(&resp)?;
        let mut view = Response::parse(resp.clone()).map_err(fail)?;
        if !view.truncate_for_udp(limit) {
            prop_assert!(resp.len() <= limit);
            prop_assert_eq!(view.bytes(), &resp[..]);
        } else {
            {
                assert_layout_kept(&view)?;
                let out = view.into_bytes();
                prop_assert!(resp.len() > limit);
                prop_assert!(out.len() <= limit, "{} > {}", out.len(), limit);
                let m = parse(&out)?;
                prop_assert!(m.truncated());
                prop_assert_eq!(m.id(), spec.id);
                prop_assert_eq!(m.message_type(), MessageType::Response);
                prop_assert_eq!(m.authentic_data(), spec.ad);
                prop_assert_eq!(m.response_code(), original.response_code());
                prop_assert_eq!(m.queries(), original.queries());
                prop_assert!(m.answers().is_empty() && m.name_servers().is_empty());
                prop_assert!(m.additionals().is_empty());
                assert_opt_kept_without_padding(&m, &spec)?;
            }
        }
    }

    /// The truncation entry point never panics on damaged responses, and what
    /// it returns still fits.
    #[test]
    fn truncation_of_damaged_responses_never_panics(
        spec in response_spec(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        limit in 512usize..=1500,
    ) {
        let mut resp = build_response(&spec);
        for (at, byte) in flips {
            let i = at.index(resp.len());
            resp[i] = byte;
        }
        if let Ok(view) = Response::parse(resp.clone()) {
            let mut cut = view.clone();
            if cut.truncate_for_udp(limit) {
                prop_assert!(cut.bytes().len() <= limit);
            }
            for padding in [Padding::AddedOpt, Padding::Padded] {
                let mut fit = view.clone();
                if fit.fit_for_client(padding).is_ok() {
                    assert_layout_kept(&fit)?;
                }
            }
        }
        if let Ok(q) = message::Query::parse(&resp) {
            let _ = q.padded(QUERY_PADDING_BLOCK);
        }
    }
}

// ------------------------------------------------------------------ padding

proptest! {
    #![proptest_config(config())]

    /// RFC 8467 §4.1: a padded query is a multiple of 128 bytes, parses, keeps
    /// its question and EDNS fields; after AddedOpt the stripped response
    /// parses without an OPT and with its records intact (RFC 6891 §7).
    #[test]
    fn rfc8467_padded_query_is_block_aligned_and_strip_restores_plain_dns(
        spec in query_spec(),
        answers in prop::collection::vec(rdata(), 0..10),
        upstream_padding in 0usize..468,
    ) {
        let unpadded = build_query(&spec);
        let unpadded_len = unpadded.len();
        let original = parse(&unpadded)?;
        let (q, outcome) = message::Query::parse(&unpadded).map_err(fail)?.padded(QUERY_PADDING_BLOCK);
        prop_assert_eq!(
            outcome,
            if spec.edns.is_some() { Padding::Padded } else { Padding::AddedOpt }
        );
        prop_assert_eq!(q.len() % QUERY_PADDING_BLOCK, 0);
        // The smallest such length: option header (4), plus an OPT RR (11)
        // if one was added, plus fewer than 128 padding octets.
        let overhead = if outcome == Padding::AddedOpt { 15 } else { 4 };
        prop_assert!(q.len() < unpadded_len + overhead + QUERY_PADDING_BLOCK);
        let m = parse(&q)?;
        prop_assert_eq!(m.id(), spec.id);
        prop_assert_eq!(m.recursion_desired(), spec.rd);
        prop_assert_eq!(m.queries(), original.queries());
        let edns = m.extensions().as_ref().ok_or_else(|| TestCaseError::fail("no OPT"))?;
        prop_assert!(edns.options().get(EdnsCode::Padding).is_some());
        if let Some(want) = &spec.edns {
            prop_assert_eq!(edns.max_payload(), want.payload);
            prop_assert_eq!(edns.flags().dnssec_ok, want.dnssec_ok);
            prop_assert_eq!(edns.options().get(EdnsCode::Cookie).is_some(), want.cookie);
        }
        let parsed = message::Query::parse(&q).map_err(fail)?;
        prop_assert!(parsed.opt().is_some_and(|o| o.has_padding));

        if outcome == Padding::AddedOpt {
            // The upstream echoes an OPT, padded to its own block size.
            let mut r = m.clone();
            r.set_message_type(MessageType::Response).set_recursion_available(true);
            for data in &answers {
                r.add_answer(Record::from_rdata(spec.qname.clone(), 60, data.clone()));
            }
            if let Some(e) = r.extensions_mut() {
                e.options_mut().remove(EdnsCode::Padding);
                e.options_mut().insert(EdnsOption::Unknown(12, vec![0; upstream_padding]));
            }
            let mut view = Response::parse(r.to_vec().expect("encodes")).map_err(fail)?;
            view.fit_for_client(outcome).map_err(fail)?;
            assert_layout_kept(&view)?;
            let resp = view.into_bytes();
            let stripped = parse(&resp)?;
            prop_assert!(stripped.extensions().is_none());
            prop_assert_eq!(u16::from_be_bytes([resp[10], resp[11]]), 0);
            prop_assert_eq!(stripped.answers(), r.answers());
            prop_assert_eq!(stripped.queries(), original.queries());
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// RFC 7830 §1, RFC 8467 §4.1: for a plain-DNS client the upstream's
    /// padding goes and nothing else changes: the OPT stays with its fields
    /// and other options, the records are intact, and the message shrinks by
    /// exactly the Padding option.
    #[test]
    fn rfc7830_removing_upstream_padding_changes_nothing_else(spec in response_spec()) {
        let resp = build_response(&spec);
        let original = parse(&resp)?;
        let mut view = Response::parse(resp.clone()).map_err(fail)?;
        view.fit_for_client(Padding::Padded).map_err(fail)?;
        assert_layout_kept(&view)?;
        let out = view.into_bytes();
        let padding = spec.edns.as_ref().and_then(|e| e.padding).map_or(0, |len| 4 + len);
        prop_assert_eq!(out.len(), resp.len() - padding);
        let m = parse(&out)?;
        prop_assert_eq!(m.header(), original.header());
        prop_assert_eq!(m.queries(), original.queries());
        prop_assert_eq!(m.answers(), original.answers());
        prop_assert_eq!(m.name_servers(), original.name_servers());
        assert_opt_kept_without_padding(&m, &spec)?;
    }
}

// ---------------------------------------------------------------- synthesis

proptest! {
    #![proptest_config(config())]

    /// A synthesised reply to any input with a header parses, carries the
    /// query's ID and the requested RCODE, and echoes the question of a valid
    /// query.
    #[test]
    fn synthesized_reply_to_any_bytes_parses(
        junk in prop::collection::vec(any::<u8>(), 0..300),
        spec in query_spec(),
        valid in any::<bool>(),
    ) {
        let input = if valid { build_query(&spec) } else { junk };
        let Some(reply) = synthesize_response(&input, Rcode::ServFail) else {
            prop_assert!(input.len() < HEADER_LEN);
            return Ok(());
        };
        let m = parse(&reply)?;
        prop_assert_eq!(Some(m.id()), id(&input));
        prop_assert_eq!(m.message_type(), MessageType::Response);
        prop_assert_eq!(u16::from(m.response_code()), 2);
        if valid {
            let original = parse(&input)?;
            prop_assert_eq!(m.queries(), original.queries());
            prop_assert_eq!(m.extensions().is_some(), spec.edns.is_some());
        }
    }
}
