#!/usr/bin/env bash
# A site of three edge nodes, a shield and the synthetic origin, on one
# machine's loopback addresses. Ctrl-C stops them all.
#   deploy/site/run.sh [path/to/edge]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
edge=${1:-$here/../../target/debug/edge}
[ -x "$edge" ] || { echo "no edge binary at $edge (cargo build -p edge)" >&2; exit 1; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
"$edge" origin --listen 127.0.0.30:9000 & pids+=($!)
"$edge" run --config "$here/shield.toml" & pids+=($!)
for i in 1 2 3; do
  "$edge" run --config "$here/ams-$i.toml" & pids+=($!)
done
echo "origin 127.0.0.30:9000, shield 127.0.0.20:8080, nodes 127.0.0.11-13:8080 (pids ${pids[*]})"
wait
