#!/usr/bin/env bash
# instr.sh EDGE_BIN [N] : instructions per request of one edge worker under
# callgrind (valgrind), for 1 KiB pass-through, 1 KiB RAM hits, RAM hits
# of a range (`Range: bytes=0-511` of the same object) and conditional RAM
# hits answered 304 (`If-Modified-Since` its Last-Modified): counts
# are repeatable on a noisy machine, so before/after of a change compares
# here (issue 17); 1 KiB pass-through of a browser's request head (13
# fields, about 800 bytes); and 1 KiB pass-through on the listener that also
# caches (`mixed`: what the HTTP/1 shortcut of RAM hits costs what it does
# not take). Starts `edge origin` on 127.0.0.1:18491 and edge on
# :18490 (pass-through) and :18492 (cached route), admin :18499; counts N (default 2000) keep-alive requests of each
# kind from one curl connection and prints Ir per request, then the top
# functions by inclusive Ir of the hit run (CALLGRIND_TOP, default 40).
# `segment`: RAM hits of an HLS segment whose next two (the default
# `prefetch`) are cached, after its playlist and one miss (N + 2 requests).
# KEEP=1 keeps the work dir (callgrind files for callgrind_annotate);
# KINDS="hit segment" runs only those kinds.
set -euo pipefail
EDGE=${1:?usage: instr.sh EDGE_BIN [N]}
N=${2:-2000}
command -v valgrind >/dev/null || { echo "instr.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
DIR="$(mktemp -d /tmp/edge-callgrind.XXXXXX)"
cat >"$DIR/edge.toml" <<TOML
[server]
threads = 1
access_log = false
[admin]
listen = "127.0.0.1:18499"
[[listener]]
name = "pass"
kind = "http"
address = "127.0.0.1:18490"
[[listener]]
name = "hit"
kind = "http"
address = "127.0.0.1:18492"
[[pool]]
name = "o"
backends = [{ address = "127.0.0.1:18491" }]
[[route]]
name = "pass-on-hit"
match = { listeners = ["hit"], path_prefix = "/obj/pass/" }
pool = "o"
[[route]]
name = "cached"
match = { listeners = ["hit"] }
pool = "o"
[route.cache]
[[route]]
name = "all"
pool = "o"
[cache]
ram_size = "64 MiB"
TOML
"$EDGE" origin --listen 127.0.0.1:18491 >/dev/null 2>&1 & O=$!
E=
trap 'kill $E $O 2>/dev/null; wait $E $O 2>/dev/null; [[ -n ${KEEP:-} ]] || rm -rf "$DIR"' EXIT
URL_PASS="http://127.0.0.1:18490/obj/x?size=1024&cc=no-store"
# 100 KiB pass-through (`pass100`; not in the default kinds): what a body's
# copies cost.
URL_PASS100="http://127.0.0.1:18490/obj/x?size=102400&cc=no-store"
# 2 MiB pass-through (`pass2m`; not in the default kinds; N of 100 is plenty).
URL_PASS2M="http://127.0.0.1:18490/obj/x?size=2097152&cc=no-store"
URL_HIT="http://127.0.0.1:18492/obj/x?size=1024&cc=max-age%3D3600"
# Pass-through on the listener that also caches (what HTTP/1's shortcut of
# RAM hits costs a request it does not take).
URL_MIXED="http://127.0.0.1:18492/obj/pass/x?size=1024&cc=no-store"
URL_PLAYLIST="http://127.0.0.1:18492/vod/bbb/low/index.m3u8"
URL_SEGMENT="http://127.0.0.1:18492/vod/bbb/low/seg_0.ts"
urls() { { if [[ -n ${4:-} ]]; then echo "header = \"$4\""; fi; for _ in $(seq "$2"); do echo "url = \"$1\""; echo "output = /dev/null"; done; } >"$DIR/$3"; }
urls "$URL_PASS" "$N" pass; urls "$URL_PASS100" "$N" pass100; urls "$URL_PASS2M" "$N" pass2m; urls "$URL_HIT" "$N" hit; urls "$URL_MIXED" "$N" mixed; urls "$URL_HIT" "$N" range "Range: bytes=0-511"
urls "$URL_HIT" "$N" cond "If-Modified-Since: Thu, 01 Jan 2026 00:00:00 GMT"
# A browser's head (13 fields, about 800 bytes): what the door's checks
# and pingora's parse cost per byte.
urls "$URL_PASS" "$N" browser
urls "$URL_SEGMENT" "$N" segment
{ for h in \
  "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36" \
  "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8" \
  "Accept-Language: en-GB,en;q=0.9,fr;q=0.8" "Accept-Encoding: gzip, deflate, br, zstd" \
  "Referer: https://www.example.com/watch/series/episode-4?autoplay=1" \
  "Cookie: session=3f9a1c2b7d8e4f6a9b0c1d2e3f4a5b6c; consent=granted; theme=dark; ab_bucket=17" \
  "Sec-Fetch-Dest: document" "Sec-Fetch-Mode: navigate" "Sec-Fetch-Site: same-origin" \
  "Sec-Ch-Ua: \\\"Chromium\\\";v=\\\"131\\\", \\\"Not_A Brand\\\";v=\\\"24\\\"" "Upgrade-Insecure-Requests: 1" \
  "Cache-Control: no-cache"; do echo "header = \"$h\""; done; cat "$DIR/browser"; } >"$DIR/browser.k" && mv "$DIR/browser.k" "$DIR/browser"
# One edge per kind; only the listener's tasks are counted (the client
# connection's task, where pingora also talks to the upstream; not start-up
# or timers' ticks), for N + 1 requests on one connection (the first a miss
# for `hit`).
for kind in ${KINDS:-pass hit range cond browser mixed segment}; do
  url=$URL_PASS; [[ $kind != pass && $kind != browser ]] && url=$URL_HIT
  [[ $kind == mixed ]] && url=$URL_MIXED
  [[ $kind == pass100 ]] && url=$URL_PASS100
  [[ $kind == pass2m ]] && url=$URL_PASS2M
  [[ $kind == segment ]] && url=$URL_PLAYLIST
  valgrind --tool=callgrind --callgrind-out-file="$DIR/$kind.out" \
    --toggle-collect='edge_proxy::listen::Acceptor::run::*' \
    "$EDGE" run --config "$DIR/edge.toml" >"$DIR/edge-$kind.log" 2>&1 & E=$!
  ok=
  for _ in $(seq 300); do curl -s -o /dev/null -f "$url" && { ok=1; break; }; sleep 0.2; done
  [[ -n $ok ]] || { echo "instr.sh: edge did not answer (see $DIR/edge-$kind.log)" >&2; exit 1; }
  extra=1
  if [[ $kind == segment ]]; then
    # The miss fetches the next two ahead; they are stored before the hits.
    curl -s -o /dev/null -f "$URL_SEGMENT"; sleep 2; extra=2
  fi
  curl -s -K "$DIR/$kind"
  kill -TERM "$E"; wait "$E" || true; E=
  ir=$(callgrind_annotate "$DIR/$kind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n++ {gsub(",","",$1); print $1}')
  [[ -n $ir ]] || { echo "instr.sh: no totals in $DIR/$kind.out" >&2; exit 1; }
  # Nothing counted: the toggle's function was inlined into its caller (a
  # profile-guided build inlines the connection's task into tokio's task
  # harness); peers.sh counts the whole process instead.
  [[ $ir =~ ^[0-9]+$ && $ir -gt 0 ]] || {
    echo "instr.sh: nothing counted in edge_proxy::listen::Acceptor::run's task (inlined in this build?); use benches/callgrind/peers.sh" >&2
    exit 1
  }
  echo "$kind: $(( ir / (N + extra) )) instructions per request ($(( N + extra )) requests, Ir $ir)"
done
callgrind_annotate --inclusive=yes "$DIR/hit.out" 2>/dev/null | sed -n '/^Ir/,$p' | head -"${CALLGRIND_TOP:-40}" | cut -c1-200
