#!/usr/bin/env bash
# pass-syscalls.sh BIN SIZE N : system calls per pass-through request of
# SIZE bytes (strace -c -f attached to edge), for N keep-alive requests
# from one curl connection. Counts are exact and repeatable, unlike CPU
# time on this machine: a change that moves bytes differently (batching,
# flushing) shows here first.
source "$(dirname "$0")/common.sh"
BIN=${1:?usage: pass-syscalls.sh BIN SIZE N}; SIZE=${2:?}; N=${3:?}
command -v strace >/dev/null || { echo "pass-syscalls.sh: needs strace (apt-get install strace)" >&2; exit 1; }
"$BIN" origin --listen 127.0.0.1:18481 >/dev/null 2>&1 & O=$!
E=; S=
trap 'kill $E $O 2>/dev/null; wait $E $O 2>/dev/null; rm -rf "$DIR"' EXIT
start_edge "$BIN"
for _ in $(seq "$N"); do echo "url = \"$(url "$SIZE")\""; echo "output = /dev/null"; done >"$DIR/urls"
strace -f -c -p "$E" -o "$DIR/strace.out" 2>/dev/null & S=$!
sleep 1
curl -s -K "$DIR/urls"
sleep 0.5
kill -INT "$S"; wait "$S" || true
awk -v n="$N" 'NR > 2 && $1 ~ /^[0-9.]+$/ {printf "%-16s %8.2f per request\n", $NF, $4 / n}' "$DIR/strace.out" |
  sort -k2 -nr | head -6
