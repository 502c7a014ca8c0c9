#!/usr/bin/env bash
# Runs the load benchmarks against the peers (loadbench, built here in
# release mode).
#   benches/run.sh [proxy|cache|hitratio] [--reps N] [--duration SECS] [--connections N]
# The edge measured: $EDGE_RELEASE_BIN if set and not empty (`make bench
# PGO=1`: the profile-guided build), taken from the repository's root if
# relative; else the release build's, made here ($CARGO_TARGET_DIR, else
# target, /release/edge).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
if [[ -n ${EDGE_RELEASE_BIN:-} ]]; then
  [[ -f $EDGE_RELEASE_BIN && -x $EDGE_RELEASE_BIN ]] || { echo "run.sh: EDGE_RELEASE_BIN=$EDGE_RELEASE_BIN is not an executable" >&2; exit 1; }
  edge=$EDGE_RELEASE_BIN
  cargo build --locked --release -p edge-benches
else
  edge=$target/release/edge
  cargo build --locked --release -p edge -p edge-benches
fi
mkdir -p benches/out
scenario=${1:-proxy}
[[ $# -gt 0 ]] && shift
"$target/release/loadbench" "$scenario" --edge "$edge" --out "benches/out/$scenario.md" "$@"
