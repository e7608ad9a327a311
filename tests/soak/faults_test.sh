#!/usr/bin/env bash
# Faults around hgrn2-server (CPU, the fixture model tiny-a), each checked over real gRPC:
#  1. kill -9 during session saves to the dir store, three times: after each restart every save
#     the server acknowledged is there with its token count and resumes exactly, no temp file is
#     left in the folder, and every session ListSessions shows loads.
#  2. The session folder full: a 1 MiB tmpfs (mount needs root; without it, the fallback is a
#     --session-dir-max-bytes cap smaller than one snapshot). Saves fail with RESOURCE_EXHAUSTED
#     and a message that says why, the session being overwritten keeps its old version,
#     generations without saves go on, and (tmpfs) once sessions are deleted saves work again.
#  3. Redis stopped, then restarted, while the server runs (sessions in Redis): session calls fail
#     with UNAVAILABLE naming Redis, generations go on, and after the restart sessions work again
#     without restarting the server, the saved ones still there. Redis paused (SIGSTOP): session
#     calls end with UNAVAILABLE within the store's timeout instead of hanging.
#  4. A model folder that cannot be read at start (missing, unreadable to the user, config.json a
#     folder or a FIFO, weights truncated or a FIFO): the server exits with status 2 and a message
#     naming the file, within seconds.
# Needs HGRN2_SERVER, HGRN2_CLI, HGRN2_TEST_DATA_DIR, HGRN2_PYTHON (a python with hgrn2_client;
# missing: exit 77) and, for part 3, redis-server.
# FAULTS_PARTS: the parts to run (default: all, by function name, below); FAULTS_DIR_FULL=cap: the
# fallback of part 2 even where mount works.
set -uo pipefail
# shellcheck source=../server/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../server/common.sh"
driver=$(dirname "${BASH_SOURCE[0]}")/soak.py
python=${HGRN2_PYTHON:-python3}
if ! "$python" -c 'import hgrn2_client' 2>/dev/null; then
  echo "no hgrn2_client in $python (scripts/install-python makes build/venv): skipping"
  exit 77
fi
tiny=$data/tiny-a
full=$scratch/full
trap 'umount -l "$full" 2>/dev/null; cleanup' EXIT

# gen ADDR ARGS...: hgrn2-cli generate --print-ids (greedy); stdout the ids, stderr to $err_file.
err_file=$scratch/cli.err
gen() {
  local addr=$1
  shift
  "$cli" --addr "$addr" generate --print-ids --temperature 0 --ignore-eos "$@" 2>"$err_file"
}
# lines FILE: complete lines in FILE (0 when there is none).
lines() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }

# --- 1: kill -9 during saves ----------------------------------------------------------------------
kill_during_saves() {
  sessions=$scratch/sessions
  ledger=$scratch/ledger.jsonl
  temps_seen=0
  for round in 1 2 3; do
    start_server "$scratch/kill$round.log" --model "$tiny" --metrics-port 0 --session-store dir \
      --session-dir "$sessions" || { check "hgrn2-server starts on the session folder" 1; finish; }
    "$python" "$driver" save-storm --addr "$server_addr" --ledger "$ledger" --concurrency 4 \
      --duration 300 --seed "$round" >"$scratch/storm$round.log" 2>&1 &
    storm=$!
    # Kill once this round has added a number of acknowledged saves that differs per round.
    want=$(($(lines "$ledger") + 20 * round + 7))
    for ((i = 0; i < 2400 && $(lines "$ledger") < want; i++)); do sleep 0.05; done
    kill -KILL "$server_pid"
    wait "$server_pid" 2>/dev/null
    temps_seen=$((temps_seen + $(find "$sessions" -name '.*.tmp' -type f | wc -l)))
    wait_exit "$storm" 60
    [[ $exit_code == 0 && $(lines "$ledger") -ge $want ]]
    check "round $round: saves acknowledged before kill -9 ($(lines "$ledger") in all)" $?
    start_server "$scratch/restart$round.log" --model "$tiny" --metrics-port 0 \
      --session-store dir --session-dir "$sessions" ||
      { check "hgrn2-server starts again after kill -9" 1; finish; }
    leftovers=$(find "$sessions" -name '.*.tmp' | wc -l)
    [[ $leftovers -eq 0 ]]
    check "round $round: no temp file in the folder after the restart ($leftovers)" $?
    "$python" "$driver" verify --addr "$server_addr" --ledger "$ledger" --exact 5 \
      --seed "$round" --json "$scratch/verify$round.json" >"$scratch/verify$round.log" 2>&1
    check "round $round: every acknowledged session intact, every listed one loads" $?
    grep -E '"(acknowledged|lost|damaged|listed|exact_checked)"' "$scratch/verify$round.json" |
      tr -d ' \n'
    echo
    kill -TERM "$server_pid"
    wait_exit "$server_pid" 30
  done
  echo "temp files of unfinished saves found right after the kills: $temps_seen"
}

# --- 2: the session folder full -----------------------------------------------------------------
folder_full() {
  mkdir -p "$full"
  if [[ ${FAULTS_DIR_FULL:-tmpfs} == tmpfs ]] &&
    mount -t tmpfs -o size=1m tmpfs "$full" 2>/dev/null; then
    mode=tmpfs
    store_args=(--session-dir "$full/sessions")
  else
    mode=cap
    store_args=(--session-dir "$full/sessions" --session-dir-max-bytes 20000)
  fi
  echo "session folder full: mode $mode"
  start_server "$scratch/full.log" --model "$tiny" --metrics-port 0 --session-store dir \
    "${store_args[@]}" || { check "hgrn2-server starts on the small folder" 1; finish; }
  if [[ $mode == tmpfs ]]; then
    kept=$(gen "$server_addr" --ids 5,6,7 --max-new-tokens 3 --save-session keep)
    check "a first save fits" $?
    saved=0
    for ((i = 0; i < 100; i++)); do
      gen "$server_addr" --ids 9,10 --max-new-tokens 2 --save-session "fill$i" >/dev/null || break
      saved=$((saved + 1))
    done
    full_error=$(cat "$err_file")
    [[ $i -lt 100 && $full_error == *RESOURCE_EXHAUSTED* &&
      $full_error == *"No space left on device"* ]]
    check "once $saved more are saved, a save fails: RESOURCE_EXHAUSTED naming ENOSPC ($full_error)" $?
  else
    gen "$server_addr" --ids 9,10 --max-new-tokens 2 --save-session big >/dev/null
    full_error=$(cat "$err_file")
    [[ $full_error == *RESOURCE_EXHAUSTED* && $full_error == *"larger than its cap"* ]]
    check "a snapshot over the cap: RESOURCE_EXHAUSTED with the reason ($full_error)" $?
  fi
  gen "$server_addr" --ids 1,2,3 --max-new-tokens 4 >/dev/null
  check "a generation without a save still works" $?
  leftovers=$(find "$full" -name '.*.tmp' | wc -l)
  [[ $leftovers -eq 0 ]]
  check "the failed saves left no temp file ($leftovers)" $?
  if [[ $mode == tmpfs ]]; then
    gen "$server_addr" --ids 8 --max-new-tokens 2 --session keep --save-session keep >/dev/null
    [[ $? -ne 0 && $(cat "$err_file") == *"No space left"* ]]
    check "overwriting a session on the full folder fails too" $?
    info=$("$cli" --addr "$server_addr" session info keep --json 2>&1)
    [[ $info == *'"num_tokens":"6"'* ]]
    check "and the session keeps its old version ($info)" $?
    resumed=$(gen "$server_addr" --ids 8 --max-new-tokens 5 --session keep)
    whole=$(gen "$server_addr" --ids "5,6,7,$kept,8" --max-new-tokens 5)
    [[ -n $resumed && $resumed == "$whole" ]]
    check "which resumes exactly ($resumed)" $?
    "$python" - "$server_addr" <<'PY'
import sys
from hgrn2_client import Client
with Client(sys.argv[1], timeout=30) as client:
    for s in client.list_sessions():
        if s.session_id.startswith("fill"):
            client.delete_session(s.session_id)
PY
    check "deleting the fill sessions" $?
    gen "$server_addr" --ids 8 --max-new-tokens 2 --session keep --save-session keep >/dev/null
    check "with space again, saves work ($(cat "$err_file"))" $?
  fi
  kill -TERM "$server_pid"
  wait_exit "$server_pid" 30
  [[ $mode == tmpfs ]] && umount "$full"
}

# --- 3: Redis stopped and restarted ---------------------------------------------------------------
redis_stopped() {
  if ! command -v redis-server >/dev/null; then
    echo "redis-server is not installed (scripts/install-deps installs it): skipping part 3"
  else
    redis_port=$(free_port)
    mkdir -p "$scratch/redis"
    start_redis() {
      redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$scratch/redis" --save '' \
        --appendonly no >>"$scratch/redis.log" 2>&1 &
      redis_pid=$!
      pids+=("$redis_pid")
      for ((i = 0; i < 200; i++)); do
        redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
      done
      return 1
    }
    start_redis
    check "redis-server starts" $?
    start_server "$scratch/redis-server.log" --model "$tiny" --metrics-port 0 \
      --session-store redis \
      --redis-url "redis://127.0.0.1:$redis_port" ||
      { check "hgrn2-server starts with Redis" 1; finish; }
    first=$(gen "$server_addr" --ids 5,6,7 --max-new-tokens 4 --save-session before)
    check "a save to Redis" $?
    # Stopped with a dump, so that the restarted Redis has what was saved.
    redis-cli -p "$redis_port" shutdown save >/dev/null 2>&1
    wait_exit "$redis_pid" 20
    gen "$server_addr" --ids 9 --max-new-tokens 2 --save-session during >/dev/null
    err=$(cat "$err_file")
    [[ $err == *UNAVAILABLE* && $err == *"127.0.0.1:$redis_port"* ]]
    check "Redis stopped: a save is UNAVAILABLE naming Redis ($err)" $?
    gen "$server_addr" --ids 9 --max-new-tokens 2 --session before >/dev/null
    err=$(cat "$err_file")
    [[ $err == *UNAVAILABLE* ]]
    check "and a resume too ($err)" $?
    err=$("$cli" --addr "$server_addr" session list 2>&1 >/dev/null)
    [[ $err == *UNAVAILABLE* ]]
    check "and a list ($err)" $?
    gen "$server_addr" --ids 1,2,3 --max-new-tokens 4 >/dev/null
    check "generations without sessions go on" $?
    start_redis
    check "redis-server starts again on the same port" $?
    resumed=$(gen "$server_addr" --ids 9 --max-new-tokens 5 --session before)
    whole=$(gen "$server_addr" --ids "5,6,7,$first,9" --max-new-tokens 5)
    [[ -n $resumed && $resumed == "$whole" ]]
    check "Redis back: the session saved before resumes exactly, same server" $?
    gen "$server_addr" --ids 9 --max-new-tokens 2 --save-session after >/dev/null
    check "and saves work again" $?
    # A Redis that accepts connections but does not answer.
    kill -STOP "$redis_pid"
    started=$SECONDS
    gen "$server_addr" --ids 9 --max-new-tokens 2 --save-session paused >/dev/null
    err=$(cat "$err_file")
    took=$((SECONDS - started))
    kill -CONT "$redis_pid"
    [[ $err == *UNAVAILABLE* && $err == *"no reply within 5s"* && $took -le 15 ]]
    check "Redis paused: a save ends UNAVAILABLE after ${took} s ($err)" $?
    gen "$server_addr" --ids 9 --max-new-tokens 2 --save-session resumed-redis >/dev/null
    check "and works once Redis answers again ($(cat "$err_file"))" $?
    kill -TERM "$server_pid"
    wait_exit "$server_pid" 30
  fi
}

# --- 4: a model folder that cannot be read at start -----------------------------------------------
unreadable_model() {
  # expect_start_failure NAME FOLDER PATTERN [RUNNER...]: the server exits 2 within 30 s, its
  # message matching PATTERN.
  expect_start_failure() {
    local name=$1 folder=$2 pattern=$3 log=$scratch/start-$1.log
    shift 3
    "$@" "$server" --model "$folder" --host 127.0.0.1 --port 0 --metrics-port 0 --http-port 0 --device cpu \
      2>"$log" &
    local pid=$!
    pids+=("$pid")
    wait_exit "$pid" 30
    [[ $exit_code == timeout ]] && kill -KILL "$pid"
    local message
    message=$(tr '\n' ' ' <"$log")
    [[ $exit_code == 2 && $message =~ $pattern ]]
    check "model $name: exit status 2 (got $exit_code), message: $message" $?
  }
  bad=$scratch/models
  mkdir -p "$bad"
  expect_start_failure missing "$bad/none" 'none: cannot open: No such file'
  cp -r "$tiny" "$bad/config-folder" && rm "$bad/config-folder/config.json" &&
    mkdir "$bad/config-folder/config.json"
  expect_start_failure config-folder "$bad/config-folder" 'config.json: cannot read: Is a directory'
  cp -r "$tiny" "$bad/truncated" && truncate -s 1000 "$bad/truncated/model.safetensors"
  expect_start_failure truncated "$bad/truncated" 'model.safetensors: .*truncated'
  cp -r "$tiny" "$bad/fifo" && rm "$bad/fifo/model.safetensors" &&
    mkfifo "$bad/fifo/model.safetensors"
  expect_start_failure fifo "$bad/fifo" 'model.safetensors: not a regular file'
  cp -r "$tiny" "$bad/config-fifo" && rm "$bad/config-fifo/config.json" &&
    mkfifo "$bad/config-fifo/config.json"
  expect_start_failure config-fifo "$bad/config-fifo" 'config.json: not a regular file'
  # Root reads anything; the unreadable folder needs another user.
  if [[ $(id -u) == 0 ]] && command -v setpriv >/dev/null; then
    chmod 755 "$scratch" "$bad"
    cp -r "$tiny" "$bad/unreadable" && chmod 000 "$bad/unreadable"
    expect_start_failure unreadable "$bad/unreadable" 'unreadable.*Permission denied' \
      setpriv --reuid=65534 --regid=65534 --clear-groups
    chmod 755 "$bad/unreadable"
  else
    echo "not root or no setpriv: skipping the unreadable folder"
  fi
}

parts=" ${FAULTS_PARTS:-kill_during_saves folder_full redis_stopped unreadable_model} "
if [[ $parts == *" kill_during_saves "* ]]; then kill_during_saves; fi
if [[ $parts == *" folder_full "* ]]; then folder_full; fi
if [[ $parts == *" redis_stopped "* ]]; then redis_stopped; fi
if [[ $parts == *" unreadable_model "* ]]; then unreadable_model; fi
finish
