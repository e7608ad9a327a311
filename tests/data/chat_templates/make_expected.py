#!/usr/bin/env python3
"""Writes expected.json: what transformers' apply_chat_template(tokenize=False) renders for each
template here and each conversation below, the reference the server's chat templates (minja,
server/http/chat_template.cc) are tested against (tests/server/http/chat_template_test.cc).

Usage (once, by hand; CI only reads expected.json):
    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install transformers==5.25.0 jinja2
    /tmp/tvenv/bin/python tests/data/chat_templates/make_expected.py

The templates are the models' own (tokenizer_config.json on the Hugging Face hub), as llama.cpp
keeps them in models/templates/ (taken from the llama-cpp-python 0.3.16 sdist, like
third_party/minja). A conversation a template refuses (raise_exception) is recorded as an error.
"""
import json
import pathlib

import transformers

HERE = pathlib.Path(__file__).resolve().parent
TOKENIZER = HERE.parents[2] / "models" / "hgrn2-demo" / "tokenizer.json"

# template file: (bos_token, eos_token) as the model's tokenizer_config.json has them.
TEMPLATES = {
    "meta-llama-Llama-3.1-8B-Instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "Qwen-Qwen2.5-7B-Instruct.jinja": (None, "<|im_end|>"),
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": ("<s>", "</s>"),
    "google-gemma-2-2b-it.jinja": ("<bos>", "<eos>"),
    "microsoft-Phi-3.5-mini-instruct.jinja": ("<s>", "<|endoftext|>"),
}

CONVERSATIONS = [
    ([{"role": "user", "content": "Hello!"}], True),
    ([{"role": "user", "content": "Hello!"}], False),
    ([{"role": "system", "content": "You are terse."},
      {"role": "user", "content": "What is 2+2?"}], True),
    ([{"role": "user", "content": "Name a colour."},
      {"role": "assistant", "content": "Blue."},
      {"role": "user", "content": "Another, with a line break\nand \"quotes\" and ünïcödé ✓."}], True),
    ([{"role": "system", "content": "Be kind."},
      {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Hello, how can I help?"}], False),
    ([{"role": "assistant", "content": "I speak first."}], True),
]


def main() -> None:
    cases = []
    for name, (bos, eos) in TEMPLATES.items():
        source = (HERE / name).read_text()
        tokenizer = transformers.PreTrainedTokenizerFast(
            tokenizer_file=str(TOKENIZER), bos_token=bos, eos_token=eos)
        tokenizer.chat_template = source
        for messages, add_generation_prompt in CONVERSATIONS:
            case = {"template": name, "bos_token": bos or "", "eos_token": eos or "",
                    "messages": messages, "add_generation_prompt": add_generation_prompt}
            try:
                case["expected"] = tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=add_generation_prompt)
            except Exception as e:  # the template's raise_exception
                case["error"] = str(e)
            cases.append(case)
    out = {"generator": f"transformers {transformers.__version__} apply_chat_template",
           "cases": cases}
    (HERE / "expected.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases, {sum('error' in c for c in cases)} refused by their template")


if __name__ == "__main__":
    main()
