#!/usr/bin/env bash
# hgrn2-loadgen against a real hgrn2-server on tiny-a (CPU) for a few seconds: fixed concurrency and
# Poisson arrivals finish with zero errors and a JSON report holding every field, with counts that
# add up; a steady-state window counts what arrives in it; bad arguments exit 2. Needs
# HGRN2_SERVER, HGRN2_CLI, HGRN2_LOADGEN and HGRN2_TEST_DATA_DIR.
set -uo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
loadgen=${HGRN2_LOADGEN:?}

if ! start_server "$scratch/server.log" --model "$data/tiny-a" --metrics-port 0; then
  check "hgrn2-server starts on tiny-a" 1
  finish
fi

"$loadgen" --addr "$server_addr" --prompt-ids 4:24 --output-tokens 8 --requests 60 \
  --concurrency 8 --warmup 4 --json "$scratch/fixed.json" >"$scratch/fixed.out" 2>"$scratch/fixed.err"
check "fixed concurrency: exit 0" $?
grep -q '^throughput .* req/s' "$scratch/fixed.out"; check "fixed concurrency: a report on stdout" $?
grep -q 'done, .* in flight' "$scratch/fixed.err"; check "a progress line on stderr" $?
python3 - "$scratch/fixed.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["errors"] == {} and r["requests"] == 60 and r["completed"] == 60, r
assert r["generated_tokens"] == 60 * 8, r  # ignore_eos: exact lengths
assert 60 * 4 <= r["prompt_tokens"] <= 60 * 24, r
for key in ("requests_per_s", "generated_tokens_per_s", "prompt_tokens_per_s", "elapsed_s",
            "client_cpu_s", "client_cpu_per_request_us"):
    assert r[key] > 0, (key, r[key])
for key in ("ttft_s", "itl_s", "e2e_s"):
    s = r[key]
    assert s["count"] > 0 and 0 <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"], (key, s)
    assert s["mean"] > 0, (key, s)
assert r["ttft_s"]["count"] == 60 and r["itl_s"]["count"] == 60 * 7, r
assert r["e2e_s"]["p50"] >= r["ttft_s"]["p50"], r
PY
check "fixed concurrency: JSON fields, zero errors, exact token counts" $?

"$loadgen" --addr "$server_addr" --prompt-ids 8 --output-tokens 2:6 --duration 2 --rate 40 \
  --quiet --json "$scratch/poisson.json" >/dev/null 2>"$scratch/poisson.err"
check "Poisson arrivals for 2 s: exit 0" $?
python3 - "$scratch/poisson.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["errors"] == {} and r["completed"] == r["requests"] > 20, r
assert 2 <= r["elapsed_s"] < 10 and r["config"]["rate"] == 40, r
assert 2 * r["completed"] <= r["generated_tokens"] <= 6 * r["completed"], r
PY
check "Poisson arrivals: about 40 req/s for 2 s, zero errors" $?
[[ ! -s $scratch/poisson.err ]]; check "--quiet: nothing on stderr" $?

# Steady state: a window of 2 s after 1 s of load, without the pause (and burst) of --warmup N.
"$loadgen" --addr "$server_addr" --prompt-ids 4:24 --output-tokens 8 --concurrency 8 \
  --warmup-seconds 1 --duration 2 --quiet --json "$scratch/window.json" >/dev/null 2>&1
check "a window after --warmup-seconds: exit 0" $?
python3 - "$scratch/window.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["config"]["measure"] == "window" and r["elapsed_s"] == 2, r
assert r["errors"] == {} and r["requests"] == r["completed"] > 8, r
# Tokens inside the window, from calls started before it too; the calls started in it give the
# latencies, all 8 tokens each.
assert r["generated_tokens"] > 0 and r["generated_tokens_per_s"] == r["generated_tokens"] / 2, r
assert r["ttft_s"]["count"] == r["completed"] and r["itl_s"]["count"] == 7 * r["completed"], r
assert r["requests_per_s"] > 0, r
PY
check "a window: tokens per second over the window, latencies of the calls started in it" $?
"$loadgen" --addr "$server_addr" --prompt-ids 4 --warmup-seconds 1 >/dev/null 2>"$scratch/err"
code=$?
[[ $code -eq 2 ]] && grep -q -- '--warmup-seconds needs --duration' "$scratch/err"
check "--warmup-seconds without --duration: exit 2 ($code)" $?
"$loadgen" --addr "$server_addr" --prompt-ids 4 --warmup 3 --warmup-seconds 1 --duration 1 \
  >/dev/null 2>&1
code=$?
[[ $code -eq 2 ]]; check "--warmup and --warmup-seconds together: exit 2 ($code)" $?
"$loadgen" --addr "$server_addr" --output-tokens 8 --requests 2 >/dev/null 2>"$scratch/err"
code=$?
[[ $code -eq 2 ]] && grep -q 'token ids only: give --prompt-ids' "$scratch/err"
check "text prompts on a model without a tokenizer: exit 2, one line ($code: $(cat "$scratch/err"))" $?
"$loadgen" --addr "$server_addr" --prompt-ids 3:1 >/dev/null 2>"$scratch/err"
code=$?
[[ $code -eq 2 ]] && grep -q -- '--prompt-ids: need 1 <= MIN <= MAX, got 3:1' "$scratch/err"
check "a bad range: exit 2 naming the flag ($code)" $?
"$loadgen" --addr 127.0.0.1:1 --prompt-ids 4 >/dev/null 2>"$scratch/err"
code=$?
[[ $code -eq 1 ]] && grep -q 'GetModelInfo: UNAVAILABLE' "$scratch/err"
check "no server: exit 1, UNAVAILABLE ($code)" $?
finish
