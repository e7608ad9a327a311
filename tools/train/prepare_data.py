#!/usr/bin/env python3
"""Prepares the training data of the demo model: text, tokenizer and token ids.

Source: the Debian package r-cran-janeaustenr (Jane Austen's six completed novels as
published by Project Gutenberg; the novels are in the public domain, the package is MIT), read out
of the installed package with R (`janeaustenr::austen_books()`). tools/train/install-data-deps
installs the package and the Python environment this script runs in:

    tools/train/install-data-deps
    .cache/train-venv/bin/python tools/train/prepare_data.py        # writes .gpu-bundle/train/

What it does, deterministically (same package version, same output):
  1. Cleaning. Each novel is cut into chapters at its "CHAPTER n"/"Chapter n" headings; what comes
     before the first chapter (title, author, a preface) and after the end mark ("THE END",
     "FINIS", and Northanger Abbey's modern "A NOTE ON THE TEXT") is left out, as are "VOLUME n"
     headings and editors' bracketed notes. A chapter is one document: its paragraphs (runs of
     non-empty lines) with the line wrapping undone, runs of spaces made one, "_italics_"
     underscores removed, joined by "\\n\\n". Headings are not part of the text.
  2. Split. Documents are numbered in package order (the novels in publication order, chapters in
     order). Number 12 modulo 25: held out (4%, spread over the novels; only for the final
     perplexity). Number 0 modulo 25: validation (4%; train.py picks its checkpoint by it). The
     rest (92%) is training data.
  3. Tokenizer. A SentencePiece BPE model (Llama's settings: byte fallback, digits split, no
     normalization, unk 0, <s> 1, </s> 2, no pad) trained on the training paragraphs only, saved as
     tokenizer.model, and converted by transformers' LlamaTokenizerFast (legacy=False) into
     tokenizer.json, tokenizer_config.json and special_tokens_map.json, as a Llama-style checkpoint
     ships them. Both are checked to give identical ids on every held-out paragraph and document.
  4. Ids. Training stream: for each training document, <s> + ids(text) + </s>, concatenated
     (uint16). Validation and held-out documents: <s> + ids(text) each, no </s> (exactly what a
     tokenizer with add-special gives for the text: see train.py for how perplexity is computed).
  5. Excerpt. The first paragraphs of the first held-out document, whole paragraphs up to at least
     256 tokens, with their ids: train.py records fla's per-token log-probabilities of it.

Output folder (default .gpu-bundle/train/, git-ignored; the GPU run carries it):
  tokenizer/            tokenizer.model, tokenizer.json, tokenizer_config.json,
                        special_tokens_map.json
  tokens.npz            train_ids uint16 [N]; {valid,heldout}_ids uint16 (the documents one after
                        another) with {valid,heldout}_offsets int64 [documents + 1]
  heldout.jsonl         one held-out document per line: {"doc", "book", "chapter", "text"}
  excerpt.json          {"text", "ids" (<s> first), "doc"}: the held-out excerpt
  check_lines.txt       held-out paragraphs, one per line, for tokenizer checks (check_tokenizer.py)
  manifest.json         source package, version and licence, counts, settings, file hashes
and beside it (not carried): .gpu-bundle/train-text/{train,heldout}.jsonl, the cleaned text.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = "r-cran-janeaustenr"
SPLIT_EVERY, HELDOUT_AT, VALID_AT = 25, 12, 0
EXCERPT_MIN_TOKENS = 256

CHAPTER_RE = re.compile(r"^(CHAPTER|Chapter) ([0-9]+|[IVXLC]+)$")
VOLUME_RE = re.compile(r"^VOLUME [IVX]+$")
END_RE = re.compile(r"^(THE END|FINIS|Finis|A NOTE ON THE TEXT)$")


def run(cmd, **kwargs):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs).stdout


def package_info():
    version = run(["dpkg-query", "-W", "-f=${Version}", PACKAGE]).strip()
    copyright_path = f"/usr/share/doc/{PACKAGE}/copyright"
    with open(copyright_path, encoding="utf-8") as f:
        copyright_text = f.read()
    licences = sorted(set(re.findall(r"^License: (\S+)", copyright_text, re.M)))
    return {"package": PACKAGE, "version": version, "copyright_file": copyright_path,
            "package_licence": licences,
            "text_licence": "public domain (Jane Austen, 1775-1817; Project Gutenberg texts)"}


def read_books():
    """[(book, [line, ...])] in package order, read with R from the installed package."""
    script = ('library(janeaustenr); b <- austen_books(); '
              'writeLines(paste(as.integer(b$book), as.character(b$book), b$text, sep="\\t"), '
              'stdout(), useBytes = TRUE)')
    out = subprocess.run(["Rscript", "--vanilla", "-e", script], check=True,
                         capture_output=True).stdout.decode("utf-8")
    books = []
    for line in out.split("\n")[:-1]:
        index, book, text = line.split("\t", 2)
        if not books or books[-1][0] != book:
            books.append((book, []))
        books[-1][1].append(text)
    return books


def clean_paragraph(lines):
    text = " ".join(line.strip() for line in lines)
    text = text.replace("_", "")
    return re.sub(r" {2,}", " ", text).strip()


def chapters_of(book, lines):
    """[(chapter heading, [paragraph, ...])] of one novel."""
    chapters, current, paragraph = [], None, []

    def end_paragraph():
        if current is not None and paragraph:
            text = clean_paragraph(paragraph)
            if text:
                current[1].append(text)
        paragraph.clear()

    for raw in lines:
        line = raw.strip()
        if END_RE.match(line):
            break
        if CHAPTER_RE.match(line):
            end_paragraph()
            current = (line, [])
            chapters.append(current)
        elif VOLUME_RE.match(line) or line.startswith("["):
            end_paragraph()
        elif not line:
            end_paragraph()
        else:
            paragraph.append(line)
    end_paragraph()
    return [c for c in chapters if c[1]]


def documents():
    docs = []
    for book, lines in read_books():
        for heading, paragraphs in chapters_of(book, lines):
            docs.append({"doc": len(docs), "book": book, "chapter": heading,
                         "paragraphs": paragraphs, "text": "\n\n".join(paragraphs)})
    return docs


def train_tokenizer(paragraphs, folder, vocab_size):
    from transformers import LlamaTokenizerFast
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write("\n".join(paragraphs) + "\n")
        # Llama's settings: BPE, byte fallback, split digits, no normalization, <unk> <s> </s>.
        spm.SentencePieceTrainer.train(
            input=corpus, model_prefix=os.path.join(tmp, "m"), vocab_size=vocab_size,
            model_type="bpe", byte_fallback=True, split_digits=True, character_coverage=0.9999,
            allow_whitespace_only_pieces=True, normalization_rule_name="identity",
            remove_extra_whitespaces=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            max_sentence_length=100000, num_threads=1, minloglevel=2, shuffle_input_sentence=False,
            input_sentence_size=0)
        # The model records the trainer's input paths; drop the temporary folder from them so the
        # file is the same from run to run.
        from sentencepiece import sentencepiece_model_pb2
        model = sentencepiece_model_pb2.ModelProto()
        with open(os.path.join(tmp, "m.model"), "rb") as f:
            model.ParseFromString(f.read())
        model.trainer_spec.input[:] = ["corpus.txt"]
        model.trainer_spec.model_prefix = "m"
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
            f.write(model.SerializeToString())
    fast = LlamaTokenizerFast(vocab_file=os.path.join(folder, "tokenizer.model"), legacy=False,
                              from_slow=True, add_prefix_space=True)
    with tempfile.TemporaryDirectory() as tmp:
        fast.save_pretrained(tmp)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(tmp, name), os.path.join(folder, name))


def check_tokenizers(folder, texts):
    """sentencepiece and tokenizer.json (through `tokenizers`) must agree, BOS included."""
    from tokenizers import Tokenizer
    sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, "tokenizer.model"))
    hf = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    bad = 0
    for text in texts:
        a = [sp.bos_id()] + sp.encode(text)
        b = hf.encode(text, add_special_tokens=True).ids
        if a != b:
            bad += 1
            if bad <= 3:
                print(f"  MISMATCH on {text[:60]!r}: sp {a[:12]} hf {b[:12]}", file=sys.stderr)
        elif sp.decode(a[1:]) != text or hf.decode(b, skip_special_tokens=True) != text:
            bad += 1
            print(f"  decode does not round-trip {text[:60]!r}", file=sys.stderr)
    return bad


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def split_of(doc):
    if doc % SPLIT_EVERY == HELDOUT_AT:
        return "heldout"
    return "valid" if doc % SPLIT_EVERY == VALID_AT else "train"


def describe(part):
    return ", ".join(d["book"] + " " + d["chapter"] for d in part)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(ROOT, ".gpu-bundle", "train"))
    parser.add_argument("--text-out", default=os.path.join(ROOT, ".gpu-bundle", "train-text"))
    parser.add_argument("--vocab-size", type=int, default=8192)
    args = parser.parse_args()

    info = package_info()
    docs = documents()
    parts = {name: [d for d in docs if split_of(d["doc"]) == name]
             for name in ("train", "valid", "heldout")}
    train, valid, heldout = parts["train"], parts["valid"], parts["heldout"]
    print(f"{info['package']} {info['version']}: {len(docs)} chapters, "
          f"{sum(len(d['text']) for d in docs)} characters")
    print(f"  validation {len(valid)}: {describe(valid)}")
    print(f"  held out {len(heldout)}: {describe(heldout)}")

    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    os.makedirs(args.text_out, exist_ok=True)
    for name, part in parts.items():
        with open(os.path.join(args.text_out, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for d in part:
                f.write(json.dumps({k: d[k] for k in ("doc", "book", "chapter", "text")},
                                   ensure_ascii=False) + "\n")
    shutil.copy(os.path.join(args.text_out, "heldout.jsonl"), os.path.join(args.out, "heldout.jsonl"))

    tok_dir = os.path.join(args.out, "tokenizer")
    train_tokenizer([p for d in train for p in d["paragraphs"]], tok_dir, args.vocab_size)
    check_lines = [p for d in heldout for p in d["paragraphs"]]
    with open(os.path.join(args.out, "check_lines.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(check_lines) + "\n")
    check_texts = check_lines + [d["text"] for d in valid + heldout]
    bad = check_tokenizers(tok_dir, check_texts)
    print(f"tokenizer.model vs tokenizer.json: {len(check_texts)} texts (held-out paragraphs, "
          f"validation and held-out documents), {bad} mismatches")
    if bad:
        sys.exit("the two tokenizer files disagree")

    sp = spm.SentencePieceProcessor(model_file=os.path.join(tok_dir, "tokenizer.model"))
    bos, eos = sp.bos_id(), sp.eos_id()
    assert (sp.unk_id(), bos, eos, sp.get_piece_size()) == (0, 1, 2, args.vocab_size)
    train_ids = []
    for d in train:
        train_ids += [bos] + sp.encode(d["text"]) + [eos]
    arrays = {"train_ids": np.asarray(train_ids, dtype=np.uint16)}
    for name in ("valid", "heldout"):
        ids = [[bos] + sp.encode(d["text"]) for d in parts[name]]
        arrays[f"{name}_ids"] = np.asarray([i for doc in ids for i in doc], dtype=np.uint16)
        arrays[f"{name}_offsets"] = np.cumsum([0] + [len(doc) for doc in ids]).astype(np.int64)
    np.savez(os.path.join(args.out, "tokens.npz"), **arrays)
    words = {name: sum(len(d["text"].split()) for d in part) for name, part in parts.items()}
    counts = {"train": len(train_ids), "valid": int(arrays["valid_offsets"][-1]),
              "heldout": int(arrays["heldout_offsets"][-1])}
    print(f"tokens: train {counts['train']} ({counts['train'] / words['train']:.3f} per word), "
          f"validation {counts['valid']}, held-out {counts['heldout']}")

    first = heldout[0]
    excerpt = []
    for paragraph in first["paragraphs"]:
        excerpt.append(paragraph)
        if len(sp.encode("\n\n".join(excerpt))) + 1 >= EXCERPT_MIN_TOKENS:
            break
    excerpt_text = "\n\n".join(excerpt)
    excerpt_ids = [bos] + sp.encode(excerpt_text)
    with open(os.path.join(args.out, "excerpt.json"), "w", encoding="utf-8") as f:
        json.dump({"doc": first["doc"], "book": first["book"], "chapter": first["chapter"],
                   "text": excerpt_text, "ids": excerpt_ids}, f, ensure_ascii=False)
        f.write("\n")
    print(f"excerpt: {len(excerpt)} paragraphs of {first['book']} {first['chapter']}, "
          f"{len(excerpt_ids)} tokens with <s>")

    manifest = {
        "source": info,
        "documents": {
            "total": len(docs), **{name: len(part) for name, part in parts.items()},
            "rule": f"doc % {SPLIT_EVERY} == {HELDOUT_AT}: held out; == {VALID_AT}: validation",
            **{f"{name}_docs": [{k: d[k] for k in ("doc", "book", "chapter")} for d in parts[name]]
               for name in ("valid", "heldout")}},
        "characters": {name: sum(len(d["text"]) for d in part) for name, part in parts.items()},
        "words": words,
        "tokens": {**counts, "train_format": "per document: <s> ids </s>, concatenated",
                   "valid_heldout_format": "per document: <s> ids (no </s>)"},
        "tokenizer": {"type": "sentencepiece bpe, byte_fallback, split_digits, identity normalization",
                      "vocab_size": args.vocab_size, "unk": 0, "bos": bos, "eos": eos,
                      "trained_on": "training documents' paragraphs only",
                      "sentencepiece": spm.__version__,
                      "transformers": __import__("transformers").__version__,
                      "tokenizers": __import__("tokenizers").__version__},
        "files": {},
    }
    for dirpath, _, names in os.walk(args.out):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            manifest["files"][os.path.relpath(path, args.out)] = sha256(path)
    with open(os.path.join(args.out, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
