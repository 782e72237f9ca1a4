#!/usr/bin/env bash
# `make bench-idle`: what idle TCP clients cost. wasi:io/poll builds one
# future per pollable on every wake-up of the component, so without the
# host's watch set (README, "Open TCP connections") the cost of a wake-up
# grew with the number of open connections; this measures how much it does.
#
# Starts the fixture DoT resolver and dnsproxy (max_tcp_clients raised to
# 40,000, so that 10,000 idle clients stay under half of a worker's share:
# past half the idle timeout shrinks, and they would be closed), then for each count of idle clients (default 0, 1000, 10000): opens
# them (each sent one query and read its answer, then stays connected and
# silent), reads the proxy's RSS, and runs dnsperf for IDLE_SECONDS over UDP
# and over TCP beside them, then at a fixed IDLE_RATE (default 1,000) UDP
# queries a second for new names (each a cache miss), for the proxy's CPU
# per answered query: at a moderate rate each query is its own wake-up,
# and a wake-up that polled every open socket paid for them all. Prints one table row per count, then the memory
# goal for this many workers (WORKERS, else the CPUs) and this cache size
# (CACHE_SIZE_MIB, else the default 16): at most 30 MB per worker plus the
# caches, with 1,000 clients. Everything it starts it stops; traffic stays
# on 127.0.0.1.
#
# usage: scripts/idle-clients.sh DNSPROXY DOT_FIXTURE [COUNTS...]
set -euo pipefail
proxy_bin=$1 fixture_bin=$2
shift 2
counts=("${@:-0 1000 10000}")
read -r -a counts <<<"${counts[*]}"
seconds=${IDLE_SECONDS:-10}
rate=${IDLE_RATE:-1000}
port=${IDLE_PORT:-5396}
upstream_port=${IDLE_UPSTREAM_PORT:-18953}
# shellcheck source=scripts/local-proxy.sh
. "$(dirname "$0")/local-proxy.sh"
start_local_proxy MAX_TCP_CLIENTS=40000 TCP_IDLE_TIMEOUT=300s

for _ in $(seq 1 200); do echo "a.dot.test A"; done >"$work/queries"

rss_mb() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$proxy/status"; }
qps() { # dnsperf's "Queries per second" for one run
    dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -c 20 -l "$seconds" -m "$1" 2>/dev/null |
        awk '/Queries per second/ { printf "%.0f", $4 }'
}

# µs of the proxy's CPU per answered query at $rate qps, names new to the
# cache (prefixed with $1, so no run repeats another's).
cpu_per_query() {
    awk -v n="$((rate * seconds + rate))" -v p="$1" \
        'BEGIN { for (i = 0; i < n; i++) printf "%s-%d.dot.test A\n", p, i }' >"$work/names"
    local t0 t1 answered
    t0=$(awk '{ print $14 + $15 }' "/proc/$proxy/stat")
    answered=$(dnsperf -s 127.0.0.1 -p "$port" -d "$work/names" -c 20 -l "$seconds" -Q "$rate" \
        -m udp 2>/dev/null | awk '/Queries completed/ { print $3 }')
    t1=$(awk '{ print $14 + $15 }' "/proc/$proxy/stat")
    awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v q="${answered:-0}" -v r="$rate" -v s="$seconds" \
        'BEGIN { if (q > 0) printf "%.0f (%d of %d answered)", t / hz * 1e6 / q, q, r * s; else printf "none answered" }'
}

printf '| idle TCP clients | proxy RSS MiB | UDP qps beside them | TCP qps beside them | µs CPU per query at %s qps | held at the end |\n' "$rate"
printf '|---|---|---|---|---|---|\n'
for n in "${counts[@]}"; do
    python3 "$here/scripts/idle-clients.py" "$port" "$n" "$work/idle-$n.ready" 2>"$work/idle-$n.err" &
    idle=$!
    pids+=("$idle")
    for _ in $(seq 1 6000); do [ -e "$work/idle-$n.ready" ] || ! kill -0 "$idle" 2>/dev/null && break; sleep 0.1; done
    [ -e "$work/idle-$n.ready" ] || { echo "bench-idle: could not open $n idle clients: $(tail -n 1 "$work/idle-$n.err")" >&2; exit 1; }
    rss=$(rss_mb)
    udp=$(qps udp)
    tcp=$(qps tcp)
    cpu=$(cpu_per_query "idle$n")
    printf '| %s | %s | %s | %s | %s | %s |\n' "$n" "$rss" "$udp" "$tcp" "$cpu" "$(held)"
    kill "$idle"
    wait "$idle" 2>/dev/null || true
    sleep 1
done
workers=${WORKERS:-$(nproc)}
cache_mib=${CACHE_SIZE_MIB:-16}
awk -v w="$workers" -v c="$cache_mib" 'BEGIN {
    printf "\ngoal: RSS with 1,000 idle TCP clients at most 30 MB per worker plus the caches: %.1f MiB here (workers: %d, cache: %d MiB each)\n", w * (30e6 / 1048576 + c), w, c
}'
