#!/usr/bin/env bash
# Runs one test again and again, to show it does not waver.
#   scripts/repeat-test.sh <test-target> <test-name> [runs]
# e.g. scripts/repeat-test.sh lb the_breaker_opens_half_opens_and_closes 50
# Builds once, then runs the test binary `runs` times (default 50) with
# --test-threads=1; stops at the first failure and prints its output.
set -euo pipefail
target=${1:?test target (a file in app/tests without .rs)}
name=${2:?test name}
runs=${3:-50}
cd "$(dirname "$0")/.."
cargo test --locked -p edge --test "$target" --no-run >/dev/null 2>&1
bin=$(cargo test --locked -p edge --test "$target" --no-run --message-format=json 2>/dev/null |
  grep "\"kind\":\[\"test\"\]" | grep "\"name\":\"$target\"" |
  grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
cd app
passed=0
for i in $(seq 1 "$runs"); do
  if out=$("$bin" --exact "$name" --test-threads=1 2>&1); then
    passed=$((passed + 1))
  else
    echo "$out"
    echo "run $i of $runs failed after $passed passed in a row"
    exit 1
  fi
done
echo "$name: $passed of $runs runs passed in a row"
