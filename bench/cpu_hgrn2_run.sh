#!/usr/bin/env bash
# CPU timings of hgrn2-run: prefill and decode tokens/s (median of 5 runs) per model folder.
# Usage: bench/cpu_hgrn2_run.sh [BUILD_DIR] [MODEL_DIR...]
set -euo pipefail
build=${1:-build}; shift || true
models=("$@")
((${#models[@]})) || models=(tests/data/tiny-a tests/data/tiny-conv tests/data/u-sharded-f16)
prompt=$(python3 -c "print(','.join(str(3 + i * 7 % 380) for i in range(128)))")
long=$(python3 -c "print(','.join(str(3 + i * 7 % 380) for i in range(1024)))")
printf '%-16s %-10s %14s %14s %14s\n' model mode prefill_tok/s decode_tok/s score_tok/s
for model in "${models[@]}"; do
  for mode in chunked recurrent; do
    prefill=(); decode=(); score=()
    for _ in 1 2 3 4 5; do
      line=$("$build/bin/hgrn2-run" --model "$model" --prompt-ids "$prompt" --max-new-tokens 256 \
               --ignore-eos --seed 1 --prefill-mode "$mode" 2>&1 >/dev/null)
      prefill+=("$(sed -E 's/.*first token in [0-9.]+ ms \(([0-9.]+) tokens\/s\).*/\1/' <<<"$line")")
      decode+=("$(sed -E 's/.*more tokens in [0-9.]+ ms \(([0-9.]+) tokens\/s\).*/\1/' <<<"$line")")
      line=$("$build/bin/hgrn2-run" --model "$model" --prompt-ids "$long" --score \
               --prefill-mode "$mode" 2>&1 >/dev/null)
      score+=("$(sed -E 's/.*\(([0-9.]+) tokens\/s\).*/\1/' <<<"$line")")
    done
    median() { printf '%s\n' "$@" | sort -g | sed -n 3p; }
    printf '%-16s %-10s %14s %14s %14s\n' "$(basename "$model")" "$mode" "$(median "${prefill[@]}")" \
      "$(median "${decode[@]}")" "$(median "${score[@]}")"
  done
done
