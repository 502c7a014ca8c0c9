#!/usr/bin/env bash
# tls.sh EDGE_BIN [N] : instructions per HTTPS (TLS 1.3, HTTP/1.1) 1 KiB
# pass-through of one edge worker under callgrind: one keep-alive curl
# connection, the whole process counted for N/10 and for N + N/10
# requests and the difference divided by N (start-up, the certificate and
# the handshake cancel out). A self-signed P-256 certificate is made with
# openssl. Starts `edge origin` on 127.0.0.1:18691 and edge on :18692,
# admin :18699. KEEP=1 keeps the work dir (`small.out`, `large.out`).
set -euo pipefail
EDGE=${1:?usage: tls.sh EDGE_BIN [N]}
N=${2:-2000}
for t in valgrind curl openssl; do
  command -v "$t" >/dev/null || { echo "tls.sh: needs $t" >&2; exit 1; }
done
DIR="$(mktemp -d /tmp/edge-tls-callgrind.XXXXXX)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$DIR/key.pem" -out "$DIR/cert.pem" -days 2 -subj /CN=localhost 2>/dev/null
cat >"$DIR/edge.toml" <<TOML
[server]
threads = 1
access_log = false
[admin]
listen = "127.0.0.1:18699"
[[listener]]
name = "s"
kind = "https"
address = "127.0.0.1:18692"
[[listener.certificate]]
cert = "$DIR/cert.pem"
key = "$DIR/key.pem"
[[pool]]
name = "o"
backends = [{ address = "127.0.0.1:18691" }]
[[route]]
name = "all"
pool = "o"
TOML
"$EDGE" origin --listen 127.0.0.1:18691 >/dev/null 2>&1 & O=$!
E=
trap 'kill $E $O 2>/dev/null; wait $E $O 2>/dev/null; [[ -n ${KEEP:-} ]] || rm -rf "$DIR"' EXIT
URL="https://127.0.0.1:18692/obj/x?size=1024&cc=no-store"
count() {
  valgrind --tool=callgrind --callgrind-out-file="$DIR/$1.out" \
    "$EDGE" run --config "$DIR/edge.toml" >"$DIR/edge-$1.log" 2>&1 & E=$!
  ok=
  for _ in $(seq 300); do curl -sk -o /dev/null -f "$URL" && { ok=1; break; }; sleep 0.2; done
  [[ -n $ok ]] || { echo "tls.sh: edge did not answer (see $DIR/edge-$1.log)" >&2; exit 1; }
  { for _ in $(seq "$2"); do echo "url = \"$URL\""; echo "output = /dev/null"; done; } >"$DIR/urls"
  curl -sk --http1.1 --tlsv1.3 -K "$DIR/urls"
  kill -TERM "$E"; wait "$E" || true; E=
  callgrind_annotate "$DIR/$1.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n++ {gsub(",","",$1); print $1}'
}
small=$(count small $((N / 10)))
large=$(count large $((N + N / 10)))
echo "tls: $(( (large - small) / N )) instructions per request ($N requests, Ir $large - $small)"
