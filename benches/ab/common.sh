# Shared by pass-cpu.sh and pass-syscalls.sh: a one-thread edge on
# 127.0.0.1:18480 passing everything through to `edge origin` on :18481.
set -euo pipefail
DIR="$(mktemp -d /tmp/edge-ab.XXXXXX)"
cat >"$DIR/edge.toml" <<TOML
[server]
threads = 1
access_log = false
[[listener]]
name = "pass"
kind = "http"
address = "127.0.0.1:18480"
[[pool]]
name = "o"
backends = [{ address = "127.0.0.1:18481" }]
[[route]]
name = "all"
pool = "o"
TOML
url() { echo "http://127.0.0.1:18480/obj/x?size=$1&cc=no-store"; }
# start_edge BIN: starts edge pinned to CPU 0, sets E, waits until it answers.
start_edge() {
  taskset -c 0 "$1" run --config "$DIR/edge.toml" >"$DIR/edge.log" 2>&1 & E=$!
  for _ in $(seq 100); do curl -s -o /dev/null -f "$(url 1)" && return 0; sleep 0.1; done
  echo "edge did not answer (see $DIR/edge.log)" >&2; exit 1
}
