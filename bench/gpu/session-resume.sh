#!/usr/bin/env bash
# On the GPU test machine: sessions through hgrn2-server on CUDA with the demo model. For greedy
# and seeded sampling, a session saved after generating from A and continued with B is compared
# token for token with one request on A + the generated tokens + B; and a prompt sent twice is
# compared with itself (the second time from the prefix cache). Prints one line per comparison.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN=${RUN:-$ROOT/.gpu-bundle/run}
export LD_LIBRARY_PATH=$RUN/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
port=50099
log=$(mktemp)
"$RUN/bin/hgrn2-server" --model "$ROOT/models/hgrn2-demo" --device "${DEVICE:-cuda}" --port $port \
  --metrics-port 0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
cli() { "$RUN/bin/hgrn2-cli" --addr localhost:$port "$@"; }
for _ in $(seq 120); do cli health >/dev/null 2>&1 && break; sleep 1; done
cli health || { cat "$log"; exit 1; }

a=$(cli tokenize "It was a bright cold day in April, and the clocks were striking thirteen." |
  head -1)
b=$(cli tokenize "The hallway smelt of boiled cabbage and old rag mats." --no-special-tokens |
  head -1)
[[ -n $a && -n $b ]] || { echo "tokenize failed"; exit 1; }
failures=0
compare() {  # name, sampling flags of the first part, sampling flags of the second
  local name=$1 first=$2 second=$3
  local g1 resumed whole
  g1=$(cli generate --ids "$a" $first --max-new-tokens 64 --ignore-eos --print-ids \
    --save-session "$name" 2>/dev/null)
  resumed=$(cli generate --ids "$b" $second --max-new-tokens 64 --ignore-eos --print-ids \
    --session "$name" 2>/dev/null)
  whole=$(cli generate --ids "$a,$g1,$b" $second --max-new-tokens 64 --ignore-eos --print-ids \
    2>/dev/null)
  local same=0 n=0
  IFS=, read -ra r <<<"$resumed"
  IFS=, read -ra w <<<"$whole"
  for ((i = 0; i < ${#w[@]}; ++i)); do
    ((++n))
    [[ ${r[i]:-} == "${w[i]}" ]] || break
    ((++same))
  done
  echo "$name: resumed and uninterrupted agree on the first $same of $n tokens"
  ((same == n)) || failures=$((failures + 1))
}
compare greedy "--temperature 0" "--temperature 0"
compare seeded "--temperature 0.8 --seed 5" "--temperature 0.8 --seed 9"

once=$(cli generate --ids "$a,$b" --temperature 0 --max-new-tokens 64 --ignore-eos --print-ids \
  2>/dev/null)
twice=$(cli generate --ids "$a,$b" --temperature 0 --max-new-tokens 64 --ignore-eos --print-ids \
  2>&1)
echo "prefix cache: second run $(grep -o '\[finish.*' <<<"$twice")"
[[ $(head -1 <<<"$twice") == "$once" ]] && echo "prefix cache: same tokens" ||
  { echo "prefix cache: tokens differ"; failures=$((failures + 1)); }
exit $((failures > 0))
