//! A test guest for the restart policy: run by the real host in place of the
//! proxy component (`dnsproxy --component stall-probe.wasm`), it logs
//! `serving listen=none (stall probe)` (the line the test harness waits for),
//! calls `watchdog.heartbeat` every 100 ms for half a second
//! like a healthy event loop, then logs `probe spinning` and spins forever,
//! like a component a crafted query sent into an endless loop. The host must
//! trap it and restart it with a backoff, and never give up on it.

#[cfg(target_os = "wasi")]
mod probe {
    use std::time::Duration;

    use policy_probe::bindings::dnsproxy::proxy::{log, watchdog};

    pub(crate) fn main() {
        log::emit(
            log::Level::Info,
            "serving",
            &[log::Field {
                key: "listen".into(),
                value: "none (stall probe)".into(),
            }],
        );
        for _ in 0..5 {
            watchdog::heartbeat();
            std::thread::sleep(Duration::from_millis(100));
        }
        policy_probe::spin_forever();
    }
}

fn main() {
    #[cfg(target_os = "wasi")]
    probe::main();
}
