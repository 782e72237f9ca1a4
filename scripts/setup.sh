#!/usr/bin/env bash
# Installs what building and testing dnsproxy needs on Debian 12, if missing:
# the wasm32-wasip2 Rust target, clang/lld/llvm-ar (ring's C code for wasm),
# the x86_64-unknown-linux-musl target and musl-gcc (the static native build),
# unbound (the end-to-end tests' DoT resolver), openssl, dig and promtool
# (Debian's prometheus, which checks the metrics exposition in the tests).
set -euo pipefail

need=()
command -v clang >/dev/null || need+=(clang)
command -v wasm-ld >/dev/null || need+=(lld)
command -v llvm-ar >/dev/null || need+=(llvm)
command -v musl-gcc >/dev/null || need+=(musl-tools)
[ -x /usr/sbin/unbound ] || need+=(unbound)
command -v openssl >/dev/null || need+=(openssl)
command -v dig >/dev/null || need+=(dnsutils)
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's unbound package starts a system resolver; the tests run their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet unbound 2>/dev/null; then
    systemctl stop unbound || true
fi
# So does prometheus (on :9090); only its promtool is used.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
rustup target list --installed | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
