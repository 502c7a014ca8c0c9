#!/usr/bin/env python3
"""Holds N idle keep-alive HTTP/1.1 connections to 127.0.0.1:PORT, each after
one request (or none with --no-request), prints READY n, holds, exits.
--tls: over TLS (HTTP/1.1 by ALPN, the certificate not verified), each
held after its handshake. --h2: over TLS with HTTP/2 by ALPN, the request
one stream (its HPACK written by hand: static-table names, literal
values), held after its response's last frame."""
import argparse, selectors, socket, ssl, sys, time
ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--n", type=int, default=2000)
ap.add_argument("--hold", type=float, default=5)
ap.add_argument("--path", default="/1k.bin")
ap.add_argument("--no-request", action="store_true")
ap.add_argument("--tls", action="store_true")
ap.add_argument("--h2", action="store_true")
a = ap.parse_args()
a.tls = a.tls or a.h2
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["h2"] if a.h2 else ["http/1.1"])
socks = []
for i in range(a.n):
    s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    if a.tls:
        s = ctx.wrap_socket(s, server_hostname="bench")
    socks.append(s)
def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
def h2_get(s):
    # :method GET (static 2), :scheme https (7), :path (name 4), :authority (name 1).
    path, host = a.path.encode(), b"bench"
    block = b"\x82\x87" + b"\x04" + bytes([len(path)]) + path + b"\x01" + bytes([len(host)]) + host
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x5, 1, block))
    buf = b""
    while True:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
            buf += s.recv(65536)
        n = int.from_bytes(buf[:3], "big")
        kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        buf = buf[9 + n:]
        if kind == 4 and not flags & 1:
            s.sendall(frame(4, 1, 0))  # SETTINGS ACK
        if stream == 1 and kind in (0, 1) and flags & 1:
            return
if a.h2 and not a.no_request:
    for s in socks:
        h2_get(s)
elif not a.no_request:
    req = f"GET {a.path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    def read(s):
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, rest = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, v = line.split(b":", 1)
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(rest) < length:
            rest += s.recv(65536)
    for s in socks:
        s.sendall(req)
        read(s)
print("READY", len(socks), flush=True)
time.sleep(a.hold)
