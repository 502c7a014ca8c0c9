#!/usr/bin/env python3
"""Holds N idle keep-alive HTTP/1.1 connections to 127.0.0.1:PORT, each after
one request (or none with --no-request), prints READY n, holds, exits.
--tls: over TLS (HTTP/1.1 by ALPN, the certificate not verified), each
held after its handshake."""
import argparse, selectors, socket, ssl, sys, time
ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--n", type=int, default=2000)
ap.add_argument("--hold", type=float, default=5)
ap.add_argument("--path", default="/1k.bin")
ap.add_argument("--no-request", action="store_true")
ap.add_argument("--tls", action="store_true")
a = ap.parse_args()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
socks = []
for i in range(a.n):
    s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    if a.tls:
        s = ctx.wrap_socket(s, server_hostname="bench")
    socks.append(s)
if not a.no_request:
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
