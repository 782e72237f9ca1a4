#!/usr/bin/env bash
# Soak benchmark (not a test): the real dnsproxy binary under a bounded mixed load
# for SOAK_MINUTES, with its upstream restarted every SOAK_RESTART_EVERY seconds and
# hostile clients alongside. Prints the proxy's RSS and open descriptors every
# SOAK_SAMPLE_EVERY seconds, then answered % and SERVFAIL % per transport.
#
#   make soak                      # 30 minutes
#   SOAK_MINUTES=5 make soak       # a short run
#
# Load: dnsperf (Debian package `dnsperf`) over UDP and over TCP at a fixed rate
# (SOAK_UDP_QPS, SOAK_TCP_QPS), names of the fixture zone with small, ~1.1 KB and
# ~8.5 KB answers and NXDOMAIN. Upstream: Debian's unbound (the spec-tests fixture
# resolver's configuration: fixtures/pki, fixtures/zone) serving DoT on loopback,
# stopped and started again on the same port. Hostile clients (python3, bounded):
# every 10 s, 4 TCP clients pipelining big answers and never reading (held 20 s),
# one client sending a byte every 1.5 s, 200 UDP responses (QR=1) sent as queries.
#
# Everything runs on 127.0.0.1; every process started here is stopped by its PID
# on exit. Needs: the binary (make build-host), unbound, dnsperf, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DNSPROXY_BIN:-$ROOT/target/x86_64-unknown-linux-musl/release/dnsproxy}
MINUTES=${SOAK_MINUTES:-30}
PORT=${SOAK_PORT:-5391}
UPSTREAM_PORT=${SOAK_UPSTREAM_PORT:-8853}
UDP_QPS=${SOAK_UDP_QPS:-2000}
TCP_QPS=${SOAK_TCP_QPS:-400}
RESTART_EVERY=${SOAK_RESTART_EVERY:-120}
SAMPLE_EVERY=${SOAK_SAMPLE_EVERY:-10}
UNBOUND=${UNBOUND:-/usr/sbin/unbound}

die() { echo "soak: $*" >&2; exit 1; }
[ -x "$BIN" ] || die "no dnsproxy binary at $BIN (make build-host)"
[ -x "$UNBOUND" ] || die "no unbound at $UNBOUND (apt-get install unbound)"
command -v dnsperf >/dev/null || die "no dnsperf (apt-get install dnsperf)"
command -v python3 >/dev/null || die "no python3"
case $MINUTES in '' | *[!0-9]*) die "SOAK_MINUTES must be a whole number, got '$MINUTES'" ;; esac
[ "$MINUTES" -ge 1 ] || die "SOAK_MINUTES must be at least 1"

WORK=$(mktemp -d /tmp/dnsproxy-soak.XXXXXX)
PIDS=()
UNBOUND_PID=
cleanup() {
  for pid in "${PIDS[@]}" $UNBOUND_PID; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  echo "soak: logs and raw output kept in $WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits up to $2 seconds for file $1 to contain $3 at least $4 times (default 1).
wait_for() {
  local file=$1 secs=$2 word=$3 count=${4:-1} i
  for ((i = 0; i < secs * 10; i++)); do
    if [ "$(grep -c -- "$word" "$file" 2>/dev/null || true)" -ge "$count" ]; then return 0; fi
    sleep 0.1
  done
  return 1
}

# --- upstream: unbound over DoT on 127.0.0.1:$UPSTREAM_PORT ---------------------
cat >"$WORK/unbound.conf" <<EOF
server:
  interface: 127.0.0.1@$UPSTREAM_PORT
  tls-port: $UPSTREAM_PORT
  tls-service-key: "$ROOT/fixtures/pki/dot-test.key"
  tls-service-pem: "$ROOT/fixtures/pki/dot-test.chain.pem"
  do-daemonize: no
  username: ""
  chroot: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  directory: "$WORK"
  pidfile: ""
  do-ip6: no
  num-threads: 1
  so-reuseport: no
  interface-automatic: no
  incoming-num-tcp: 100
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  include: "$ROOT/fixtures/zone/dot.test.conf"
EOF
starts=0
start_unbound() {
  starts=$((starts + 1))
  "$UNBOUND" -d -c "$WORK/unbound.conf" >>"$WORK/unbound.log" 2>&1 &
  UNBOUND_PID=$!
  wait_for "$WORK/unbound.log" 20 "start of service" "$starts" ||
    die "unbound did not start; see $WORK/unbound.log"
}
stop_unbound() {
  kill "$UNBOUND_PID" 2>/dev/null || true
  wait "$UNBOUND_PID" 2>/dev/null || true
  UNBOUND_PID=
}
start_unbound

# --- the proxy ------------------------------------------------------------------
env -i PATH="$PATH" LOCAL_HOST=127.0.0.1 LOCAL_PORT="$PORT" \
  TLS_HOST=127.0.0.1 TLS_PORT="$UPSTREAM_PORT" TLS_HOSTNAME=dot.test \
  TLS_CA_FILE="$ROOT/fixtures/pki/root.pem" LOG_LEVEL=info \
  "$BIN" --config /dev/null >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_for "$WORK/proxy.log" 10 "serving" || die "dnsproxy did not start; see $WORK/proxy.log"

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$PROXY_PID/status" 2>/dev/null || echo 0; }
fds() { find "/proc/$PROXY_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# --- load -----------------------------------------------------------------------
SECS=$((MINUTES * 60))
cat >"$WORK/queries" <<EOF
a.dot.test A
multi.dot.test A
aaaa.dot.test AAAA
nx.dot.test A
medium.dot.test TXT
a.dot.test A
big.dot.test TXT
multi.dot.test A
EOF
nice -n 10 dnsperf -m udp -s 127.0.0.1 -p "$PORT" -d "$WORK/queries" -e -c 4 -q 200 \
  -Q "$UDP_QPS" -l "$SECS" -t 5 >"$WORK/dnsperf-udp.txt" 2>&1 &
PIDS+=("$!")
UDP_PERF=$!
nice -n 10 dnsperf -m tcp -s 127.0.0.1 -p "$PORT" -d "$WORK/queries" -c 16 -q 100 \
  -Q "$TCP_QPS" -l "$SECS" -t 5 >"$WORK/dnsperf-tcp.txt" 2>&1 &
PIDS+=("$!")
TCP_PERF=$!

# --- hostile clients (bounded: they stop at the end of the run) -----------------
nice -n 10 python3 - "$PORT" "$SECS" >"$WORK/hostile.log" 2>&1 <<'PY' &
import socket, struct, sys, threading, time

port, secs = int(sys.argv[1]), int(sys.argv[2])
addr = ("127.0.0.1", port)
end = time.time() + secs

def query(name, qtype, qr=False):
    qid = int(time.time() * 1000) & 0xFFFF
    flags = 0x8100 if qr else 0x0100
    wire = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 0)
    for label in name.split("."):
        wire += bytes([len(label)]) + label.encode()
    return wire + b"\0" + struct.pack(">HH", qtype, 1)

BIG = query("big.dot.test", 16)
FRAME = struct.pack(">H", len(BIG)) + BIG

def non_reader():
    try:
        s = socket.create_connection(addr, timeout=2)
        s.settimeout(0.2)
        for _ in range(2000):
            s.sendall(FRAME * 16)
    except OSError:
        pass
    time.sleep(min(20, max(0, end - time.time())))  # hold it, never reading

def trickler():
    try:
        s = socket.create_connection(addr, timeout=2)
        for b in FRAME:
            s.send(bytes([b]))
            time.sleep(1.5)
            if time.time() > end:
                return
    except OSError:
        pass

counts = {"non_readers": 0, "tricklers": 0, "qr1": 0}
while time.time() < end:
    for _ in range(4):
        threading.Thread(target=non_reader, daemon=True).start()
    counts["non_readers"] += 4
    threading.Thread(target=trickler, daemon=True).start()
    counts["tricklers"] += 1
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(200):
        u.sendto(query("a.dot.test", 1, qr=True), addr)
    counts["qr1"] += 200
    u.settimeout(0.05)
    try:
        u.recvfrom(4096)
        print("QR=1 datagram answered", flush=True)
    except OSError:
        pass
    u.close()
    time.sleep(min(10, max(0, end - time.time())))
print("hostile", counts, flush=True)
PY
PIDS+=("$!")

# --- sample, restart the upstream, until the load ends --------------------------
echo "soak: $MINUTES min, UDP $UDP_QPS qps + TCP $TCP_QPS qps, upstream restart every ${RESTART_EVERY}s, work dir $WORK"
printf '%8s %10s %6s %s\n' "t(s)" "rss(KiB)" "fds" "event"
started=$(date +%s)
next_restart=$RESTART_EVERY
next_sample=0
restarts=0
rss_first=
rss_max=0
while kill -0 "$UDP_PERF" 2>/dev/null || kill -0 "$TCP_PERF" 2>/dev/null; do
  t=$(($(date +%s) - started))
  event=
  if [ "$t" -ge "$next_restart" ] && [ "$t" -lt "$SECS" ]; then
    stop_unbound
    start_unbound
    restarts=$((restarts + 1))
    next_restart=$((next_restart + RESTART_EVERY))
    event="upstream restarted"
  fi
  if [ "$t" -ge "$next_sample" ] || [ -n "$event" ]; then
    kill -0 "$PROXY_PID" 2>/dev/null || die "dnsproxy exited; see $WORK/proxy.log"
    r=$(rss)
    [ -n "$rss_first" ] || rss_first=$r
    [ "$r" -gt "$rss_max" ] && rss_max=$r
    printf '%8d %10d %6d %s\n' "$t" "$r" "$(fds)" "$event"
    [ "$t" -ge "$next_sample" ] && next_sample=$((next_sample + SAMPLE_EVERY))
  fi
  sleep 1
done
rss_last=$(rss)

# --- summary --------------------------------------------------------------------
summary() {
  local name=$1 file=$2
  awk -v name="$name" '
    /Queries sent:/ { sent = $3 }
    /Queries completed:/ { done = $3 }
    /Response codes:/ {
      # "Response codes: NOERROR 750 (75.00%), NXDOMAIN 250 (25.00%)"
      for (i = 3; i + 1 <= NF; i += 3) { rc[$i] = $(i + 1) + 0 }
    }
    END {
      if (sent == 0) { printf "%s: no queries sent (see the dnsperf output)\n", name; exit }
      printf "%s: sent %d, answered %.3f%%, SERVFAIL %.3f%% of answers, REFUSED %.3f%%\n",
        name, sent, 100 * done / sent, done ? 100 * rc["SERVFAIL"] / done : 0,
        done ? 100 * rc["REFUSED"] / done : 0
    }' "$file"
}
echo
summary UDP "$WORK/dnsperf-udp.txt"
summary TCP "$WORK/dnsperf-tcp.txt"
echo "RSS: ${rss_first} KiB at start, ${rss_last} KiB at the end, ${rss_max} KiB at most; upstream restarts: $restarts"
grep -h "^hostile\|answered" "$WORK/hostile.log" || true
echo "proxy log: $(grep -c 'upstream failed' "$WORK/proxy.log" || true) 'upstream failed' lines, $(wc -l <"$WORK/proxy.log") lines in all"
