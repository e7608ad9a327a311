# Shared by the server's process-level tests (sourced): checks, free ports, starting hgrn2-server
# and waiting for it to serve, and cleaning up every process a test started.
# Needs HGRN2_SERVER, HGRN2_CLI and HGRN2_TEST_DATA_DIR.
# shellcheck shell=bash disable=SC2034  # (variables used by the tests that source this)
server=${HGRN2_SERVER:?}
cli=${HGRN2_CLI:?}
data=${HGRN2_TEST_DATA_DIR:?}
failures=0
pids=()
scratch=$(mktemp -d)
cleanup() {
  local pid
  # SIGTERM first (an idle server exits at once), SIGKILL for whatever is left after 5 s.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    wait_exit "$pid" 5
    [[ $exit_code == timeout ]] && kill -KILL "$pid"
  done
  { wait; } 2>/dev/null
  rm -rf "$scratch"
}
trap cleanup EXIT

# check NAME STATUS. NAME must hold no command substitution: "$(...)" there runs before "$?" is
# expanded and would replace the status being checked.
check() {
  if [[ $2 -eq 0 ]]; then echo "ok: $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi
}
finish() {
  echo "$failures failed"
  exit $((failures > 0))
}

free_port() {  # a port nothing listens on now (the kernel's pick for a bind to port 0)
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server LOG [ARGS...]: starts hgrn2-server on 127.0.0.1, a port of its choosing, the CPU,
# no HTTP API unless ARGS give --http-port (tests run in parallel: no fixed port),
# and waits up to 120 s for its line "[time] hgrn2-server: serving MODEL on 127.0.0.1:PORT[, ...]"
# (logged once health is SERVING). Sets server_pid and server_addr; returns 1 (showing the log) if the
# server exited or never said so. ARGS come last, so they may override --port and the others.
start_server() {
  local log=$1 line i
  shift
  local http=(--http-port 0)
  [[ " $* " == *" --http-port "* ]] && http=()
  "$server" --host 127.0.0.1 --port 0 --device cpu "${http[@]}" "$@" 2>"$log" &
  server_pid=$!
  pids+=("$server_pid")
  server_addr=
  for ((i = 0; i < 1200; i++)); do
    line=$(grep -m1 -E 'hgrn2-server: serving .* on 127\.0\.0\.1:[0-9]+' "$log" 2>/dev/null)
    line=${line%%, metrics on *}
    if [[ $line =~ hgrn2-server:\ serving\ .*\ on\ 127\.0\.0\.1:([0-9]+) ]]; then
      server_addr=127.0.0.1:${BASH_REMATCH[1]}
      return 0
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "hgrn2-server did not start ($*); its log:" >&2
  cat "$log" >&2
  return 1
}

# wait_exit PID SECONDS: waits for a child of this shell to exit; sets exit_code to its exit
# status, or to "timeout". (Not in a "$(...)": a subshell cannot wait for its parent's children.)
wait_exit() {
  local pid=$1 deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then
    exit_code=timeout
  else
    wait "$pid"
    exit_code=$?
  fi
}
