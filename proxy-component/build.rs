//! Links the workaround for wasi-libc's UDP receive leak (issue #8) into the
//! component, for the toolchains known to ship the leaking wasi-libc.
//!
//! wasi-libc's `recvfrom` on wasm32-wasip2 frees the datagram list it gets from
//! `wasi:sockets/udp` `incoming-datagram-stream.receive` but not the payload of
//! each datagram: its generated `udp_incoming_datagram_free` forgets the
//! `list<u8>` field (a wit-bindgen C generator bug). Every received datagram
//! leaks its size plus malloc's overhead. `src/wasi_libc_udp_leak.rs` wraps the
//! list's free function to release the payloads first; this script passes the
//! linker the `--wrap` that routes wasi-libc's call through it.
//!
//! The wrap is applied only to a wasi-libc known to leak (the one in rustc
//! 1.95): a wasi-libc fixed in `recvfrom` itself would free the payload too,
//! and freeing it twice corrupts the heap. On any other toolchain the build
//! warns; `scripts/udp-leak-check.py` says whether the leak is still there.
//!
//! It also says whether wasi-libc's UDP descriptor layout is the one
//! `src/shell/datagrams.rs` reads (`wasi_libc_descriptors`): only then does
//! the component move datagrams in batches.

use std::process::Command;

/// Minor versions of rustc whose self-contained wasm32-wasip2 wasi-libc leaks
/// every received UDP datagram (checked with `scripts/udp-leak-check.py`).
const LEAKING_RUSTC_MINORS: &[u32] = &[95];

/// Minor versions of rustc whose wasi-libc (wasi-sdk 30) has the UDP
/// descriptor layout `src/shell/datagrams.rs` reads to send and receive
/// datagrams in batches (read off its debug information, `llvm-dwarfdump`
/// of `wasip2_udp.c.obj` in the toolchain's self-contained `libc.a`). Other
/// toolchains move one datagram per call, through wasi-libc.
const DESCRIPTOR_LAYOUT_RUSTC_MINORS: &[u32] = &[95];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(wasi_libc_udp_leak)");
    println!("cargo::rustc-check-cfg=cfg(wasi_libc_descriptors)");
    if std::env::var("TARGET").as_deref() != Ok("wasm32-wasip2") {
        return;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(&rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .unwrap_or_default();
    let minor = rustc_minor(&version);
    if minor.is_some_and(|m| DESCRIPTOR_LAYOUT_RUSTC_MINORS.contains(&m)) {
        println!("cargo::rustc-cfg=wasi_libc_descriptors");
    }
    match minor {
        Some(minor) if LEAKING_RUSTC_MINORS.contains(&minor) => {
            println!("cargo::rustc-cfg=wasi_libc_udp_leak");
            println!("cargo::rustc-link-arg-bins=--wrap=udp_list_incoming_datagram_free");
        }
        _ => println!(
            "cargo::warning=UDP receive leak workaround not applied for `{}`: run \
             scripts/udp-leak-check.py against this build; if it still leaks, add this \
             version to LEAKING_RUSTC_MINORS in proxy-component/build.rs",
            version.trim()
        ),
    }
}

/// `rustc 1.95.0 (59807616e 2026-04-14)` -> `Some(95)`.
fn rustc_minor(version: &str) -> Option<u32> {
    let semver = version.split_whitespace().nth(1)?;
    semver.split('.').nth(1)?.parse().ok()
}
