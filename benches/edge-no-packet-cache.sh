#!/bin/sh
# Stand-in for the edge binary in ../shared/peers runs: adds
# `packet_cache = 0` under `[dns]` of the config it is started with, then
# runs the real binary ($EDGE_REAL, default target/release/edge). Measures
# the answer path with the packet cache off (every query parsed, looked up
# and encoded), e.g.:
#   EDGE_BIN=$PWD/benches/edge-no-packet-cache.sh ../shared/peers/dns.sh --name edge-nocache \
#     --dns-cmd 'exec "$PEERS_DIR"/edge/edge-dns.sh "$PORT" "$WORKDIR"'
# usage (as the wrappers call it): edge-no-packet-cache.sh run --config FILE
set -eu
real="${EDGE_REAL:-$(dirname "$0")/../target/release/edge}"
if [ "${1:-}" = run ] && [ "${2:-}" = --config ] && [ -n "${3:-}" ]; then
  sed -i 's/^\[dns\]$/[dns]\npacket_cache = 0/' "$3"
fi
exec "$real" "$@"
