#!/usr/bin/env bash
# The image's /opt/hgrn2 without building an image (the image itself: scripts/build-image and
# tests/deploy/image_test.sh): scripts/stage-image lays out the already-built binaries as the
# Dockerfile does (bin/, lib/ with the shared libraries found by ldd, models/hgrn2-demo), and the
# staged server, started as the image starts it (its working directory, HGRN2_* variables and no
# argument), serves the bundled model: health says SERVING, /metrics answers, a generation runs, and
# SIGTERM makes it exit 0.
# Needs HGRN2_SERVER, HGRN2_CLI, HGRN2_TEST_DATA_DIR and HGRN2_BUILD_DIR (ctest sets them).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../server/common.sh
source "$here/../server/common.sh"
root=$(cd "$here/../.." && pwd)
build_dir=${HGRN2_BUILD_DIR:?}

# The dev build has the CUDA backend where nvcc was found: stage it as the cuda image would.
kind=cpu
# (ldd read whole first: `ldd | grep -q` fails under pipefail when grep stops early.)
[[ $(ldd "$build_dir/bin/hgrn2-server") == *libcudart* ]] && kind=cuda
prefix=$scratch/opt/hgrn2
"$root/scripts/stage-image" "$build_dir" "$prefix" "$kind" >/dev/null
check "scripts/stage-image lays out the image's /opt/hgrn2 ($kind)" $?
for f in bin/hgrn2-server bin/hgrn2-cli bin/libhgrn2_sentencepiece.so \
         models/hgrn2-demo/config.json models/hgrn2-demo/model.safetensors; do
  [[ -s $prefix/$f ]]
  check "staged $f" $?
done
# Every library the programs load, other than those Debian slim has (and the driver), is in lib/.
outside=$(for b in hgrn2-server hgrn2-cli libhgrn2_sentencepiece.so; do
  LD_LIBRARY_PATH=$prefix/lib ldd "$prefix/bin/$b"
done | awk '/=> \//{print $3}' | grep -v "^$prefix/lib/" | xargs -r -n1 basename | sort -u |
  grep -vE '^(libc|libm|libstdc\+\+|libgcc_s|ld-linux.*|libpthread|libdl|librt|libcuda)\.so' || true)
[[ -z $outside ]]
check "lib/ holds every shared library beyond the base image's (outside: ${outside//$'\n'/ })" $?
libs=("$prefix"/lib/*.so*)
compgen -G "$prefix/lib/libgrpc++.so*" >/dev/null
check "lib/ has gRPC (${#libs[@]} libraries)" $?
"$root/scripts/stage-image" "$build_dir" "$scratch/x" 2>/dev/null
[[ $? == 2 ]]
check "scripts/stage-image without a kind: usage, exit 2" $?

# As the image starts it: in /opt/hgrn2, configured by variables alone.
port=$(free_port)
metrics_port=$(free_port)
http_port=$(free_port)
(cd "$prefix" && exec env -i PATH="$PATH" LD_LIBRARY_PATH="$prefix/lib" HGRN2_HOST=127.0.0.1 \
  HGRN2_PORT="$port" HGRN2_METRICS_PORT="$metrics_port" HGRN2_HTTP_PORT="$http_port" HGRN2_DEVICE=cpu \
  HGRN2_HEALTH_CHECK_INTERVAL=0 HGRN2_DRAIN_TIMEOUT=5 HGRN2_MAX_RUNNING=3 \
  "$prefix/bin/hgrn2-server") 2>"$scratch/server.log" &
pid=$!
pids+=("$pid")
cli_staged() { LD_LIBRARY_PATH=$prefix/lib "$prefix/bin/hgrn2-cli" --addr "127.0.0.1:$port" --timeout 2 "$@"; }
status=1
for ((i = 0; i < 600; i++)); do
  if cli_staged health >/dev/null 2>&1; then status=0; break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
check "the staged hgrn2-server starts from HGRN2_* variables alone; staged hgrn2-cli health: SERVING" $status
((status == 0)) || cat "$scratch/server.log"
info=$(cli_staged info --json 2>&1)
[[ $info == *'"model_path":"models/hgrn2-demo"'* ]]
check "it serves the bundled model, models/hgrn2-demo under its working directory" $?
[[ $info == *'"max_running":3'* ]]
check "HGRN2_MAX_RUNNING=3 reached the server (info: max running 3)" $?
# The page is read whole first: `curl | grep -q` under pipefail fails when grep stops early.
metrics=$(curl -sf "http://127.0.0.1:$metrics_port/metrics")
grep -q '^hgrn2_serving{model_name="hgrn2-demo"} 1' <<<"$metrics"
check "HGRN2_METRICS_PORT: /metrics answers with hgrn2_serving{model_name=\"hgrn2-demo\"} 1" $?
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/health") == 200 ]]
check "HGRN2_HTTP_PORT: the OpenAI-compatible API's /health answers 200" $?
out=$(cli_staged generate "Once upon a time" --max-new-tokens 4 --temperature 0 2>/dev/null)
[[ -n $out ]]
check "a generation through the staged server and client ($out)" $?
kill -TERM "$pid"
wait_exit "$pid" 20
[[ $exit_code == 0 ]]
check "SIGTERM: the server drains and exits 0 (exit: $exit_code)" $?
finish
