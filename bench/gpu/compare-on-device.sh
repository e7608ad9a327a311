#!/usr/bin/env bash
# On the GPU test machine, in one call: a new build against a baseline, on the same card.
#   1. the serving profile (bench/serving/profile-on-device.sh) for both builds;
#   2. the new build's GPU tests, run side by side (they share the card; only pass/fail counts);
#   3. hgrn2-bench (decode steps and prefill against the hardware limits) for the baseline, the new
#      build, and the new build with $NEW_BENCH_FLAGS (its kernel options turned back off).
# Bundles are .tar.xz of a run/ folder as scripts/gpu-bundle packs it (bin/, lib/, commit):
#   BASE=.gpu-bundle-base/run.tar.xz NEW=.gpu-bundle-new/run.tar.xz bash bench/gpu/compare-on-device.sh
# Logs and JSON under $OUT; a short summary is printed last.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/.gpu-bundle/compare-out}
BASE=${BASE:-.gpu-bundle-base/run.tar.xz}
NEW=${NEW:-.gpu-bundle-new/run.tar.xz}
NEW_BENCH_FLAGS=${NEW_BENCH_FLAGS:---no-one-pass-sampling --no-small-batch-gemv}
BENCH=(--preset 1.3b --batches ${BENCH_BATCHES:-1,16,64,256} --prefill ${BENCH_PREFILL:-1x2048,8x2048}
       --steps ${BENCH_STEPS:-20})
mkdir -p "$OUT"
export HGRN2_TEST_DATA_DIR=$ROOT/tests/data
for v in base new; do
  archive=$BASE
  [[ $v == new ]] && archive=$NEW
  mkdir -p /tmp/compare-$v && tar xJf "$ROOT/$archive" -C /tmp/compare-$v
done
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader |
  tee "$OUT/gpu.txt"
summary=()
run() {  # name build timeout command...
  local name=$1 build=$2 limit=$3
  shift 3
  local start=$SECONDS
  (export LD_LIBRARY_PATH=/tmp/compare-$build/run/lib:/usr/local/cuda/lib64
   timeout "$limit" "$@") >"$OUT/$name.log" 2>&1
  local rc=$?
  summary+=("$name: exit $rc in $((SECONDS - start)) s, $(grep -c '^\[  FAILED  \]' "$OUT/$name.log") FAILED lines")
}

if [[ ${SKIP_SERVING:-0} != 1 ]]; then
  mkdir -p "$OUT/serving"
  OUT=$OUT/serving BUNDLES="base:$BASE new:$NEW" bash "$ROOT/bench/serving/profile-on-device.sh" \
    >"$OUT/serving.log" 2>&1
  tar czf "$OUT/serving.tar.gz" -C "$OUT" serving
fi

if [[ ${SKIP_TESTS:-0} != 1 ]]; then
  N=/tmp/compare-new/run/bin
  pids=()
  for t in cuda_backend_test cuda_golden_test cuda_sample_test cuda_engine_test cuda_gemv_test; do
    [[ -x $N/$t ]] || continue
    (LD_LIBRARY_PATH=/tmp/compare-new/run/lib:/usr/local/cuda/lib64 timeout "${TEST_SECONDS:-240}" \
      "$N/$t" --gtest_brief=1 >"$OUT/test-$t.log" 2>&1; echo "exit $?" >>"$OUT/test-$t.log") &
    pids+=($!)
  done
  wait "${pids[@]}"
  for t in "$OUT"/test-*.log; do
    summary+=("$(basename "$t" .log): $(tail -1 "$t"), $(grep -c '^\[  FAILED  \]' "$t") FAILED lines")
    grep -h -B2 -A6 'Failure$' "$t" | head -30
  done
fi

if [[ ${SKIP_BENCH:-0} != 1 ]]; then
  run bench-base base 150 /tmp/compare-base/run/bin/hgrn2-bench "${BENCH[@]}" --json "$OUT/bench-base.json"
  run bench-new new 150 /tmp/compare-new/run/bin/hgrn2-bench "${BENCH[@]}" --json "$OUT/bench-new.json"
  # shellcheck disable=SC2086
  run bench-new-flags new 150 /tmp/compare-new/run/bin/hgrn2-bench "${BENCH[@]}" $NEW_BENCH_FLAGS \
    --json "$OUT/bench-new-flags.json"
  run sample-timing new 60 /tmp/compare-new/run/bin/cuda_sample_test --gtest_filter="*Timing*"
fi

for v in base new new-flags; do
  [[ -f $OUT/bench-$v.log ]] || continue
  echo "=== bench $v"
  grep -E '^copy|^decode B|^[0-9]+ +[0-9.]+ |^prefill|^[0-9]+x[0-9]+ ' "$OUT/bench-$v.log" | head -16
done
[[ -f $OUT/sample-timing.log ]] && { echo "=== sampling"; grep -E 'us|B=|b=' "$OUT/sample-timing.log" | head -12; }
[[ -f $OUT/serving.log ]] && { echo "=== serving"; grep -v '^    ' "$OUT/serving.log" | tail -30; }
echo "=== summary"
printf '%s\n' "${summary[@]}"
