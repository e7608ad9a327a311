#!/usr/bin/env python3
"""Makes the tokenizer fixtures in tests/data/tokenizers/ and their golden ids and texts.

The reference libraries build and run every tokenizer here; the C++ tests compare against what
this script writes, so CI needs no Python. Made with (pin these to reproduce byte for byte):

    pip install tokenizers==0.22.2 sentencepiece==0.2.3 "transformers==4.57.6" protobuf==7.36.2

(transformers 5.x converts a SentencePiece model without its merges, so 4.x is required.)
Run from anywhere: python3 tests/data/tokenizers/make_tokenizers.py

Tokenizers made (each folder holds what a checkpoint would ship):
  llama-sp/         SentencePiece BPE with byte fallback trained by `sentencepiece`, converted
                    by transformers' LlamaTokenizerFast (legacy=False): Metaspace pre-tokenizer,
                    prepend_scheme "first". Also keeps tokenizer.model (golden: sentencepiece).
  llama-legacy/     the same model converted with legacy=True: normalizer Prepend + Replace.
  bytelevel/        GPT-2 style byte-level BPE trained by `tokenizers`; merges as "a b" strings.
  bytelevel-digits/ NFC, Digits(individual) + ByteLevel(add_prefix_space), BOS template.
  bytelevel-split/  Llama-3 style Split regex + Digits + ByteLevel(use_regex=false),
                    ignore_merges, Sequence[ByteLevel, TemplateProcessing] post-processor.
  bytelevel-splits/ every Split behaviour (string and regex patterns, invert).
  metaspace-never/  Metaspace(never, split) pre-tokenizer and decoder, lstrip/rstrip and
                    normalized added tokens.
  metaspace-always/ the older Metaspace form ("add_prefix_space": true), NFC normalizer.
"""

import inspect
import importlib
import json
import os
import random
import shutil
import tempfile

import sentencepiece as spm
import tokenizers
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB_SIZE = 1000  # equals tests/data/u-k3-nolb's, so hgrn2-run can pair them

# Training text: the source of some standard-library modules (English prose and code) and
# sentences in many scripts, so that the vocabularies hold multi-script pieces.
MODULES = ["argparse", "collections", "csv", "difflib", "email.message", "functools", "json",
           "logging", "pathlib", "string", "textwrap", "typing", "urllib.parse", "statistics"]
MULTILINGUAL = [
    "日本語のテキストを書きます。東京は日本の首都です。", "中文测试：你好，世界！我们今天学习。",
    "한국어 텍스트입니다. 안녕하세요.", "Привет, мир! Как дела? Москва — столица России.",
    "Γειά σου Κόσμε. Η Αθήνα είναι η πρωτεύουσα.", "مرحبا بالعالم. القاهرة مدينة كبيرة.",
    "שלום עולם. ירושלים עיר עתיקה.", "नमस्ते दुनिया। दिल्ली भारत की राजधानी है।",
    "สวัสดีชาวโลก ภาษาไทย", "Ünïcödé façade naïve café crème brûlée São Paulo Zürich",
    "¡Hola! ¿Qué tal? Ñandú, pingüino.", "Emoji: 😀 😃 👍 🎉 ❤️ 🚀",
]

TEXTS = [
    "",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "multiple    spaces   inside",
    "   ",
    " ",
    "\t",
    "tabs\tand\t\ttabs",
    "CRLF line\r\nnext line\r\n",
    "\n\n\nnewlines\n",
    "mixed \t \n whitespace \r\n\t end",
    "1234567890 3.14159 1,000,000 2026-11-23",
    "Phone: +1 (555) 010-9999, ext. 42",
    "def f(x):\n    return x**2 + 1  # square plus one\n",
    'int main() { printf("%d\\n", 42); return 0; }',
    "if (a && b || !c) { x += y; } else { y -= x; }",
    "I'm sure you're right; it's what we'll do, they'd say. DON'T SHOUT",
    "Ünïcödé façade naïve café",
    "日本語のテキストです。",
    "中文测试，你好世界！",
    "한국어 텍스트",
    "Привет, мир!",
    "Γειά σου Κόσμε",
    "مرحبا بالعالم",
    "שלום עולם",
    "हिन्दी पाठ",
    "ภาษาไทย",
    "ქართული ენა ᎠᏍᎦᏯ ሰላም",
    "😀😃😄",
    "👍🏽 thumbs up with a skin tone",
    "👨‍👩‍👧‍👦 a family by ZWJ",
    "🏳️‍🌈 flag and ❤️ heart with VS16",
    "🇯🇵🇺🇸 flags",
    "e\u0301 vs \u00e9 and A\u030a vs \u00c5",
    "a\u0308\u0323 stacked marks",
    "\u0301 starts with a combining mark",
    "Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032d\u0308\u0307lgo",
    "non\u00a0breaking and zero\u200bwidth and\u3000ideographic space",
    "\ufeffbyte order mark",
    "<s>Hello</s>",
    "Hello <s> world </s> again",
    "text with <|endoftext|> inside",
    "a <sep> b  <sep>  c",
    "beep boop beeping",
    "</s></s>",
    "English and 日本語 mixed with 😀 and the number 42.",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "Ⅻ ½ ² ٣ ৪ numeric forms",
    "\x00\x01 control chars \x7f",
    ("HGRN2 is a gated linear recurrent network whose state is an outer product. Unlike a "
     "transformer, it keeps a fixed-size state per sequence, so long prompts cost linear time "
     "and a conversation can be saved and resumed later.\n\nThis paragraph exists to exercise "
     "ordinary English prose: punctuation, commas, semicolons; quotes \"like these\" and "
     "'these', parentheses (as here), and numbers such as 1.3B, 24 MiB and 3.0 TB/s."),
]

# Llama-3's pre-tokenizer pattern.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def corpus_lines():
    lines = []
    for name in MODULES:
        lines += inspect.getsource(importlib.import_module(name)).splitlines()
    rng = random.Random(1)
    for _ in range(300):
        lines.append(" ".join(rng.sample(MULTILINGUAL, 3)))
    return [line for line in lines if line.strip()]


def train_sentencepiece(lines, folder):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "corpus.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
        # Llama's settings: BPE, byte fallback, split digits, no normalization, <unk> <s> </s>.
        spm.SentencePieceTrainer.train(
            input=path, model_prefix=os.path.join(tmp, "m"), vocab_size=VOCAB_SIZE,
            model_type="bpe", byte_fallback=True, split_digits=True, character_coverage=0.9995,
            allow_whitespace_only_pieces=True, normalization_rule_name="identity",
            remove_extra_whitespaces=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            max_sentence_length=100000, num_threads=1, minloglevel=2)
        os.makedirs(folder, exist_ok=True)
        shutil.copy(os.path.join(tmp, "m.model"), os.path.join(folder, "tokenizer.model"))


def convert_llama(model_path, folder, legacy):
    from transformers import LlamaTokenizerFast
    fast = LlamaTokenizerFast(vocab_file=model_path, legacy=legacy, from_slow=True,
                              add_prefix_space=True)
    with tempfile.TemporaryDirectory() as tmp:
        fast.save_pretrained(tmp)
        os.makedirs(folder, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(tmp, name), os.path.join(folder, name))


def train_bytelevel(lines):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    return tok


def save_json(tok_json, folder):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok_json, f, ensure_ascii=False, indent=1)
        f.write("\n")


def variant(base_json, folder, edit):
    """Applies `edit` to the Python tokenizer loaded from `base_json`, then to its JSON."""
    tok = Tokenizer.from_str(json.dumps(base_json))
    tok_json = edit(tok)
    if tok_json is None:
        tok_json = json.loads(tok.to_str())
    save_json(tok_json, folder)
    return tok_json


def random_id_lists(rng, vocab, byte_ids):
    lists = []
    for i in range(40):
        n = rng.randint(1, 24)
        if i % 2 and byte_ids:  # mostly byte pieces: split and invalid UTF-8
            lists.append([rng.choice(byte_ids) if rng.random() < 0.8 else rng.randrange(vocab)
                          for _ in range(n)])
        else:
            lists.append([rng.randrange(vocab) for _ in range(n)])
    return lists


def golden_json(name, folder, rng):
    tok = Tokenizer.from_file(os.path.join(HERE, folder, "tokenizer.json"))
    vocab = tok.get_vocab_size(with_added_tokens=True)
    byte_ids = [i for i in range(vocab) if (tok.id_to_token(i) or "").startswith("<0x")]
    entry = {"name": name, "file": f"{folder}/tokenizer.json",
             "reference": f"tokenizers {tokenizers.__version__}", "vocab_size": vocab,
             "encode": [], "encode_special": [], "decode": [], "decode_skip": []}
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False).ids
        with_special = tok.encode(text, add_special_tokens=True).ids
        entry["encode"].append(ids)
        entry["encode_special"].append(with_special)
        entry["decode"].append(tok.decode(ids, skip_special_tokens=False))
        entry["decode_skip"].append(tok.decode(with_special, skip_special_tokens=True))
    entry["random_ids"] = random_id_lists(rng, vocab, byte_ids)
    entry["random_decode"] = [tok.decode(ids, skip_special_tokens=False)
                              for ids in entry["random_ids"]]
    entry["random_decode_skip"] = [tok.decode(ids, skip_special_tokens=True)
                                   for ids in entry["random_ids"]]
    return entry


def golden_sentencepiece(name, folder, rng):
    sp = spm.SentencePieceProcessor(model_file=os.path.join(HERE, folder, "tokenizer.model"))
    vocab = sp.get_piece_size()
    byte_ids = [i for i in range(vocab) if sp.is_byte(i)]
    entry = {"name": name, "file": f"{folder}/tokenizer.model",
             "reference": f"sentencepiece {spm.__version__}", "vocab_size": vocab,
             "encode": [], "encode_special": [], "decode": [], "decode_skip": []}
    for text in TEXTS:
        ids = sp.encode(text)
        entry["encode"].append(ids)
        entry["encode_special"].append([sp.bos_id()] + ids)  # LlamaTokenizer: BOS, no EOS
        entry["decode"].append(sp.decode(ids))
        entry["decode_skip"].append(sp.decode([sp.bos_id()] + ids))
    entry["random_ids"] = random_id_lists(rng, vocab, byte_ids)
    entry["random_decode"] = [sp.decode(ids) for ids in entry["random_ids"]]
    entry["random_decode_skip"] = entry["random_decode"]  # control pieces never print
    return entry


def main():
    lines = corpus_lines()
    train_sentencepiece(lines, os.path.join(HERE, "llama-sp"))
    model_path = os.path.join(HERE, "llama-sp", "tokenizer.model")
    convert_llama(model_path, os.path.join(HERE, "llama-sp"), legacy=False)
    convert_llama(model_path, os.path.join(HERE, "llama-legacy"), legacy=True)
    with open(os.path.join(HERE, "llama-sp", "tokenizer.json"), encoding="utf-8") as f:
        llama_json = json.load(f)

    byte = json.loads(train_bytelevel(lines).to_str())
    # The older merges format: "a b" strings (byte-level tokens never contain a space).
    byte["model"]["merges"] = [" ".join(pair) for pair in byte["model"]["merges"]]
    save_json(byte, os.path.join(HERE, "bytelevel"))
    eot = byte["model"]["vocab"]["<|endoftext|>"]
    template = processors.TemplateProcessing(single="<|endoftext|> $A",
                                             special_tokens=[("<|endoftext|>", eot)])

    def digits(tok):
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=True)])
        tok.post_processor = template
    variant(byte, os.path.join(HERE, "bytelevel-digits"), digits)

    def split(tok):
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False),
                                                  template])
        out = json.loads(tok.to_str())
        out["model"]["ignore_merges"] = True
        return out
    variant(byte, os.path.join(HERE, "bytelevel-split"), split)

    def splits(tok):
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(" ", behavior="merged_with_next"),
            pre_tokenizers.Split(Regex(r"[,.;:!?]"), behavior="merged_with_previous"),
            pre_tokenizers.Split(Regex(r"\s"), behavior="contiguous"),
            pre_tokenizers.Split("\t", behavior="removed"),
            pre_tokenizers.Split(Regex(r"\p{L}+"), behavior="isolated", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    variant(byte, os.path.join(HERE, "bytelevel-splits"), splits)

    def never(tok):
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never", split=True)
        tok.decoder = decoders.Sequence([decoders.ByteFallback(),
                                         decoders.Metaspace(prepend_scheme="never")])
        tok.add_special_tokens([AddedToken("<sep>", lstrip=True, rstrip=True, normalized=False,
                                           special=True)])
        tok.add_tokens([AddedToken("beep", normalized=True, special=False)])
    variant(llama_json, os.path.join(HERE, "metaspace-never"), never)

    def always(tok):
        tok.normalizer = normalizers.NFC()
        out = json.loads(tok.to_str())
        # The older form: no prepend_scheme ("always" from add_prefix_space), split by default.
        out["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                                "add_prefix_space": True}
        return out
    variant(llama_json, os.path.join(HERE, "metaspace-always"), always)

    rng = random.Random(20261123)
    golden = {"texts": TEXTS, "tokenizers": [
        golden_json("llama-sp", "llama-sp", rng),
        golden_sentencepiece("llama-sp-model", "llama-sp", rng),
        golden_json("llama-legacy", "llama-legacy", rng),
        golden_json("bytelevel", "bytelevel", rng),
        golden_json("bytelevel-digits", "bytelevel-digits", rng),
        golden_json("bytelevel-split", "bytelevel-split", rng),
        golden_json("bytelevel-splits", "bytelevel-splits", rng),
        golden_json("metaspace-always", "metaspace-always", rng),
        golden_json("metaspace-never", "metaspace-never", rng),
    ]}
    with open(os.path.join(HERE, "golden.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
