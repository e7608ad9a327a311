#!/usr/bin/env bash
# hgrn2-cli against a real hgrn2-server on loopback (CPU): every subcommand, greedy and seeded
# output equal to hgrn2-run's, scores equal to hgrn2-run --score, error codes and messages for bad
# input, an unreachable server, a deadline, and Ctrl-C. Needs HGRN2_SERVER, HGRN2_CLI, HGRN2_RUN,
# HGRN2_TOKENIZE and HGRN2_TEST_DATA_DIR.
set -uo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run=${HGRN2_RUN:?}
tok=${HGRN2_TOKENIZE:?}
tiny=$data/tiny-a
max_new=100000

metrics_port=$(free_port)
if ! start_server "$scratch/ids.log" --model "$tiny" --metrics-port "$metrics_port" \
       --max-new-tokens "$max_new"; then
  check "hgrn2-server starts on tiny-a" 1
  finish
fi
c() { "$cli" --addr "$server_addr" "$@"; }
metric() {  # metric NAME: its value on the server's /metrics (unlabelled series), or nothing
  curl -sf "http://127.0.0.1:$metrics_port/metrics" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 { print $2 }'
}

# --- health and info -------------------------------------------------------------------------
out=$(c health); code=$?
[[ $code -eq 0 && $out == SERVING ]]; check "health: SERVING, exit 0 ($code: $out)" $?
out=$(HGRN2_ADDR=$server_addr "$cli" health); code=$?
[[ $code -eq 0 && $out == SERVING ]]; check "HGRN2_ADDR gives the address ($code: $out)" $?
out=$("$cli" health --addr "$server_addr"); code=$?
[[ $code -eq 0 && $out == SERVING ]]; check "--addr after the subcommand ($code: $out)" $?
out=$(c health --service hgrn2.v1.Inference); code=$?
[[ $code -eq 0 && $out == SERVING ]]; check "health --service hgrn2.v1.Inference: SERVING ($code: $out)" $?
out=$(c health --service no.such.Service 2>&1); code=$?
[[ $code -eq 1 && $out == *NOT_FOUND* ]]
check "health of an unknown service: NOT_FOUND, exit 1 ($code: $out)" $?

# --- reflection: the services are listed ---------------------------------------------------------
out=$(c services); code=$?
[[ $code -eq 0 && $(printf '%s\n' "$out" | sort | tr '\n' ' ') == \
  "grpc.health.v1.Health grpc.reflection.v1alpha.ServerReflection hgrn2.v1.Inference hgrn2.v1.Sessions " ]]
check "services (server reflection): Inference, Sessions, Health, ServerReflection ($code: $out)" $?

out=$(c info); code=$?
[[ $code -eq 0 && $out == *"model        hgrn2 at "*tiny-a* && $out == *"vocab 512, hidden 128, 3 layers, 4 heads"* &&
   $out == *"tokenizer    none (token ids only)"* && $out == *"eos 2"* ]]
check "info: model, sizes, no tokenizer, EOS" $?
c info --json >"$scratch/info.json"
python3 - "$scratch/info.json" "$max_new" <<'PY'
import json, sys
info = json.load(open(sys.argv[1]))
assert info["model_type"] == "hgrn2" and info["vocab_size"] == 512, info
assert info["num_layers"] == 3 and info["hidden_size"] == 128 and info["num_heads"] == 4, info
assert info["eos_token_ids"] == [2] and info.get("tokenizer", "") == "", info
assert int(info["limits"]["max_new_tokens"]) == int(sys.argv[2]), info["limits"]
assert int(info["state_bytes_per_sequence"]) > 0, info
PY
check "info --json: the same facts and --max-new-tokens as the limit" $?
limit() {  # limit NAME: a field of ModelInfo.limits
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["limits"].get(sys.argv[2], 0))' \
    "$scratch/info.json" "$1"
}

# --- generate: the same ids as hgrn2-run ---------------------------------------------------------
prompt=1,17,42,99,7
for flags in "--temperature 0" "--temperature 0 --ignore-eos" "--temperature 0 --logit-bias 2=-inf" \
             "--temperature 0.9 --top-k 40 --top-p 0.95 --seed 7 --ignore-eos" \
             "--temperature 1.2 --min-p 0.02 --repetition-penalty 1.3 --presence-penalty 0.5 --frequency-penalty -0.5 --seed 11 --ignore-eos"; do
  # shellcheck disable=SC2086
  want=$("$run" --model "$tiny" --prompt-ids $prompt --max-new-tokens 40 $flags --print-ids 2>/dev/null)
  # shellcheck disable=SC2086
  got=$(c generate --ids $prompt --max-new-tokens 40 $flags --print-ids 2>"$scratch/err")
  [[ -n $want && $got == "$want" ]]; check "generate $flags: the ids of hgrn2-run ($got)" $?
done
# shellcheck disable=SC2086
a=$(c generate --ids $prompt --max-new-tokens 32 --seed 7 --ignore-eos --print-ids 2>/dev/null)
b=$(c generate --ids $prompt --max-new-tokens 32 --seed 7 --ignore-eos --print-ids 2>/dev/null)
d=$(c generate --ids $prompt --max-new-tokens 32 --seed 8 --ignore-eos --print-ids 2>/dev/null)
[[ -n $a && $a == "$b" && $a != "$d" ]]; check "same seed, same ids; another seed, other ids" $?
# n samples share one prefill; sample i draws with seed + i, so it equals a single request.
# shellcheck disable=SC2086
many=$(c generate --ids $prompt --max-new-tokens 32 --seed 7 --ignore-eos --print-ids --n 2 \
  2>"$scratch/err")
[[ $many == "$(printf '0\t%s\n1\t%s' "$a" "$d")" ]] && grep -q '^\[2 samples: length length;' "$scratch/err"
check "generate --n 2 --seed 7: the ids of --seed 7 and --seed 8, and a summary ($many)" $?

greedy=$(c generate --ids $prompt --max-new-tokens 40 --temperature 0 --ignore-eos --print-ids \
           2>"$scratch/err")
summary=$(cat "$scratch/err")
# (the prompt was sent before, so the prefix cache may have its first 4 tokens)
[[ $summary =~ ^\[finish:\ length,\ 5\ prompt(\ \(4\ cached\))?\ \+\ 40\ generated\ tokens,\ first\ token\ [0-9]+\ ms,\ [0-9.]+\ tok/s\]$ ]]
check "the summary on stderr: finish, usage (cached tokens), speed ($summary)" $?
IFS=, read -ra greedy_ids <<<"$greedy"
[[ ${#greedy_ids[@]} -eq 40 ]]; check "--ignore-eos --max-new-tokens 40 gives 40 ids (${#greedy_ids[@]})" $?
out=$(c generate --ids $prompt --max-new-tokens 40 --temperature 0 --ignore-eos 2>/dev/null)
[[ $out == "$greedy" ]]; check "without a tokenizer the output is the ids" $?

# --json: one message per line; the ids in order, finish and usage on the last one only.
c generate --ids $prompt --max-new-tokens 40 --temperature 0 --ignore-eos --logprobs 1 --json \
  >"$scratch/gen.jsonl" 2>/dev/null
python3 - "$scratch/gen.jsonl" "$greedy" <<'PY'
import json, sys
messages = [json.loads(line) for line in open(sys.argv[1])]
ids = [i for m in messages for i in m.get("token_ids", [])]
assert ids == [int(x) for x in sys.argv[2].split(",")], ids
assert all(len(m.get("logprobs", [])) == len(m.get("token_ids", [])) for m in messages)
assert all(len(lp.get("top", [])) == 1 for m in messages for lp in m.get("logprobs", []))
last = messages[-1]
assert last["finish_reason"] == "LENGTH", last
assert last["usage"]["prompt_tokens"] == 5 and last["usage"]["generated_tokens"] == 40, last
assert all("finish_reason" not in m and "usage" not in m for m in messages[:-1])
assert messages[0].get("request_id"), messages[0]
print("%d messages" % len(messages))
PY
check "--json: every line a GenerateResponse; ids in order, finish and usage last" $?

# --stop-ids: the first k >= 8 whose id does not occur earlier stops there, the id included.
k=8
while ((k < 39)) && [[ ,$(IFS=,; echo "${greedy_ids[*]:0:k}"), == *,${greedy_ids[k]},* ]]; do
  k=$((k + 1))
done
want=$(IFS=,; echo "${greedy_ids[*]:0:k+1}")
got=$(c generate --ids $prompt --max-new-tokens 40 --temperature 0 --ignore-eos \
        --stop-ids "${greedy_ids[k]}" --print-ids 2>"$scratch/err")
[[ $k -lt 39 && $got == "$want" && $(cat "$scratch/err") == "[finish: stop, "* ]]
check "--stop-ids ${greedy_ids[k]} stops after it, finish: stop ($got)" $?
got=$(c generate --ids $prompt --max-new-tokens 40 --temperature 0 --logit-bias 2=100 \
        --print-ids 2>"$scratch/err")
[[ $got == 2 && $(cat "$scratch/err") == "[finish: eos, "* ]]
check "EOS made certain ends generation, finish: eos ($got)" $?

# --logprobs 2: hgrn2-run's lines, the same log-probabilities.
c generate --ids $prompt --max-new-tokens 8 --temperature 0 --ignore-eos --logprobs 2 --print-ids \
  >"$scratch/lp.cli" 2>/dev/null
"$run" --model "$tiny" --prompt-ids $prompt --max-new-tokens 8 --temperature 0 --ignore-eos \
  --logprobs 2 --print-ids >"$scratch/lp.run" 2>/dev/null
python3 - "$scratch/lp.cli" "$scratch/lp.run" <<'PY'
import sys
cli, run = (open(p).read().split("\n") for p in sys.argv[1:])
assert len(cli) == len(run) == 10 and cli[0] == run[0], (cli, run)
for a, b in zip(cli[1:9], run[1:9]):
    fa, fb = a.split(), b.split()
    assert len(fa) == len(fb) == 5 and fa[:2] == fb[:2], (a, b)
    assert abs(float(fa[2]) - float(fb[2])) < 1e-4, (a, b)
    for x, y in zip(fa[3:], fb[3:]):
        assert x.split(":")[0] == y.split(":")[0], (a, b)
        assert abs(float(x.split(":")[1]) - float(y.split(":")[1])) < 1e-4, (a, b)
PY
check "--logprobs 2: hgrn2-run's ids, log-probabilities and alternatives" $?

# --- score: hgrn2-run --score's log-probabilities ---------------------------------------------------
continuation=$(IFS=,; echo "${greedy_ids[*]:0:6}")
"$run" --model "$tiny" --prompt-ids "$prompt,$continuation" --score >"$scratch/score.run" 2>/dev/null
c score --context-ids $prompt --continuation-ids "$continuation" --top-logprobs 2 \
  >"$scratch/score.cli" 2>"$scratch/err"
code=$?
python3 - "$scratch/score.cli" "$scratch/score.run" 5 yes <<'PY'
import sys
cli = open(sys.argv[1]).read().splitlines()
run = open(sys.argv[2]).read().splitlines()
skip, greedy = int(sys.argv[3]), sys.argv[4]
lines, total = cli[:-1], cli[-1].split()
expected = run[skip - 1:]  # hgrn2-run: position t >= 1 of the whole prompt
assert len(lines) == len(expected), (lines, expected)
s = 0.0
for i, (a, b) in enumerate(zip(lines, expected)):
    fa, fb = a.split(), b.split()
    assert fa[0] == str(i) and fa[1] == fb[1], (a, b)
    assert abs(float(fa[2]) - float(fb[2])) < 1e-4, (a, b)
    if len(fa) > 3:
        assert len(fa) == 5 and (greedy != "yes" or fa[3].split(":")[0] == fa[1]), a
    s += float(fa[2])
assert total[0] == "total" and abs(float(total[1]) - s) < 1e-3 and total[3] == greedy, total
PY
check "score --context-ids --continuation-ids: hgrn2-run --score's logprobs, total, greedy yes ($code)" $?
not_greedy=$(((greedy_ids[0] + 1) % 512)),$(IFS=,; echo "${greedy_ids[*]:1:5}")
"$run" --model "$tiny" --prompt-ids "$prompt,$not_greedy" --score >"$scratch/score.run" 2>/dev/null
c score --context-ids $prompt --continuation-ids "$not_greedy" >"$scratch/score.cli" 2>/dev/null
python3 - "$scratch/score.cli" "$scratch/score.run" 5 no <<'PY'
import sys
cli = open(sys.argv[1]).read().splitlines()
run = open(sys.argv[2]).read().splitlines()[4:]
assert len(cli) == len(run) + 1 and cli[-1].split()[3] == "no", cli
for a, b in zip(cli, run):
    assert a.split()[1] == b.split()[1] and abs(float(a.split()[2]) - float(b.split()[2])) < 1e-4
PY
check "score of a continuation that is not the argmax: greedy no" $?
# No context: the first continuation token only conditions; lines start at position 1, as
# hgrn2-run --score's do.
"$run" --model "$tiny" --prompt-ids "$prompt" --score >"$scratch/score.run" 2>/dev/null
c score --continuation-ids "$prompt" >"$scratch/score.cli" 2>/dev/null
python3 - "$scratch/score.cli" "$scratch/score.run" <<'PY'
import sys
cli = open(sys.argv[1]).read().splitlines()
run = open(sys.argv[2]).read().splitlines()
assert len(cli) == len(run) + 1 and cli[0].startswith("1 17 "), (cli, run)
for a, b in zip(cli[:-1], run):
    assert a.split()[:2] == b.split()[:2] and abs(float(a.split()[2]) - float(b.split()[2])) < 1e-4
PY
check "score without context: the first token unscored, the rest as hgrn2-run --score" $?
c score --context-ids $prompt --continuation-ids "$continuation" --json >"$scratch/score.json"
python3 - "$scratch/score.json" "$continuation" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["token_ids"] == [int(x) for x in sys.argv[2].split(",")], r
assert len(r["token_logprobs"]) == 6 and r["is_greedy"] is True and r["context_tokens"] == 5, r
assert abs(sum(r["token_logprobs"]) - r["total_logprob"]) < 1e-4, r
PY
check "score --json" $?

# --- errors: the code and a message naming the field -------------------------------------------
expect_rpc_error() {  # expect_rpc_error CODE PATTERN ARGS...: exit 1, one line naming PATTERN
  local want_code=$1 pattern=$2 err code
  shift 2
  err=$(c "$@" 2>&1 >/dev/null); code=$?
  [[ $code -eq 1 && $(printf '%s\n' "$err" | wc -l) -eq 1 && $err == "hgrn2-cli: $want_code: "* &&
     ${err,,} == *"${pattern,,}"* ]]
  check "$* -> $want_code naming $pattern ($code: $err)" $?
}
expect_rpc_error INVALID_ARGUMENT top_p generate --ids 1,2 --top-p 2
expect_rpc_error INVALID_ARGUMENT top_p generate --ids 1,2 --top-p 0
expect_rpc_error INVALID_ARGUMENT temperature generate --ids 1,2 --temperature -1
expect_rpc_error INVALID_ARGUMENT temperature generate --ids 1,2 --temperature nan
expect_rpc_error INVALID_ARGUMENT top_k generate --ids 1,2 --top-k -1
expect_rpc_error INVALID_ARGUMENT min_p generate --ids 1,2 --min-p 1.5
expect_rpc_error INVALID_ARGUMENT repetition_penalty generate --ids 1,2 --repetition-penalty 0
expect_rpc_error INVALID_ARGUMENT presence_penalty generate --ids 1,2 --presence-penalty 3
expect_rpc_error INVALID_ARGUMENT frequency_penalty generate --ids 1,2 --frequency-penalty -3
expect_rpc_error INVALID_ARGUMENT 512 generate --ids 1,512
expect_rpc_error INVALID_ARGUMENT -1 generate --ids 1,-1
expect_rpc_error INVALID_ARGUMENT max_new_tokens generate --ids 1,2 --max-new-tokens $((max_new + 1))
expect_rpc_error INVALID_ARGUMENT logprobs generate --ids 1,2 --logprobs $(($(limit max_logprobs) + 1))
stops=()
for ((i = 0; i <= $(limit max_stop_strings); i++)); do stops+=(--stop "s$i"); done
expect_rpc_error INVALID_ARGUMENT stop generate --ids 1,2 "${stops[@]}"
expect_rpc_error INVALID_ARGUMENT tokenizer generate "Hello"
expect_rpc_error INVALID_ARGUMENT tokenizer tokenize "Hello"
expect_rpc_error INVALID_ARGUMENT continuation score --continuation-ids 5
expect_rpc_error INVALID_ARGUMENT 512 score --context-ids 1 --continuation-ids 5,512

expect_usage_error() {  # expect_usage_error NAME ARGS...: exit 2, one line, nothing sent
  local name=$1 err code
  shift
  err=$(c "$@" 2>&1 >/dev/null); code=$?
  [[ $code -eq 2 && $(printf '%s\n' "$err" | wc -l) -eq 1 && $err == "hgrn2-cli: "* ]]
  check "$name -> exit 2, one line ($code: $err)" $?
}
expect_usage_error "no subcommand"
expect_usage_error "unknown subcommand" bogus
expect_usage_error "unknown flag" generate --ids 1 --bogus
expect_usage_error "no prompt" generate --max-new-tokens 3
expect_usage_error "text and --ids" generate hello --ids 1
expect_usage_error "an id that is not a number" generate --ids 1,x
expect_usage_error "a negative seed" generate --ids 1 --seed -1
expect_usage_error "a malformed logit bias" generate --ids 1 --logit-bias 5
expect_usage_error "a negative --max-new-tokens" generate --ids 1 --max-new-tokens -1
expect_usage_error "a negative --timeout" info --timeout -1
expect_usage_error "--print-ids with --json" generate --ids 1 --print-ids --json
expect_usage_error "score without a continuation" score --context-ids 1
expect_usage_error "tokenize without text" tokenize
expect_usage_error "a prompt that is not UTF-8" generate $'\xff'
expect_usage_error "an overlong UTF-8 form" generate $'\xc0\xaf'
expect_usage_error "a surrogate in UTF-8" tokenize $'a\xed\xa0\x80'
expect_usage_error "a stop string that is not UTF-8" generate --ids 1 --stop $'\xe2\x82'
expect_usage_error "a context that is not UTF-8" score --context $'\xf5' --continuation a

# An unreachable server: UNAVAILABLE, one line, exit 1 (quickly: no waiting for a server).
nobody=127.0.0.1:$(free_port)
start=$SECONDS
err=$("$cli" --addr "$nobody" generate --ids 1,2 2>&1 >/dev/null); code=$?
[[ $code -eq 1 && $(printf '%s\n' "$err" | wc -l) -eq 1 && $err == "hgrn2-cli: UNAVAILABLE: "* &&
   $((SECONDS - start)) -lt 10 ]]
check "generate at an address nobody serves -> UNAVAILABLE, exit 1 ($code: $err)" $?
out=$("$cli" --addr "$nobody" health 2>"$scratch/err"); code=$?
[[ $code -eq 1 && -z $out && $(cat "$scratch/err") == "hgrn2-cli: UNAVAILABLE: "* ]]
check "health at an address nobody serves -> exit 1" $?

# --- deadlines and Ctrl-C end the call and free the sequence -------------------------------------
sequences_freed() {  # within 10 s, hgrn2_running_sequences returns to 0
  local i
  for ((i = 0; i < 100; i++)); do
    [[ $(metric hgrn2_running_sequences) == 0 ]] && return 0
    sleep 0.1
  done
  return 1
}
err=$(c --timeout 0.5 generate --ids 1,2,3 --max-new-tokens $max_new --ignore-eos --print-ids \
        2>&1 >/dev/null); code=$?
[[ $code -eq 1 && $err == "hgrn2-cli: DEADLINE_EXCEEDED: "* ]]
check "--timeout 0.5 on a long generation -> DEADLINE_EXCEEDED, exit 1 ($code: $err)" $?
sequences_freed; check "... and the server frees its sequence (hgrn2_running_sequences 0)" $?

# A background job of a script ignores SIGINT unless told otherwise; a terminal's Ctrl-C does not.
env --default-signal=INT "$cli" --addr "$server_addr" generate --ids 1,2,3 --max-new-tokens $max_new \
  --ignore-eos --print-ids >"$scratch/int.out" 2>"$scratch/int.err" &
client=$!
pids+=("$client")
for ((i = 0; i < 200; i++)); do [[ -s $scratch/int.out ]] && break; sleep 0.05; done
running=$(metric hgrn2_running_sequences)
kill -INT "$client"
wait_exit "$client" 10
err=$(cat "$scratch/int.err")
[[ $running == 1 && $exit_code == 130 && $err == "hgrn2-cli: cancelled after "*" generated tokens" ]]
check "Ctrl-C during generate: exit 130, 'cancelled after N generated tokens' (running $running, $exit_code: $err)" $?
sequences_freed; check "... and the server frees its sequence" $?
out=$(c generate --ids $prompt --max-new-tokens 40 --temperature 0 --ignore-eos --print-ids 2>/dev/null)
[[ $out == "$greedy" ]]; check "... and serves the next request as before" $?

# --- a model folder with a tokenizer ----------------------------------------------------------------
# tiny-a (V = 512) fits none of tests/data/tokenizers (1000 ids each), so the text part runs on
# u-k3-nolb (V = 1000) with the Llama-style tokenizer, as hgrn2_run_cli_test.sh does.
texted=$scratch/with-tokenizer
mkdir -p "$texted" && cp "$data/u-k3-nolb/config.json" "$data/u-k3-nolb/model.safetensors" \
  "$data/tokenizers/llama-sp/tokenizer.json" "$data/tokenizers/llama-sp/tokenizer.model" \
  "$data/tokenizers/llama-sp/tokenizer_config.json" "$texted/"
if ! start_server "$scratch/text.log" --model "$texted" --metrics-port 0; then
  check "hgrn2-server starts on a model with a tokenizer" 1
  finish
fi
text_prompt='The quick brown fox'
out=$(c info)
[[ $out == *"vocab 1000"* && $out != *"tokenizer    none"* ]]; check "info names the tokenizer" $?

want=$(printf '%s' "$text_prompt" | "$tok" --tokenizer "$texted" --add-special | tr ' ' ,)
c tokenize "$text_prompt" >"$scratch/tok.out"; code=$?
IFS=, read -ra tok_ids <<<"$want"
[[ $code -eq 0 && $(head -n1 "$scratch/tok.out") == "$want" && $want == 1,* &&
   $(($(wc -l <"$scratch/tok.out") - 1)) -eq ${#tok_ids[@]} && $(sed -n 2p "$scratch/tok.out") == '1 "<s>"' ]]
check "tokenize: hgrn2-tokenize's ids, BOS first, then one 'id \"piece\"' line each ($want)" $?
want_plain=$(printf '%s' "$text_prompt" | "$tok" --tokenizer "$texted" | tr ' ' ,)
got=$(c tokenize "$text_prompt" --no-special-tokens | head -n1)
[[ $got == "$want_plain" ]]; check "tokenize --no-special-tokens: no BOS ($got)" $?
got=$(c detokenize "$want")
[[ $got == "$text_prompt" ]]; check "detokenize gives the text back ($got)" $?
got=$(c detokenize "$want" --keep-special-tokens)
[[ $got == "<s>"*"$text_prompt" ]]; check "detokenize --keep-special-tokens keeps <s> ($got)" $?

flags=(--max-new-tokens 16 --temperature 0 --ignore-eos)
"$run" --model "$texted" --prompt "$text_prompt" "${flags[@]}" >"$scratch/text.run" 2>/dev/null
c generate "$text_prompt" "${flags[@]}" >"$scratch/text.cli" 2>"$scratch/err"
got=$(head -c 80 "$scratch/text.cli")
cmp -s "$scratch/text.run" "$scratch/text.cli"
check "generate TEXT: hgrn2-run --prompt's text ($got)" $?
want=$("$run" --model "$texted" --prompt "$text_prompt" "${flags[@]}" --print-ids 2>/dev/null)
got=$(c generate "$text_prompt" "${flags[@]}" --print-ids 2>/dev/null)
[[ -n $want && $got == "$want" ]]; check "generate TEXT --print-ids: hgrn2-run's ids" $?
c generate "$text_prompt" "${flags[@]}" --json >"$scratch/text.jsonl" 2>/dev/null
python3 - "$scratch/text.jsonl" "$scratch/text.cli" <<'PY'
import json, sys
text = "".join(json.loads(line).get("text", "") for line in open(sys.argv[1], encoding="utf-8"))
assert text + "\n" == open(sys.argv[2], encoding="utf-8").read(), text
PY
check "generate --json: the messages' text is the streamed text" $?

# A stop string from the middle of the greedy text: the text ends before its first occurrence.
stop=$(python3 -c 'import sys; t = open(sys.argv[1], encoding="utf-8").read().rstrip("\n"); print(t[len(t) // 2:len(t) // 2 + 2], end="")' "$scratch/text.cli")
c generate "$text_prompt" "${flags[@]}" --stop "$stop" >"$scratch/stop.cli" 2>"$scratch/err"
python3 - "$scratch/text.cli" "$scratch/stop.cli" "$stop" <<'PY'
import sys
full = open(sys.argv[1], encoding="utf-8").read()
got = open(sys.argv[2], encoding="utf-8").read()
assert got == full[:full.index(sys.argv[3])] + "\n", (got, full, sys.argv[3])
PY
code=$?
err=$(cat "$scratch/err")
[[ $code -eq 0 && $err == "[finish: stop \""* ]]
check "--stop '$stop': the text before it, finish: stop \"...\" ($err)" $?

# Score with text on both sides: the continuation is what follows the context's own tokens.
whole=$(printf '%s' "$text_prompt" | "$tok" --tokenizer "$texted" --add-special | tr ' ' ,)
context_ids=$(printf '%s' "The quick" | "$tok" --tokenizer "$texted" --add-special | tr ' ' ,)
"$run" --model "$texted" --prompt-ids "$whole" --score >"$scratch/score.run" 2>/dev/null
c score --context "The quick" --continuation " brown fox" >"$scratch/score.cli" 2>/dev/null
IFS=, read -ra context_array <<<"$context_ids"
python3 - "$scratch/score.cli" "$scratch/score.run" "${#context_array[@]}" <<'PY'
import sys
cli = open(sys.argv[1]).read().splitlines()
run = open(sys.argv[2]).read().splitlines()[int(sys.argv[3]) - 1:]
assert len(cli) == len(run) + 1 and len(run) > 0, (cli, run)
for a, b in zip(cli, run):
    assert a.split()[1] == b.split()[1] and abs(float(a.split()[2]) - float(b.split()[2])) < 1e-4, (a, b)
PY
check "score --context TEXT --continuation TEXT: hgrn2-run --score on the whole text's tokens" $?

expect_rpc_error INVALID_ARGUMENT "no tokens" generate "" --no-special-tokens
expect_rpc_error INVALID_ARGUMENT 5000 detokenize 5000

finish
