#!/usr/bin/env bash
# pass-cpu.sh SIZE REPS BIN_A BIN_B : edge's CPU µs per pass-through
# request of SIZE bytes, two binaries side by side: edge alone pinned to
# CPU 0 behind `edge origin` (BIN_A's) on CPU 1, `wrk -t1 -c50` for 3 s
# after a 1 s warm-up, A and B interleaved REPS times; CPU (user + system)
# from /proc/PID/stat. Compare within one run only (benches/RESULTS.md).
source "$(dirname "$0")/common.sh"
SIZE=${1:?usage: pass-cpu.sh SIZE REPS BIN_A BIN_B}; REPS=${2:?}; A=${3:?}; B=${4:?}
command -v wrk >/dev/null || { echo "pass-cpu.sh: needs wrk (apt-get install wrk)" >&2; exit 1; }
taskset -c 1 "$A" origin --listen 127.0.0.1:18481 >/dev/null 2>&1 & O=$!
E=
trap 'kill $E $O 2>/dev/null; wait $E $O 2>/dev/null; rm -rf "$DIR"' EXIT
TCK=$(getconf CLK_TCK)
for r in $(seq "$REPS"); do
  for BIN in "$A" "$B"; do
    start_edge "$BIN"
    taskset -c 1 wrk -t1 -c50 -d1 "$(url "$SIZE")" >/dev/null
    t0=$(awk '{print $14+$15}' /proc/$E/stat)
    taskset -c 1 wrk -t1 -c50 -d3 "$(url "$SIZE")" >"$DIR/wrk.out"
    t1=$(awk '{print $14+$15}' /proc/$E/stat)
    n=$(awk '/requests in/ {print $1}' "$DIR/wrk.out")
    awk -v r="$r" -v b="$BIN" -v t="$((t1 - t0))" -v k="$TCK" -v n="$n" \
      'BEGIN {printf "round %d %s %.1f µs/req (%d requests)\n", r, b, t * 1e6 / k / n, n}'
    kill "$E"; wait "$E" 2>/dev/null || true; E=
  done
done
