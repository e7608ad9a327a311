#!/usr/bin/env bash
# hgrn2-server's configuration as operators write it: every flag from its HGRN2_* variable (the
# server started from variables alone), a --config file (TOML; also named by HGRN2_CONFIG), the
# order flag > variable > file, --help naming the variables, and the mistakes that stop it (a
# misspelt key, a missing config file, a bad value) with exit 2 and one line saying what.
# Also --log-format json and --served-model-name as the logs and metrics show them.
# Needs HGRN2_SERVER, HGRN2_CLI and HGRN2_TEST_DATA_DIR.
set -uo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tiny=$data/tiny-a

# start LOG COMMAND...: runs COMMAND (the server, perhaps under env) and waits for its serving
# line; sets server_pid (env execs, so it is the server's) and server_addr.
start() {
  local log=$1 line i
  shift
  "$@" 2>"$log" &
  server_pid=$!
  pids+=("$server_pid")
  server_addr=
  for ((i = 0; i < 1200; i++)); do
    line=$(grep -m1 -oE 'serving [^,"]* on 127\.0\.0\.1:[0-9]+' "$log" 2>/dev/null)
    if [[ $line =~ 127\.0\.0\.1:([0-9]+)$ ]]; then
      server_addr=127.0.0.1:${BASH_REMATCH[1]}
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "hgrn2-server did not start ($*); its log:" >&2
  cat "$log" >&2
  return 1
}
stop() {
  kill -TERM "$server_pid"
  wait_exit "$server_pid" 10
}
max_running() {  # the server's --max-running, as GetModelInfo reports it
  "$cli" --addr "$server_addr" --timeout 5 info --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["limits"]["max_running"])'
}
# Every variable the tests below use, unset first (a developer's shell may have some).
unset HGRN2_CONFIG HGRN2_MODEL HGRN2_HOST HGRN2_PORT HGRN2_DEVICE HGRN2_METRICS_PORT \
  HGRN2_MAX_RUNNING HGRN2_SERVED_MODEL_NAME HGRN2_LOG_FORMAT HGRN2_HEALTH_CHECK_INTERVAL

# --- --help names each flag's variable --------------------------------------------------------------
help=$("$server" --help)
[[ $help == *HGRN2_MAX_RUNNING* && $help == *HGRN2_TLS_CLIENT_CA* && $help == *HGRN2_CONFIG* &&
   $help == *HGRN2_PREFIX_CACHE_BYTES* && $help == *HGRN2_LOG_FORMAT* ]]
check "--help names the variables (HGRN2_MAX_RUNNING, HGRN2_TLS_CLIENT_CA, HGRN2_CONFIG, ...)" $?
flags=$(grep -oE '^ +--[a-z0-9-]+' <<<"$help" | grep -vc -- '--help')
variables=$(grep -oE 'Env:HGRN2_[A-Z0-9_]+' <<<"$help" | sort -u | wc -l)
((flags > 40 && flags == variables))
check "every one of the $flags flags has its variable in --help ($variables)" $?

# --- from variables alone ---------------------------------------------------------------------------
metrics_port=$(free_port)
# Nothing but PATH and the HGRN2_* variables, and the sanitizers' settings when a sanitizer build
# runs this (their suppressions and report files: scripts/test-sanitizers).
sanitizer_settings=()
for name in ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS TSAN_OPTIONS; do
  [[ -n ${!name:-} ]] && sanitizer_settings+=("$name=${!name}")
done
start "$scratch/env.log" env -i PATH="$PATH" "${sanitizer_settings[@]}" HGRN2_MODEL="$tiny" \
  HGRN2_HOST=127.0.0.1 HGRN2_PORT=0 \
  HGRN2_DEVICE=cpu HGRN2_METRICS_PORT="$metrics_port" HGRN2_MAX_RUNNING=3 \
  HGRN2_SERVED_MODEL_NAME=from-env HGRN2_LOG_FORMAT=json HGRN2_HEALTH_CHECK_INTERVAL=0 "$server"
[[ $server_addr == 127.0.0.1:* && $("$cli" --addr "$server_addr" --timeout 5 health) == SERVING ]]
check "started from HGRN2_* variables alone (no argument): SERVING at $server_addr" $?
[[ $(max_running) == 3 ]]
check "HGRN2_MAX_RUNNING=3 reached the engine" $?
scrape=$(curl -sf "http://127.0.0.1:$metrics_port/metrics")
grep -q '^hgrn2_serving{model_name="from-env"} 1' <<<"$scrape"
check "HGRN2_METRICS_PORT serves /metrics; HGRN2_SERVED_MODEL_NAME labels it (model_name=\"from-env\")" $?
unlabelled=$(grep -E '^hgrn2_' <<<"$scrape" | grep -vc 'model_name="from-env"')
[[ $unlabelled == 0 ]]
check "every hgrn2_ series carries model_name ($unlabelled without)" $?
python3 - "$scratch/env.log" <<'EOF'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
assert records, "no log lines"
for record in records:
    assert list(record)[:3] == ["time", "level", "message"], record
    assert record["time"].endswith("Z") and "T" in record["time"], record
    assert record["level"] in ("debug", "info", "warning", "error"), record
serving = [r for r in records if r["message"].startswith("serving ")]
assert len(serving) == 1 and serving[0]["model_name"] == "from-env", serving
assert serving[0]["address"].startswith("127.0.0.1:"), serving
EOF
check "HGRN2_LOG_FORMAT=json: every line is one JSON object (time, level, message, fields)" $?
stop
[[ $exit_code == 0 ]]
check "... and it drains and exits 0 on SIGTERM ($exit_code)" $?

# --- a config file, under variables and flags -------------------------------------------------------
cat >"$scratch/hgrn2.toml" <<EOF
# hgrn2-server flags without their dashes
model = "$tiny"
host = "127.0.0.1"
port = 0
device = "cpu"
metrics-port = 0
max-running = 4
served-model-name = "from-file"
health-check-interval = 0
EOF
start "$scratch/file.log" "$server" --config "$scratch/hgrn2.toml" &&
  [[ $(max_running) == 4 ]]
check "--config FILE: the server runs with the file's values (max-running = 4)" $?
grep -q 'model_name=from-file' "$scratch/file.log"
check "... the file's served-model-name too (text log: model_name=from-file)" $?
stop
start "$scratch/file-env.log" env HGRN2_MAX_RUNNING=5 "$server" --config "$scratch/hgrn2.toml" &&
  [[ $(max_running) == 5 ]]
check "a variable overrides the file (HGRN2_MAX_RUNNING=5 over max-running = 4)" $?
stop
start "$scratch/all.log" env HGRN2_CONFIG="$scratch/hgrn2.toml" HGRN2_MAX_RUNNING=5 "$server" \
  --max-running 6 &&
  [[ $(max_running) == 6 ]]
check "a flag overrides its variable and the file (--max-running 6; the file from HGRN2_CONFIG)" $?
grep -q 'model_name=from-file' "$scratch/all.log"
check "... and HGRN2_CONFIG named the file" $?
stop

# --- mistakes stop it at once, exit 2, one line -----------------------------------------------------
echo 'max-runing = 4' >"$scratch/typo.toml"
err=$("$server" --config "$scratch/typo.toml" 2>&1 >/dev/null); code=$?
[[ $code == 2 && $(wc -l <<<"$err") == 1 && $err == *max-runing* ]]
check "a misspelt key in the file: exit 2 naming it ($code: $err)" $?
err=$(HGRN2_CONFIG=$scratch/missing.toml "$server" 2>&1 >/dev/null); code=$?
[[ $code == 2 && $err == *"HGRN2_CONFIG=$scratch/missing.toml: no such file"* ]]
check "HGRN2_CONFIG naming no file: exit 2 ($code: $err)" $?
err=$("$server" --config "$scratch/missing.toml" 2>&1 >/dev/null); code=$?
[[ $code == 2 && $err == *missing.toml* ]]
check "--config naming no file: exit 2 ($code: $err)" $?
err=$(HGRN2_MAX_RUNNING=many "$server" 2>&1 >/dev/null); code=$?
[[ $code == 2 && $(wc -l <<<"$err") == 1 && $err == *max-running* && $err == *many* ]]
check "a bad value in a variable: exit 2 naming the flag and value ($code: $err)" $?
err=$(HGRN2_LOG_FORMAT=xml "$server" 2>&1 >/dev/null); code=$?
[[ $code == 2 && $err == *log-format* && $err == *xml* ]]
check "HGRN2_LOG_FORMAT=xml: exit 2 ($code: $err)" $?
finish
