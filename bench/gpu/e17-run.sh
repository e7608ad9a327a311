#!/usr/bin/env bash
# E17 device run: the baseline (1f689e7) and the e17 branch side by side on the same card.
# Logs under $OUT; a short table last. Beside it: base.tgz and new.tgz, each holding
# {base,new}/bin (hgrn2-bench and the GPU tests, stripped) and {base,new}/lib (the shared
# libraries scripts/gpu-bundle picks), compressed to fit the device's carry limit; run from a
# checkout whose tests/data the golden tests read.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT=${OUT:-$HERE/out}
mkdir -p "$OUT"
# The binaries travel compressed (the carry limit); unpacked outside the checkout.
BIN_ROOT=$(mktemp -d)
for v in base new; do tar xzf "$HERE/$v.tgz" -C "$BIN_ROOT"; done
export HGRN2_TEST_DATA_DIR=$ROOT/tests/data
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.sm --format=csv,noheader | tee "$OUT/gpu.txt"
: >"$OUT/summary.txt"
run() {  # name dir timeout cmd...
  local name=$1 dir=$2 limit=$3
  shift 3
  local start=$SECONDS
  (export LD_LIBRARY_PATH=$BIN_ROOT/$dir/lib:/usr/local/cuda/lib64; timeout "$limit" "$@") >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - start)) s; $(grep -c '^\[  FAILED  \]' "$OUT/$name.log") FAILED lines" | tee -a "$OUT/summary.txt"
}
N=$BIN_ROOT/new/bin
B=$BIN_ROOT/base/bin
BENCH=(--preset 1.3b --batches 1,2,4,8,16,32,64,256 --prefill 1x2048 --steps 30 --breakdown)
run new-gemv new 60 "$N/cuda_gemv_test" --gtest_brief=1
run new-sample new 120 "$N/cuda_sample_test" --gtest_brief=1
run base-sample-timing base 60 "$B/cuda_sample_test" --gtest_filter='*Timing*'
run new-backend new 90 "$N/cuda_backend_test" --gtest_brief=1
run base-bench base 100 "$B/hgrn2-bench" "${BENCH[@]}" --json "$OUT/base-bench.json"
run new-bench new 100 "$N/hgrn2-bench" "${BENCH[@]}" --json "$OUT/new-bench.json"
run new-golden new 100 "$N/cuda_golden_test" --gtest_brief=1
run new-engine new 120 "$N/cuda_engine_test" --gtest_brief=1
echo "=== failures"
grep -h -A3 -E '^\[  FAILED  \]|Failure$' "$OUT"/new-*.log | head -60
echo "=== sampler timing (base, then new)"
grep -h '^sample:' "$OUT/base-sample-timing.log" "$OUT/new-sample.log"
grep -h '^distribution:' "$OUT/new-sample.log"
for v in base new; do
  echo "=== $v bench"
  grep -E '^copy|^decode B|^[0-9]+ +[0-9.]+ ' "$OUT/$v-bench.log" | head -20
  grep -E 'breakdown 1x1|breakdown 256x1 .*sum' "$OUT/$v-bench.log"
  grep -A2 '^prefill' "$OUT/$v-bench.log"
done
echo "=== summary"
cat "$OUT/summary.txt"
