//! What the test guests share: the bindings of the host's own interfaces
//! (the `host-services` and `host-datagrams` worlds), and the endless loop
//! the watchdog probes end in.

/// The host's interfaces, generated from `wit/`.
#[cfg(target_os = "wasi")]
pub mod bindings {
    #![allow(missing_docs, unreachable_pub)]
    wit_bindgen::generate!({
        path: "../wit",
        world: "host-services",
        // The vendored WASI 0.2.12 WIT gates wasi:clocks/timezone behind
        // this feature; without it the package does not resolve.
        features: ["clocks-timezone"],
    });
}

/// The host's `datagram-batch` interface and the `wasi:sockets` it works
/// on, a UDP socket made and bound with them: the probe calls them
/// directly, as the proxy component does on the socket wasi-libc made.
#[cfg(target_os = "wasi")]
pub mod datagrams {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    wit_bindgen::generate!({
        path: "../wit",
        inline: "
            package dnsproxy:probe;

            world datagrams {
                include dnsproxy:proxy/host-datagrams@0.1.0;
                import wasi:sockets/instance-network@0.2.12;
                import wasi:sockets/udp-create-socket@0.2.12;
            }
        ",
        world: "dnsproxy:probe/datagrams",
        features: ["clocks-timezone"],
        generate_all,
    });
}

/// Logs `probe spinning`, then spins forever without calling
/// `watchdog.heartbeat`: the host's CPU watchdog must trap it.
#[cfg(target_os = "wasi")]
pub fn spin_forever() -> ! {
    use bindings::dnsproxy::proxy::log;
    log::emit(log::Level::Info, "probe spinning", &[]);
    let mut n = 0u64;
    loop {
        // black_box: the loop must really run, not be folded away.
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
