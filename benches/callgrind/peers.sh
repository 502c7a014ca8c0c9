#!/usr/bin/env bash
# peers.sh EDGE_BIN [N] : instructions per request of nginx, HAProxy and
# edge for the same 1 KiB pass-through (and HAProxy's and edge's 1 KiB RAM
# cache hit), under callgrind, counted the same way for all three: the
# whole process, run once for N and once for 2N keep-alive requests from
# one curl connection, (Ir(2N) - Ir(N)) / N, so start-up and shutdown
# cancel out. One worker each, configured as benches/src/peers.rs
# configures them for loadbench, except that nginx runs without its master
# process (the worker is the process callgrind follows). `edge origin` on 127.0.0.1:18591 is the
# origin. Where loadbench's CPU split shows the gap to the peers is user
# space (issue 17), this is what that user space executes per request.
# N defaults to 1000. KINDS="nginx-pass haproxy-pass edge-pass
# haproxy-hit edge-hit" (the default) picks runs.
# CACHESIM=1: as well as instructions, callgrind's simulated caches and
# branch predictor (`--cache-sim=yes --branch-sim=yes`: first-level
# instruction and data misses, last-level misses, conditional and indirect
# branches mispredicted), per request the same way: where user time per
# request differs from the peers' by more than instructions do.
# SYSCALLS=1: instead, system calls per request of each under load (the
# server pinned to CPU 0, `wrk -t1 -c50 -d3` on CPU 1, counted by
# `perf stat -e 'syscalls:sys_enter_*'`; needs perf and wrk).
set -euo pipefail
EDGE=${1:?usage: peers.sh EDGE_BIN [N]}
N=${2:-1000}
tools="valgrind callgrind_annotate nginx haproxy curl"
[[ -n ${SYSCALLS:-} ]] && tools="perf wrk nginx haproxy curl taskset"
for tool in $tools; do
  command -v "$tool" >/dev/null || { echo "peers.sh: needs $tool (make deps-bench)" >&2; exit 1; }
done
DIR="$(mktemp -d /tmp/edge-peers-callgrind.XXXXXX)"
O=; S=
# The work dir stays when asked (KEEP=1) or when something failed (its logs).
trap 'rc=$?; kill $S $O 2>/dev/null || true; wait $S $O 2>/dev/null || true; if [[ -n ${KEEP:-} || $rc != 0 ]]; then echo "peers.sh: work dir $DIR" >&2; else rm -rf "$DIR"; fi' EXIT
"$EDGE" origin --listen 127.0.0.1:18591 >/dev/null 2>&1 & O=$!
PASS="/obj/x?size=1024&cc=no-store"
HIT="/obj/x?size=1024&cc=max-age%3D3600"

mkdir -p "$DIR/tmp"
cat >"$DIR/nginx.conf" <<CONF
worker_processes 1; daemon off; master_process off; pid $DIR/nginx.pid; error_log $DIR/nginx.error.log warn;
events { worker_connections 1024; }
http {
  access_log off; tcp_nodelay on;
  keepalive_requests 10000000; keepalive_timeout 75s;
  client_body_temp_path $DIR/tmp/body; proxy_temp_path $DIR/tmp/proxy;
  fastcgi_temp_path $DIR/tmp/fcgi; uwsgi_temp_path $DIR/tmp/uwsgi; scgi_temp_path $DIR/tmp/scgi;
  upstream origin { server 127.0.0.1:18591; keepalive 128; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:18590;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
haproxy_conf() {
  cat <<CONF
global
  nbthread 1
  maxconn 8000
$2
cache edge
  total-max-size 64
  max-object-size 4194304
  max-age 3600
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:18590
  default_backend be
backend be
$1
  server origin 127.0.0.1:18591 maxconn 10000
CONF
}
haproxy_conf "" "" >"$DIR/haproxy-pass.cfg"
haproxy_conf "  http-request cache-use edge
  http-response cache-store edge" "  tune.bufsize 65536" >"$DIR/haproxy-hit.cfg"
cat >"$DIR/edge.toml" <<TOML
[server]
threads = 1
access_log = false
upstream_keepalive = 128
[admin]
listen = "127.0.0.1:18599"
[[listener]]
name = "pass"
kind = "http"
address = "127.0.0.1:18590"
[[listener]]
name = "hit"
kind = "http"
address = "127.0.0.1:18592"
[[pool]]
name = "o"
backends = [{ address = "127.0.0.1:18591" }]
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

# start KIND [WRAPPER...]: the server of KIND (in the background, as S)
# under WRAPPER; sets URL to what it is asked.
start() {
  local kind=$1 port=18590 path=$PASS
  shift
  case $kind in
    *-hit) path=$HIT ;;
  esac
  [[ $kind == edge-hit ]] && port=18592
  URL="http://127.0.0.1:$port$path"
  case $kind in
    nginx-pass) "$@" nginx -c "$DIR/nginx.conf" >"$DIR/$kind.log" 2>&1 & S=$! ;;
    haproxy-*) "$@" haproxy -db -f "$DIR/$kind.cfg" >"$DIR/$kind.log" 2>&1 & S=$! ;;
    edge-*) "$@" "$EDGE" run --config "$DIR/edge.toml" >"$DIR/$kind.log" 2>&1 & S=$! ;;
    *) echo "peers.sh: unknown kind $kind" >&2; exit 1 ;;
  esac
  local ok=
  for _ in $(seq 300); do curl -s -o /dev/null -f "$URL" && { ok=1; break; }; sleep 0.2; done
  [[ -n $ok ]] || { echo "peers.sh: $kind did not answer (see $DIR/$kind.log)" >&2; exit 1; }
}

# syscalls KIND: system calls per request under wrk's load, by name.
syscalls() {
  local kind=$1
  start "$kind" taskset -c 0
  taskset -c 1 wrk -t1 -c50 -d1 "$URL" >/dev/null
  # perf counts from before wrk starts until after it ends (attaching
  # takes a moment), so its window holds all of wrk's requests and only
  # idle time besides.
  perf stat -e 'syscalls:sys_enter_*' -p "$S" -o "$DIR/$kind.perf" & local P=$!
  sleep 1
  taskset -c 1 wrk -t1 -c50 -d3 "$URL" >"$DIR/$kind.wrk"
  kill -INT "$P"; wait "$P" || true
  kill -TERM "$S"; wait "$S" || true; S=
  local reqs
  reqs=$(awk '/requests in/ {print $1}' "$DIR/$kind.wrk")
  echo "$kind: $reqs requests"
  awk -v n="$reqs" '$1 ~ /^[0-9,]+$/ {gsub(",", "", $1); if ($1 / n >= 0.001) printf "  %-12s %6.3f per request\n", substr($2, 20), $1 / n}' "$DIR/$kind.perf" | sort -k2 -nr
}

# ir KIND COUNT: the whole process's instructions for COUNT requests (in IR).
ir() {
  local kind=$1 count=$2
  local out="$DIR/$kind.$count.out"
  local sim=()
  [[ -n ${CACHESIM:-} ]] && sim=(--cache-sim=yes --branch-sim=yes)
  start "$kind" valgrind --tool=callgrind "${sim[@]}" --callgrind-out-file="$out"
  { for _ in $(seq "$count"); do echo "url = \"$URL\""; echo "output = /dev/null"; done; } >"$DIR/urls"
  # Every answer must be a 200: an error would count as a request.
  local codes
  codes=$(curl -sS -K "$DIR/urls" -w '%{http_code}\n' | sort -u | tr '\n' ' ')
  [[ $codes == "200 " ]] || { echo "peers.sh: $kind answered $codes" >&2; exit 1; }
  kill -TERM "$S"; wait "$S" || true; S=
  # Every part callgrind wrote (a thread each for edge), each event summed
  # (the `totals:` line: Ir, then with CACHESIM the cache and branch
  # events in `events:` order).
  local file
  EVENTS=$(grep -h '^events:' "$out"* | head -1 | cut -d' ' -f2-)
  TOTALS=$(for file in "$out"*; do grep -h '^totals:' "$file" | cut -d' ' -f2-; done |
    awk '{for (i = 1; i <= NF; i++) t[i] += $i; n = NF} END {for (i = 1; i <= n; i++) printf "%d ", t[i]}')
  [[ -n $TOTALS ]] || { echo "peers.sh: no totals in $out*" >&2; exit 1; }
  IR=${TOTALS%% *}
}

for kind in ${KINDS:-nginx-pass haproxy-pass edge-pass haproxy-hit edge-hit}; do
  if [[ -n ${SYSCALLS:-} ]]; then syscalls "$kind"; continue; fi
  ir "$kind" "$N"; a=$IR; ta=$TOTALS
  ir "$kind" $(( 2 * N )); b=$IR; tb=$TOTALS
  echo "$kind: $(( (b - a) / N )) instructions per request (whole process, Ir($((2 * N))) $b - Ir($N) $a)"
  if [[ -n ${CACHESIM:-} ]]; then
    awk -v names="$EVENTS" -v a="$ta" -v b="$tb" -v n="$N" 'BEGIN {
      k = split(names, e, " "); split(a, x, " "); split(b, y, " ")
      for (i = 1; i <= k; i++) printf "  %-5s %10.1f per request\n", e[i], (y[i] - x[i]) / n }'
  fi
done
