#!/usr/bin/env bash
# Builds edge in release mode and runs the load benchmarks against the peers.
#   benches/run.sh [proxy|cache|hitratio] [--reps N] [--duration SECS] [--connections N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release -p edge -p edge-benches
target=${CARGO_TARGET_DIR:-target}
mkdir -p benches/out
scenario=${1:-proxy}
[[ $# -gt 0 ]] && shift
"$target/release/loadbench" "$scenario" --edge "$target/release/edge" --out "benches/out/$scenario.md" "$@"
