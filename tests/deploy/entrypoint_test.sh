#!/usr/bin/env bash
# The image's build and start, without Docker: deploy/docker/build.sh stages the already-built
# binaries as the runtime image lays them out (bin/, lib/ with the shared libraries found by ldd,
# models/hgrn2-demo), and the staged entrypoint maps HGRN2_* variables to flags, passes extra
# arguments through (an argument overrides its variable), and execs hgrn2-server: it serves the
# bundled model, health says SERVING, /metrics answers, and SIGTERM makes it exit 0.
# Needs HGRN2_SERVER, HGRN2_CLI, HGRN2_TEST_DATA_DIR and HGRN2_BUILD_DIR (ctest sets them).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../server/common.sh
source "$here/../server/common.sh"
root=$(cd "$here/../.." && pwd)
build_dir=${HGRN2_BUILD_DIR:?}

prefix=$scratch/opt/hgrn2
"$root/deploy/docker/build.sh" stage "$build_dir" "$prefix" >/dev/null
check "build.sh stage lays out the image's /opt/hgrn2" $?
for f in bin/hgrn2-server bin/hgrn2-cli bin/libhgrn2_sentencepiece.so bin/hgrn2-entrypoint \
         models/hgrn2-demo/config.json models/hgrn2-demo/model.safetensors; do
  [[ -s $prefix/$f ]]
  check "staged $f" $?
done
[[ -x $prefix/bin/hgrn2-entrypoint ]]
check "the staged entrypoint is executable" $?
# Every library the programs load, other than those the runtime base image has, comes from lib/.
outside=$(for b in hgrn2-server hgrn2-cli libhgrn2_sentencepiece.so; do
  LD_LIBRARY_PATH=$prefix/lib ldd "$prefix/bin/$b"
done | awk '/=> \//{print $3}' | grep -v "^$prefix/lib/" | xargs -r -n1 basename | sort -u |
  grep -vE '^(libc|libm|libstdc\+\+|libgcc_s|ld-linux.*|libpthread|libdl|librt|libcuda|libcudart|libcublas.*)\.so' || true)
[[ -z $outside ]]
check "lib/ holds every shared library beyond the base image's (outside: ${outside//$'\n'/ })" $?
libs=("$prefix"/lib/*.so*)
compgen -G "$prefix/lib/libgrpc++.so*" >/dev/null
check "lib/ has gRPC (${#libs[@]} libraries)" $?

entrypoint=$prefix/bin/hgrn2-entrypoint
# The mapping, printed instead of run: every variable, in the entrypoint's order.
got=$(env -i PATH="$PATH" HGRN2_ENTRYPOINT_DRY_RUN=1 HGRN2_MODEL=/models/m HGRN2_HOST=0.0.0.0 \
  HGRN2_PORT=50051 HGRN2_METRICS_PORT=9400 HGRN2_METRICS_HOST=127.0.0.1 HGRN2_DEVICE=cuda \
  HGRN2_DTYPE=bf16 HGRN2_STATE_DTYPE=f32 HGRN2_MAX_RUNNING=64 HGRN2_NUM_SLOTS=80 HGRN2_MAX_QUEUED=1024 \
  HGRN2_PREFILL_TOKEN_BUDGET=512 HGRN2_SWAP_SLOTS=16 HGRN2_MAX_PROMPT_TOKENS=16384 \
  HGRN2_MAX_NEW_TOKENS=4096 HGRN2_DEFAULT_MAX_NEW_TOKENS=256 HGRN2_DRAIN_TIMEOUT=30 \
  HGRN2_HEALTH_CHECK_INTERVAL=10 HGRN2_STREAM_THREADS=2 HGRN2_SESSION_STORE=memory,redis \
  HGRN2_SESSION_DIR=/var/lib/hgrn2/sessions HGRN2_REDIS_URL=redis://hgrn2-redis:6379 \
  HGRN2_SESSION_TTL=3600 HGRN2_TLS_CERT=/etc/hgrn2/tls/tls.crt HGRN2_TLS_KEY=/etc/hgrn2/tls/tls.key \
  HGRN2_TLS_CLIENT_CA=/etc/hgrn2/tls/ca.crt HGRN2_API_KEYS=/etc/hgrn2/api-keys/api-keys.json \
  "$entrypoint" --swap-slots=0 --stream-threads 4 | tr '\n' ' ')
want="$prefix/bin/hgrn2-server --model /models/m --host 0.0.0.0 --port 50051 --metrics-port 9400 \
--metrics-host 127.0.0.1 --device cuda --dtype bf16 --state-dtype f32 --max-running 64 --num-slots 80 \
--max-queued 1024 --prefill-token-budget 512 --max-prompt-tokens 16384 --max-new-tokens 4096 \
--default-max-new-tokens 256 --drain-timeout 30 --health-check-interval 10 \
--session-store memory,redis --session-dir /var/lib/hgrn2/sessions --redis-url redis://hgrn2-redis:6379 \
--session-ttl 3600 --tls-cert /etc/hgrn2/tls/tls.crt --tls-key /etc/hgrn2/tls/tls.key \
--tls-client-ca /etc/hgrn2/tls/ca.crt --api-keys /etc/hgrn2/api-keys/api-keys.json --swap-slots=0 \
--stream-threads 4 "
[[ $got == "$want" ]]
check "every HGRN2_* variable becomes its flag; arguments replace theirs (--swap-slots=0, --stream-threads 4)" $?
[[ $got == "$want" ]] || printf 'got:  %s\nwant: %s\n' "$got" "$want"
got=$(env -i PATH="$PATH" HGRN2_ENTRYPOINT_DRY_RUN=1 HGRN2_PORT= "$entrypoint" | tr '\n' ' ')
[[ $got == "$prefix/bin/hgrn2-server --model $prefix/models/hgrn2-demo " ]]
check "unset and empty variables pass no flag; the bundled model is the default ($got)" $?
[[ $("$entrypoint" echo a command) == "a command" ]]
check "a first argument that is not a flag runs that command" $?

# For real: the staged server, its libraries from lib/ only where the base image lacks them.
port=$(free_port)
metrics_port=$(free_port)
LD_LIBRARY_PATH=$prefix/lib HGRN2_HOST=127.0.0.1 HGRN2_PORT=$port HGRN2_METRICS_PORT=$metrics_port \
  HGRN2_DEVICE=cpu HGRN2_HEALTH_CHECK_INTERVAL=0 HGRN2_DRAIN_TIMEOUT=5 \
  "$entrypoint" --max-running 3 2>"$scratch/server.log" &
pid=$!
pids+=("$pid")
cli_staged() { LD_LIBRARY_PATH=$prefix/lib "$prefix/bin/hgrn2-cli" --addr "127.0.0.1:$port" --timeout 2 "$@"; }
status=1
for ((i = 0; i < 600; i++)); do
  if cli_staged health >/dev/null 2>&1; then status=0; break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
check "the entrypoint starts hgrn2-server and its health says SERVING (staged hgrn2-cli health)" $status
((status == 0)) || cat "$scratch/server.log"
[[ $(readlink "/proc/$pid/exe") == "$prefix/bin/hgrn2-server" ]]
check "the entrypoint's process is the server itself (exec: SIGTERM reaches it)" $?
info=$(cli_staged info --json 2>&1)
[[ $info == *hgrn2-demo* ]]
check "it serves the bundled model from models/hgrn2-demo" $?
[[ $info == *'"max_running":3'* ]]
check "the extra argument --max-running 3 reached the server (info: max running 3)" $?
# The page is read whole first: `curl | grep -q` under pipefail fails when grep stops early.
metrics=$(curl -sf "http://127.0.0.1:$metrics_port/metrics")
grep -q '^hgrn2_serving 1' <<<"$metrics"
check "HGRN2_METRICS_PORT: /metrics answers with hgrn2_serving 1" $?
out=$(cli_staged generate "Once upon a time" --max-new-tokens 4 --temperature 0 2>/dev/null)
[[ -n $out ]]
check "a generation through the staged server and client ($out)" $?
kill -TERM "$pid"
wait_exit "$pid" 20
[[ $exit_code == 0 ]]
check "SIGTERM: the server drains and exits 0 (exit: $exit_code)" $?
finish
