#!/usr/bin/env bash
# Every entry directly under docs/results/ (a results folder, or a single results file such
# as cpu-2core-ci.txt) must be named by README.md or a doc in docs/*.md, so that no result
# is kept that nothing points to. Prints each uncited docs/results/<name> and exits 1, or
# exits 0 when all are cited.
#
#   scripts/check-results-cited.sh
set -euo pipefail
cd "$(dirname "$0")/.."

docs=(README.md docs/*.md)
missing=0
for entry in docs/results/*; do
  [ -e "$entry" ] || continue
  name=$(basename "$entry")
  # The name must stand on its own: `cpu-2core-bench` is not cited by `cpu-2core-bench-v4`.
  if ! grep -qE "(^|[^A-Za-z0-9_.-])${name//./\\.}([^A-Za-z0-9_-]|$)" "${docs[@]}"; then
    echo "not cited by README.md or docs/*.md: docs/results/$name" >&2
    missing=1
  fi
done
exit "$missing"
