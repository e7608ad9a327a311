#!/usr/bin/env bash
# 1,024 concurrent streaming completions over HTTP against the CPU server (tiny-a), driven by
# hgrn2-loadgen --protocol openai: every one completes (none starved) with its exact token count,
# the server's threads do not grow with the streams (no thread per stream), and afterwards nothing
# is held (sequences, slots, streams, queue back to zero). Needs HGRN2_SERVER, HGRN2_CLI,
# HGRN2_LOADGEN and HGRN2_TEST_DATA_DIR.
set -uo pipefail
# shellcheck source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
loadgen=${HGRN2_LOADGEN:?}
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"
streams=${STREAMS:-1024}

http_port=$(free_port)
metrics_port=$(free_port)
if ! start_server "$scratch/server.log" --model "$data/tiny-a" --http-port "$http_port" \
  --metrics-port "$metrics_port" --max-running 256 --max-queued 4096 --health-check-interval 0; then
  check "hgrn2-server starts" 1
  finish
fi
threads() { awk '/^Threads:/ { print $2 }' "/proc/$server_pid/status"; }
before=$(threads)
# The most threads the server has while the load runs.
(
  most=0
  while kill -0 "$server_pid" 2>/dev/null && [[ ! -e $scratch/stop ]]; do
    n=$(threads)
    ((n > most)) && most=$n && echo "$most" >"$scratch/threads"
    sleep 0.05
  done
) &
sampler=$!

start=$SECONDS
"$loadgen" --protocol openai --addr "127.0.0.1:$http_port" --prompt-ids 4:16 --output-tokens 16 \
  --concurrency "$streams" --requests "$streams" --quiet --json "$scratch/load.json" \
  >"$scratch/load.txt" 2>&1
check "hgrn2-loadgen --protocol openai with $streams streams in flight: exit 0" $?
touch "$scratch/stop"
wait "$sampler"
echo "$streams streams in $((SECONDS - start)) s; server threads $before before, $(cat "$scratch/threads") at most"
cat "$scratch/load.txt"
python3 - "$scratch/load.json" "$streams" <<'PY'
import json, sys
r, n = json.load(open(sys.argv[1])), int(sys.argv[2])
assert r["errors"] == {} and r["requests"] == n and r["completed"] == n, r
assert r["generated_tokens"] == 16 * n, r  # ignore_eos: every stream got all its tokens
assert r["ttft_s"]["count"] == n and r["e2e_s"]["max"] < 120, r
PY
check "all $streams streams complete with 16 tokens each, none starved" $?
most=$(cat "$scratch/threads")
((most < before + 16))
check "the server's threads stay put ($before before, $most at most): no thread per stream" $?

scrape() { curl -sf "http://127.0.0.1:$metrics_port/metrics"; }
for _ in $(seq 100); do
  metrics=$(scrape)
  grep -q '^hgrn2_running_sequences{model_name="[^"]*"} 0$' <<<"$metrics" && grep -q '^hgrn2_state_slots_used{model_name="[^"]*"} 0$' <<<"$metrics" &&
    grep -q '^hgrn2_active_streams{model_name="[^"]*"} 0$' <<<"$metrics" && grep -q '^hgrn2_queue_depth{model_name="[^"]*"} 0$' <<<"$metrics" && break
  sleep 0.1
done
grep -q '^hgrn2_running_sequences{model_name="[^"]*"} 0$' <<<"$metrics" && grep -q '^hgrn2_state_slots_used{model_name="[^"]*"} 0$' <<<"$metrics" &&
  grep -q '^hgrn2_active_streams{model_name="[^"]*"} 0$' <<<"$metrics" && grep -q '^hgrn2_queue_depth{model_name="[^"]*"} 0$' <<<"$metrics"
check "afterwards nothing is held: no running sequence, slot, stream or queued request" $?
grep -q "^hgrn2_requests_total{code=\"OK\",model_name=\"[^\"]*\",rpc=\"POST /v1/completions\"} $streams\$" <<<"$metrics"
check "$streams calls counted OK" $?
finish
