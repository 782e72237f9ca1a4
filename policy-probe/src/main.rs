//! A test guest for the socket policy. Run by the real host in place of the
//! proxy component (`dnsproxy --component policy-probe.wasm`), it receives
//! the same configuration and the same sandbox, tries what the policy must
//! allow and what it must refuse, and reports each result as a log event:
//! `probe op=<what> result=<ok|denied|error: ...>`.

#[cfg(target_os = "wasi")]
mod probe {
    use std::io::ErrorKind;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};

    use policy_probe::bindings::dnsproxy::proxy::types::{IpAddress, SocketAddress};
    use policy_probe::bindings::dnsproxy::proxy::{config, log};

    fn socket(a: &SocketAddress) -> SocketAddr {
        let ip: IpAddr = match a.ip {
            IpAddress::Ipv4((a, b, c, d)) => Ipv4Addr::new(a, b, c, d).into(),
            IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
                Ipv6Addr::new(a, b, c, d, e, f, g, h).into()
            }
        };
        SocketAddr::new(ip, a.port)
    }

    fn report<T>(op: &str, result: std::io::Result<T>) {
        let result = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => "denied".to_owned(),
            Err(e) => format!("error: {e}"),
        };
        log::emit(
            log::Level::Info,
            "probe",
            &[
                log::Field {
                    key: "op".into(),
                    value: op.into(),
                },
                log::Field {
                    key: "result".into(),
                    value: result,
                },
            ],
        );
    }

    /// Binds a UDP socket to `from` with `wasi:sockets` and sends one
    /// datagram to `to` with `datagram-batch.send`, or only its first 20
    /// bytes (`cut`: part of its header).
    fn batch_send(from: SocketAddr, to: SocketAddr, cut: bool) -> std::io::Result<u32> {
        use policy_probe::datagrams::dnsproxy::proxy::datagram_batch;
        use policy_probe::datagrams::wasi::sockets::network::{
            ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress,
        };
        use policy_probe::datagrams::wasi::sockets::{instance_network, udp_create_socket};

        let fail = |e: ErrorCode| match e {
            ErrorCode::AccessDenied => std::io::Error::from(ErrorKind::PermissionDenied),
            other => std::io::Error::other(other.name()),
        };
        let SocketAddr::V4(local) = from else {
            return Err(std::io::Error::other("the probe binds IPv4 only"));
        };
        let [a, b, c, d] = local.ip().octets();
        let network = instance_network::instance_network();
        let socket = udp_create_socket::create_udp_socket(IpAddressFamily::Ipv4).map_err(fail)?;
        let local = IpSocketAddress::Ipv4(Ipv4SocketAddress {
            port: local.port(),
            address: (a, b, c, d),
        });
        socket.start_bind(&network, local).map_err(fail)?;
        socket.finish_bind().map_err(fail)?;
        let (_incoming, outgoing) = socket.stream(None).map_err(fail)?;
        let mut packed = Vec::new();
        packed_datagrams::push(&mut packed, b"probe", to).map_err(std::io::Error::other)?;
        if cut {
            packed.truncate(20);
        }
        datagram_batch::send(&outgoing, &packed).map_err(fail)
    }

    pub(crate) fn main() {
        let c = config::get();
        let listen = socket(&c.listen[0]);
        let upstream = socket(&c.upstreams[0].address);
        let other_port = SocketAddr::new(listen.ip(), listen.port().wrapping_add(1).max(1));
        let other_upstream_port =
            SocketAddr::new(upstream.ip(), upstream.port().wrapping_add(1).max(1));
        let other_host = SocketAddr::new(Ipv4Addr::new(127, 0, 0, 2).into(), upstream.port());

        report("udp-bind-listen", UdpSocket::bind(listen));
        report("tcp-listen-listen", TcpListener::bind(listen));
        report("udp-bind-other-port", UdpSocket::bind(other_port));
        report("tcp-listen-other-port", TcpListener::bind(other_port));
        report("udp-bind-wildcard", UdpSocket::bind("0.0.0.0:0"));
        // Nobody asked the listen socket anything: no reply is owed.
        report(
            "udp-send-unsolicited",
            UdpSocket::bind(listen).and_then(|s| s.send_to(b"probe", upstream)),
        );
        // The same, through the host's batch of datagrams; and a batch the
        // host cannot read, which it refuses whole.
        report(
            "udp-batch-send-unsolicited",
            batch_send(listen, upstream, false),
        );
        report(
            "udp-batch-send-cut-short",
            batch_send(listen, upstream, true),
        );
        report("tcp-connect-upstream", TcpStream::connect(upstream));
        report(
            "tcp-connect-other-port",
            TcpStream::connect(other_upstream_port),
        );
        report("tcp-connect-other-host", TcpStream::connect(other_host));
        report(
            "env-is-empty",
            if std::env::vars().next().is_none() {
                Ok(())
            } else {
                Err(std::io::Error::other("environment not empty"))
            },
        );
        report("fs-read-root", std::fs::read_dir("/"));
        report(
            "name-lookup",
            std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 53)),
        );
        log::emit(log::Level::Info, "probe done", &[]);
    }
}

fn main() {
    #[cfg(target_os = "wasi")]
    probe::main();
}
