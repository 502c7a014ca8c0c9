#!/usr/bin/env bash
# Runs `edge check` on every TOML under deploy/ and config/examples/.
set -euo pipefail
edge=${1:?usage: check-configs.sh path/to/edge}
status=0
count=0
while IFS= read -r -d '' file; do
  count=$((count + 1))
  if ! "$edge" check "$file" >/dev/null; then
    status=1
  fi
done < <(find deploy config/examples -name '*.toml' -print0 | sort -z)
echo "edge check: $count config files checked"
exit $status
