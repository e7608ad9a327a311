#!/usr/bin/env bash
# On the GPU test machine, in one call: FP8 weights (E18) against BF16 on the same card.
#   1. the GPU suites that cover FP8 (GEMV, backend, engine, golden), with the GEMV timing table;
#   2. hgrn2-bench --dtype bf16 and --dtype fp8 (1.3B shape, random weights), one after the other;
#   3. the demo model through hgrn2-run: CUDA FP8 against the CPU's FP8 path (its reference), by
#      score (per-position logprobs) and by a greedy continuation.
# Usage (after scripts/gpu-bundle; carry .gpu-bundle/run.tar.xz): bash bench/gpu/fp8-on-device.sh
# Logs under $OUT; a summary is printed last.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/.gpu-bundle/fp8-out}
mkdir -p "$OUT" /tmp/fp8-run
tar xJf "$ROOT/.gpu-bundle/run.tar.xz" -C /tmp/fp8-run
R=/tmp/fp8-run/run
export LD_LIBRARY_PATH=$R/lib:/usr/local/cuda/lib64 HGRN2_TEST_DATA_DIR=$ROOT/tests/data
echo "commit $(cat $R/commit)"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
for t in ${SUITES:-cuda_gemv_test cuda_backend_test cuda_engine_test cuda_golden_test}; do
  timeout 300 "$R/bin/$t" >"$OUT/$t.txt" 2>&1
  echo "$t rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/$t.txt" | tr '\n' ' ')"
done
grep '^gemv m' "$OUT/cuda_gemv_test.txt"
grep -B2 -A12 'Failure' "$OUT"/cuda_*_test.txt | head -60
for dtype in bf16 fp8; do
  timeout 240 "$R/bin/hgrn2-bench" --preset 1.3b --dtype $dtype --batches ${BATCHES:-1,16,64,256} \
    --prefill ${PREFILL:-1x2048,8x2048} --steps 30 --json "$OUT/bench-$dtype.json" >"$OUT/bench-$dtype.txt" 2>&1
  echo "== hgrn2-bench --dtype $dtype rc=$?"
  tail -14 "$OUT/bench-$dtype.txt"
done
MODEL=$ROOT/models/hgrn2-demo
PROMPT=$(seq -s, 5 7 900)
for dev in cpu cuda; do
  "$R/bin/hgrn2-run" --model "$MODEL" --device $dev --dtype fp8 --prompt-ids "$PROMPT" --score \
    >"$OUT/score-$dev.txt" 2>"$OUT/score-$dev.err"
  "$R/bin/hgrn2-run" --model "$MODEL" --device $dev --dtype fp8 --prompt-ids 1,400,52,7 \
    --temperature 0 --max-new-tokens 200 --ignore-eos --print-ids >"$OUT/greedy-$dev.txt" 2>"$OUT/greedy-$dev.err"
done
"$R/bin/hgrn2-run" --model "$MODEL" --device cuda --dtype bf16 --prompt-ids "$PROMPT" --score \
  >"$OUT/score-cuda-bf16.txt" 2>/dev/null
"$R/bin/hgrn2-run" --model "$MODEL" --device cpu --dtype bf16 --prompt-ids "$PROMPT" --score \
  >"$OUT/score-cpu-f32.txt" 2>/dev/null
python3 - "$OUT" <<'PY'
import sys
out = sys.argv[1]
def score(name):
    rows = [l.split() for l in open(f"{out}/{name}") if len(l.split()) == 3]
    return [float(r[2]) for r in rows]
for a, b in [("score-cuda.txt", "score-cpu.txt"), ("score-cuda-bf16.txt", "score-cpu-f32.txt")]:
    x, y = score(a), score(b)
    if not x or len(x) != len(y):
        print(f"{a} vs {b}: lengths {len(x)} {len(y)}"); continue
    d = [abs(p - q) for p, q in zip(x, y)]
    print(f"{a} vs {b}: {len(d)} positions, max |dlogprob| {max(d):.4f}, mean {sum(d)/len(d):.5f}")
g = [open(f"{out}/greedy-{dev}.txt").read().strip().split(",") for dev in ("cpu", "cuda")]
same = next((i for i, (p, q) in enumerate(zip(*g)) if p != q), min(map(len, g)))
print(open(f"{out}/greedy-cuda.err").read().strip())
print(f"greedy fp8 cuda vs cpu: {same} of {len(g[0])} tokens identical before the first difference")
PY
