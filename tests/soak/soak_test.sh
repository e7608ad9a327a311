#!/usr/bin/env bash
# The soak: hgrn2-server (CPU, the bundled demo model, sessions in memory before a dir) under
# SOAK_SECONDS (default 75) of mixed load from tests/soak/soak.py: generations, scores, tokenize,
# cancellations, deadlines, slow readers, malformed requests, garbage snapshot imports, session
# saves, resumes, exports and imports. It passes when no request got a code its kind does not
# allow, no request hung, the server is idle again afterwards (no running or queued sequence,
# state slot or stream left), resident memory after the warm-up (SOAK_WARMUP_FRACTION of the
# load, default the first third) stayed within SOAK_RSS_TOLERANCE (default 0.05), and every
# acknowledged session save loads with its token count, both on that server and on a new one
# started on the same folder after SIGTERM.
# Needs HGRN2_SERVER, HGRN2_CLI, HGRN2_TEST_DATA_DIR and HGRN2_PYTHON (a python with
# hgrn2_client: build/venv from scripts/install-python; missing: exit 77, skipped).
# SOAK_OUT: a folder for soak.json and the server's log (default: the scratch folder, removed).
# SOAK_ONLY: request kinds to send (soak.py load --only), e.g. to find which one grows memory.
set -uo pipefail
# shellcheck source=../server/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../server/common.sh"
driver=$(dirname "${BASH_SOURCE[0]}")/soak.py
python=${HGRN2_PYTHON:-python3}
if ! "$python" -c 'import hgrn2_client' 2>/dev/null; then
  echo "no hgrn2_client in $python (scripts/install-python makes build/venv): skipping"
  exit 77
fi
seconds=${SOAK_SECONDS:-75}
out=${SOAK_OUT:-$scratch}
mkdir -p "$out"
model=${SOAK_MODEL:-$data/../../models/hgrn2-demo}
# Small caches, so that they fill (and evict) within the warm-up: a cache still filling would look
# like growth. A prompt cache of 32 MiB holds ~80 states of the demo model, the session memory
# store 8 MiB ~20 snapshots; everything saved also goes to the dir store.
server_args=(--model "$model" --max-running 16 --prefix-cache-bytes $((32 << 20))
  --session-store "memory,dir" --session-memory-bytes $((8 << 20)) --session-dir "$scratch/sessions"
  --max-prompt-tokens 4096)

: >"$scratch/ledger.jsonl"
metrics_port=$(free_port)
start_server "$out/server.log" "${server_args[@]}" --metrics-port "$metrics_port" ||
  { check "hgrn2-server starts" 1; finish; }
echo "soak: $seconds s of load on $server_addr (pid $server_pid), the report in $out/soak.json"
"$python" "$driver" load --addr "$server_addr" --pid "$server_pid" \
  --metrics "http://127.0.0.1:$metrics_port/metrics" --duration "$seconds" \
  --rss-tolerance "${SOAK_RSS_TOLERANCE:-0.05}" --warmup-fraction "${SOAK_WARMUP_FRACTION:-0.333}" \
  --concurrency "${SOAK_CONCURRENCY:-8}" \
  --seed "${SOAK_SEED:-1}" --ledger "$scratch/ledger.jsonl" --json "$out/soak.json" \
  ${SOAK_ONLY:+--only "$SOAK_ONLY"}
check "the soak load passes its checks" $?
kill -0 "$server_pid" 2>/dev/null
check "the server is still running" $?

# The same folder in a new process: every acknowledged save is there (the memory store in front
# of it is gone with the old process).
kill -TERM "$server_pid"
wait_exit "$server_pid" 60
[[ $exit_code == 0 ]]
check "SIGTERM ends the server with status 0 (got $exit_code)" $?
start_server "$out/server2.log" "${server_args[@]}" --metrics-port 0 ||
  { check "hgrn2-server starts again on the same session folder" 1; finish; }
"$python" "$driver" verify --addr "$server_addr" --ledger "$scratch/ledger.jsonl" --exact 10 \
  --json "$out/verify.json" | grep -E "^(sessions|soak)"
check "every acknowledged session loads in the new process" "${PIPESTATUS[0]}"
finish
