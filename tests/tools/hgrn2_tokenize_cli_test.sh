#!/usr/bin/env bash
# hgrn2-tokenize end to end: ids equal the reference libraries' on every golden text (raw bytes
# from standard input), --add-special, --decode byte for byte, and exit codes.
# Needs HGRN2_TOKENIZE (the binary) and HGRN2_TEST_DATA_DIR (tests/data).
set -uo pipefail
tok=${HGRN2_TOKENIZE:?}
data=${HGRN2_TEST_DATA_DIR:?}/tokenizers
failures=0
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
check() {  # check NAME CONDITION-EXIT-CODE
  if [[ $2 -eq 0 ]]; then echo "ok: $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi
}
# Write each golden text, and each tokenizer's expected lines, to files (python3's stdlib only).
python3 - "$data/golden.json" "$scratch" <<'PY'
import json, os, sys
golden = json.load(open(sys.argv[1], encoding="utf-8"))
out = sys.argv[2]
for i, text in enumerate(golden["texts"]):
    open(os.path.join(out, "text%d" % i), "wb").write(text.encode("utf-8"))
for entry in golden["tokenizers"]:
    folder = os.path.join(out, entry["name"])
    os.makedirs(folder)
    for i in range(len(golden["texts"])):
        for key in ("encode", "encode_special"):
            open(os.path.join(folder, "%s%d" % (key, i)), "w").write(
                " ".join(str(x) for x in entry[key][i]) + "\n")
        open(os.path.join(folder, "decode%d" % i), "wb").write(entry["decode"][i].encode("utf-8"))
PY
count=$(ls "$scratch"/text* | wc -l)
mkdir -p "$scratch/sp-only" && cp "$data/llama-sp/tokenizer.model" "$scratch/sp-only/"
# A model folder (tokenizer.json wins over tokenizer.model), a folder with only
# tokenizer.model, and the tokenizer.json file itself.
for entry in "llama-sp:$data/llama-sp" "llama-sp-model:$scratch/sp-only" \
             "bytelevel:$data/bytelevel/tokenizer.json" "llama-legacy:$data/llama-legacy"; do
  name=${entry%%:*}; dir=${entry#*:}
  bad_encode=""; bad_special=""; bad_decode=""
  for ((i = 0; i < count; i++)); do
    "$tok" --tokenizer "$dir" <"$scratch/text$i" >"$scratch/out" 2>/dev/null
    cmp -s "$scratch/out" "$scratch/$name/encode$i" || bad_encode="$bad_encode $i"
    "$tok" --tokenizer "$dir" --add-special <"$scratch/text$i" >"$scratch/out" 2>/dev/null
    cmp -s "$scratch/out" "$scratch/$name/encode_special$i" || bad_special="$bad_special $i"
    "$tok" --tokenizer "$dir" --decode <"$scratch/$name/encode$i" >"$scratch/out" 2>/dev/null
    cmp -s "$scratch/out" "$scratch/$name/decode$i" || bad_decode="$bad_decode $i"
  done
  [[ -z $bad_encode ]]; check "$name: ids of all $count texts equal the reference's$bad_encode" $?
  [[ -z $bad_special ]]; check "$name: --add-special ids equal the reference's$bad_special" $?
  [[ -z $bad_decode ]]; check "$name: --decode writes exactly the reference's text$bad_decode" $?
done

# Standard input is taken whole: a trailing newline is text too.
a=$(printf 'Hello' | "$tok" --tokenizer "$data/bytelevel")
b=$(printf 'Hello\n' | "$tok" --tokenizer "$data/bytelevel")
[[ -n $a && $b == "$a "* ]]; check "a trailing newline adds ids ($a | $b)" $?
out=$(printf '' | "$tok" --tokenizer "$data/llama-sp" --add-special)
[[ $out == "1" ]]; check "empty input with --add-special is BOS alone ($out)" $?
printf '' | "$tok" --tokenizer "$data/llama-sp" >"$scratch/out"
[[ $(cat "$scratch/out") == "" && $(wc -c <"$scratch/out") -eq 1 ]]
check "empty input prints an empty line" $?
out=$(printf ' 1  740\n\t813 ' | "$tok" --tokenizer "$data/llama-sp" --decode --skip-special)
want=$(printf '740 813' | "$tok" --tokenizer "$data/llama-sp" --decode)
[[ -n $out && $out == "$want" ]]; check "--decode takes any whitespace; --skip-special drops BOS ($out)" $?

# Errors: exit code 2 and one line on stderr that says what is wrong.
expect_usage_error() {  # expect_usage_error NAME INPUT NEEDLE ARGS...
  local name=$1 input=$2 needle=$3; shift 3
  local err code
  err=$(printf "$input" | "$tok" "$@" 2>&1 >/dev/null); code=$?
  [[ $code -eq 2 && $(printf '%s\n' "$err" | wc -l) -eq 1 && $err == *"$needle"* ]]
  check "$name -> exit 2, one line ($code: $err)" $?
}
mkdir -p "$scratch/empty" "$scratch/broken"
printf '{"model": {"type": "BPE", "vocab": {' >"$scratch/broken/tokenizer.json"
expect_usage_error "missing --tokenizer" "x" "--tokenizer is required"
expect_usage_error "folder without a tokenizer" "x" "has no tokenizer.json or tokenizer.model" \
  --tokenizer "$scratch/empty"
expect_usage_error "truncated tokenizer.json" "x" "parse error" --tokenizer "$scratch/broken"
expect_usage_error "text not UTF-8" 'ab\377' "not valid UTF-8" --tokenizer "$data/llama-sp"
expect_usage_error "id not a number" '1 x' '"x" is not an integer' --tokenizer "$data/llama-sp" \
  --decode
expect_usage_error "id out of range" '1 1000' "token id 1000" --tokenizer "$data/llama-sp" --decode
expect_usage_error "--add-special with --decode" '1' "encoding only" --tokenizer "$data/llama-sp" \
  --decode --add-special

echo "$failures failed"
exit $((failures > 0))
