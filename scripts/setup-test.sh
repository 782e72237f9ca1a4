#!/usr/bin/env bash
# Installs what the tests need on top of scripts/setup.sh, if missing (`make
# test`, `.ci/run`; never `make run-host`):
# - clippy and rustfmt (make lint);
# - unbound: the conformance suite puts Debian's /usr/sbin/unbound and its
#   libraries into a container image (spec-tests/src/images.rs); the tests
#   run it only in their own containers;
# - openssl (pins of the test PKI), dig (dnsutils), systemd-analyze
#   (systemd: scripts/check-install.sh verifies the unit), python3-venv
#   (scripts/validate-k8s.sh installs its validator into a venv), tmux (the
#   terminal `dnsproxy top` runs in for its test), prometheus (promtool
#   checks the metrics endpoint's output) and ss (iproute2: the `acks`
#   group counts the proxy's TCP segments).
#
# Installing a package that ships a service (unbound) must not start it, nor
# leave it enabled: a resolver on port 53 of the user's machine is not ours
# to start. While apt runs, a temporary /usr/sbin/policy-rc.d answers 101
# ("action forbidden"), which Debian's maintainer scripts (invoke-rc.d,
# deb-systemd-invoke) obey; afterwards, the unit our install enabled is
# disabled again. An existing policy-rc.d is left as it is (it already says
# what the machine wants), and a service already there is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

need=()
[ -x /usr/sbin/unbound ] || need+=(unbound)
command -v openssl >/dev/null || need+=(openssl)
command -v dig >/dev/null || need+=(dnsutils)
command -v systemd-analyze >/dev/null || need+=(systemd)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v tmux >/dev/null || need+=(tmux)
command -v promtool >/dev/null || need+=(prometheus)
command -v ss >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup-test: installing ${need[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    policy=/usr/sbin/policy-rc.d
    ours=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# scripts/setup-test.sh (dnsproxy): no service starts while it installs\nexit 101\n' |
            $SUDO tee "$policy" >/dev/null
        $SUDO chmod 0755 "$policy"
        ours=1
        trap '$SUDO rm -f "$policy"' EXIT
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    if [ -n "$ours" ] && [[ " ${need[*]} " == *" unbound "* ]] && command -v deb-systemd-helper >/dev/null; then
        $SUDO deb-systemd-helper disable unbound.service unbound-resolvconf.service >/dev/null 2>&1 || true
    fi
fi
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
