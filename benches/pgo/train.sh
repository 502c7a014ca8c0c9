#!/usr/bin/env bash
# train.sh EDGE_BIN [SECONDS] : the training run of a profile-guided build
# (benches/pgo/build.sh). Runs EDGE_BIN, built with `-Cprofile-generate`,
# under the request mix the benchmarks measure, each kind SECONDS (default
# 3) of wrk, h2load or dnsperf on loopback, then stops it with SIGTERM so
# that it writes its profile (the `.profraw` files go where the build's
# `-Cprofile-generate=DIR` says; build.sh unsets $LLVM_PROFILE_FILE, which
# would send them elsewhere).
#
# The mix: HTTP/1.1 pass-through of 1 KiB (a curl-sized head and a
# browser's 13-field head), 100 KiB and 2 MiB; RAM hits of 1 KiB, 100 KiB
# and 2 MiB, 1 KiB ranges of the 2 MiB object and conditional hits (304)
# of the 1 KiB one; HTTPS (TLS 1.3) pass-through of 1 KiB; HTTP/2
# (cleartext, prior knowledge) RAM hits of 1 KiB; an HLS segment whose
# next two are prefetched; a new client connection per 1 KiB pass-through
# (`Connection: close`); the L4 relay (HTTP through a `tcp` listener, kept
# alive and a connection per request); authoritative DNS over UDP (a
# static A record, a geo one, a name that does not exist and the SOA, with
# and without an EDNS client subnet). The origin is `EDGE_BIN origin`, its
# profile thrown away.
#
# Exits non-zero, with the tool's output and the end of edge's log, if a
# kind fails or answers with errors (HTTP 400 or more, socket errors, DNS
# answers other than NOERROR and NXDOMAIN, a cached object that is not a
# hit: a profile of error paths would steer the build the wrong way), or
# if edge does not stop within 60 s or exits with an error.
set -euo pipefail
EDGE=${1:?usage: train.sh EDGE_BIN [SECONDS]}
SECS=${2:-3}
for t in wrk h2load curl openssl dnsperf python3; do
  command -v "$t" >/dev/null || { echo "train.sh: needs $t (scripts/deps.sh pgo)" >&2; exit 1; }
done
DIR="$(mktemp -d /tmp/edge-pgo-train.XXXXXX)"
E=''
O=''
# stop PID...: SIGTERM, up to 10 s to go, then SIGKILL (only what this
# script started).
stop() {
  local p alive
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do
    alive=''
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ -n $alive ]] || break
    sleep 0.1
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
fail() {
  echo "train.sh: $*" >&2
  if [[ -s $DIR/edge.log ]]; then
    echo "train.sh: the end of edge's log:" >&2
    tail -20 "$DIR/edge.log" >&2
  fi
  exit 1
}
# shellcheck disable=SC2086 # $E and $O are a PID or empty
trap 'stop $E $O; rm -rf "$DIR"' EXIT
# Ports: the kernel picks free ones (sockets bound to port 0, then closed).
read -r P_PASS P_HIT P_TLS P_H2 P_ORIGIN P_ADMIN P_L4 P_DNS < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
) || true
[[ -n ${P_DNS:-} ]] || fail "no free ports from python3"
openssl req -x509 -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test -days 2 \
  -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>"$DIR/openssl.log" ||
  fail "openssl req: $(cat "$DIR/openssl.log")"
cat >"$DIR/edge.toml" <<TOML
[server]
threads = 1
access_log = false
upstream_keepalive = 128
# No wait for load balancers to notice: the profile is written at exit.
shutdown_delay = "0s"
[admin]
listen = "127.0.0.1:$P_ADMIN"
[[listener]]
name = "pass"
kind = "http"
address = "127.0.0.1:$P_PASS"
[[listener]]
name = "hit"
kind = "http"
address = "127.0.0.1:$P_HIT"
[[listener]]
name = "tls"
kind = "https"
address = "127.0.0.1:$P_TLS"
[[listener.certificate]]
cert = "$DIR/cert.pem"
key = "$DIR/key.pem"
[[listener]]
name = "h2"
kind = "http"
h2c = true
address = "127.0.0.1:$P_H2"
[[listener]]
name = "l4"
kind = "tcp"
address = "127.0.0.1:$P_L4"
pool = "o"
[[listener]]
name = "dns"
kind = "dns"
address = "127.0.0.1:$P_DNS"
[[pool]]
name = "o"
backends = [{ address = "127.0.0.1:$P_ORIGIN" }]
[[route]]
name = "cached"
match = { listeners = ["hit", "h2"] }
pool = "o"
[route.cache]
[[route]]
name = "all"
pool = "o"
[cache]
ram_size = "256 MiB"
[dns]
threads = 1
[[dns.zone]]
name = "bench.test."
ttl = 300
ns = ["ns1.bench.test."]
soa = { mname = "ns1.bench.test.", rname = "hostmaster.bench.test.", serial = 1, refresh = "2h", retry = "1h", expire = "1d", minimum = "60s" }
records = [
  { name = "ns1", type = "A", value = "192.0.2.53" },
  { name = "static", type = "A", value = "192.0.2.80" },
]
[[dns.zone.geo]]
name = "video"
policy = "nearest"
ttl = 300
default_sites = ["eu"]
[[dns.site]]
name = "eu"
lat = 50.1
lon = 8.7
ipv4 = ["192.0.2.10"]
[[dns.site]]
name = "na"
lat = 39.0
lon = -77.5
ipv4 = ["198.51.100.10"]
TOML
LLVM_PROFILE_FILE=/dev/null "$EDGE" origin --listen "127.0.0.1:$P_ORIGIN" >"$DIR/origin.log" 2>&1 &
O=$!
"$EDGE" run --config "$DIR/edge.toml" >"$DIR/edge.log" 2>&1 &
E=$!
ok=''
for _ in $(seq 300); do
  curl -s -o /dev/null -f "http://127.0.0.1:$P_PASS/obj/x?size=1&cc=no-store" && { ok=1; break; }
  kill -0 "$E" 2>/dev/null || break
  sleep 0.2
done
[[ -n $ok ]] || fail "edge did not answer"

obj() { echo "/obj/x?size=$1&cc=$2"; }
hit() { obj "$1" 'max-age%3D3600'; }
# Prime the cached objects (the first request of each is a miss), then
# check that each is a hit.
cached=("$(hit 1024)" "$(hit 102400)" "$(hit 2097152)" /vod/bbb/low/seg_0.ts)
for path in /vod/bbb/low/index.m3u8 "${cached[@]}"; do
  curl -sS -o /dev/null -f "http://127.0.0.1:$P_HIT$path" || fail "priming $path"
done
sleep 1 # the segment's prefetch of the next two
for path in "${cached[@]}"; do
  head=$(curl -sS -o /dev/null -D - -f "http://127.0.0.1:$P_HIT$path") || fail "$path"
  grep -qi '^x-cache: hit' <<<"$head" || fail "$path is not a hit after priming: $head"
done

# run_wrk KIND URL [HEADER...]: SECS of load on 16 connections; wrk
# failing, an answer of 400 or more ("Non-2xx or 3xx responses") or a
# socket error fails the run.
run_wrk() {
  local kind=$1 url=$2 out h
  shift 2
  local args=()
  for h in "$@"; do args+=(-H "$h"); done
  out=$(wrk -t1 -c16 -d"${SECS}s" "${args[@]}" "$url" 2>&1) || fail "$kind: wrk: $out"
  if grep -qE "Non-2xx|Socket errors" <<<"$out"; then fail "$kind: errors under load: $out"; fi
  echo "train.sh: $kind: $(awk '/Requests\/sec/ {print $2}' <<<"$out") req/s"
}
BROWSER=(
  "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
  "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
  "Accept-Language: en-GB,en;q=0.9,fr;q=0.8" "Accept-Encoding: gzip, deflate, br, zstd"
  "Referer: https://www.example.com/watch/series/episode-4?autoplay=1"
  "Cookie: session=3f9a1c2b7d8e4f6a9b0c1d2e3f4a5b6c; consent=granted; theme=dark; ab_bucket=17"
  "Sec-Fetch-Dest: document" "Sec-Fetch-Mode: navigate" "Sec-Fetch-Site: same-origin"
  "Upgrade-Insecure-Requests: 1" "Cache-Control: no-cache"
)
run_wrk pass-1k "http://127.0.0.1:$P_PASS$(obj 1024 no-store)"
run_wrk pass-browser "http://127.0.0.1:$P_PASS$(obj 1024 no-store)" "${BROWSER[@]}"
run_wrk pass-100k "http://127.0.0.1:$P_PASS$(obj 102400 no-store)"
run_wrk pass-2m "http://127.0.0.1:$P_PASS$(obj 2097152 no-store)"
run_wrk hit-1k "http://127.0.0.1:$P_HIT$(hit 1024)"
run_wrk hit-100k "http://127.0.0.1:$P_HIT$(hit 102400)"
run_wrk hit-2m "http://127.0.0.1:$P_HIT$(hit 2097152)"
run_wrk range-1k "http://127.0.0.1:$P_HIT$(hit 2097152)" "Range: bytes=0-1023"
run_wrk cond "http://127.0.0.1:$P_HIT$(hit 1024)" "If-Modified-Since: Thu, 01 Jan 2026 00:00:00 GMT"
run_wrk segment "http://127.0.0.1:$P_HIT/vod/bbb/low/seg_0.ts"
run_wrk https-1k "https://127.0.0.1:$P_TLS$(obj 1024 no-store)"
run_wrk pass-close "http://127.0.0.1:$P_PASS$(obj 1024 no-store)" "Connection: close"
run_wrk l4 "http://127.0.0.1:$P_L4$(obj 1024 no-store)"
run_wrk l4-close "http://127.0.0.1:$P_L4$(obj 1024 no-store)" "Connection: close"
printf 'static.bench.test A\nvideo.bench.test A\nmissing.bench.test A\nbench.test SOA\n' >"$DIR/queries"
for ecs in "" "-E 8:00011800c63364"; do
  # shellcheck disable=SC2086 # $ecs is two words or none
  out=$(dnsperf -s 127.0.0.1 -p "$P_DNS" -d "$DIR/queries" -l "$SECS" -c 1 -T 1 -q 50 -t 1 $ecs 2>&1) ||
    fail "dns: dnsperf: $out"
  lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
  completed=$(awk '/Queries completed:/ {print $3}' <<<"$out")
  # "Response codes: NOERROR n (p%), NXDOMAIN n (p%)", and nothing else.
  others=$(awk -F: '/Response codes:/ {print $2}' <<<"$out" | tr ',' '\n' | awk 'NF {print $1}' |
    grep -vxE 'NOERROR|NXDOMAIN' || true)
  [[ $lost == 0 && ${completed:-0} -gt 0 && -z $others ]] ||
    fail "dns: queries lost, none completed or answers other than NOERROR and NXDOMAIN: $out"
  echo "train.sh: dns${ecs:+-ecs}: $(awk '/Queries per second:/ {print $4}' <<<"$out") queries/s"
done
out=$(h2load -c5 -m10 -D "$SECS" "http://127.0.0.1:$P_H2$(hit 1024)" 2>&1) || fail "h2-hit-1k: h2load: $out"
grep -q " 0 failed, 0 errored" <<<"$out" || fail "h2-hit-1k: errors: $out"
grep -qE "status codes: [1-9][0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx" <<<"$out" || fail "h2-hit-1k: not all 2xx: $out"
echo "train.sh: h2-hit-1k: $(awk '/^finished in/ {print $4}' <<<"$out") req/s"

kill -TERM "$E"
for _ in $(seq 600); do kill -0 "$E" 2>/dev/null || break; sleep 0.1; done
kill -0 "$E" 2>/dev/null && fail "edge did not stop within 60 s"
status=0
wait "$E" || status=$?
E=''
[[ $status == 0 ]] || fail "edge exited with status $status"
echo "train.sh: done"
