#!/usr/bin/env bash
# A real Prometheus (Debian's /usr/bin/prometheus, or $PROMETHEUS) scrapes hgrn2-server's
# /metrics on loopback every second: the target is up, and after a few generations through
# hgrn2-cli the query API shows hgrn2_generated_tokens_total risen by exactly their tokens.
# Needs HGRN2_SERVER, HGRN2_CLI and HGRN2_TEST_DATA_DIR; exits 77 (skipped) without Prometheus.
set -uo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
prometheus=${PROMETHEUS:-/usr/bin/prometheus}
if [[ ! -x $prometheus ]]; then
  echo "skipped: no Prometheus at $prometheus (Debian package prometheus; scripts/install-deps)"
  exit 77
fi

metrics_port=$(free_port)
# The periodic health probe generates 2 tokens every 10 s, and hgrn2_generated_tokens_total counts
# them (as it counts the warm-up's); it is turned off so that the rise is exactly the requests'.
if ! start_server "$scratch/server.log" --model "$data/tiny-a" --metrics-port "$metrics_port" \
       --health-check-interval 0; then
  check "hgrn2-server starts with --metrics-port $metrics_port" 1
  finish
fi
c() { "$cli" --addr "$server_addr" "$@"; }
metrics=$(curl -sf "http://127.0.0.1:$metrics_port/metrics")
[[ $metrics == *"hgrn2_generated_tokens_total"* ]]
check "/metrics answers on --metrics-port and has hgrn2_generated_tokens_total" $?

# A second server on the same metrics port must fail to start, not share the port (with
# SO_REUSEPORT the kernel would hand it half of the scrapes).
timeout 120 "$server" --model "$data/tiny-a" --port 0 --http-port 0 --metrics-port "$metrics_port" \
  --health-check-interval 0 >"$scratch/second.log" 2>&1
second_rc=$?
[[ $second_rc != 0 && $second_rc != 124 ]] && grep -q "metrics: cannot listen on" "$scratch/second.log"
check "a second server on the same --metrics-port exits with 'metrics: cannot listen on'" $?

web_port=$(free_port)
cat >"$scratch/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: hgrn2
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ['127.0.0.1:$metrics_port']
EOF
"$prometheus" --config.file="$scratch/prometheus.yml" --storage.tsdb.path="$scratch/tsdb" \
  --web.listen-address="127.0.0.1:$web_port" --log.level=warn >"$scratch/prometheus.log" 2>&1 &
pids+=($!)
api=http://127.0.0.1:$web_port

# query PROMQL: the value of the first series of an instant query, or nothing.
query() {
  curl -sf --get "$api/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
result = json.load(sys.stdin)["data"]["result"]
print(result[0]["value"][1] if result else "")' 2>/dev/null
}
# wait_for PROMQL TEST SECONDS: polls until `TEST VALUE` holds (e.g. "-ge 48"); prints the value.
wait_for() {
  local value deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    value=$(query "$1")
    if [[ -n $value ]] && python3 -c "import sys; v = float(sys.argv[1]); sys.exit(not (v $2))" \
         "$value"; then
      echo "$value"
      return 0
    fi
    sleep 0.5
  done
  echo "${value:-none}"
  return 1
}

up=$(wait_for 'up{job="hgrn2"}' "== 1" 30)
check "Prometheus scrapes the server: up{job=\"hgrn2\"} is 1 ($up)" $?
targets=$(curl -sf "$api/api/v1/targets")
[[ $targets == *"\"scrapeUrl\":\"http://127.0.0.1:$metrics_port/metrics\""* && $targets == *'"health":"up"'* ]]
check "/api/v1/targets: the server's /metrics, health up" $?
before=$(wait_for 'hgrn2_generated_tokens_total' ">= 0" 30)
check "hgrn2_generated_tokens_total is scraped before any request ($before)" $?

# Three generations of 16 tokens each (EOS ignored, so exactly 16).
ok=0
for seed in 1 2 3; do
  c generate --ids 1,2,3 --max-new-tokens 16 --ignore-eos --seed $seed --print-ids >/dev/null \
    2>>"$scratch/cli.err" || ok=1
done
check "three generations through hgrn2-cli" $ok
want=$(python3 -c "print(float('$before') + 48)")
after=$(wait_for 'hgrn2_generated_tokens_total' ">= $want" 30)
check "Prometheus sees hgrn2_generated_tokens_total rise by 48 within 30 s ($before -> $after)" $?
python3 -c "import sys; sys.exit(float(sys.argv[1]) != float(sys.argv[2]))" "$after" "$want"
check "... by exactly 48 ($after)" $?
prompt_tokens=$(wait_for 'hgrn2_prompt_tokens_total' ">= 9" 10)
check "hgrn2_prompt_tokens_total counts the 3 x 3 prompt tokens ($prompt_tokens)" $?
requests=$(wait_for 'sum(hgrn2_requests_total{rpc=~".*Generate.*",code=~"OK|0"})' ">= 3" 10)
check "hgrn2_requests_total{rpc=~Generate, code OK} counts them ($requests)" $?
ttft=$(wait_for 'sum(hgrn2_time_to_first_token_seconds_count)' ">= 3" 10)
check "hgrn2_time_to_first_token_seconds histogram has 3 observations ($ttft)" $?
for name in hgrn2_inter_token_latency_seconds_count hgrn2_request_duration_seconds_count \
            hgrn2_queue_time_seconds_count hgrn2_decode_step_seconds_count \
            hgrn2_decode_batch_size_count hgrn2_prefill_tokens_per_step_count; do
  value=$(wait_for "sum($name)" "> 0" 10)
  check "$name > 0 ($value)" $?
done
for name in hgrn2_running_sequences hgrn2_queue_depth hgrn2_state_slots_used; do
  value=$(wait_for "$name" "== 0" 10)
  check "$name is 0 when idle ($value)" $?
done
value=$(wait_for 'hgrn2_state_slots_total' "> 0" 10)
check "hgrn2_state_slots_total > 0 ($value)" $?
value=$(wait_for 'count(hgrn2_state_slots_total{model_name="tiny-a"})' "== 1" 10)
check "the series carry the served model's name: model_name=\"tiny-a\" ($value)" $?

finish
