//! A test guest for the CPU watchdog: run by the real host in place of the
//! proxy component (`dnsproxy --component spin-probe.wasm`), it logs
//! `probe spinning` and then spins forever without ever calling
//! `watchdog.heartbeat`, like a component that hangs before it serves. The
//! host must trap it within about a second of spinning, restart it, and, as
//! it never served, give up after a few attempts.

fn main() {
    #[cfg(target_os = "wasi")]
    policy_probe::spin_forever();
}
