#!/usr/bin/env bash
# Sessions across server processes, driven by hgrn2-cli: a session saved with the dir store
# survives `kill -9` of the server and resumes exactly in a new process; exported from one server
# and imported into another it resumes exactly there; two servers sharing one real redis-server
# resume each other's sessions; a corrupted snapshot file is refused and stores nothing.
# "Exactly" means: the continuation equals one request on the whole history. Needs
# HGRN2_SERVER, HGRN2_CLI and HGRN2_TEST_DATA_DIR (and redis-server on PATH for part 4).
set -uo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tiny=$data/tiny-a
a=5,17,301,44,9,120,77
b=300,2,18,41
sampling=(--temperature 0.9 --top-k 50 --seed 4242 --ignore-eos)

# generate ADDR ARGS...: the generated ids (comma-separated) on stdout.
generate() {
  local addr=$1
  shift
  "$cli" --addr "$addr" generate --print-ids "${sampling[@]}" "$@" 2>>"$scratch/cli.err"
}

# --- 1: the dir store across kill -9 --------------------------------------------------------------
dir=$scratch/sessions
start_server "$scratch/s1.log" --model "$tiny" --metrics-port 0 --session-store dir \
  --session-dir "$dir" || { check "hgrn2-server starts with the dir store" 1; finish; }
first=$(generate "$server_addr" --ids "$a" --max-new-tokens 9 --save-session chat)
check "generate and save" $?
kill -KILL "$server_pid"
wait "$server_pid" 2>/dev/null
start_server "$scratch/s2.log" --model "$tiny" --metrics-port 0 --session-store dir \
  --session-dir "$dir" || { check "hgrn2-server starts again on the same dir" 1; finish; }
resumed=$(generate "$server_addr" --ids "$b" --max-new-tokens 11 --session chat)
check "resume after kill -9" $?
whole=$(generate "$server_addr" --ids "$a,$first,$b" --max-new-tokens 11)
[[ -n $resumed && $resumed == "$whole" ]]
check "the resumed tokens equal one request on the whole history ($resumed)" $?
info=$("$cli" --addr "$server_addr" session info chat --json)
[[ $info == *'"num_tokens":"16"'* ]]
check "the session holds 16 tokens ($info)" $?
dir_addr=$server_addr

# --- 2: export from one server, import into another -----------------------------------------------
"$cli" --addr "$dir_addr" session export chat "$scratch/chat.hgrn2s" 2>>"$scratch/cli.err"
check "export to a file" $?
start_server "$scratch/s3.log" --model "$tiny" --metrics-port 0 --session-store memory ||
  { check "a second hgrn2-server starts" 1; finish; }
other_addr=$server_addr
"$cli" --addr "$other_addr" session import moved "$scratch/chat.hgrn2s" >/dev/null 2>>"$scratch/cli.err"
check "import into another server" $?
there=$(generate "$other_addr" --ids "$b" --max-new-tokens 11 --session moved)
[[ -n $there && $there == "$whole" ]]
check "the imported session resumes exactly ($there)" $?
"$cli" --addr "$other_addr" session list | grep -q '^moved'
check "session list shows it" $?

# A flipped byte in the file: refused, nothing stored.
python3 - "$scratch/chat.hgrn2s" "$scratch/bad.hgrn2s" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
data[len(data) // 2] ^= 0x10
open(sys.argv[2], "wb").write(data)
PY
err=$("$cli" --addr "$other_addr" session import bad "$scratch/bad.hgrn2s" 2>&1 >/dev/null)
code=$?
[[ $code -eq 1 && $err == *checksum* ]]
check "a flipped byte is refused ($err)" $?
"$cli" --addr "$other_addr" session info bad >/dev/null 2>&1
[[ $? -eq 1 ]]
check "and nothing was stored" $?
"$cli" --addr "$other_addr" session delete moved
check "delete" $?
err=$("$cli" --addr "$other_addr" generate --ids 1 --session moved 2>&1 >/dev/null)
[[ $err == *NOT_FOUND* ]]
check "a deleted session is NOT_FOUND ($err)" $?

# --- 3: two servers sharing one Redis -----------------------------------------------------------
if ! command -v redis-server >/dev/null; then
  echo "redis-server is not installed (scripts/install-deps installs it): skipping part 3"
  finish
fi
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  >"$scratch/redis.log" 2>&1 &
pids+=($!)
for ((i = 0; i < 100; i++)); do
  redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
  sleep 0.05
done
redis_url=redis://127.0.0.1:$redis_port
start_server "$scratch/r1.log" --model "$tiny" --metrics-port 0 --session-store redis \
  --redis-url "$redis_url" || { check "hgrn2-server starts with Redis" 1; finish; }
r1=$server_addr
start_server "$scratch/r2.log" --model "$tiny" --metrics-port 0 --session-store redis \
  --redis-url "$redis_url" || { check "a second hgrn2-server starts with Redis" 1; finish; }
r2=$server_addr
one=$(generate "$r1" --ids "$a" --max-new-tokens 9 --save-session shared)
two=$(generate "$r2" --ids "$b" --max-new-tokens 11 --session shared --save-session shared)
[[ -n $two && $two == "$whole" ]]
check "saved on one replica, resumed exactly on the other ($two)" $?
three=$(generate "$r1" --ids 7 --max-new-tokens 5 --session shared)
want=$(generate "$r1" --ids "$a,$one,$b,$two,7" --max-new-tokens 5)
[[ -n $three && $three == "$want" ]]
check "and back on the first, its latest version ($three)" $?
finish
