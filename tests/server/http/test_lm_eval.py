"""lm-evaluation-harness (lm-eval, its local-completions model) against hgrn2-server's
OpenAI-compatible API, on two small tasks made from local files over the demo model: a
log-likelihood task, whose per-example log-likelihoods must equal hgrn2-run --score's to 1e-4,
and a generate_until task, whose greedy generations must equal hgrn2-run's.

lm-eval finds the server's tokenizer endpoints (/tokenizer_info, /tokenize, /detokenize) and sends
token ids, as it does with vLLM; it scores by echo with logprobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import DEMO, Server, post, run

LOGLIKELIHOOD = [
    {"context": "It is a truth universally", "continuation": " acknowledged"},
    {"context": "Mr. Darcy looked at", "continuation": " Elizabeth with a smile"},
    {"context": "\"My dear Mr. Bennet,\" said his", "continuation": " lady to him one day"},
    {"context": "She was", "continuation": " not at all handsome"},
    {"context": "The ball at Netherfield", "continuation": " was a great success."},
]
GENERATE = [
    {"context": "It is a truth universally acknowledged", "target": ""},
    {"context": "Elizabeth could not help", "target": ""},
    {"context": "Mrs. Bennet was", "target": ""},
]
UNTIL = ["\n", "."]
MAX_GEN_TOKS = 24


def task_files(folder: Path) -> None:
    for name, docs in (("ll", LOGLIKELIHOOD), ("gen", GENERATE)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "hgrn2_ll.yaml").write_text(f"""task: hgrn2_ll
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder / 'll.jsonl'}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{continuation}}}}"
metric_list:
  - metric: perplexity
  - metric: acc
""")
    (folder / "hgrn2_gen.yaml").write_text(f"""task: hgrn2_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder / 'gen.jsonl'}
test_split: test
output_type: generate_until
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{target}}}}"
generation_kwargs:
  until: {json.dumps(UNTIL)}
  max_gen_toks: {MAX_GEN_TOKS}
  do_sample: false
  temperature: 0
metric_list:
  - metric: exact_match
""")


def tokens(server: Server, text: str) -> list[int]:
    return post(server, "/tokenize", {"prompt": text, "add_special_tokens": False})["tokens"]


def samples(output: Path, task: str) -> list[dict]:
    files = sorted(output.rglob(f"samples_{task}_*.jsonl"))
    assert files, f"no samples of {task} under {output}"
    return [json.loads(line) for line in files[-1].read_text().splitlines()]


def arguments(sample: dict) -> list:
    args = sample["arguments"]
    if isinstance(args, dict):  # {"gen_args_0": {"arg_0": ..., "arg_1": ...}}
        args = [v for _, v in sorted(args["gen_args_0"].items())]
    elif args and isinstance(args[0], list):
        args = args[0]
    return args


def test_lm_eval_local_completions(demo_server: Server, tmp_path: Path) -> None:
    task_files(tmp_path)
    output = tmp_path / "out"
    env = dict(os.environ, OPENAI_API_KEY="unused", HF_DATASETS_OFFLINE="1",
               HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "lm_eval", "run", "--model", "local-completions",
               "--model_args",
               f"model=hgrn2-demo,base_url={demo_server.base_url}/completions,"
               "num_concurrent=2,max_retries=1,tokenizer_backend=remote",
               "--tasks", "hgrn2_ll,hgrn2_gen", "--include_path", str(tmp_path),
               "--batch_size", "1", "--log_samples", "--output_path", str(output)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    # Log-likelihoods: lm-eval's (from the server's echoed logprobs) against hgrn2-run --score
    # on the same ids, which lm-eval made with the server's tokenizer as _encode_pair does.
    ll = samples(output, "hgrn2_ll")
    assert len(ll) == len(LOGLIKELIHOOD)
    for sample in ll:
        context, continuation = arguments(sample)[:2]
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        context_ids = tokens(demo_server, context)
        whole = tokens(demo_server, context + continuation)
        ids = context_ids + whole[len(context_ids):]
        scored = run("--model", str(DEMO), "--prompt-ids", ",".join(map(str, ids)), "--score")
        per_token = {int(line.split()[0]): float(line.split()[2]) for line in scored.splitlines()}
        want = sum(per_token[t] for t in range(len(context_ids), len(ids)))
        got = sample["resps"][0][0][0]
        assert want < 0 and len(ids) > len(context_ids)
        assert abs(float(got) - want) < 1e-4, (context, continuation, got, want)

    # Greedy generations: lm-eval's against hgrn2-run's greedy ids, decoded after the prompt and
    # cut at the first stop string.
    gen = samples(output, "hgrn2_gen")
    assert len(gen) == len(GENERATE)
    texts = []
    for sample in gen:
        context = arguments(sample)[0]
        ids = tokens(demo_server, context)
        generated = run("--model", str(DEMO), "--prompt-ids", ",".join(map(str, ids)),
                        "--max-new-tokens", str(MAX_GEN_TOKS), "--temperature", "0").strip()
        new = [int(i) for i in generated.split(",") if i]
        full = post(demo_server, "/detokenize", {"tokens": ids + new})["prompt"]
        prefix = post(demo_server, "/detokenize", {"tokens": ids})["prompt"]
        want = full[len(prefix):].replace("</s>", "")
        for stop in UNTIL:
            want = want.split(stop)[0]
        got = sample["resps"][0][0]
        assert got == want, (context, got, want)
        texts.append(got)
    assert any(texts), texts  # something was generated to compare
