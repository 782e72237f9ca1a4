#!/usr/bin/env python3
"""Holds N TCP connections to a DNS server on 127.0.0.1:PORT as a client
keeping persistent connections does (or an attacker holding slots): each
sends a query every PERIOD seconds, reconnecting first if the server closed
it, for SECONDS. Prints the queries it sent, its reconnects and the closes
it saw, per second.

usage: refreshing-clients.py PORT N PERIOD SECONDS

For `make bench-pressure` (scripts/pressure.sh)."""
import resource
import selectors
import socket
import struct
import sys
import time

port, n = int(sys.argv[1]), int(sys.argv[2])
period, seconds = float(sys.argv[3]), float(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
q = struct.pack('>HHHHHH', 1, 0x0100, 1, 0, 0, 0) + b'\x01a\x03dot\x04test\x00\x00\x01\x00\x01'
frame = struct.pack('>H', len(q)) + q
sel = selectors.DefaultSelector()
conns = [None] * n
sent = reconnects = closes = 0


def connect(i):
    s = socket.create_connection(('127.0.0.1', port), timeout=5)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, i)
    conns[i] = s


def drop(i):
    sel.unregister(conns[i])
    conns[i].close()
    conns[i] = None


start = time.time()
end = start + seconds
# Spread over the period, as independent clients would be.
due = [start + period * i / n for i in range(n)]
opened = [False] * n
while time.time() < end:
    now = time.time()
    for i in range(n):
        if due[i] > now:
            continue
        due[i] += period
        if conns[i] is None:
            reconnects += opened[i]
            opened[i] = True
            connect(i)
        try:
            conns[i].send(frame)
        except OSError:  # closed by the server since the last read
            drop(i)
            connect(i)
            reconnects += 1
            conns[i].send(frame)
        sent += 1
    for key, _ in sel.select(timeout=0.01):
        try:
            data = key.fileobj.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            data = b''
        if not data:
            drop(key.data)
            closes += 1
took = time.time() - start
print(f'{sent / took:.0f} queries/s, {reconnects / took:.0f} reconnects/s, '
      f'{closes / took:.0f} closes by the server/s')
