#!/usr/bin/env bash
# Starts a real hgrn2-server (tiny model, CPU), makes one generation and one refused request so
# that the labelled families have series, scrapes /metrics, and checks that every hgrn2_* metric
# of the dashboard, the alerts and the adapter rules is in the scrape (check_metric_names.py).
# Needs HGRN2_SERVER, HGRN2_CLI and HGRN2_TEST_DATA_DIR (ctest sets them).
set -uo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=tools.sh
source "$here/tools.sh"
need_tools python
# shellcheck source=../server/common.sh
source "$here/../server/common.sh"

metrics_port=$(free_port)
if ! start_server "$scratch/server.log" --model "$data/tiny-a" --metrics-port "$metrics_port"; then
  check "hgrn2-server starts with --metrics-port $metrics_port" 1
  finish
fi
"$cli" --addr "$server_addr" generate --ids 1,2,3 --max-new-tokens 4 --print-ids >/dev/null
check "a generation through hgrn2-cli" $?
"$cli" --addr "$server_addr" generate --ids 1,2,3 --top-p 2 >/dev/null 2>&1
[[ $? -eq 1 ]]
check "a refused generation (INVALID_ARGUMENT) through hgrn2-cli" $?
curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$scratch/metrics.txt"
check "/metrics answers" $?
"$python" "$here/check_metric_names.py" "$scratch/metrics.txt"
check "check_metric_names.py: deploy/ uses only exported metrics" $?
finish
