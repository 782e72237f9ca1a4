#!/usr/bin/env python3
"""Regression check for issue #8: the component's memory must not grow per UDP query.

Starts the real `dnsproxy` binary on 127.0.0.1, sends --warmup UDP queries,
reads the component's linear memory (the resident part of the rw mapping in
front of wasmtime's 4 GiB reservation) and the process RSS, sends --count more
queries and compares. Each query is padded (EDNS0 padding, RFC 7830) to --size
bytes, since the leak grew with the datagram size.

Two modes:
- default: every query has OPCODE 2 (STATUS), so the component answers NOTIMP
  itself; covers the UDP receive and send path, no upstream. (It used to send
  from outside ALLOW_NETWORKS and expect REFUSED; since the host drops
  outsiders' datagrams before the component sees them, nothing answers those.)
- --dot ADDR (with --ca-file, --hostname): queries `a.dot.test. A` through a
  DoT upstream such as the fixture resolver (fixtures/dot-resolver), and
  checks every answer is NOERROR with 192.0.2.1; covers the whole UDP path.

Exits 0 when the linear memory grows less than --max-bytes-per-query per query
and (nearly) every query was answered correctly, 1 otherwise.

    scripts/udp-leak-check.py [--binary target/x86_64-unknown-linux-musl/release/dnsproxy]
        [--component path.wasm] [--count 200000] [--size 225] [--dot 127.0.0.1:8853 ...]
"""
import argparse
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

NAME = b"\x01a\x03dot\x04test\x00"  # a.dot.test., A 192.0.2.1 in fixtures/zone
ANSWER = bytes([192, 0, 2, 1])


def query(qid, size, opcode=0):
    """A query for a.dot.test./A with an OPT record padded to `size` bytes."""
    header = struct.pack(">HHHHHH", qid, 0x0100 | opcode << 11, 1, 0, 0, 1)
    question = NAME + struct.pack(">HH", 1, 1)
    opt_fixed = 11 + 4  # the OPT RR without rdata, plus the padding option header
    pad = max(0, size - len(header) - len(question) - opt_fixed)
    rdata = struct.pack(">HH", 12, pad) + b"\x00" * pad
    opt = b"\x00" + struct.pack(">HHIH", 41, 1232, 0, len(rdata)) + rdata
    return header + question + opt


def expected(reply, want_notimp):
    """Is this the answer the mode expects (NOTIMP, or NOERROR with ANSWER)?"""
    if len(reply) < 12 or not reply[2] & 0x80:
        return False
    rcode = reply[3] & 0x0F
    if want_notimp:
        return rcode == 4
    return rcode == 0 and struct.unpack(">H", reply[6:8])[0] >= 1 and ANSWER in reply


def linear_memory_kib(pid):
    """Resident KiB of rw mappings directly followed by a PROT_NONE mapping,
    the two together at least 4 GiB: wasmtime's linear memories."""
    maps = []
    with open(f"/proc/{pid}/smaps") as f:
        cur = None
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and "-" in parts[0] and ":" not in parts[0]:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                cur = {"lo": lo, "hi": hi, "perms": parts[1], "rss": 0}
                maps.append(cur)
            elif parts and parts[0] == "Rss:" and cur is not None:
                cur["rss"] = int(parts[1])
    return sum(
        a["rss"]
        for a, b in zip(maps, maps[1:])
        if a["perms"].startswith("rw") and b["perms"].startswith("---")
        and a["hi"] == b["lo"] and b["hi"] - a["lo"] >= 4 << 30
    )


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def blast(port, count, size, rate, first_id, want_notimp):
    """Sends `count` queries paced at `rate`/s; returns (answers, good answers)."""
    opcode = 2 if want_notimp else 0
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    answers = good = 0

    def drain():
        nonlocal answers, good
        while True:
            try:
                reply = s.recv(4096)
            except (BlockingIOError, ConnectionRefusedError):
                return
            answers += 1
            good += expected(reply, want_notimp)

    t0 = time.monotonic()
    batch = 50
    for i in range(0, count, batch):
        for j in range(min(batch, count - i)):
            s.send(query((first_id + i + j) & 0xFFFF, size, opcode))
        drain()
        delay = t0 + (i + batch) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    end = time.monotonic() + 2.0
    while time.monotonic() < end and answers < count:
        drain()
        time.sleep(0.01)
    s.close()
    return answers, good


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", default=os.path.join(
        root, "target/x86_64-unknown-linux-musl/release/dnsproxy"))
    p.add_argument("--component", help="run this .wasm or .cwasm instead of the embedded one")
    p.add_argument("--port", type=int, default=5391)
    p.add_argument("--warmup", type=int, default=20000)
    p.add_argument("--count", type=int, default=200000)
    p.add_argument("--size", type=int, default=225)
    p.add_argument("--rate", type=int, default=10000, help="queries per second")
    p.add_argument("--max-bytes-per-query", type=float, default=8.0,
                   help="the leak was 48+ B; allocator high-water noise stays under 3")
    p.add_argument("--dot", help="DoT upstream ip:port serving fixtures/zone")
    p.add_argument("--ca-file", default=os.path.join(root, "fixtures/pki/root.pem"))
    p.add_argument("--hostname", default="dot.test")
    a = p.parse_args()

    env = dict(os.environ, LOCAL_HOST="127.0.0.1", LOCAL_PORT=str(a.port))
    if a.dot:
        host, port = a.dot.rsplit(":", 1)
        env.update(TLS_HOST=host, TLS_PORT=port, TLS_HOSTNAME=a.hostname,
                   TLS_CA_FILE=os.path.abspath(a.ca_file))
    else:
        env.update(TLS_HOST="127.0.0.1", TLS_PORT="853", TLS_HOSTNAME="leak.check")
    want_notimp = not a.dot
    cmd = [os.path.abspath(a.binary)]
    if a.component:
        cmd += ["--component", os.path.abspath(a.component)]
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd="/", preexec_fn=lambda: os.nice(5))

    def fail(why):
        log.seek(0)
        sys.exit(f"{why}\n--- dnsproxy output (tail) ---\n{log.read()[-2000:]}")

    try:
        # Serving once a first query gets the expected answer.
        first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        first.settimeout(0.5)
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                fail(f"dnsproxy did not answer (exit {proc.poll()})")
            try:
                first.sendto(query(1, 40, 0 if a.dot else 2), ("127.0.0.1", a.port))
                reply = first.recv(4096)
                if expected(reply, want_notimp):
                    break
                fail(f"unexpected first answer {reply.hex()}")
            except (socket.timeout, ConnectionRefusedError):
                pass

        got0, good0 = blast(a.port, a.warmup, a.size, a.rate, 0, want_notimp)
        mem0, rss0 = linear_memory_kib(proc.pid), rss_kib(proc.pid)
        got1, good1 = blast(a.port, a.count, a.size, a.rate, a.warmup, want_notimp)
        mem1, rss1 = linear_memory_kib(proc.pid), rss_kib(proc.pid)
        if proc.poll() is not None:
            fail(f"dnsproxy exited during the check (exit {proc.returncode})")
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)

    sent, got, good = a.warmup + a.count, got0 + got1, good0 + good1
    per_query = (mem1 - mem0) * 1024 / a.count
    what = "NOERROR 192.0.2.1" if a.dot else "NOTIMP"
    print(f"queries: {sent} x {a.size} B sent, {got} answered, {good} {what}")
    print(f"linear memory: {mem0} KiB after {a.warmup}, {mem1} KiB after {sent} "
          f"-> {per_query:.1f} B/query")
    print(f"process RSS:   {rss0} KiB after {a.warmup}, {rss1} KiB after {sent} "
          f"-> {(rss1 - rss0) * 1024 / a.count:.1f} B/query")
    ok = True
    if good < 0.99 * sent:
        print(f"FAIL: only {good} of {sent} queries got {what}")
        ok = False
    if per_query > a.max_bytes_per_query:
        print(f"FAIL: linear memory grows {per_query:.1f} B per UDP query "
              f"(limit {a.max_bytes_per_query})")
        ok = False
    print("ok" if ok else "leak check failed")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
