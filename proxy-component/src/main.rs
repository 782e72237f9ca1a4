//! The proxy component's entry point (`wasi:cli/run`).
//!
//! In the component, the configuration comes from the host through the
//! `dnsproxy:proxy/config` interface and log events go back through
//! `dnsproxy:proxy/log`. Built natively, the same shell runs from environment
//! variables; that build exists to measure what the sandbox costs.

#[cfg(target_os = "wasi")]
mod component;
#[cfg(not(target_os = "wasi"))]
mod native;
#[cfg(any(target_os = "wasi", test))]
mod pool;
#[cfg(wasi_libc_udp_leak)]
mod wasi_libc_udp_leak;

#[cfg(not(target_os = "wasi"))]
#[global_allocator]
static GLOBAL: plain_mimalloc::MiMalloc = plain_mimalloc::MiMalloc;

/// wasi-libc's `malloc`, with free lists for small blocks in front of it.
#[cfg(target_os = "wasi")]
#[global_allocator]
static GLOBAL: pool::Pool<std::alloc::System> = pool::Pool::new(std::alloc::System);

fn main() {
    #[cfg(target_os = "wasi")]
    component::main();
    #[cfg(not(target_os = "wasi"))]
    native::main();
}
