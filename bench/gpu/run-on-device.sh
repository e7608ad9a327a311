#!/usr/bin/env bash
# On the GPU test machine: the GPU tests, then hgrn2-bench, from the bundle that scripts/gpu-bundle
# made here (carry .gpu-bundle/run). Logs and JSON go to $OUT; a summary is printed last.
#   bash bench/gpu/run-on-device.sh [tests|bench|scenarios|all] [extra hgrn2-bench flags]
# (scenarios: the engine's scheduled decoding at B=256 against plain steps, and a mixed Poisson
# run; sessions: session export/import rates of a 1.3B-size state and a session resumed through
# hgrn2-server on the GPU compared with one uninterrupted request; neither is part of all)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN=$ROOT/.gpu-bundle/run
OUT=${OUT:-$ROOT/.gpu-bundle/out}
mkdir -p "$OUT"
what=${1:-all}
shift || true
export LD_LIBRARY_PATH=$RUN/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export HGRN2_TEST_DATA_DIR=$ROOT/tests/data
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
summary=()
if [[ $what == tests || $what == all ]]; then
  for t in cuda_backend_test cuda_golden_test cuda_sample_test cuda_engine_test; do
    "$RUN/bin/$t" --gtest_brief=1 >"$OUT/$t.log" 2>&1
    rc=$?
    summary+=("$t: exit $rc, $(grep -c '^\[  FAILED  \]' "$OUT/$t.log") failed lines")
    grep -E '^\[  FAILED  \]|Failure|error|Expected|Which is|rel_l2' "$OUT/$t.log" | head -40
  done
  grep -h '\[golden\]' "$OUT/cuda_golden_test.log" | sort | tail -200 >"$OUT/golden-errors.txt" || true
fi
if [[ $what == bench || $what == all ]]; then
  "$RUN/bin/hgrn2-bench" --preset 1.3b --json "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.txt"
  summary+=("hgrn2-bench: exit ${PIPESTATUS[0]}")
fi
if [[ $what == scenarios ]]; then
  "$RUN/bin/hgrn2-bench" --preset 1.3b --skip-hardware --scenario decode --scenario-batch 256 \
    --scenario-steps 64 --json "$OUT/scenario-decode.json" 2>&1 | tee "$OUT/scenario-decode.txt"
  summary+=("scenario decode: exit ${PIPESTATUS[0]}")
  "$RUN/bin/hgrn2-bench" --preset 1.3b --skip-hardware --scenario mixed --scenario-batch 256 \
    --json "$OUT/scenario-mixed.json" "$@" 2>&1 | tee "$OUT/scenario-mixed.txt"
  summary+=("scenario mixed: exit ${PIPESTATUS[0]}")
fi
if [[ $what == sessions ]]; then
  for dtype in f32 bf16; do
    "$RUN/bin/hgrn2-session-bench" --preset 1.3b --device cuda --state-dtype "$dtype" 2>&1 |
      tee "$OUT/session-bench-$dtype.txt"
    summary+=("session bench $dtype: exit ${PIPESTATUS[0]}")
  done
  bash "$ROOT/bench/gpu/session-resume.sh" 2>&1 | tee "$OUT/session-resume.txt"
  summary+=("session resume: exit ${PIPESTATUS[0]}")
fi
printf '%s\n' "${summary[@]}"
