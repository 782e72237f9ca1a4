//! A test guest for the CPU watchdog: run by the real host in place of the
//! proxy component (`dnsproxy --component spin-probe.wasm`), it logs
//! `probe spinning` and then spins forever without ever calling
//! `watchdog.heartbeat`, like a component that hangs before it serves. The
//! host must trap it within about a second of spinning, restart it, and, as
//! it never served, give up after a few attempts.

#[cfg(target_os = "wasi")]
mod probe {
    wit_bindgen::generate!({
        path: "../wit",
        world: "host-services",
        // The vendored WASI 0.2.12 WIT gates wasi:clocks/timezone behind
        // this feature; without it the package does not resolve.
        features: ["clocks-timezone"],
    });

    use dnsproxy::proxy::log;

    pub(crate) fn main() {
        log::emit(log::Level::Info, "probe spinning", &[]);
        let mut n = 0u64;
        loop {
            // black_box: the loop must really run, not be folded away.
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

fn main() {
    #[cfg(target_os = "wasi")]
    probe::main();
}
