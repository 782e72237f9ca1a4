//! A test guest for the engine's stack limit: run by the real host in place
//! of the proxy component (`dnsproxy --component recurse-probe.wasm`), it
//! logs `probe recursing` and then calls itself without end, never in a
//! loop. The engine checks its epoch only at loop headers, so what stops
//! such a guest is the stack limit: the host must see it trap, restart it,
//! and, as it never served, give up after a few attempts, as for a guest
//! that spins.

fn main() {
    #[cfg(target_os = "wasi")]
    probe::main();
}

#[cfg(target_os = "wasi")]
mod probe {
    use policy_probe::bindings::dnsproxy::proxy::log;

    pub(crate) fn main() {
        log::emit(log::Level::Info, "probe recursing", &[]);
        let depth = deeper(std::hint::black_box(0));
        // Never reached: the recursion has no end.
        log::emit(
            log::Level::Info,
            "probe returned",
            &[log::Field {
                key: "depth".into(),
                value: depth.to_string(),
            }],
        );
    }

    /// Calls itself for as long as `n` is not `u64::MAX`, which it never
    /// reaches first: black_box keeps the compiler from turning the
    /// recursion into a loop or proving it endless.
    #[inline(never)]
    fn deeper(n: u64) -> u64 {
        if std::hint::black_box(n) == u64::MAX {
            return n;
        }
        std::hint::black_box(deeper(n + 1)) + 1
    }
}
