#!/usr/bin/env bash
# Requests/s and generated tokens/s of hgrn2-server on the CPU at 1, 8 and 32 concurrent streams
# (the E5 numbers): N hgrn2-cli processes at a time, each generating OUTPUT tokens (EOS ignored)
# after a text prompt, REQUESTS requests per concurrency level in all. Client processes share the
# machine with the server, so on a small machine the numbers are a floor.
#
#   bash bench/serving/cpu-concurrency.sh [MODEL]      (after scripts/build)
#   DEVICE=cuda BIN=.gpu-bundle/run/bin bash bench/serving/cpu-concurrency.sh   (the GPU machine)
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-models/hgrn2-demo}
OUTPUT=${OUTPUT:-128}
REQUESTS=${REQUESTS:-64}
bin=${BIN:-build/bin}
device=${DEVICE:-cpu}
log=$(mktemp)
"$bin/hgrn2-server" --model "$model" --device "$device" --host 127.0.0.1 --port 0 --metrics-port 0 \
  --max-running 32 --health-check-interval 0 2>"$log" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q "serving" "$log" && break; sleep 0.1; done
port=$(sed -n 's/.*serving .* on [^ ]*:\([0-9]*\).*/\1/p' "$log")
prompt="It is a truth universally acknowledged, that a single man in possession of a good fortune"
echo "model $model on $device, $(nproc) cores, prompt $(printf '%s' "$prompt" | wc -w) words, $OUTPUT tokens each, $REQUESTS requests per level"
printf '%-12s %10s %14s %12s\n' concurrency "requests/s" "tokens/s" "seconds"
for concurrency in 1 8 32; do
  start=$(date +%s.%N)
  for worker in $(seq 0 $((concurrency - 1))); do
    (
      for r in $(seq $worker "$concurrency" $((REQUESTS - 1))); do
        "$bin/hgrn2-cli" --addr "127.0.0.1:$port" generate "$prompt" --max-new-tokens "$OUTPUT" \
          --ignore-eos --seed "$r" --temperature 0.8 >/dev/null 2>&1 || echo "request $r failed" >&2
      done
    ) &
  done
  wait $(jobs -p | grep -v "^$server$") 2>/dev/null || true
  end=$(date +%s.%N)
  python3 -c "s=$end-$start; print(f'{$concurrency:<12d} {$REQUESTS/s:10.2f} {$REQUESTS*$OUTPUT/s:14.1f} {s:12.2f}')"
done
