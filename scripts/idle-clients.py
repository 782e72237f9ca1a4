#!/usr/bin/env python3
"""Opens N TCP clients to a DNS server on 127.0.0.1:PORT that stay connected
and silent: each sends one query and reads its answer first, so each is an
open, served connection. Then it creates READY and sleeps (at most an hour)
until it is killed, holding them.

usage: idle-clients.py PORT N READY

For `make bench-idle` (scripts/idle-clients.sh) and `make profile --idle`
(bench/profile.sh). Exits non-zero, with the reason on stderr, if a client
gets no answer within 120 s."""
import resource
import selectors
import socket
import struct
import sys
import time

port, n, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
q = struct.pack('>HHHHHH', 1, 0x0100, 1, 0, 0, 0) + b'\x01a\x03dot\x04test\x00\x00\x01\x00\x01'
frame = struct.pack('>H', len(q)) + q
# In batches of 500, so the proxy handles many events per wake-up.
socks, sel = [], selectors.DefaultSelector()
for start in range(0, n, 500):
    batch = []
    for _ in range(min(500, n - start)):
        s = socket.create_connection(('127.0.0.1', port), timeout=30)
        s.sendall(frame)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        batch.append(s)
    left, deadline = len(batch), time.time() + 120
    while left and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            key.fileobj.recv(512)
            sel.unregister(key.fileobj)
            left -= 1
    if left:
        sys.exit(f'{left} of a batch of {len(batch)} got no answer at {start + len(batch)} clients')
    socks += batch
open(ready, 'w').close()
time.sleep(3600)
