#!/usr/bin/env bash
# The latency dnsproxy adds to a query, read off the wire: one worker in
# front of the fixture DoT resolver, dnsperf sending one query at a time at
# a paced rate, and tcpdump on the loopback interface timestamping every
# packet of both legs (kernel timestamps, taken as each packet is sent).
#
#   bench/added-latency.sh [--rate QPS] [--seconds S] [--binary PATH]
#                          [--component WASM]
#
# For each query it reports:
# - in the proxy: from the client's datagram to the proxy's answer. This
#   includes the proxy's wake-up for the datagram, and nothing of dnsperf's
#   own wake-up for the answer;
# - upstream: from the proxy's TLS record to the resolver's, on the one
#   connection (a miss only);
# - added: in the proxy less upstream, that is the proxy's two legs, each
#   also shown: "to up" from the client's datagram to the proxy's TLS
#   record, "from up" from the resolver's record to the proxy's answer.
#
# A client speaking DoT to the resolver itself pays the upstream leg, its
# own TLS work (which the proxy does for it) and its own wake-ups. So
# "added" is an upper bound on what the proxy costs against a direct DoT
# query, without a DoT client's own costs in the baseline: dnsperf's DoT
# mode spreads its queries over 20 connections and sends with Nagle on,
# which gave 1.29 ms a query where the proxy's whole path took 0.53 ms.
#
# Misses: every name is new and the cache is off. Hits: the cache is on
# and each name was asked once before the capture starts.
#
# --binary PATH measures another build: the native build of the
# component's shell (target/x86_64-unknown-linux-musl/release/proxy-component)
# for what the sandbox adds. --component WASM runs dnsproxy with another
# build of the component, so two builds of it are compared under the same
# host. Needs dnsperf and tcpdump (apt), the release host and the fixture
# (make build-host; cargo build --release --target x86_64-unknown-linux-musl
# -p dot-fixture). Runs as root (tcpdump).
# Everything it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=100 SECONDS_=10
BIN=target/x86_64-unknown-linux-musl/release/dnsproxy
FIXTURE=target/x86_64-unknown-linux-musl/release/dot-fixture
ARGS=(--config /dev/null)
while [ $# -gt 0 ]; do
    case $1 in
        --rate) RATE=$2; shift ;;
        --seconds) SECONDS_=$2; shift ;;
        --binary) BIN=$2; shift ;;
        --component) ARGS+=(--component "$2"); shift ;;
        *) echo "added-latency.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
for tool in dnsperf tcpdump python3; do
    command -v $tool >/dev/null || { echo "added-latency.sh: $tool is required" >&2; exit 1; }
done
[ -x "$BIN" ] && [ -x "$FIXTURE" ] || { echo "added-latency.sh: build $BIN and $FIXTURE first" >&2; exit 1; }

WORK=$(mktemp -d /tmp/dnsproxy-latency.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One measurement: $1 is "miss" or "hit".
measure() {
    local kind=$1 up port cache_mib pid
    up=$(free_port)
    port=$(free_port)
    cache_mib=$([ "$kind" = hit ] && echo 16 || echo 0)
    "$FIXTURE" --listen 127.0.0.1:"$up" --chain fixtures/pki/dot-test.chain.pem \
        --key fixtures/pki/dot-test.key >"$WORK/fixture-$kind.log" 2>&1 &
    PIDS+=($!)
    # The PB_* variables configure the native build, which reads no
    # settings.ini; dnsproxy ignores them.
    env -i PATH="$PATH" HOME="$WORK" TLS_HOST=127.0.0.1 TLS_PORT="$up" TLS_HOSTNAME=dot.test \
        TLS_CA_FILE="$PWD/fixtures/pki/root.pem" LOCAL_HOST=127.0.0.1 LOCAL_PORT="$port" \
        CACHE_SIZE_MIB="$cache_mib" WORKERS=1 HEDGE_PERCENT=0 LOG_LEVEL=warn \
        PB_LISTEN=127.0.0.1:"$port" PB_UPSTREAM=127.0.0.1:"$up" PB_TLS_NAME=dot.test \
        PB_CA_FILE="$PWD/fixtures/pki/root.pem" PB_CACHE_MIB="$cache_mib" \
        "$BIN" "${ARGS[@]}" >"$WORK/proxy-$kind.log" 2>&1 &
    pid=$!
    PIDS+=($pid)
    local ready=0
    for _ in $(seq 300); do
        if dnsperf -s 127.0.0.1 -p "$port" -d <(echo "ready.dot.test A") -n 1 -t 1 2>/dev/null |
            grep -q 'Queries completed: *1 '; then ready=1; break; fi
        sleep 1
    done
    [ $ready = 1 ] || { echo "added-latency.sh: the proxy did not answer; its log:" >&2; cat "$WORK/proxy-$kind.log" >&2; exit 1; }

    local n=$((RATE * SECONDS_))
    python3 -c "
for i in range($n): print(f'$kind{i}.dot.test A')" >"$WORK/queries-$kind.txt"
    if [ "$kind" = hit ]; then
        dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries-$kind.txt" -n 1 -c 10 -t 10 >/dev/null 2>&1
    fi
    tcpdump -i lo -n -B 65536 --time-stamp-precision=nano -w "$WORK/$kind.pcap" \
        "udp port $port or (tcp port $up and tcp[tcpflags] & tcp-push != 0)" \
        >"$WORK/tcpdump-$kind.log" 2>&1 &
    local dump=$!
    PIDS+=($dump)
    for _ in $(seq 50); do grep -q "listening on" "$WORK/tcpdump-$kind.log" && break; sleep 0.1; done
    dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries-$kind.txt" -n 1 -c 1 -q 1 -Q "$RATE" -t 2 \
        >"$WORK/dnsperf-$kind.txt" 2>&1
    sleep 0.5
    kill -INT "$dump"
    wait "$dump" 2>/dev/null || true
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    echo "$kind: $(awk '/Queries sent/ {s=$3} /Queries completed/ {c=$3} END {print c, "of", s}' "$WORK/dnsperf-$kind.txt") answered; dnsperf's own mean latency $(awk '/Average Latency/ {print $4 * 1000}' "$WORK/dnsperf-$kind.txt") ms"
    python3 - "$WORK/$kind.pcap" "$port" "$up" "$kind" <<'PYEOF'
import statistics, struct, sys

path, port, up, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
data = open(path, "rb").read()
magic = struct.unpack("<I", data[:4])[0]
scale = {0xA1B2C3D4: 1e-6, 0xA1B23C4D: 1e-9}[magic]
link = struct.unpack("<I", data[20:24])[0]
off, packets = 24, []
while off + 16 <= len(data):
    sec, frac, incl, _ = struct.unpack("<IIII", data[off:off + 16])
    pkt = data[off + 16:off + 16 + incl]
    off += 16 + incl
    ip = pkt[14:] if link == 1 else pkt[16:]  # Ethernet (lo) or Linux cooked
    if len(ip) < 20 or ip[0] >> 4 != 4:
        continue
    ihl, proto = (ip[0] & 15) * 4, ip[9]
    sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
    t = sec + frac * scale
    if proto == 17:
        dns_id = struct.unpack(">H", ip[ihl + 8:ihl + 10])[0]
        if dport == port:
            packets.append((t, "query", (sport, dns_id)))
        elif sport == port:
            packets.append((t, "answer", (dport, dns_id)))
    elif proto == 6:
        packets.append((t, "up-out" if dport == up else "up-in", None))
packets.sort(key=lambda p: p[0])

asked, inside, upstream, added, forth, back_leg = {}, [], [], [], [], []
pending_up = None  # [query time, upstream out, upstream in]
for t, what, key in packets:
    if what == "query":
        asked[key] = [t, None, None]
        pending_up = asked[key]
    elif what == "up-out" and pending_up is not None and pending_up[1] is None:
        pending_up[1] = t
    elif what == "up-in" and pending_up is not None and pending_up[1] is not None and pending_up[2] is None:
        pending_up[2] = t
    elif what == "answer" and key in asked:
        q, out, back = asked.pop(key)
        inside.append(t - q)
        if out is not None and back is not None:
            upstream.append(back - out)
            added.append((t - q) - (back - out))
            forth.append(out - q)
            back_leg.append(t - back)

def line(name, xs):
    if not xs:
        return f"  {name:<10} none"
    xs = sorted(xs)
    pick = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))] * 1e3
    return (f"  {name:<10} n={len(xs):>5}  median {pick(0.5):.3f} ms  mean {statistics.fmean(xs) * 1e3:.3f}"
            f"  p90 {pick(0.9):.3f}  p99 {pick(0.99):.3f}  worst {xs[-1] * 1e3:.3f}")

print(line("in proxy", inside))
if kind == "miss":
    print(line("upstream", upstream))
    print(line("added", added))
    print(line("  to up", forth))
    print(line("  from up", back_leg))
    if len(upstream) < 0.99 * len(inside):
        print(f"  warning: {len(inside) - len(upstream)} answers without an upstream leg seen")
PYEOF
}

echo "binary: $BIN ${ARGS[*]}; $RATE queries a second for $SECONDS_ s, one at a time"
measure miss
measure hit
