#!/usr/bin/env bash
# idle.sh EDGE_BIN [N] [--no-request] [--tls|--h2] : RSS per idle keep-alive
# client connection of one edge worker (issue 17's row). Starts `edge
# origin` and `edge run` on 127.0.0.1:18390-18391 (admin 18399), holds N
# connections (default 2000) after one request each (sent one at a time),
# or none with --no-request, and prints the growth of edge's RSS per
# connection. --tls: an https listener (TLS 1.3, HTTP/1.1, a self-signed
# certificate made with openssl), connections held after their handshake.
# --h2: the same listener, HTTP/2 by ALPN, one request (a stream) each.
set -euo pipefail
EDGE=${1:?usage: idle.sh EDGE_BIN [N] [--no-request]}
N=${2:-2000}
shift $(( $# >= 2 ? 2 : 1 ))
HERE="$(cd "$(dirname "$0")" && pwd)"
DIR="$(mktemp -d /tmp/edge-idle.XXXXXX)"
KIND=http; SCHEME=http; TLS_CONF=
for arg in "$@"; do
  if [[ $arg == --tls || $arg == --h2 ]]; then
    KIND=https; SCHEME=https
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj /CN=bench -addext subjectAltName=DNS:bench \
      -keyout "$DIR/key.pem" -out "$DIR/cert.pem" >/dev/null 2>&1
    TLS_CONF="[[listener.certificate]]
server_names = [\"bench\"]
cert = \"$DIR/cert.pem\"
key = \"$DIR/key.pem\"
default = true"
  fi
done
cat >"$DIR/edge.toml" <<TOML
[server]
threads = 1
[admin]
listen = "127.0.0.1:18399"
[[listener]]
name = "web"
kind = "$KIND"
address = "127.0.0.1:18390"
$TLS_CONF
[[pool]]
name = "o"
backends = [{ address = "127.0.0.1:18391" }]
[[route]]
name = "all"
pool = "o"
TOML
"$EDGE" origin --listen 127.0.0.1:18391 >/dev/null 2>&1 & O=$!
"$EDGE" run --config "$DIR/edge.toml" >"$DIR/edge.log" 2>&1 & E=$!
trap 'kill $E $O 2>/dev/null; wait $E $O 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do curl -sk -o /dev/null $SCHEME://127.0.0.1:18390/obj/x?size=1024 && break; sleep 0.2; done
sleep 1
r0=$(awk '/^VmRSS/{print $2}' /proc/$E/status)
python3 "$HERE/hold_conns.py" --port 18390 --n "$N" --hold 4 --path "/obj/x?size=1024" "$@" >"$DIR/hold.out" 2>&1 & H=$!
for _ in $(seq 600); do grep -q READY "$DIR/hold.out" && break; sleep 0.1; done
sleep 1
r1=$(awk '/^VmRSS/{print $2}' /proc/$E/status)
wait $H
echo "$(head -1 "$DIR/hold.out"); RSS $r0 -> $r1 KiB: $(( (r1 - r0) * 1024 / N )) bytes per connection"
