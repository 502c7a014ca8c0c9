#!/usr/bin/env bash
# segment.sh NEW_BIN OLD_BIN [ROUNDS] [SECONDS] : CPU per request of RAM
# hits of an HLS segment (200,032 bytes, `/vod/bbb/low/seg_0.ts` of
# `edge origin`) whose next two segments (the default `prefetch`) are
# cached, for two edge builds in interleaved rounds: edge with one worker
# pinned to CPU 0, wrk (1 thread, 50 connections) and the origin on CPU 1.
# Prints each round's req/s and CPU µs per request (edge's user + system
# time from /proc), then the medians and NEW ÷ OLD.
set -euo pipefail
NEW=${1:?usage: segment.sh NEW_BIN OLD_BIN [ROUNDS] [SECONDS]}
OLD=${2:?usage: segment.sh NEW_BIN OLD_BIN [ROUNDS] [SECONDS]}
ROUNDS=${3:-5}
SECS=${4:-3}
for t in wrk taskset curl; do
  command -v "$t" >/dev/null || { echo "segment.sh: needs $t" >&2; exit 1; }
done
DIR="$(mktemp -d /tmp/edge-segment.XXXXXX)"
cat >"$DIR/edge.toml" <<TOML
[server]
threads = 1
access_log = false
[admin]
listen = "127.0.0.1:18699"
[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:18692"
[[pool]]
name = "o"
backends = [{ address = "127.0.0.1:18691" }]
[[route]]
name = "video"
pool = "o"
[route.cache]
[cache]
ram_size = "64 MiB"
TOML
taskset -c 1 "$NEW" origin --listen 127.0.0.1:18691 >/dev/null 2>&1 & O=$!
E=
trap 'kill $E $O 2>/dev/null; wait $E $O 2>/dev/null; rm -rf "$DIR"' EXIT
BASE=http://127.0.0.1:18692/vod/bbb/low
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
declare -A CPU RPS
for round in $(seq "$ROUNDS"); do
  for which in new old; do
    bin=$NEW; [[ $which == old ]] && bin=$OLD
    taskset -c 0 "$bin" run --config "$DIR/edge.toml" >"$DIR/edge-$which.log" 2>&1 & E=$!
    ok=
    for _ in $(seq 100); do curl -s -o /dev/null -f "$BASE/index.m3u8" && { ok=1; break; }; sleep 0.1; done
    [[ -n $ok ]] || { echo "segment.sh: edge did not answer (see $DIR/edge-$which.log)" >&2; exit 1; }
    curl -s -o /dev/null -f "$BASE/seg_0.ts"; sleep 1
    before=$(ticks "$E")
    out=$(taskset -c 1 wrk -t1 -c50 -d"${SECS}s" "$BASE/seg_0.ts")
    after=$(ticks "$E")
    kill -TERM "$E"; wait "$E" || true; E=
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    echo "round $round $which $rps req/s cpu $cpu us/req"
    CPU[$which]+="$cpu "; RPS[$which]+="$rps "
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
n=$(median <<<"${CPU[new]}"); o=$(median <<<"${CPU[old]}")
echo "median new: $(median <<<"${RPS[new]}") req/s, $n us/req; old: $(median <<<"${RPS[old]}") req/s, $o us/req; new / old CPU: $(awk -v a="$n" -v b="$o" 'BEGIN {printf "%.2f", a / b}')"
