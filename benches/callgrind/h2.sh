#!/usr/bin/env bash
# h2.sh EDGE_BIN [N] : instructions per HTTP/2 RAM hit (1 KiB, cleartext
# h2 by prior knowledge, h2load: one connection, 10 streams at a time) of
# one edge worker under callgrind. An HTTP/2 stream's task is spawned
# apart from its connection's, so no one function brackets a request (as
# `instr.sh`'s toggle does): the whole process is counted twice, for N/10
# and for N + N/10 hits, and the difference is divided by N (start-up,
# certificates, shutdown cancel out). Starts `edge origin` on
# 127.0.0.1:18591 and edge on :18592, admin :18599. KEEP=1 keeps the work
# dir (`small.out`, `large.out` for callgrind_annotate).
set -euo pipefail
EDGE=${1:?usage: h2.sh EDGE_BIN [N]}
N=${2:-2000}
for t in valgrind h2load curl; do
  command -v "$t" >/dev/null || { echo "h2.sh: needs $t" >&2; exit 1; }
done
DIR="$(mktemp -d /tmp/edge-h2-callgrind.XXXXXX)"
cat >"$DIR/edge.toml" <<TOML
[server]
threads = 1
access_log = false
[admin]
listen = "127.0.0.1:18599"
[[listener]]
name = "h2"
kind = "http"
address = "127.0.0.1:18592"
h2c = true
[[pool]]
name = "o"
backends = [{ address = "127.0.0.1:18591" }]
[[route]]
name = "cached"
pool = "o"
[route.cache]
[cache]
ram_size = "64 MiB"
TOML
"$EDGE" origin --listen 127.0.0.1:18591 >/dev/null 2>&1 & O=$!
E=
trap 'kill $E $O 2>/dev/null; wait $E $O 2>/dev/null; [[ -n ${KEEP:-} ]] || rm -rf "$DIR"' EXIT
URL="http://127.0.0.1:18592/obj/x?size=1024&cc=max-age%3D3600"
count() {
  valgrind --tool=callgrind --callgrind-out-file="$DIR/$1.out" \
    "$EDGE" run --config "$DIR/edge.toml" >"$DIR/edge-$1.log" 2>&1 & E=$!
  ok=
  for _ in $(seq 300); do curl -s -o /dev/null -f --http2-prior-knowledge "$URL" && { ok=1; break; }; sleep 0.2; done
  [[ -n $ok ]] || { echo "h2.sh: edge did not answer (see $DIR/edge-$1.log)" >&2; exit 1; }
  h2load -n "$2" -c 1 -m 10 "$URL" | grep -q "$2 succeeded" || { echo "h2.sh: h2load failed" >&2; exit 1; }
  kill -TERM "$E"; wait "$E" || true; E=
  callgrind_annotate "$DIR/$1.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n++ {gsub(",","",$1); print $1}'
}
small=$(count small $((N / 10)))
large=$(count large $((N + N / 10)))
echo "h2: $(( (large - small) / N )) instructions per request ($N requests, Ir $large - $small)"
