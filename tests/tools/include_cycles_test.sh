#!/usr/bin/env bash
# scripts/check-include-cycles: passes on the tree, and fails on a copy with a cycle between two
# engine parts and a layer crossing put in (so the check itself can fail).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
check=$root/scripts/check-include-cycles
python3 "$check" "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$root/engine" "$root/kernels" "$root/server" "$tmp/"
echo '#include "engine/scheduler/request.h"' >>"$tmp/engine/model/model.h"
echo '#include "engine/backend/backend.h"' >>"$tmp/kernels/gemm.h"
if python3 "$check" "$tmp" 2>"$tmp/err"; then
  echo "FAIL: a cycle and a layer crossing passed the check" >&2
  exit 1
fi
grep -q 'include cycle engine/model -> engine/scheduler -> engine/model' "$tmp/err" ||
  { echo "FAIL: the model/scheduler cycle was not named:" >&2; cat "$tmp/err" >&2; exit 1; }
grep -q 'kernels/gemm.h includes engine/backend/backend.h: kernels know no engine' "$tmp/err" ||
  { echo "FAIL: the layer crossing was not named:" >&2; cat "$tmp/err" >&2; exit 1; }
echo "include cycles: the tree passes; a planted cycle and layer crossing fail"
