//! `dnsproxy health`: a probe for orchestrators (Kubernetes exec probes,
//! `docker exec`) that works in an image without a shell.
//!
//! It reads the configuration exactly like `run` (the same `--config`, the
//! same environment variables, the listen flags) to find the address the
//! proxy answers on, and queries it like any client would, from the same
//! host:
//!
//! - **live** (default): a query with OPCODE STATUS over UDP and over TCP.
//!   The proxy answers any OPCODE other than QUERY itself (NOTIMP, RFC 1035
//!   §4.1.1) without asking an upstream, so this never fails because an
//!   upstream is down. Any answer with our ID counts: a REFUSED answer
//!   (`max_inflight` reached) still shows that the proxy serves. The proxy
//!   answers nothing to addresses outside `allow_networks`, so a probe from
//!   such an address fails at once, saying so.
//! - **ready** (`--ready`): live, then a real query (`--name`, type NS) over
//!   UDP that must come back with an RCODE other than SERVFAIL. The proxy
//!   answers SERVFAIL only when no upstream answered, so any other RCODE
//!   (REFUSED and NXDOMAIN included) was an upstream's.
//!
//! All of it shares one deadline (`--timeout`). Failure is exit status 1 with
//! one line on stderr saying what failed; bad configuration is status 64 as
//! for `run`. wasmtime is never started.

use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use dnsproxy_core::core::acl::Acl;
use dnsproxy_core::core::message::{HEADER_LEN, QR, Query, RCODE_MASK, RD, Rcode, Response};

use crate::cli::HealthArgs;
use crate::config::{self, EXIT_CONFIG};
use crate::query_name::QueryName;

/// OPCODE of the liveness probe: STATUS (RFC 1035 §4.1.1), which the proxy
/// does not implement and so answers itself.
const PROBE_OPCODE: u8 = 2;
/// QTYPE NS (RFC 1035 §3.2.2), of the readiness query.
const QTYPE_NS: u16 = 2;
/// QCLASS IN (RFC 1035 §3.2.4).
const QCLASS_IN: u16 = 1;

/// The address to query for a listen address: the wildcard addresses
/// (`0.0.0.0`, `::`) become the loopback address of their family.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// A query with one question: `id`, `opcode`, RD=1, no EDNS.
pub fn build_query(id: u16, opcode: u8, name: &QueryName, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(HEADER_LEN + name.wire().len() + 4);
    q.extend_from_slice(&id.to_be_bytes());
    q.push(((opcode & 0x0F) << 3) | RD);
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QDCOUNT=1, no records
    q.extend_from_slice(name.wire());
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&QCLASS_IN.to_be_bytes());
    q
}

/// The RCODE of `answer` if it is a response (QR=1) to a query with this ID.
pub fn response_rcode(id: u16, answer: &[u8]) -> Option<u8> {
    match answer {
        [a, b, flags, rcode, ..] if answer.len() >= HEADER_LEN => {
            (u16::from_be_bytes([*a, *b]) == id && flags & QR != 0).then_some(rcode & RCODE_MASK)
        }
        _ => None,
    }
}

/// The transport of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One datagram each way.
    Udp,
    /// A connection with length-prefixed messages (RFC 1035 §4.2.2).
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        })
    }
}

/// Why one exchange got no answer.
#[derive(Debug)]
pub enum ExchangeError {
    /// Nothing with our ID came back in time.
    Timeout,
    /// The port is closed (TCP RST, or ICMP port unreachable for UDP).
    Refused,
    /// The connection closed before an answer came.
    Closed,
    /// Any other socket error.
    Io(io::Error),
}

impl From<io::Error> for ExchangeError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Self::Timeout,
            io::ErrorKind::ConnectionRefused => Self::Refused,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Self::Closed,
            _ => Self::Io(e),
        }
    }
}

fn remaining(deadline: Instant) -> Result<Duration, ExchangeError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(ExchangeError::Timeout)
    } else {
        Ok(left)
    }
}

/// Sends `query` over UDP to `to` and returns the first response with its ID
/// (anything else is ignored) before `deadline`.
pub fn exchange_udp(
    to: SocketAddr,
    query: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, ExchangeError> {
    let id = u16::from_be_bytes([query[0], query[1]]);
    let any: IpAddr = if to.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let sock = UdpSocket::bind((any, 0))?;
    sock.connect(to)?;
    sock.send(query)?;
    let mut buf = vec![0u8; 65_535];
    loop {
        sock.set_read_timeout(Some(remaining(deadline)?))?;
        let n = sock.recv(&mut buf)?;
        if response_rcode(id, &buf[..n]).is_some() {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// Sends `query` over a new TCP connection to `to` and returns the first
/// response with its ID before `deadline`.
pub fn exchange_tcp(
    to: SocketAddr,
    query: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, ExchangeError> {
    let id = u16::from_be_bytes([query[0], query[1]]);
    let mut stream = TcpStream::connect_timeout(&to, remaining(deadline)?)?;
    stream.set_nodelay(true)?;
    let len = u16::try_from(query.len()).map_err(|_| ExchangeError::Closed)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    stream.write_all(&framed)?;
    loop {
        let mut len = [0u8; 2];
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        stream.read_exact(&mut len)?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        stream.read_exact(&mut answer)?;
        if response_rcode(id, &answer).is_some() {
            return Ok(answer);
        }
    }
}

/// What a check found wrong: the text after `dnsproxy health: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn describe(
    e: &ExchangeError,
    what: &str,
    transport: Transport,
    to: SocketAddr,
    timeout: Duration,
) -> Failure {
    Failure(match e {
        ExchangeError::Timeout => {
            format!("no answer{what} over {transport} from {to} within {timeout:?}")
        }
        ExchangeError::Refused => {
            format!("no answer{what}: nothing listens on {transport} {to} (connection refused)")
        }
        ExchangeError::Closed => {
            format!("no answer{what}: {to} closed the {transport} connection without answering")
        }
        ExchangeError::Io(e) => format!("no answer{what} over {transport} from {to}: {e}"),
    })
}

/// A fresh random query ID.
fn random_id() -> u16 {
    let mut id = [0u8; 2];
    // SystemRandom fails only without an OS RNG; any ID works then.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id);
    u16::from_be_bytes(id)
}

/// The liveness check: a STATUS query over UDP and over TCP must each get an
/// answer with its ID. Returns the RCODEs of both answers.
pub fn check_live(
    to: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) -> Result<[u8; 2], Failure> {
    let mut rcodes = [0u8; 2];
    for (slot, transport) in rcodes.iter_mut().zip([Transport::Udp, Transport::Tcp]) {
        let id = random_id();
        let query = build_query(id, PROBE_OPCODE, &QueryName::root(), QTYPE_NS);
        let answer = match transport {
            Transport::Udp => exchange_udp(to, &query, deadline),
            Transport::Tcp => exchange_tcp(to, &query, deadline),
        }
        .map_err(|e| describe(&e, "", transport, to, timeout))?;
        *slot = response_rcode(id, &answer).unwrap_or_default();
    }
    Ok(rcodes)
}

/// The readiness query: `name` NS over UDP must get an answer whose RCODE is
/// not SERVFAIL (that is, one an upstream gave). Returns the RCODE.
pub fn check_upstream(
    to: SocketAddr,
    name: &QueryName,
    deadline: Instant,
    timeout: Duration,
) -> Result<u8, Failure> {
    let id = random_id();
    let query = build_query(id, 0, name, QTYPE_NS);
    let what = format!(" to {name} NS");
    let answer = exchange_udp(to, &query, deadline)
        .map_err(|e| describe(&e, &what, Transport::Udp, to, timeout))
        .map_err(|Failure(f)| Failure(format!("not ready: {f}")))?;
    let parsed = Query::parse(&query).map_err(|e| Failure(e.to_string()))?;
    let answer = Response::parse(answer).map_err(|e| {
        Failure(format!(
            "not ready: the answer{what} from {to} over UDP is malformed: {e}"
        ))
    })?;
    if !answer.answers(&parsed) {
        return Err(Failure(format!(
            "not ready: the answer{what} from {to} over UDP carries another question"
        )));
    }
    match response_rcode(id, answer.bytes()) {
        Some(rcode) if rcode == u8::from(Rcode::ServFail) => Err(Failure(format!(
            "not ready: {to} answered SERVFAIL{what} over UDP: no upstream answered"
        ))),
        Some(rcode) => Ok(rcode),
        None => Err(Failure(format!("not ready: no answer{what} from {to}"))),
    }
}

/// `dnsproxy health [--ready]`.
pub fn run(args: &HealthArgs) -> ExitCode {
    let config = match config::load(&args.run_args(), &|name| std::env::var(name).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dnsproxy health: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    // The first listen address: every one serves the same proxy.
    let Some(&listen) = config.listen.first() else {
        eprintln!("dnsproxy health: no listen address");
        return ExitCode::from(EXIT_CONFIG as u8);
    };
    let to = target(listen);
    let deadline = Instant::now() + args.timeout;
    // The probe's source address is the target's (both are local). The
    // proxy does not answer addresses outside allow_networks at all, so say
    // that at once rather than wait for a timeout.
    let allowed = Acl::new(config.allow_networks.clone()).allows(to.ip());
    let live = if allowed {
        check_live(to, deadline, args.timeout)
    } else {
        Err(Failure(format!(
            "the proxy does not answer this probe: allow_networks must include {}",
            to.ip()
        )))
    };
    let result = live.and_then(|rcodes| {
        if !args.ready {
            return Ok(format!("live: {to} answers over UDP and TCP"));
        }
        if rcodes.contains(&u8::from(Rcode::Refused)) {
            return Err(Failure(format!(
                "not ready: {to} REFUSED the probe (max_inflight reached?)"
            )));
        }
        let rcode = check_upstream(to, &args.name, deadline, args.timeout)?;
        Ok(format!(
            "ready: {to} answered {} NS through an upstream (RCODE {rcode})",
            args.name
        ))
    });
    match result {
        Ok(line) => {
            println!("dnsproxy health: {line}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("dnsproxy health: {f}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use dnsproxy_core::core::message;

    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_probed_on_loopback() {
        let t = |s: &str| target(s.parse().unwrap()).to_string();
        assert_eq!(t("0.0.0.0:53"), "127.0.0.1:53");
        assert_eq!(t("[::]:5353"), "[::1]:5353");
        assert_eq!(t("10.1.2.3:53"), "10.1.2.3:53");
        assert_eq!(t("[fd00::1]:53"), "[fd00::1]:53");
        assert_eq!(t("127.0.0.2:53"), "127.0.0.2:53");
    }

    #[test]
    fn probe_query_has_opcode_status_and_the_proxy_would_answer_notimp() {
        let q = build_query(0xBEEF, PROBE_OPCODE, &QueryName::root(), QTYPE_NS);
        assert_eq!(&q[..2], &[0xBE, 0xEF]);
        assert_eq!((q[2] >> 3) & 0x0F, 2);
        assert_eq!(q[2] & QR, 0);
        assert_eq!(
            Query::parse(&q),
            Err(message::QueryError::NotImp),
            "the component answers this query itself"
        );
        let reply = message::synthesize_response(&q, Rcode::NotImp).unwrap();
        assert_eq!(
            response_rcode(0xBEEF, &reply),
            Some(u8::from(Rcode::NotImp))
        );
    }

    #[test]
    fn readiness_query_is_a_valid_query() {
        let name = crate::query_name::parse_name("example.org").unwrap();
        let q = build_query(7, 0, &name, QTYPE_NS);
        let parsed = Query::parse(&q).unwrap();
        assert_eq!(parsed.id(), 7);
        assert!(parsed.rd());
        assert!(parsed.opt().is_none());
        let reply = message::synthesize_response(&q, Rcode::ServFail).unwrap();
        assert!(Response::parse(reply.clone()).unwrap().answers(&parsed));
        assert_eq!(response_rcode(7, &reply), Some(2));
    }

    #[test]
    fn only_responses_with_our_id_count() {
        let q = build_query(0x1234, 0, &QueryName::root(), QTYPE_NS);
        let reply = message::synthesize_response(&q, Rcode::Refused).unwrap();
        assert_eq!(response_rcode(0x1234, &reply), Some(5));
        assert_eq!(response_rcode(0x1235, &reply), None, "other ID");
        assert_eq!(response_rcode(0x1234, &q), None, "a query, QR=0");
        assert_eq!(
            response_rcode(0x1234, &reply[..HEADER_LEN - 1]),
            None,
            "short"
        );
    }

    /// A loopback port that nothing listens on (bound, then released).
    fn closed_port() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn nothing_listening_fails_over_udp_with_one_line() {
        let to = closed_port();
        let timeout = Duration::from_millis(500);
        let err = check_live(to, Instant::now() + timeout, timeout).unwrap_err();
        // Linux reports the ICMP port unreachable as ECONNREFUSED on a
        // connected UDP socket.
        assert_eq!(
            err.0,
            format!("no answer: nothing listens on UDP {to} (connection refused)")
        );
    }

    #[test]
    fn nothing_listening_fails_over_tcp() {
        let to = closed_port();
        let err = exchange_tcp(to, &[0; 12], Instant::now() + Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, ExchangeError::Refused), "{err:?}");
    }

    #[test]
    fn a_silent_udp_peer_times_out_at_the_deadline() {
        // A real socket that receives and never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = silent.local_addr().unwrap();
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let err = check_live(to, started + timeout, timeout).unwrap_err();
        assert!(started.elapsed() >= timeout);
        assert!(started.elapsed() < timeout * 3);
        assert_eq!(err.0, format!("no answer over UDP from {to} within 300ms"));
    }

    #[test]
    fn a_tcp_peer_that_closes_without_answering_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let closer = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
        });
        let err = exchange_tcp(to, &[0; 12], Instant::now() + Duration::from_secs(2)).unwrap_err();
        closer.join().unwrap();
        assert!(matches!(err, ExchangeError::Closed), "{err:?}");
    }
}
