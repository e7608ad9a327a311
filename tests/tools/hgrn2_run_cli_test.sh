#!/usr/bin/env bash
# hgrn2-run end to end: output formats, agreement with the golden greedy ids, exit codes.
# Needs HGRN2_RUN (the binary), HGRN2_TOKENIZE (hgrn2-tokenize, for --prompt) and
# HGRN2_TEST_DATA_DIR (tests/data).
set -uo pipefail
run=${HGRN2_RUN:?}
data=${HGRN2_TEST_DATA_DIR:?}
failures=0
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/no-weights" && cp "$data/tiny-a/config.json" "$scratch/no-weights/"
mkdir -p "$scratch/broken" && printf '{"model_type": "hgrn2", "hidden_size":' >"$scratch/broken/config.json"
check() {  # check NAME CONDITION-EXIT-CODE
  if [[ $2 -eq 0 ]]; then echo "ok: $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi
}
# Every fixture folder (a checkpoint + golden.safetensors): greedy ids equal the golden
# continuation (EOS banned, as the fixtures were made), and --score equals the float64 reference.
golden_py() {  # golden_py FIXTURE_DIR COMMAND [ARGS...]: small reader of golden.safetensors
  python3 - "$@" <<'PY'
import json, math, struct, sys
folder, command = sys.argv[1], sys.argv[2]
raw = open(folder + "/golden.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
def tensor(name):
    meta = header[name]
    begin, end = meta["data_offsets"]
    fmt = {"I32": "i", "F32": "f"}[meta["dtype"]]
    return meta["shape"], struct.unpack("<%d%s" % ((end - begin) // 4, fmt), raw[8 + n + begin:8 + n + end])
if command == "ids":  # ids TENSOR ROW
    shape, values = tensor(sys.argv[3]); row = int(sys.argv[4]); cols = shape[1]
    print(",".join(str(v) for v in values[row * cols:(row + 1) * cols]))
elif command == "eos-bias":
    eos = json.load(open(folder + "/config.json")).get("eos_token_id")
    eos = eos if isinstance(eos, list) else ([] if eos is None else [eos])
    print(" ".join("--logit-bias %d=-inf" % e for e in eos))
elif command == "check-score":  # check-score FILE: hgrn2-run --score output, short_ids row 0
    (_, length), ids = tensor("short_ids")
    shape, logits = tensor("ref64_short_logits"); vocab = shape[2]
    worst, lines = 0.0, open(sys.argv[3]).read().split("\n")
    lines = [l for l in lines if l]
    assert len(lines) == length - 1, "expected %d lines, got %d" % (length - 1, len(lines))
    for t, line in enumerate(lines, start=1):
        pos, token, logprob = line.split()
        assert int(pos) == t and int(token) == ids[t], line
        row = logits[(t - 1) * vocab:t * vocab]
        top = max(row)
        expected = row[ids[t]] - top - math.log(sum(math.exp(x - top) for x in row))
        worst = max(worst, abs(float(logprob) - expected) / max(1.0, abs(expected)))
    print("max relative logprob error %.2e" % worst)
    sys.exit(0 if worst < 1e-4 else 1)
PY
}
for dir in "$data"/*/; do
  dir=${dir%/}
  [[ -f $dir/golden.safetensors ]] || continue
  fixture=$(basename "$dir")
  prompt=$(golden_py "$dir" ids short_ids 0)
  expected=$(golden_py "$dir" ids greedy_ids 0)
  # shellcheck disable=SC2046
  got=$("$run" --model "$dir" --prompt-ids "$prompt" --max-new-tokens 24 --temperature 0 \
          $(golden_py "$dir" eos-bias) --print-ids 2>/dev/null)
  [[ -n "$got" && "$got" == "$expected" ]]; check "$fixture greedy ids equal the golden continuation" $?

  scored=$("$run" --model "$dir" --prompt-ids "$prompt" --score 2>/dev/null)
  first=$(printf '%s\n' "$scored" | head -n1)
  [[ "$first" =~ ^1\ [0-9]+\ -?[0-9]+\.[0-9]{6}$ ]]; check "$fixture --score line format ($first)" $?
  printf '%s\n' "$scored" >"$scratch/score.txt"
  verdict=$(golden_py "$dir" check-score "$scratch/score.txt" 2>&1)
  check "$fixture --score matches the float64 reference ($verdict)" $?
done

# Seeded sampling is reproducible; a different seed changes the output.
a=$("$run" --model "$data/tiny-a" --prompt-ids 5,6,7 --max-new-tokens 16 --seed 7 --ignore-eos --print-ids 2>/dev/null)
b=$("$run" --model "$data/tiny-a" --prompt-ids 5,6,7 --max-new-tokens 16 --seed 7 --ignore-eos --print-ids 2>/dev/null)
c=$("$run" --model "$data/tiny-a" --prompt-ids 5,6,7 --max-new-tokens 16 --seed 8 --ignore-eos --print-ids 2>/dev/null)
[[ -n "$a" && "$a" == "$b" ]]; check "same seed, same ids" $?
[[ "$a" != "$c" ]]; check "another seed, other ids" $?
n=$(printf '%s\n' "$a" | awk -F, '{print NF}')
[[ $n -eq 16 ]]; check "--max-new-tokens 16 with --ignore-eos gives 16 ids (got $n)" $?

# Stopping and --logprobs on tiny-a's golden greedy continuation (24 ids, EOS banned).
tiny=$data/tiny-a
tiny_prompt=$(golden_py "$tiny" ids short_ids 0)
tiny_golden=$(golden_py "$tiny" ids greedy_ids 0)
IFS=, read -ra golden <<<"$tiny_golden"
# The first k >= 8 whose id does not occur earlier: stopping on it must stop at k, not before.
k=8
while ((k < ${#golden[@]} - 1)) && [[ ,$(IFS=,; echo "${golden[*]:0:k}"), == *,${golden[k]},* ]]; do
  k=$((k + 1))
done
want=$(IFS=,; echo "${golden[*]:0:k+1}")
got=$("$run" --model "$tiny" --prompt-ids "$tiny_prompt" --max-new-tokens 24 --temperature 0 \
        --logit-bias 2=-inf --stop-ids "${golden[k]}" 2>/dev/null)
[[ $k -lt 23 && "$got" == "$want" ]]
check "--stop-ids ${golden[k]} stops after golden id $k, which is included ($got)" $?

# --logprobs 2: the ids line, then 'i id logprob id:logprob id:logprob' per generated token; for
# greedy (EOS allowed and ignored, so the raw argmax is chosen) the first alternative is the token.
out=$("$run" --model "$tiny" --prompt-ids "$tiny_prompt" --max-new-tokens 8 --temperature 0 \
        --ignore-eos --logprobs 2 2>/dev/null)
ids_line=$(printf '%s\n' "$out" | head -n1)
IFS=, read -ra got_ids <<<"$ids_line"
lines=$(printf '%s\n' "$out" | tail -n +2)
n=$(printf '%s\n' "$lines" | grep -c .)
[[ ${#got_ids[@]} -eq 8 && $n -eq 8 ]]
check "--logprobs 2 prints one line per generated id (${#got_ids[@]} ids, $n lines)" $?
lp='-?[0-9]+\.[0-9]{6}'
line_re="^([0-9]+) ([0-9]+) ($lp) ([0-9]+):($lp) ([0-9]+):($lp)$"
bad=""
i=0
while IFS= read -r line; do
  if ! [[ $line =~ $line_re ]] || [[ ${BASH_REMATCH[1]} != "$i" || ${BASH_REMATCH[2]} != "${got_ids[i]}" ||
        ${BASH_REMATCH[4]} != "${got_ids[i]}" || ${BASH_REMATCH[5]} != "${BASH_REMATCH[3]}" ]] ||
     ! awk -v a="${BASH_REMATCH[5]}" -v b="${BASH_REMATCH[7]}" 'BEGIN { exit !(a + 0 >= b + 0) }'; then
    bad="$bad [$line]"
  fi
  i=$((i + 1))
done <<<"$lines"
[[ $n -gt 0 && -z "$bad" ]]
check "--logprobs 2 lines: index, chosen id and logprob, the chosen id first of 2 alternatives$bad" $?

# Without --ignore-eos, the model's EOS (id 2) ends generation and is printed last.
got=$("$run" --model "$tiny" --prompt-ids "$tiny_prompt" --max-new-tokens 24 --temperature 0 \
        2>/dev/null)
IFS=, read -ra got_ids <<<"$got"
last=$((${#got_ids[@]} - 1))
before_last=$(IFS=,; echo "${got_ids[*]:0:last}")
# The golden ids never contain EOS, so a prefix of them followed by 2 ended at the first EOS.
[[ -n "$got" && ("$got" == "$tiny_golden" ||
   ("${got_ids[last]}" == 2 && "$tiny_golden," == "${before_last:+$before_last,}"*)) ]]
check "greedy with EOS allowed is the golden ids, or a prefix of them and EOS ($got)" $?
got=$("$run" --model "$tiny" --prompt-ids "$tiny_prompt" --max-new-tokens 24 --temperature 0 \
        --logit-bias 2=100 2>/dev/null)
[[ "$got" == "2" ]]; check "EOS made the greedy token ends generation after it ($got)" $?
got=$("$run" --model "$tiny" --prompt-ids "$tiny_prompt" --max-new-tokens 24 --temperature 0 \
        --logit-bias 2=100 --ignore-eos 2>/dev/null)
n=$(printf '%s\n' "$got" | awk -F, '{print NF}')
[[ $n -eq 24 ]]; check "... and with --ignore-eos runs to --max-new-tokens (got $n ids)" $?

# --prompt TEXT: a model folder with a tokenizer whose vocabulary fits (u-k3-nolb, V = 1000, with
# the Llama-style test tokenizer). The prompt is the tokenizer's encoding with BOS; the output is
# the text of the generated ids (special tokens left out), on one line.
tok=${HGRN2_TOKENIZE:?}
texted=$scratch/with-tokenizer
mkdir -p "$texted" && cp "$data/u-k3-nolb/config.json" "$data/u-k3-nolb/model.safetensors" \
  "$data/tokenizers/llama-sp/tokenizer.json" "$data/tokenizers/llama-sp/tokenizer.model" "$texted/"
text_prompt='The quick brown fox'
want_prompt=$(printf '%s' "$text_prompt" | "$tok" --tokenizer "$texted" --add-special | tr ' ' ,)
by_ids=$("$run" --model "$texted" --prompt-ids "$want_prompt" --max-new-tokens 12 --temperature 0 \
           --ignore-eos 2>/dev/null)
by_text=$("$run" --model "$texted" --prompt "$text_prompt" --max-new-tokens 12 --temperature 0 \
            --ignore-eos --print-ids 2>/dev/null)
[[ $want_prompt == 1,* && -n $by_ids && $by_ids == "$by_text" ]]
check "--prompt generates as --prompt-ids with the tokenizer's ids, BOS first ($want_prompt)" $?
text=$("$run" --model "$texted" --prompt "$text_prompt" --max-new-tokens 12 --temperature 0 \
         --ignore-eos 2>/dev/null)
decoded=$(printf '%s' "$by_ids" | tr , ' ' | "$tok" --tokenizer "$texted" --decode --skip-special)
lines=$(printf '%s\n' "$text" | wc -l)
# The prompt is the decoder's context, so the text may keep a leading space that a decode of the
# new ids alone strips.
[[ -n $text && $lines -eq 1 && ($text == "$decoded" || $text == " $decoded") ]]
check "--prompt prints the generated text on one line ($text)" $?

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
expect_usage_error "folder without config.json" --model "$data" --prompt-ids 1
expect_usage_error "config.json without weights" --model "$scratch/no-weights" --prompt-ids 1
expect_usage_error "score needs two ids" --model "$data/tiny-a" --prompt-ids 1 --score
expect_usage_error "negative seed" --model "$data/tiny-a" --prompt-ids 1 --seed -1
expect_usage_error "zero new tokens" --model "$data/tiny-a" --prompt-ids 1 --max-new-tokens 0
expect_usage_error "malformed logit bias" --model "$data/tiny-a" --prompt-ids 1 --logit-bias 5
expect_usage_error "logit bias with two =" --model "$data/tiny-a" --prompt-ids 1 --logit-bias 5=1=2
expect_usage_error "seed above 2^64 - 1" --model "$data/tiny-a" --prompt-ids 1 \
  --seed 99999999999999999999999
expect_usage_error "broken config.json" --model "$scratch/broken" --prompt-ids 1
expect_usage_error "unknown device" --model "$data/tiny-a" --prompt-ids 1 --device tpu
expect_usage_error "unknown dtype" --model "$data/tiny-a" --prompt-ids 1 --dtype f8
expect_usage_error "--prompt on a model without a tokenizer" --model "$data/tiny-a" --prompt hi
expect_usage_error "--prompt with --prompt-ids" --model "$texted" --prompt hi --prompt-ids 1
expect_usage_error "--prompt not UTF-8" --model "$texted" --prompt $'\xff'
err=$("$run" --model "$data/tiny-a" --prompt hi 2>&1 >/dev/null)
[[ $err == *"has no tokenizer.json or tokenizer.model"*"--prompt-ids"* ]]
check "--prompt without a tokenizer says so ($err)" $?

# Without --model: the bundled demo model, from any working directory (the source tree's path).
got=$(cd / && "$run" --prompt "Once upon a time" --temperature 0 --max-new-tokens 12 2>/dev/null)
[[ $got == ", the letter was to be gone, and the general"* ]]
check "no --model: the demo model writes its greedy sample ($got)" $?
# ... but a models/hgrn2-demo under the working directory comes first (here tiny-a, which has no
# tokenizer: --prompt fails naming that folder).
mkdir -p "$scratch/cwd/models" && cp -r "$data/tiny-a" "$scratch/cwd/models/hgrn2-demo"
err=$(cd "$scratch/cwd" && "$run" --prompt hi 2>&1 >/dev/null)
[[ $err == *"models/hgrn2-demo"*"has no tokenizer.json or tokenizer.model"* ]]
check "no --model: models/hgrn2-demo under the working directory first ($err)" $?

echo "$failures failed"
exit $((failures > 0))
