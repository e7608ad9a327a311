#!/usr/bin/env bash
# On the GPU test machine, in one go: the end-to-end serving benchmark of docs/performance.md.
#   serve:     hgrn2-server --preset 1.3b (random weights; $SERVER_FLAGS added) on the GPU,
#              hgrn2-loadgen over loopback at each concurrency of $LEVELS (128-id prompts, 128-512
#              generated tokens, closed loop: $WARMUP_SECONDS of load, then a window of $DURATION
#              s), a burst at each of $BURST_LEVELS (that many calls at once, after a warm-up that
#              finished) and one Poisson run ($POISSON_RATE, by default 80% of the best closed-loop
#              request rate); /metrics scraped after each
#   serve-http: the same server with its OpenAI-compatible HTTP API on, and at each concurrency of
#              $HTTP_LEVELS (default 256) the same load over gRPC then over HTTP (hgrn2-loadgen
#              --protocol openai, streamed /v1/completions) in turn, $HTTP_ROUNDS times; the
#              served tokens/s of each and their ratio in http-vs-grpc.md (the target: HTTP >= 95%
#              of gRPC at 256 streams)
#   engine:    hgrn2-bench with the same request mix through the Engine alone (no gRPC), and its
#              scheduled-against-plain decode comparison at B=256
#   reference: fla + Hugging Face (bench/serving/reference_fla.py) on the same shapes, from the
#              wheels in .gpu-bundle/wheels (Triton's kernel cache in and out: see the stage)
#   plot:      bench/serving/plot.py: the table (summary.md) and the PNG plots
# Usage: bash bench/serving/run-on-device.sh [serve|serve-http|engine|reference|plot|all]...
#        (default all). The HTTP ratio alone: bash bench/serving/run-on-device.sh serve-http
# Binaries from scripts/gpu-bundle (.gpu-bundle/run). Results under $OUT (default
# .gpu-bundle/serving-out): summary.md, the plots, and serving.tar.gz with every JSON and log.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN=${RUN:-$ROOT/.gpu-bundle/run}
WHEELS=${WHEELS:-$ROOT/.gpu-bundle/wheels}
OUT=${OUT:-$ROOT/.gpu-bundle/serving-out}
PRESET=${PRESET:-1.3b}
LEVELS=${LEVELS:-1 16 64 256 512}
DURATION=${DURATION:-15}       # seconds of the measured window per level
WARMUP_SECONDS=${WARMUP_SECONDS:-4}  # seconds of load before each window
BURST_LEVELS=${BURST_LEVELS:-256}
SERVER_FLAGS=${SERVER_FLAGS:-}
POISSON_RATE=${POISSON_RATE:-auto}  # requests/s, or auto: 80% of the closed loops' best
PROMPT=${PROMPT:-128}
OUTPUT=${OUTPUT:-128:512}
RESULTS=$OUT/serving
mkdir -p "$RESULTS"
export LD_LIBRARY_PATH=$RUN/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
stages=("$@")
((${#stages[@]})) || stages=(all)
want() { [[ " ${stages[*]} " == *" $1 "* || " ${stages[*]} " == *" all "* ]]; }

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(cat "$RUN/commit" 2>/dev/null || git -C "$ROOT" rev-parse --short HEAD)"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader
  echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  echo "preset: $PRESET, prompt $PROMPT ids, output $OUTPUT tokens, levels $LEVELS, $DURATION s each"
} >"$RESULTS/machine.txt" 2>&1
cat "$RESULTS/machine.txt"

if want serve; then
  port=50151
  metrics_port=50152
  "$RUN/bin/hgrn2-server" --preset "$PRESET" --device "${DEVICE:-cuda}" --host 127.0.0.1 --port $port \
    --metrics-port $metrics_port --max-running 512 --max-queued 16384 \
    --health-check-interval 0 $SERVER_FLAGS >"$RESULTS/server.log" 2>&1 &
  server=$!
  for _ in $(seq 300); do grep -q "serving" "$RESULTS/server.log" && break; sleep 0.5; done
  grep "serving\|loaded" "$RESULTS/server.log"
  loadgen() {  # name, then loadgen flags
    local name=$1
    shift
    "$RUN/bin/hgrn2-loadgen" --addr 127.0.0.1:$port --prompt-ids "$PROMPT" --output-tokens "$OUTPUT" \
      --quiet --json "$RESULTS/loadgen-$name.json" "$@" 2>&1 | tee "$RESULTS/loadgen-$name.txt"
    curl -s "http://127.0.0.1:$metrics_port/metrics" >"$RESULTS/metrics-$name.txt"
  }
  for c in $LEVELS; do
    echo "== concurrency $c"
    loadgen "c$c" --seed "$c" --concurrency "$c" --duration "$DURATION" --warmup-seconds "$WARMUP_SECONDS"
  done
  for c in $BURST_LEVELS; do
    echo "== a burst of $c calls"
    loadgen "burst$c" --seed "$c" --concurrency "$c" --requests "$c" --warmup 8
  done
  rate=$POISSON_RATE
  if [[ $rate == auto ]]; then  # 80% of the most requests/s a closed-loop level completed
    rate=$(python3 -c 'import json, sys; print(round(0.8 * max(json.load(open(p))["requests_per_s"] for p in sys.argv[1:]), 1))' \
      "$RESULTS"/loadgen-c*.json)
  fi
  echo "== Poisson arrivals, $rate/s"
  loadgen poisson --seed 7 --rate "$rate" --concurrency 1024 --duration "$((DURATION * 2))" \
    --warmup-seconds "$WARMUP_SECONDS"
  kill -TERM $server
  wait $server
fi

if want serve-http; then
  port=50161
  http_port=50163
  "$RUN/bin/hgrn2-server" --preset "$PRESET" --device "${DEVICE:-cuda}" --host 127.0.0.1 --port $port \
    --http-port $http_port --metrics-port 0 --max-running 512 --max-queued 16384 \
    --health-check-interval 0 >"$RESULTS/server-http.log" 2>&1 &
  server=$!
  for _ in $(seq 300); do grep -q "OpenAI-compatible HTTP API on" "$RESULTS/server-http.log" && break; sleep 0.5; done
  grep "serving\|HTTP API" "$RESULTS/server-http.log"
  for c in ${HTTP_LEVELS:-256}; do
    for round in $(seq "${HTTP_ROUNDS:-2}"); do
      for protocol in grpc openai; do
        addr=127.0.0.1:$port
        [[ $protocol == openai ]] && addr=127.0.0.1:$http_port
        echo "== concurrency $c, $protocol, round $round"
        "$RUN/bin/hgrn2-loadgen" --protocol "$protocol" --addr "$addr" --prompt-ids "$PROMPT" \
          --output-tokens "$OUTPUT" --seed "$c" --concurrency "$c" --duration "$DURATION" \
          --warmup-seconds "$WARMUP_SECONDS" --quiet --json "$RESULTS/loadgen-$protocol-c$c-r$round.json" 2>&1 |
          tee "$RESULTS/loadgen-$protocol-c$c-r$round.txt"
      done
    done
  done
  kill -TERM $server
  wait $server
  python3 - "$RESULTS" <<'PY' | tee "$RESULTS/http-vs-grpc.md"
import glob, json, re, sys
runs = {}
for path in glob.glob(sys.argv[1] + "/loadgen-*-c*-r*.json"):
    protocol, c, r = re.search(r"loadgen-(grpc|openai)-c(\d+)-r(\d+).json", path).groups()
    report = json.load(open(path))
    runs.setdefault(int(c), {}).setdefault(protocol, []).append(report)
print("| streams | gRPC tok/s (rounds) | HTTP tok/s (rounds) | HTTP / gRPC | errors |")
print("| --- | --- | --- | --- | --- |")
for c, by in sorted(runs.items()):
    g = [x["generated_tokens_per_s"] for x in by.get("grpc", [])]
    h = [x["generated_tokens_per_s"] for x in by.get("openai", [])]
    errors = sum(sum(x["errors"].values()) for p in by.values() for x in p)
    ratio = (sum(h) / len(h)) / (sum(g) / len(g)) if g and h else float("nan")
    print(f"| {c} | {sum(g)/max(len(g),1):.0f} ({', '.join(f'{x:.0f}' for x in g)}) | "
          f"{sum(h)/max(len(h),1):.0f} ({', '.join(f'{x:.0f}' for x in h)}) | {ratio:.3f} | {errors} |")
PY
fi

if want engine; then
  # The same mix through the Engine alone (no gRPC, no tokenizer, no streams to write): a closed
  # loop of B requests in flight, as hgrn2-loadgen --concurrency B keeps through the server.
  for b in ${ENGINE_LEVELS:-1 16 64 256}; do
    echo "== engine alone, closed loop of $b"
    "$RUN/bin/hgrn2-bench" --preset "$PRESET" --device "${DEVICE:-cuda}" --skip-hardware \
      --scenario mixed --scenario-batch "$b" --concurrency "$b" --warmup-seconds 4 \
      --duration "$DURATION" --prompt-min "$PROMPT" --prompt-max "$PROMPT" \
      --output-min "${OUTPUT%%:*}" --output-max "${OUTPUT##*:}" \
      --json "$RESULTS/engine-b$b.json" 2>&1 | tee "$RESULTS/engine-b$b.txt"
  done
  echo "== engine alone, scheduled decode against a plain loop, B=256"
  "$RUN/bin/hgrn2-bench" --preset "$PRESET" --device "${DEVICE:-cuda}" --skip-hardware --scenario decode --scenario-batch 256 \
    --scenario-steps 64 --json "$RESULTS/engine-decode-b256.json" 2>&1 |
    tee "$RESULTS/engine-decode-b256.txt"
  echo "== engine alone, decode steps and the bandwidth limit"
  "$RUN/bin/hgrn2-bench" --preset "$PRESET" --device "${DEVICE:-cuda}" --batches ${TABLE_BATCHES:-1,16,64,256,512} --prefill 1x128,16x128 \
    --steps 20 --json "$RESULTS/engine-tables.json" 2>&1 | tee "$RESULTS/engine-tables.txt"
fi

if want reference; then
  # Triton compiles and tunes fla's kernels for each new shape (minutes per batch size). Its cache
  # comes back as $OUT/triton-cache.tar.gz; put that file (or it recompressed as .tar.xz) in
  # .gpu-bundle/ and carry it, and the next run starts with the kernels built.
  # TRITON_CACHE_AUTOTUNING keeps the autotuner's choices in the cache too, not only the binaries.
  # REFERENCE_SECONDS bounds the stage, so the cache is packed even when the tuning runs long.
  export TRITON_CACHE_DIR=/tmp/hgrn2-triton-cache TRITON_CACHE_AUTOTUNING=1
  mkdir -p "$TRITON_CACHE_DIR"
  for cache in "$ROOT"/.gpu-bundle/triton-cache.tar.{gz,xz}; do  # xz: smaller to carry
    [[ -f $cache ]] && tar xf "$cache" -C "$TRITON_CACHE_DIR"
  done
  site=$(mktemp -d /tmp/fla-site.XXXXXX)
  if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "$WHEELS"/*.whl; then
    PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" timeout "${REFERENCE_SECONDS:-900}" \
      python3 "$ROOT/bench/serving/reference_fla.py" \
      --batches "${REFERENCE_BATCHES:-1,16,64,256}" --prompt "$PROMPT" --output "${REFERENCE_OUTPUT:-256}" \
      --json "$RESULTS/reference.json" 2>&1 | tee "$RESULTS/reference.txt"
  else
    echo "pip install of the fla wheels in $WHEELS failed" | tee "$RESULTS/reference.txt"
  fi
  tar czf "$OUT/triton-cache.tar.gz" -C "$TRITON_CACHE_DIR" .
fi

if want plot; then
  python3 "$ROOT/bench/serving/plot.py" "$RESULTS" "$OUT" 2>&1 | tee "$RESULTS/plot.txt"
fi
tar czf "$OUT/serving.tar.gz" -C "$OUT" serving
ls -l "$OUT"
