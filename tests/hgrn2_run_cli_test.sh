#!/usr/bin/env bash
# hgrn2-run end to end: output formats, agreement with the golden greedy ids, exit codes.
# Needs HGRN2_RUN (the binary) and HGRN2_TEST_DATA_DIR (tests/data).
set -uo pipefail
run=${HGRN2_RUN:?}
data=${HGRN2_TEST_DATA_DIR:?}
failures=0
check() {  # check NAME CONDITION-EXIT-CODE
  if [[ $2 -eq 0 ]]; then echo "ok: $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi
}
# The first short prompt and its 24 greedy ids (EOS banned) from tests/data/tiny-a/golden.safetensors.
read_ids() {  # read_ids FIXTURE TENSOR ROW -> comma-separated ids
  python3 - "$1" "$2" "$3" <<'PY'
import json, struct, sys
path, name, row = sys.argv[1], sys.argv[2], int(sys.argv[3])
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
meta = json.loads(raw[8:8 + n])[name]
begin, end = meta["data_offsets"]
values = struct.unpack("<%di" % ((end - begin) // 4), raw[8 + n + begin:8 + n + end])
cols = meta["shape"][1]
print(",".join(str(v) for v in values[row * cols:(row + 1) * cols]))
PY
}
for fixture in tiny-a tiny-conv; do
  golden=$data/$fixture/golden.safetensors
  prompt=$(read_ids "$golden" short_ids 0)
  expected=$(read_ids "$golden" greedy_ids 0)
  got=$("$run" --model "$data/$fixture" --prompt-ids "$prompt" --max-new-tokens 24 \
          --temperature 0 --logit-bias 2=-inf --print-ids 2>/dev/null)
  [[ "$got" == "$expected" ]]; check "$fixture greedy ids equal the golden continuation" $?

  scored=$("$run" --model "$data/$fixture" --prompt-ids "$prompt" --score 2>/dev/null)
  lines=$(printf '%s\n' "$scored" | wc -l)
  [[ $lines -eq 47 ]]; check "$fixture --score prints one line per position t >= 1 (got $lines)" $?
  first=$(printf '%s\n' "$scored" | head -n1)
  second_id=$(printf '%s' "$prompt" | cut -d, -f2)
  [[ "$first" =~ ^1\ $second_id\ -[0-9]+\.[0-9]{6}$ ]]; check "$fixture --score line format ($first)" $?
done

# Seeded sampling is reproducible; a different seed changes the output.
a=$("$run" --model "$data/tiny-a" --prompt-ids 5,6,7 --max-new-tokens 16 --seed 7 --ignore-eos --print-ids 2>/dev/null)
b=$("$run" --model "$data/tiny-a" --prompt-ids 5,6,7 --max-new-tokens 16 --seed 7 --ignore-eos --print-ids 2>/dev/null)
c=$("$run" --model "$data/tiny-a" --prompt-ids 5,6,7 --max-new-tokens 16 --seed 8 --ignore-eos --print-ids 2>/dev/null)
[[ -n "$a" && "$a" == "$b" ]]; check "same seed, same ids" $?
[[ "$a" != "$c" ]]; check "another seed, other ids" $?
n=$(printf '%s\n' "$a" | awk -F, '{print NF}')
[[ $n -eq 16 ]]; check "--max-new-tokens 16 with --ignore-eos gives 16 ids (got $n)" $?

# Bad arguments and bad models: exit code 2 and one line on stderr.
expect_usage_error() {  # expect_usage_error NAME ARGS...
  local name=$1; shift
  local err code
  err=$("$run" "$@" 2>&1 >/dev/null); code=$?
  [[ $code -eq 2 && $(printf '%s\n' "$err" | wc -l) -eq 1 ]]
  check "$name -> exit 2, one line ($code: $err)" $?
}
expect_usage_error "unknown flag" --model "$data/tiny-a" --prompt-ids 1 --bogus
expect_usage_error "missing --prompt-ids" --model "$data/tiny-a"
expect_usage_error "id out of range" --model "$data/tiny-a" --prompt-ids 1,512
expect_usage_error "not a number" --model "$data/tiny-a" --prompt-ids 1,x
expect_usage_error "negative temperature" --model "$data/tiny-a" --prompt-ids 1 --temperature -1
expect_usage_error "top-p above 1" --model "$data/tiny-a" --prompt-ids 1 --top-p 1.5
expect_usage_error "missing model folder" --model /nonexistent --prompt-ids 1
expect_usage_error "model folder without weights" --model "$data" --prompt-ids 1
expect_usage_error "score needs two ids" --model "$data/tiny-a" --prompt-ids 1 --score
expect_usage_error "unknown device" --model "$data/tiny-a" --prompt-ids 1 --device tpu

echo "$failures failed"
exit $((failures > 0))
