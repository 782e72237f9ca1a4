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
clients=${PRESSURE_CLIENTS:-2048}
period=${PRESSURE_PERIOD:-5}
max=${PRESSURE_MAX:-2048}
port=${PRESSURE_PORT:-5397}
upstream_port=${PRESSURE_UPSTREAM_PORT:-18954}
# shellcheck source=scripts/local-proxy.sh
. "$(dirname "$0")/local-proxy.sh"
start_local_proxy MAX_TCP_CLIENTS="$max" TCP_IDLE_TIMEOUT=10s
python3 "$here/scripts/refreshing-clients.py" "$port" "$clients" "$period" 32 >"$work/clients.out" &
holders=$!
pids+=("$holders")
sleep 12
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
