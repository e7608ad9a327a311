#!/usr/bin/env bash
# SIGTERM drains hgrn2-server: while a long generation streams, health turns NOT_SERVING and new
# calls are refused (UNAVAILABLE), the generation completes in full, and the server exits 0; with
# --drain-timeout 1 the stream is cut off and the server still exits 0 within the timeout plus a
# margin; a SIGTERM while the model still loads ends the process at once, without serving. Needs
# HGRN2_SERVER, HGRN2_CLI and HGRN2_TEST_DATA_DIR.
set -uo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tiny=$data/tiny-a
long=20000  # about 6 s alone on one core of a 2023 machine; run 2 asks for 10x as many

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$@"; }

# start_generation TOKENS NAME: a greedy generation in the background, its ids to NAME.out and its
# summary or error to NAME.err; returns once the first ids arrived. Sets client.
start_generation() {
  "$cli" --addr "$server_addr" generate --ids 1,2,3 --max-new-tokens "$1" --ignore-eos \
    --temperature 0 --print-ids >"$scratch/$2.out" 2>"$scratch/$2.err" &
  client=$!
  pids+=("$client")
  local i
  for ((i = 0; i < 200; i++)); do [[ -s $scratch/$2.out ]] && return 0; sleep 0.05; done
  return 1
}

# --- 1: a drain that waits for the generation ---------------------------------------------------
if ! start_server "$scratch/server1.log" --model "$tiny" --metrics-port 0 --max-new-tokens 1000000 \
       --drain-timeout 60; then
  check "hgrn2-server starts" 1
  finish
fi
start_generation "$long" long1; check "a $long-token generation streams" $?
kill -TERM "$server_pid"
term_at=$(now)
sleep 0.3
kill -0 "$client" 2>/dev/null
check "the generation still streams after SIGTERM (else make it longer than $long tokens)" $?
out=$("$cli" --addr "$server_addr" health 2>"$scratch/health.err"); code=$?
err=$(cat "$scratch/health.err")
[[ $code -eq 1 && ($out == NOT_SERVING || $err == "hgrn2-cli: UNAVAILABLE: "*) ]]
check "health while draining: NOT_SERVING or UNAVAILABLE, exit 1 ($code: $out$err)" $?
err=$("$cli" --addr "$server_addr" generate --ids 1,2 --max-new-tokens 4 2>&1 >/dev/null); code=$?
[[ $code -eq 1 && $err == "hgrn2-cli: UNAVAILABLE: "* ]]
check "a new generate while draining: UNAVAILABLE, exit 1 ($code: $err)" $?
kill -0 "$client" 2>/dev/null
check "... while the first one still streams" $?

wait_exit "$client" 120
ids=$(tr , '\n' <"$scratch/long1.out" | grep -c .)
summary=$(cat "$scratch/long1.err")
[[ $exit_code == 0 && $ids -eq $long && $summary == "[finish: length, 3 prompt + $long generated tokens"* ]]
check "the in-flight generation completes in full: $ids ids, exit $exit_code ($summary)" $?
wait_exit "$server_pid" 30
took=$(elapsed "$term_at" "$(now)")
[[ $exit_code == 0 ]]; check "the server exits 0 after the drain ($exit_code, $took s after SIGTERM)" $?

# --- 2: a drain cut short by --drain-timeout 1 ------------------------------------------------------
if ! start_server "$scratch/server2.log" --model "$tiny" --metrics-port 0 --max-new-tokens 1000000 \
       --drain-timeout 1; then
  check "hgrn2-server starts with --drain-timeout 1" 1
  finish
fi
start_generation $((10 * long)) long2; check "a $((10 * long))-token generation streams" $?
kill -TERM "$server_pid"
term_at=$(now)
wait_exit "$server_pid" 10
took=$(elapsed "$term_at" "$(now)")
python3 -c "import sys; sys.exit(not float(sys.argv[1]) < 4)" "$took"
[[ $? -eq 0 && $exit_code == 0 ]]
check "with --drain-timeout 1 the server exits 0 within 1 s + 3 s of margin ($exit_code after $took s)" $?
wait_exit "$client" 10
code=$exit_code
ids=$(tr , '\n' <"$scratch/long2.out" | grep -c .)
err=$(cat "$scratch/long2.err")
[[ $code == 1 && $ids -lt $((10 * long)) && $err =~ ^hgrn2-cli:\ (UNAVAILABLE|CANCELLED|ABORTED): ]]
check "the cut-off stream ends with an error after $ids ids, exit $code ($err)" $?

# --- 3: SIGTERM while the model loads ends the process without serving ----------------------------
# Random weights of the 370M shape take seconds to make on the CPU: the signal comes meanwhile.
"$server" --host 127.0.0.1 --port 0 --device cpu --metrics-port 0 --http-port 0 --preset 370m \
  --health-check-interval 0 2>"$scratch/server3.log" &
server_pid=$!
pids+=("$server_pid")
sleep 1
grep -q "hgrn2-server: serving" "$scratch/server3.log"
serving_before=$?
kill -TERM "$server_pid"
term_at=$(now)
wait_exit "$server_pid" 10
took=$(elapsed "$term_at" "$(now)")
[[ $serving_before -ne 0 ]]
check "the 370M preset is still loading 1 s after start (else this part tests nothing)" $?
[[ $exit_code == 143 ]] && grep -q "got Terminated while starting: exiting without serving" \
  "$scratch/server3.log" && ! grep -q "hgrn2-server: serving" "$scratch/server3.log"
check "SIGTERM while loading: exit 143 after $took s ($exit_code), logged, never serving" $?

finish
