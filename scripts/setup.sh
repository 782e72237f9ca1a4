#!/usr/bin/env bash
# Installs what building dnsproxy needs on Debian 12, if missing, and nothing
# else (`make build-host`, `make run-host`): the wasm32-wasip2 and
# x86_64-unknown-linux-musl Rust targets, clang/lld/llvm-ar (ring's C code
# for wasm) and musl-gcc (the static native build). It never starts, stops or
# reconfigures a service. What only the tests need: scripts/setup-test.sh.
set -euo pipefail

need=()
command -v clang >/dev/null || need+=(clang)
command -v wasm-ld >/dev/null || need+=(lld)
command -v llvm-ar >/dev/null || need+=(llvm)
command -v musl-gcc >/dev/null || need+=(musl-tools)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
rustup target list --installed | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
