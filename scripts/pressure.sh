#!/usr/bin/env bash
# `make bench-pressure`: what clients holding TCP connections open cost the
# proxy, at its default limits. Starts the fixture DoT resolver and dnsproxy
# (defaults, max_tcp_clients PRESSURE_MAX (2,048), tcp_idle_timeout 10 s),
# then PRESSURE_CLIENTS (2,048) clients that each send a query every
# PRESSURE_PERIOD (5) seconds and reconnect when closed
# (scripts/refreshing-clients.py). After 12 s it counts the client
# connections the proxy holds and, for 10 s, the proxy's CPU per answered
# query while dnsperf sends 1,000 UDP queries a second for new names (each
# a cache miss) beside them. The CPU is the whole proxy's, the refreshing
# clients' queries and reconnects included. Everything it starts it stops;
# traffic stays on 127.0.0.1.
#
# usage: scripts/pressure.sh DNSPROXY DOT_FIXTURE
set -euo pipefail
proxy_bin=$1 fixture_bin=$2
here=$(cd "$(dirname "$0")/.." && pwd)
clients=${PRESSURE_CLIENTS:-2048}
period=${PRESSURE_PERIOD:-5}
max=${PRESSURE_MAX:-2048}
port=${PRESSURE_PORT:-5397}
upstream_port=${PRESSURE_UPSTREAM_PORT:-18954}
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
command -v dnsperf >/dev/null || apt-get install -y -qq dnsperf >/dev/null
command -v ss >/dev/null || apt-get install -y -qq iproute2 >/dev/null

"$fixture_bin" --listen "127.0.0.1:$upstream_port" \
    --chain "$here/fixtures/pki/dot-test.chain.pem" --key "$here/fixtures/pki/dot-test.key" \
    >"$work/fixture.log" 2>&1 &
pids+=($!)
env LOCAL_HOST=127.0.0.1 LOCAL_PORT="$port" TLS_HOST=127.0.0.1 TLS_PORT="$upstream_port" \
    TLS_HOSTNAME=dot.test TLS_CA_FILE="$here/fixtures/pki/root.pem" LOG_LEVEL=warn \
    MAX_TCP_CLIENTS="$max" TCP_IDLE_TIMEOUT=10s "$proxy_bin" --config /dev/null >"$work/proxy.log" 2>&1 &
proxy=$!
pids+=("$proxy")
for _ in $(seq 1 100); do
    dig +time=1 +tries=1 @127.0.0.1 -p "$port" a.dot.test >/dev/null 2>&1 && break
    sleep 0.1
done
python3 "$here/scripts/refreshing-clients.py" "$port" "$clients" "$period" 32 >"$work/clients.out" &
holders=$!
pids+=("$holders")
sleep 12
held() { ss -Htn state established "( sport = :$port )" | wc -l; }
before=$(held)
awk 'BEGIN { for (i = 0; i < 11000; i++) printf "pressure-%d.dot.test A\n", i }' >"$work/names"
t0=$(awk '{ print $14 + $15 }' "/proc/$proxy/stat")
answered=$(dnsperf -s 127.0.0.1 -p "$port" -d "$work/names" -c 20 -l 10 -Q 1000 -m udp 2>/dev/null |
    awk '/Queries completed/ { print $3 }')
t1=$(awk '{ print $14 + $15 }' "/proc/$proxy/stat")
after=$(held)
wait "$holders"
awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v q="${answered:-0}" -v b="$before" -v a="$after" \
    -v c="$clients" -v m="$max" 'BEGIN {
    printf "%d clients, max_tcp_clients %d: %d and %d connections held; ", c, m, b, a
    if (q > 0) printf "%.0f us of CPU per query at 1,000 qps (%d answered)\n", t / hz * 1e6 / q, q
    else printf "none answered\n"
}'
echo "the clients: $(cat "$work/clients.out")"
