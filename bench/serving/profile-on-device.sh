#!/usr/bin/env bash
# On the GPU test machine: where the server's host time goes, for one or more builds in one run.
# For each bundle: hgrn2-server --preset 1.3b pinned to the first cores, hgrn2-loadgen pinned to
# the last ($LOADGEN_CORES), a closed loop at each of $LEVELS; around each level the server's CPU
# time per thread (from /proc, grouped by thread name) and the load generator's own; with perf
# (carried as .gpu-bundle-perf.tar.xz, Debian's linux-perf and its libraries) a call-graph
# profile of the server during the first level.
#   BUNDLES="base:.gpu-bundle-base/run.tar.xz new:.gpu-bundle-new/run.tar.xz" \
#     bash bench/serving/profile-on-device.sh
# FLAGS_<name> adds server flags to one entry (one bundle may appear under two names).
# Output under $OUT: profile-<name>.txt per bundle (the table), perf-<name>.txt, and a summary.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/.gpu-bundle/profile-out}
LEVELS=${LEVELS:-256 512}
DURATION=${DURATION:-10}
PROMPT=${PROMPT:-128}
OUTPUT=${OUTPUT:-128:512}
PROTOCOLS=${PROTOCOLS:-grpc}
ncores=$(nproc)
LOADGEN_CORES=${LOADGEN_CORES:-$((ncores - 4))-$((ncores - 1))}
SERVER_CORES=${SERVER_CORES:-0-$((ncores - 5))}
mkdir -p "$OUT"

perf_bin=()
if [[ -f $ROOT/.gpu-bundle-perf.tar.xz ]]; then
  mkdir -p /tmp/perf && tar xJf "$ROOT/.gpu-bundle-perf.tar.xz" -C /tmp/perf
  if LD_LIBRARY_PATH=/tmp/perf/lib /tmp/perf/bin/perf --version >/dev/null 2>&1; then
    perf_bin=(env LD_LIBRARY_PATH=/tmp/perf/lib /tmp/perf/bin/perf)
  fi
fi

# thread CPU seconds of PID by name: "name seconds" lines
thread_cpu() {
  local pid=$1 hz
  hz=$(getconf CLK_TCK)
  for task in /proc/"$pid"/task/*; do
    local comm stat
    comm=$(cat "$task/comm" 2>/dev/null) || continue
    stat=$(cat "$task/stat" 2>/dev/null) || continue
    # fields after the ") ": utime is 12th, stime 13th (1-based after the comm)
    awk -v name="$comm" -v hz="$hz" '{sub(/^.*\) /, ""); print name, ($12 + $13) / hz}' <<<"$stat"
  done | awk '{gsub(/[0-9]+$/, "", $1); cpu[$1] += $2} END {for (n in cpu) printf "%s %.3f\n", n, cpu[n]}'
}

summary=()
for entry in ${BUNDLES:-base:.gpu-bundle-base/run.tar.xz}; do
  name=${entry%%:*}
  archive=$ROOT/${entry#*:}
  dir=/tmp/bundle-$name
  mkdir -p "$dir" && tar xJf "$archive" -C "$dir"
  RUN=$dir/run
  export LD_LIBRARY_PATH=$RUN/lib:/usr/local/cuda/lib64
  log=$OUT/profile-$name.txt
  echo "== $name ($(cat "$RUN/commit" 2>/dev/null)) server cores $SERVER_CORES, loadgen cores $LOADGEN_CORES" | tee "$log"
  port=50151
  http_port=50153
  extra=()
  help=$("$RUN/bin/hgrn2-server" --help 2>&1)  # whole, not piped into grep -q: pipefail and SIGPIPE
  [[ $help == *--http-port* ]] && extra=(--http-port $http_port)
  flags_var=FLAGS_$name  # more server flags for this entry, e.g. FLAGS_block="--gpu-wait block"
  read -r -a more <<<"${!flags_var:-}"
  taskset -c "$SERVER_CORES" "$RUN/bin/hgrn2-server" --preset 1.3b --device cuda --host 127.0.0.1 \
    --port $port --metrics-port 50152 --max-running 512 --max-queued 16384 \
    --health-check-interval 0 "${extra[@]}" "${more[@]}" >"$OUT/server-$name.log" 2>&1 &
  server=$!
  for _ in $(seq 400); do grep -q "serving" "$OUT/server-$name.log" && break; sleep 0.5; done
  grep -m2 "serving\|warm-up" "$OUT/server-$name.log" | tee -a "$log"
  first=1
  for protocol in $PROTOCOLS; do
    for c in $LEVELS; do
      # One connection per 64 calls (the default of newer load generators; older ones took 1).
      proto_flags=(--addr 127.0.0.1:$port --channels $(((c + 63) / 64)))
      if [[ $protocol == openai ]]; then
        ((${#extra[@]})) || continue
        proto_flags=(--protocol openai --addr 127.0.0.1:$http_port)
      fi
      before=$(thread_cpu $server)
      profiler=
      if ((first)) && ((${#perf_bin[@]})); then
        (sleep 4; "${perf_bin[@]}" record -F 499 -g -p $server -o /tmp/perf-$name.data -- sleep 5 \
          >/dev/null 2>&1) &
        profiler=$!
      fi
      taskset -c "$LOADGEN_CORES" "$RUN/bin/hgrn2-loadgen" "${proto_flags[@]}" --prompt-ids "$PROMPT" \
        --output-tokens "$OUTPUT" --quiet --seed "$c" --concurrency "$c" --duration "$DURATION" \
        --warmup "$c" --json "$OUT/loadgen-$name-$protocol-c$c.json" >/dev/null 2>&1
      [[ -n $profiler ]] && wait "$profiler"
      after=$(thread_cpu $server)
      python3 - "$OUT/loadgen-$name-$protocol-c$c.json" "$name" "$protocol" "$c" <<PY | tee -a "$log"
import json, sys
before = dict(l.split() for l in """$before""".strip().splitlines())
after = dict(l.split() for l in """$after""".strip().splitlines())
r = json.load(open(sys.argv[1]))
tokens = r.get("generated_tokens", 0)
elapsed = r.get("elapsed_s", 1)
cpu = {k: float(after[k]) - float(before.get(k, 0)) for k in after}
total = sum(cpu.values())
per_k = total / (tokens / 1000) if tokens else float("nan")
print(f"{sys.argv[2]} {sys.argv[3]} C={sys.argv[4]}: {r.get('generated_tokens_per_s', 0):,.0f} tok/s, "
      f"TTFT p50/p99 {r['ttft_s']['p50']*1e3:.1f}/{r['ttft_s']['p99']*1e3:.1f} ms, "
      f"ITL p50/p99 {r['itl_s']['p50']*1e3:.2f}/{r['itl_s']['p99']*1e3:.2f} ms, errors {r.get('errors', 0)}")
print(f"  server CPU {total:.2f} s in {elapsed:.1f} s = {per_k:.3f} s per 1k tokens; "
      f"loadgen {r.get('client_cpu_s', 0):.2f} s")
for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])[:8]:
    print(f"    {k:<20} {v:7.2f} s  {v / (tokens / 1000) if tokens else 0:.4f} s/1k tok")
PY
      if ((first)) && ((${#perf_bin[@]})) && [[ -f /tmp/perf-$name.data ]]; then
        "${perf_bin[@]}" report -i /tmp/perf-$name.data --no-children --sort comm,dso,sym \
          --stdio 2>/dev/null | grep -v '^$' | head -150 >"$OUT/perf-$name.txt"
        "${perf_bin[@]}" report -i /tmp/perf-$name.data --no-children --sort comm \
          --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -20 | tee -a "$log"
      fi
      first=0
    done
  done
  kill -TERM $server
  wait $server
  summary+=("$(grep -E '^(base|new|[a-z]+) ' "$log")")
done
printf '%s\n' "${summary[@]}"
