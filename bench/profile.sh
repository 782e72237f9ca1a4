#!/usr/bin/env bash
# Where the proxy's CPU goes, per query: dnsproxy (one worker) runs under
# callgrind in front of the fixture DoT resolver, instrumentation is switched
# on only while dnsperf sends a fixed number of UDP queries, and the count is
# split between the component (JIT code, named through wasmtime's perf map)
# and the host (wasmtime, wasmtime-wasi, tokio, the allocator). callgrind
# counts instructions, not time: the same binary and inputs give the same
# figures whatever else the machine does, so two builds can be compared on
# a shared machine. System calls are not counted (they are the kernel's).
#
#   bench/profile.sh [--queries N] [--rate QPS] [--outstanding Q] [--top K]
#                    [--cached NAMES] [--tcp] [--idle N] [--binary PATH]
#                    [--component WASM] [--upstreams N] [--keep DIR]
#
# --cached NAMES turns the cache on (16 MiB) and sends NAMES distinct names,
# each answered once before counting starts, so every counted query is a
# cache hit (the default: cache off, every name new, every query a miss).
# --tcp sends the queries over TCP (dnsperf -m tcp: one connection per
# client, pipelined) instead of UDP. --idle N opens N TCP clients first,
# each of which asks one query, reads its answer and stays connected and
# silent while the queries are counted (what an idle connection costs each
# wake-up: with --rate 300, each query is its own); the proxy's
# tcp_idle_timeout is 300 s and max_tcp_clients 40,000 so that none is
# closed meanwhile (past half of max_tcp_clients idle ones are closed).
#
# --upstreams N starts N fixture resolvers and gives the proxy all of them,
# with hedging on (hedge_percent 5, the default) where the default run has
# one upstream and hedging off: what a query that could be hedged costs
# (a hedge wait, a second upstream to choose from). The fixture answers
# well within its usual time, so few queries are hedged; the run says how
# many. The native build (--binary) takes one upstream.
#
# --binary PATH profiles another build: an older dnsproxy, or the same shell
# built natively (target/x86_64-unknown-linux-musl/release/proxy-component,
# with no component: all of it counts as host), for what the sandbox costs.
# The callgrind output is removed at exit; --keep DIR keeps it there
# (callgrind.out, and perf.map naming the component's JIT code) for a closer
# look (callgrind_annotate --inclusive=yes, --tree=caller), with the
# proxy's and the fixture's logs (PROFILE_LOG_LEVEL=debug for more than
# warnings). --rate 0 (the default) sends as fast as the proxy under callgrind answers:
# the cost at saturation. A paced rate (--rate 300) adds what each wake-up
# costs. Needs valgrind and dnsperf (apt), the release host and the fixture
# (make build-host; cargo build --release --target x86_64-unknown-linux-musl
# -p dot-fixture). Everything it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

QUERIES=4000 RATE=0 OUTSTANDING=100 TOP=30 CACHED=0 MODE=udp IDLE=0
BIN=target/x86_64-unknown-linux-musl/release/dnsproxy
FIXTURE=target/x86_64-unknown-linux-musl/release/dot-fixture
COMPONENT="" KEEP="" UPSTREAMS=1
while [ $# -gt 0 ]; do
    case $1 in
        --queries) QUERIES=$2; shift ;;
        --rate) RATE=$2; shift ;;
        --outstanding) OUTSTANDING=$2; shift ;;
        --top) TOP=$2; shift ;;
        --cached) CACHED=$2; shift ;;
        --tcp) MODE=tcp ;;
        --idle) IDLE=$2; shift ;;
        --binary) BIN=$2; shift ;;
        --component) COMPONENT=$2; shift ;;
        --upstreams) UPSTREAMS=$2; shift ;;
        --keep) KEEP=$2; shift ;;
        *) echo "profile.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
for tool in valgrind callgrind_control callgrind_annotate dnsperf python3; do
    command -v $tool >/dev/null || { echo "profile.sh: $tool is required" >&2; exit 1; }
done
[ -x "$BIN" ] && [ -x "$FIXTURE" ] || { echo "profile.sh: build $BIN and $FIXTURE first" >&2; exit 1; }
[ "$UPSTREAMS" = 1 ] || [ "$(basename "$BIN")" != proxy-component ] ||
    { echo "profile.sh: the native build takes one upstream (--upstreams)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/dnsproxy-profile.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK" "/tmp/perf-${VG:-none}.map"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
UPS=()
for i in $(seq "$UPSTREAMS"); do
    UPS+=("$(free_port)")
    "$FIXTURE" --listen 127.0.0.1:"${UPS[-1]}" --chain fixtures/pki/dot-test.chain.pem \
        --key fixtures/pki/dot-test.key >"$WORK/fixture-$i.log" 2>&1 &
    PIDS+=($!)
done
UP=${UPS[0]}
HEDGE=$([ "$UPSTREAMS" = 1 ] && echo 0 || echo 5)
MPORT=$(free_port)

args=(--config /dev/null)
CACHE_MIB=$([ "$CACHED" = 0 ] && echo 0 || echo 16)
# The PB_* variables configure the native build (proxy-component, --binary),
# which reads no settings.ini; dnsproxy ignores them.
[ -n "$COMPONENT" ] && args+=(--component "$COMPONENT")
env -i PATH="$PATH" TLS_HOST=127.0.0.1 TLS_PORT="$(IFS=,; echo "${UPS[*]}")" TLS_HOSTNAME=dot.test \
    TLS_CA_FILE="$PWD/fixtures/pki/root.pem" LOCAL_HOST=127.0.0.1 LOCAL_PORT="$PORT" \
    CACHE_SIZE_MIB="$CACHE_MIB" WORKERS=1 HEDGE_PERCENT="$HEDGE" LOG_LEVEL=${PROFILE_LOG_LEVEL:-warn} METRICS_LISTEN=127.0.0.1:"$MPORT" DNSPROXY_PERF_MAP=1 TCP_IDLE_TIMEOUT=300s MAX_TCP_CLIENTS=40000 \
    PB_LISTEN=127.0.0.1:"$PORT" PB_UPSTREAM=127.0.0.1:"$UP" PB_TLS_NAME=dot.test \
    PB_CA_FILE="$PWD/fixtures/pki/root.pem" PB_CACHE_MIB="$CACHE_MIB" \
    valgrind --tool=callgrind --instr-atstart=no --smc-check=all-non-file \
    --callgrind-out-file="$WORK/callgrind.out" "$BIN" "${args[@]}" >"$WORK/proxy.log" 2>&1 &
VG=$!
PIDS+=($VG)
# Start-up under valgrind compiles the component: up to a few minutes.
ready=0
for _ in $(seq 300); do
    if dnsperf -s 127.0.0.1 -p "$PORT" -d <(echo "ready.dot.test A") -n 1 -t 1 2>/dev/null |
        grep -q 'Queries completed: *1 '; then ready=1; break; fi
    sleep 1
done
[ $ready = 1 ] || { echo "profile.sh: the proxy did not answer; its log:" >&2; cat "$WORK/proxy.log" >&2; exit 1; }

python3 -c "
n = $QUERIES if $CACHED == 0 else $CACHED
for i in range($QUERIES): print(f'p{i % n}.dot.test A')" >"$WORK/queries.txt"
if [ "$CACHED" != 0 ]; then
    head -n "$CACHED" "$WORK/queries.txt" >"$WORK/warm.txt"
    dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/warm.txt" -n 1 -c 10 -t 10 >/dev/null 2>&1
fi
if [ "$IDLE" != 0 ]; then
    python3 scripts/idle-clients.py "$PORT" "$IDLE" "$WORK/idle.ready" 2>"$WORK/idle.err" &
    PIDS+=($!)
    for _ in $(seq 6000); do
        [ -e "$WORK/idle.ready" ] || ! kill -0 "${PIDS[-1]}" 2>/dev/null && break
        sleep 0.1
    done
    [ -e "$WORK/idle.ready" ] || { echo "profile.sh: could not open $IDLE idle clients: $(tail -n 1 "$WORK/idle.err")" >&2; exit 1; }
fi
rate=()
[ "$RATE" != 0 ] && rate=(-Q "$RATE")
callgrind_control -i on "$VG" >/dev/null
dnsperf -s 127.0.0.1 -p "$PORT" -m "$MODE" -d "$WORK/queries.txt" -n 1 -c 10 -q "$OUTSTANDING" -t 10 \
    "${rate[@]}" >"$WORK/dnsperf.txt" 2>&1
callgrind_control -i off "$VG" >/dev/null
HEDGES=$(python3 -c '
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=30).read().decode()
print(round(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("dnsproxy_upstream_hedges_total"))))
' "http://127.0.0.1:$MPORT/metrics" 2>/dev/null || echo "?")
kill -TERM "$VG"
wait "$VG" 2>/dev/null || true
ANSWERED=$(awk '/Queries completed/ {print $3}' "$WORK/dnsperf.txt")
# Under valgrind the component runs some fifty times slower while the
# watchdog's ticks keep wall time, so a long turn of its loop can pass for
# a stuck one: the watchdog restarts it, and the run then counts a new
# upstream handshake and the misses of an empty cache. Say so.
if grep -q "stuck in a loop" "$WORK/proxy.log"; then
    echo "profile.sh: the watchdog restarted the component during the run (valgrind's slowness);" \
        "these figures include a restart, a handshake and misses: run again, or with fewer --outstanding" >&2
fi
MAP=/tmp/perf-$VG.map
if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP"
    cp "$WORK/callgrind.out" "$KEEP/callgrind.out"
    cp "$MAP" "$KEEP/perf.map" 2>/dev/null || true
    cp "$WORK"/fixture-*.log "$WORK/proxy.log" "$KEEP/" 2>/dev/null || true
fi

python3 - "$MAP" "$WORK/callgrind.out" "$ANSWERED" "$TOP" "$RATE" "$MODE" "$IDLE" "$UPSTREAMS" "$HEDGES" <<'PYEOF'
import bisect, re, subprocess, sys

perf_map, out, answered, top, rate, mode, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
upstreams, hedges = sys.argv[8], sys.argv[9]
jit = []
try:
    for line in open(perf_map):
        addr, size, name = line.rstrip("\n").split(" ", 2)
        jit.append((int(addr, 16), int(size, 16), re.sub(r"^wasm\[\d+\]::function\[\d+\]::", "", name)))
except FileNotFoundError:
    pass
jit.sort()
starts = [j[0] for j in jit]

def component(addr):
    i = bisect.bisect_right(starts, addr) - 1
    if i >= 0 and addr < jit[i][0] + jit[i][1]:
        return jit[i][2]
    return None

text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", out],
                      capture_output=True, text=True, check=True).stdout
total, by = 0, {}
for line in text.splitlines():
    m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$", line)
    if not m:
        continue
    n, what = int(m.group(1).replace(",", "")), m.group(2)
    if "PROGRAM TOTALS" in what:
        total = n
        continue
    jm = re.match(r"\?\?\?:0x([0-9a-f]+)", what)
    if jm:
        name = component(int(jm.group(1), 16))
        key = ("component", name or "(unnamed JIT code)")
    else:
        fn = re.sub(r"\s*\[.*\]$", "", what.split(":", 1)[-1])
        fn = re.sub(r"\s*\([\d,]+x\)$", "", fn)
        key = ("host", fn)
    by[key] = by.get(key, 0) + n

def demangle(s):
    s = re.sub(r"^_ZN|17h[0-9a-f]{16}E.*$", "", s)
    parts, i = [], 0
    while i < len(s) and s[i].isdigit():
        j = i
        while j < len(s) and s[j].isdigit():
            j += 1
        n = int(s[i:j]); parts.append(s[j:j + n]); i = j + n
    return "::".join(parts).replace("$LT$", "<").replace("$GT$", ">").replace("$u7b$", "{").replace("$u7d$", "}").replace("..", "::") if parts else s

TREE = subprocess.run(["callgrind_annotate", "--tree=caller", "--threshold=100", "--auto=no", out],
                      capture_output=True, text=True, check=True).stdout

def calls_into(pattern):
    """Calls of the functions matching `pattern`, summed over their callers."""
    n, callers = 0, []
    for line in TREE.splitlines():
        if " < " in line:
            callers.append(line)
            continue
        if " * " in line and re.search(pattern, line):
            for c in callers:
                m = re.search(r"\(([\d,]+)x\)", c)
                n += int(m.group(1).replace(",", "")) if m else 0
        callers = []
    return n

def calls_by(pattern):
    """Runs of the function matching `pattern`, as the most calls it made to
    any one callee (for a function inlined into its callers, whose own
    callers are not listed)."""
    counts = [int(m.group(1).replace(",", "")) for line in TREE.splitlines()
              if " < " in line and re.search(pattern, line)
              for m in [re.search(r"\(([\d,]+)x\)", line)] if m]
    return max(counts, default=0)

q = max(answered, 1)
comp = sum(v for (side, _), v in by.items() if side == "component")
host_calls = calls_into(r"HostFn::cabi_entrypoint")
clock = calls_by(r"as .*HostMonotonicClock>::now")
print(f"{answered} queries answered over {mode}, rate {'max' if rate == '0' else rate + ' qps'}, idle TCP clients {idle}"
      + (f", upstreams {upstreams}, hedges {hedges}" if upstreams != "1" else ""))
print(f"instructions per query: {total / q:,.0f}  (component {comp / q:,.0f}, host {(total - comp) / q:,.0f})")
print(f"host calls per query: {host_calls / q:.1f}, of which clock reads: {clock / q:.1f}")
print(f"\ntop {top}, instructions per query:")
for (side, fn), v in sorted(by.items(), key=lambda kv: -kv[1])[:top]:
    print(f"{v / q:9,.0f}  {side:9}  {demangle(fn)[:110]}")
PYEOF
