# Sourced by scripts/idle-clients.sh (`make bench-idle`) and
# scripts/pressure.sh (`make bench-pressure`): the fixture DoT resolver and
# dnsproxy in front of it on 127.0.0.1, and the tools the benches need.
# The caller sets proxy_bin, fixture_bin, port and upstream_port; this sets
# here, work (a scratch directory), pids (what to stop) and, once started,
# proxy. Everything started is stopped, and work removed, on exit.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# need COMMAND PACKAGE: installs Debian's PACKAGE if COMMAND is missing.
need() {
    command -v "$1" >/dev/null || {
        echo "$(basename "$0"): installing $2" >&2
        apt-get install -y -qq "$2" >/dev/null
    }
}
need dnsperf dnsperf
need ss iproute2

# start_local_proxy [NAME=VALUE...]: the fixture resolver, then dnsproxy
# with these settings (environment variables) on top of the upstream's;
# returns once the proxy answers.
start_local_proxy() {
    "$fixture_bin" --listen "127.0.0.1:$upstream_port" \
        --chain "$here/fixtures/pki/dot-test.chain.pem" --key "$here/fixtures/pki/dot-test.key" \
        >"$work/fixture.log" 2>&1 &
    pids+=($!)
    env LOCAL_HOST=127.0.0.1 LOCAL_PORT="$port" TLS_HOST=127.0.0.1 TLS_PORT="$upstream_port" \
        TLS_HOSTNAME=dot.test TLS_CA_FILE="$here/fixtures/pki/root.pem" LOG_LEVEL=warn \
        "$@" "$proxy_bin" --config /dev/null >"$work/proxy.log" 2>&1 &
    proxy=$!
    pids+=("$proxy")
    for _ in $(seq 1 100); do
        dig +time=1 +tries=1 @127.0.0.1 -p "$port" a.dot.test >/dev/null 2>&1 && break
        sleep 0.1
    done
}

# Client TCP connections the proxy holds open now.
held() { ss -Htn state established "( sport = :$port )" | wc -l; }
