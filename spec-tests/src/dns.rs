//! Plain DNS clients (UDP and TCP, std sockets with timeouts) and message helpers.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// Timeout of the helpers that do not take one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A fresh query ID (a counter starting at a time-derived value; IDs differ between
/// consecutive calls in one test process).
pub fn next_id() -> u16 {
    static NEXT: OnceLock<AtomicU16> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Truncation is intended: any 16 bits will do as a start.
        AtomicU16::new((nanos ^ std::process::id()) as u16)
    });
    next.fetch_add(1, Ordering::Relaxed)
}

/// Builds a query message.
///
/// Defaults: a fresh [`next_id`], RD=1, no EDNS. `edns(size)` adds an OPT record with that
/// UDP payload size; `dnssec_ok(true)` sets the DO bit (adding EDNS 1232 if none).
#[derive(Clone, Debug)]
pub struct QueryBuilder {
    name: Name,
    rtype: RecordType,
    id: Option<u16>,
    edns_payload: Option<u16>,
    dnssec_ok: bool,
    recursion_desired: bool,
}

impl QueryBuilder {
    /// A query for `name` (absolute or not; it is made absolute) and `rtype`.
    /// Panics on an invalid name.
    pub fn new(name: &str, rtype: RecordType) -> Self {
        let mut parsed =
            Name::from_ascii(name).unwrap_or_else(|e| panic!("invalid DNS name {name:?}: {e}"));
        parsed.set_fqdn(true);
        Self {
            name: parsed,
            rtype,
            id: None,
            edns_payload: None,
            dnssec_ok: false,
            recursion_desired: true,
        }
    }

    /// Uses this message ID.
    pub fn id(mut self, id: u16) -> Self {
        self.id = Some(id);
        self
    }

    /// Adds EDNS(0) advertising this UDP payload size.
    pub fn edns(mut self, payload: u16) -> Self {
        self.edns_payload = Some(payload);
        self
    }

    /// Sets or clears the DO bit (implies EDNS, 1232 bytes unless [`QueryBuilder::edns`]).
    pub fn dnssec_ok(mut self, on: bool) -> Self {
        self.dnssec_ok = on;
        self
    }

    /// Sets or clears RD (default set).
    pub fn recursion_desired(mut self, on: bool) -> Self {
        self.recursion_desired = on;
        self
    }

    /// The message.
    pub fn build(&self) -> Message {
        let mut m = Message::new();
        m.set_id(self.id.unwrap_or_else(next_id))
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(self.recursion_desired)
            .add_query(Query::query(self.name.clone(), self.rtype));
        if self.edns_payload.is_some() || self.dnssec_ok {
            let mut edns = Edns::new();
            edns.set_max_payload(self.edns_payload.unwrap_or(1232))
                .set_dnssec_ok(self.dnssec_ok);
            m.set_edns(edns);
        }
        m
    }

    /// The message in wire format.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(&self.build())
    }
}

/// A plain query (fresh ID, RD=1, no EDNS); shorthand for [`QueryBuilder`].
pub fn query(name: &str, rtype: RecordType) -> Message {
    QueryBuilder::new(name, rtype).build()
}

/// Wire format of a message. Panics if it cannot be encoded.
pub fn encode(msg: &Message) -> Vec<u8> {
    msg.to_vec()
        .unwrap_or_else(|e| panic!("cannot encode DNS message: {e}"))
}

/// Parses a wire-format message. Panics (with a hex dump) if it is malformed.
pub fn decode(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).unwrap_or_else(|e| panic!("malformed DNS message ({e}): {bytes:02x?}"))
}

/// Sends `msg` over UDP from an ephemeral 127.0.0.1 port and returns the first answer
/// with the same ID (others are skipped) within `timeout`.
pub fn exchange_udp(addr: SocketAddr, msg: &Message, timeout: Duration) -> io::Result<Message> {
    let sock = UdpSocket::bind(local_for(addr))?;
    sock.connect(addr)?;
    sock.send(&encode(msg))?;
    recv_answer(&sock, msg.id(), timeout).map_err(|e| {
        if e.kind() == io::ErrorKind::TimedOut {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no UDP answer from {addr} within {timeout:?}"),
            )
        } else {
            e
        }
    })
}

/// A loopback address of the same family as `addr`, port 0.
fn local_for(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv6() {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    } else {
        (Ipv4Addr::LOCALHOST, 0).into()
    }
}

/// Queries `name`/`rtype` over UDP (5 s timeout). Panics if no answer comes.
pub fn query_udp(addr: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let q = query(name, rtype);
    exchange_udp(addr, &q, DEFAULT_TIMEOUT)
        .unwrap_or_else(|e| panic!("UDP query {name} {rtype} to {addr}: {e}"))
}

/// Sends raw bytes over UDP and returns the first datagram that comes back within 5 s.
pub fn query_udp_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    query_udp_raw_timeout(addr, bytes, DEFAULT_TIMEOUT)
}

/// [`query_udp_raw`] with a chosen timeout (`None` = nothing came back in time).
pub fn query_udp_raw_timeout(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind(local_for(addr)).ok()?;
    sock.connect(addr).ok()?;
    sock.set_read_timeout(Some(timeout)).ok()?;
    sock.send(bytes).ok()?;
    let mut buf = vec![0u8; 65535];
    let n = sock.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Connects over TCP with read and write timeouts of 5 s and TCP_NODELAY.
pub fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT)?;
    s.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
    s.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// How a TCP client socket is set up before it connects (see [`connect_tcp_with`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpOptions {
    /// Local address to bind (port 0), e.g. `127.0.0.2` to be another source than
    /// `127.0.0.1`; `None` lets the kernel choose.
    pub from: Option<IpAddr>,
    /// `SO_RCVBUF` in bytes: a small one makes a client that never reads advertise a
    /// zero window soon.
    pub recv_buffer: Option<usize>,
    /// `TCP_MAXSEG` in bytes, advertised to the proxy in the SYN. Linux sizes a
    /// connection's send buffer from the peer's MSS: over loopback (MSS ~64 KiB) the
    /// proxy's kernel takes about 2.8 MB for a client that never reads, with 536 about
    /// 85-105 KB (Send-Q in `ss`, 800 such clients), so that the answers wait in the
    /// proxy, where its limits apply.
    pub max_segment: Option<u32>,
}

/// Like [`connect_tcp`], with the socket set up as `opts` says before connecting.
pub fn connect_tcp_with(addr: SocketAddr, opts: TcpOptions) -> io::Result<TcpStream> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    if let Some(bytes) = opts.recv_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    if let Some(mss) = opts.max_segment {
        socket.set_tcp_mss(mss)?;
    }
    if let Some(ip) = opts.from {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&addr.into(), DEFAULT_TIMEOUT)?;
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
    s.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A UDP socket bound to `ip` (port 0), to send from a chosen loopback source
/// (e.g. `127.0.0.2`) with `send_to`.
pub fn udp_socket_from(ip: IpAddr) -> io::Result<UdpSocket> {
    UdpSocket::bind(SocketAddr::new(ip, 0))
}

/// Sends `msg` over UDP from `ip` (an ephemeral port) and returns the first answer with
/// its ID within `timeout` (others are skipped), like [`exchange_udp`].
pub fn exchange_udp_from(
    ip: IpAddr,
    addr: SocketAddr,
    msg: &Message,
    timeout: Duration,
) -> io::Result<Message> {
    let sock = udp_socket_from(ip)?;
    sock.connect(addr)?;
    sock.send(&encode(msg))?;
    recv_answer(&sock, msg.id(), timeout)
}

/// Reads datagrams from a connected `sock` until one parses as a message with `id`,
/// for up to `timeout`.
pub fn recv_answer(sock: &UdpSocket, id: u16, timeout: Duration) -> io::Result<Message> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no UDP answer with ID {id} within {timeout:?}"),
            ));
        }
        sock.set_read_timeout(Some(left))?;
        let n = sock.recv(&mut buf)?;
        match Message::from_vec(&buf[..n]) {
            Ok(answer) if answer.id() == id => return Ok(answer),
            _ => continue,
        }
    }
}

/// Writes one message with its 2-byte length prefix (one write call).
pub fn write_framed(stream: &mut impl Write, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 65535 bytes"))?;
    let mut buf = Vec::with_capacity(msg.len() + 2);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(msg);
    stream.write_all(&buf)?;
    stream.flush()
}

/// Reads one length-prefixed message (blocking, subject to the stream's timeouts).
pub fn read_framed(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut msg)?;
    Ok(msg)
}

/// Pipelines `msgs` on one stream (TCP, or TLS for DoT): writes all of them at once,
/// each with its 2-byte length prefix, then reads as many answers, in whatever order they
/// come. Panics on I/O errors (timeouts come from the stream, e.g. [`connect_tcp`]'s 5 s)
/// or malformed answers. Match answers to queries by ID.
pub fn tcp_exchange<S: Read + Write>(stream: &mut S, msgs: &[Message]) -> Vec<Message> {
    let mut out = Vec::new();
    for m in msgs {
        let bytes = encode(m);
        let len = u16::try_from(bytes.len()).expect("a query fits in 65535 bytes");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    stream
        .write_all(&out)
        .and_then(|()| stream.flush())
        .unwrap_or_else(|e| panic!("writing {} pipelined queries: {e}", msgs.len()));
    (0..msgs.len())
        .map(|i| {
            let bytes = read_framed(stream).unwrap_or_else(|e| {
                panic!(
                    "reading answer {} of {} pipelined queries: {e}",
                    i + 1,
                    msgs.len()
                )
            });
            decode(&bytes)
        })
        .collect()
}

/// Queries `name`/`rtype` over a fresh TCP connection (5 s timeouts). Panics on failure.
pub fn query_tcp(addr: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let mut s = connect_tcp(addr).unwrap_or_else(|e| panic!("TCP connect to {addr}: {e}"));
    let q = query(name, rtype);
    let mut answers = tcp_exchange(&mut s, std::slice::from_ref(&q));
    answers.remove(0)
}

/// Queries `name`/`rtype` over TCP when `tcp` ([`query_tcp`]), else over UDP
/// ([`query_udp`]).
pub fn query_over(tcp: bool, addr: SocketAddr, name: &str, rtype: RecordType) -> Message {
    if tcp {
        query_tcp(addr, name, rtype)
    } else {
        query_udp(addr, name, rtype)
    }
}

/// The IPv4 addresses in the answer section, in order.
pub fn a_records(msg: &Message) -> Vec<Ipv4Addr> {
    msg.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// The IPv6 addresses in the answer section, in order.
pub fn aaaa_records(msg: &Message) -> Vec<Ipv6Addr> {
    msg.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// The TXT strings in the answer section (each character-string separately, lossy UTF-8),
/// in order.
pub fn txt_strings(msg: &Message) -> Vec<String> {
    msg.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::TXT(t) => Some(t.txt_data().to_vec()),
            _ => None,
        })
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}
