#!/usr/bin/env python3
"""Trains the demo HGRN2 with fla, exports it in fla's Hugging Face layout, and records what the
C++ engine's tests compare against.

    python3 tools/train/train.py --data .gpu-bundle/train --out DIR [--hidden-size 256 ...]

Needs PyTorch, fla (flash-linear-attention + fla-core), transformers, tokenizers, safetensors and
numpy, and a CUDA GPU (`--device cpu` runs the same code with plain-PyTorch stand-ins for fla's
kernels, for the smoke test only). tools/train/run-on-device.sh runs it on the GPU machine.

Training
  Windows of --seq-len + 1 tokens at uniformly random offsets of the training stream (documents as
  <s> text </s>, concatenated; see prepare_data.py), --batch-size of them per step; next-token
  cross-entropy over every position. AdamW (betas 0.9/0.99, weight decay on matrices and the
  embedding only), linear warm-up then cosine decay to --min-lr-ratio of the peak, gradient
  clipping at 1, bf16 autocast with float32 weights (--precision fp32: float32 with TF32 products).
  fla's HGRN2 has no dropout; --dropout adds it through forward hooks on the embedding output and
  on each layer's attention and MLP outputs (the residual branches), in training only.
  The schedule is planned for --epochs passes over the training tokens; after the second epoch the
  plan is shortened if the time left before the deadline (--minutes after the process started,
  compilation included) would not fit it. Validation loss after every epoch; the weights with the
  lowest one are kept; training stops early after --patience epochs without a new best.

Export (DIR/model/)
  The best weights, cast to bf16, saved by model.save_pretrained (config.json with model_type
  hgrn2 and "dtype": "bfloat16", model.safetensors, tied embeddings: no lm_head.weight), plus the
  tokenizer files (tokenizer.model, tokenizer.json, tokenizer_config.json,
  special_tokens_map.json).

Evaluation (DIR/eval/), all from the exported files, reloaded with from_pretrained in float32 on
the GPU, TF32 off, and every layer in fla's fused_recurrent mode (the exact float32 recurrence):
  heldout.json   Held-out perplexity. For each held-out document, ids = <s> + tokens of its text
                 (exactly `tokenizer(text)` with special tokens: BOS, no EOS), scored from a fresh
                 state as one sequence. Each position t >= 1 contributes -log p(ids[t] | ids[<t]).
                 perplexity = exp(sum over all documents and positions / number of positions).
                 Also per document, bits per character, and the validation set the same way.
  excerpt.json   The held-out excerpt (prepare_data.py): its text, ids, and log p(ids[t] | ids[<t])
                 for t >= 1 by fla in float32, with each position's argmax and top-1/top-2 margin.
  reference_check.json  The excerpt's log-probs and the greedy ids from an independent float64
                 implementation (hgrn2_reference.py), once with fla's gate norm and once with
                 shared/HGRN2.md's, and how far each is from fla.
  greedy.json    For each prompt: ids = tokenizer(prompt) (with <s>), then up to --new-tokens
                 argmax tokens computed by fla in float32 (the whole sequence re-run each step).
                 EOS is not banned: generation stops after an EOS id is produced (it is included).
                 Each step records the log-prob margin between the first and second choice.
  samples.md     The greedy texts, and two sampled continuations per prompt (temperature 0.8,
                 top-k 40, torch seed 0: illustrative only).
DIR/train_log.jsonl has one JSON per log line and per evaluation; DIR/metrics.json everything in
one place.
"""

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
import traceback

START = time.time()

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hgrn2_reference import ReferenceHGRN2  # noqa: E402

PROMPTS = [
    "Once upon a time",
    "It is a truth universally acknowledged",
    "Elizabeth",
    "The weather was",
    "Mr. Darcy said",
    "She could not help",
]
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")

stop_requested = False


def on_sigterm(signum, frame):
    global stop_requested
    stop_requested = True
    print(f"[{elapsed():.0f}s] signal {signum}: stopping training, then export", flush=True)


def elapsed():
    return time.time() - START


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="prepare_data.py's output folder")
    p.add_argument("--out", required=True)
    p.add_argument("--name", default="run")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    # Model
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--expand-ratio", type=int, default=64, help="dk; heads = hidden / dk")
    p.add_argument("--conv-size", type=int, default=0, help="short convolution width; 0: none")
    p.add_argument("--no-lower-bound", action="store_true")
    p.add_argument("--untied", action="store_true", help="a separate lm_head")
    # Training
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--epochs", type=float, default=30)
    p.add_argument("--patience", type=int, default=5, help="epochs without a new best")
    p.add_argument("--max-steps", type=int, default=0, help="0: no limit besides --epochs")
    p.add_argument("--train-tokens", type=int, default=0,
                   help="0: all; else only the first N training tokens (smoke tests)")
    p.add_argument("--minutes", type=float, default=5.0,
                   help="stop training this long after the process started")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=1)
    # Evaluation
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--eval-docs", type=int, default=0, help="0: all; else only the first N")
    p.add_argument("--eval-max-tokens", type=int, default=0, help="0: whole documents")
    p.add_argument("--prompts", type=int, default=len(PROMPTS))
    p.add_argument("--skip-reference", action="store_true")
    return p.parse_args()


class Log:
    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8")

    def __call__(self, record, text):
        record = {"time_s": round(elapsed(), 2), **record}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        print(f"[{elapsed():6.1f}s] {text}", flush=True)


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
        f.write("\n")


def load_data(folder, args):
    tokens = np.load(os.path.join(folder, "tokens.npz"))

    def docs(name):
        ids, offsets = tokens[f"{name}_ids"], tokens[f"{name}_offsets"]
        out = [ids[offsets[i]:offsets[i + 1]].astype(np.int64) for i in range(len(offsets) - 1)]
        if args.eval_docs:
            out = out[:args.eval_docs]
        if args.eval_max_tokens:
            out = [d[:args.eval_max_tokens] for d in out]
        return out

    train_ids = tokens["train_ids"].astype(np.int64)
    if args.train_tokens:
        train_ids = train_ids[:args.train_tokens]
    return train_ids, docs("valid"), docs("heldout")


def make_model(args, vocab_size, device):
    from fla.models import HGRN2Config, HGRN2ForCausalLM
    fused = device == "cuda"  # the fused Triton norms only exist on the GPU
    config = HGRN2Config(
        vocab_size=vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
        expand_ratio=args.expand_ratio, num_heads=args.hidden_size // args.expand_ratio,
        use_short_conv=args.conv_size > 0, conv_size=args.conv_size or 4,
        use_lower_bound=not args.no_lower_bound, hidden_ratio=4, intermediate_size=None,
        tie_word_embeddings=not args.untied,
        bos_token_id=1, eos_token_id=2, pad_token_id=None, attn_mode="chunk",
        fuse_norm=fused, fuse_swiglu=fused, fuse_cross_entropy=False)
    torch.manual_seed(args.seed)
    model = HGRN2ForCausalLM(config).to(device)
    return config, model


def add_dropout(model, p):
    if p <= 0:
        return

    def hook(module, inputs, output):
        if not module.training:
            return output
        if isinstance(output, tuple):
            return (F.dropout(output[0], p, True),) + tuple(output[1:])
        return F.dropout(output, p, True)

    model.model.embeddings.register_forward_hook(hook)
    for layer in model.model.layers:
        layer.attn.register_forward_hook(hook)
        layer.mlp.register_forward_hook(hook)


def lr_at(step, total, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
    ratio = args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return args.lr * ratio


def autocast(args, device):
    if args.precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return torch.autocast(device_type=device, enabled=False)


@torch.no_grad()
def document_nll(model, docs, device, args=None):
    """Sum of -log p over positions t >= 1 of each document, one document at a time."""
    sums, counts = [], []
    for doc in docs:
        ids = torch.as_tensor(doc, device=device)[None]
        if args is not None:
            with autocast(args, device):
                logits = model(input_ids=ids).logits[0]
        else:
            logits = model(input_ids=ids).logits[0]
        logp = torch.log_softmax(logits.float(), -1)
        nll = -logp[:-1].gather(1, ids[0, 1:, None]).double().sum()
        sums.append(float(nll))
        counts.append(len(doc) - 1)
    return sums, counts


def train(args, device, log):
    train_ids, valid_docs, heldout_docs = load_data(args.data, args)
    vocab_size = 8192
    with open(os.path.join(args.data, "tokenizer", "tokenizer.json"), encoding="utf-8") as f:
        vocab_size = len(json.load(f)["model"]["vocab"])
    config, model = make_model(args, vocab_size, device)
    add_dropout(model, args.dropout)
    n_params = sum(p.numel() for p in model.parameters())
    log({"event": "model", "parameters": n_params, "config": config.to_dict()},
        f"{args.name}: {n_params / 1e6:.2f}M parameters, D {args.hidden_size}, L {args.layers}, "
        f"dk {args.expand_ratio}, conv {args.conv_size}, V {vocab_size}, dropout {args.dropout}, "
        f"{args.precision}")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.99), eps=1e-8, fused=device == "cuda")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    tokens_per_step = args.batch_size * args.seq_len
    steps_per_epoch = max(1, len(train_ids) // tokens_per_step)
    total = int(round(args.epochs * steps_per_epoch))
    if args.max_steps:
        total = min(total, args.max_steps)
    deadline = args.minutes * 60
    log({"event": "plan", "steps_per_epoch": steps_per_epoch, "total_steps": total,
         "tokens_per_step": tokens_per_step, "train_tokens": len(train_ids)},
        f"{len(train_ids)} training tokens, {steps_per_epoch} steps per epoch of "
        f"{tokens_per_step} tokens; plan {total} steps ({total / steps_per_epoch:.1f} epochs); "
        f"deadline {deadline:.0f}s after start")

    generator = np.random.default_rng(args.seed)
    offsets = np.arange(args.seq_len + 1)
    best = {"valid_loss": float("inf"), "step": 0, "state": None}
    history, epochs_without_best = [], 0
    step, running, running_n, t_log = 0, 0.0, 0, time.time()
    epoch_start_time, stop_reason = None, "planned steps done"
    model.train()
    while step < total:
        if stop_requested:
            stop_reason = "signal"
            break
        if elapsed() > deadline:
            stop_reason = "deadline"
            break
        starts = generator.integers(0, len(train_ids) - args.seq_len - 1, size=args.batch_size)
        batch = torch.as_tensor(train_ids[starts[:, None] + offsets[None, :]], device=device)
        x, y = batch[:, :-1], batch[:, 1:]
        lr = lr_at(step, total, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast(args, device):
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        value = loss.item()
        if not math.isfinite(value):
            stop_reason = f"loss {value} at step {step}"
            log({"event": "error", "step": step, "loss": value}, f"non-finite loss at step {step}")
            break
        running += value
        running_n += 1
        if step == 1 or step % args.log_every == 0:
            now = time.time()
            log({"event": "train", "step": step, "epoch": step / steps_per_epoch,
                 "loss": running / running_n, "lr": lr, "grad_norm": float(grad_norm),
                 "tokens_per_s": running_n * tokens_per_step / (now - t_log)},
                f"step {step:5d} epoch {step / steps_per_epoch:5.2f} loss {running / running_n:.4f} "
                f"lr {lr:.2e} |g| {float(grad_norm):.2f} "
                f"{running_n * tokens_per_step / (now - t_log) / 1e3:.0f}k tok/s")
            running, running_n, t_log = 0.0, 0, now
        if step % steps_per_epoch == 0 or step == total:
            model.eval()
            sums, counts = document_nll(model, valid_docs, device, args)
            model.train()
            valid_loss = sum(sums) / sum(counts)
            epoch = step / steps_per_epoch
            improved = valid_loss < best["valid_loss"]
            if improved:
                best = {"valid_loss": valid_loss, "step": step, "epoch": epoch,
                        "state": {k: v.detach().to("cpu", copy=True)
                                  for k, v in model.state_dict().items()}}
                epochs_without_best = 0
            else:
                epochs_without_best += 1
            history.append({"step": step, "epoch": epoch, "valid_loss": valid_loss})
            log({"event": "valid", "step": step, "epoch": epoch, "valid_loss": valid_loss,
                 "valid_ppl": math.exp(valid_loss), "best": improved},
                f"epoch {epoch:5.2f} validation loss {valid_loss:.4f} ppl {math.exp(valid_loss):.2f}"
                + (" (best)" if improved else ""))
            # Re-plan once, after the second epoch, when compilation is over.
            if round(epoch) == 1:
                epoch_start_time = time.time()
            elif round(epoch) == 2 and epoch_start_time is not None:
                per_epoch = time.time() - epoch_start_time
                fit = int((deadline - elapsed()) / per_epoch * steps_per_epoch) + step
                if fit < total:
                    log({"event": "replan", "total_steps": fit, "seconds_per_epoch": per_epoch},
                        f"{per_epoch:.1f}s per epoch: plan cut from {total} to {fit} steps")
                    total = max(step + 1, fit)
                else:
                    log({"event": "replan", "total_steps": total, "seconds_per_epoch": per_epoch},
                        f"{per_epoch:.1f}s per epoch: the plan of {total} steps fits")
            if epochs_without_best >= args.patience:
                stop_reason = f"no new best for {args.patience} epochs"
                break
    if best["state"] is None:  # stopped before the first evaluation
        best = {"valid_loss": None, "step": step, "epoch": step / steps_per_epoch,
                "state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
    log({"event": "stop", "step": step, "reason": stop_reason, "best_step": best["step"]},
        f"training stopped at step {step} ({stop_reason}); best validation at step {best['step']}")
    summary = {"name": args.name, "args": vars(args), "parameters": n_params,
               "steps": step, "epochs": step / steps_per_epoch, "stop_reason": stop_reason,
               "tokens_seen": step * tokens_per_step, "train_seconds": elapsed(),
               "best_step": best["step"], "best_epoch": best.get("epoch"),
               "best_valid_loss": best["valid_loss"], "valid_history": history,
               "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
               "versions": versions()}
    return config, model, best, summary, valid_docs, heldout_docs


def versions():
    import fla
    import transformers
    out = {"torch": torch.__version__, "fla": fla.__version__,
           "transformers": transformers.__version__, "numpy": np.__version__}
    try:
        import triton
        out["triton"] = triton.__version__
    except ImportError:
        pass
    return out


def export(model, best, args):
    folder = os.path.join(args.out, "model")
    if os.path.exists(folder):
        shutil.rmtree(folder)
    model.load_state_dict(best["state"])
    model.to(torch.bfloat16)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(args.data, "tokenizer", name), os.path.join(folder, name))
    files = {name: os.path.getsize(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}
    return folder, files


def load_float32(folder, device):
    from fla.models import HGRN2ForCausalLM
    model = HGRN2ForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    for layer in model.model.layers:
        layer.attn.mode = "fused_recurrent"
    return model


def evaluate(folder, args, device, valid_docs, heldout_docs, log):
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    eval_dir = os.path.join(args.out, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    model = load_float32(folder, device)
    config = json.load(open(os.path.join(folder, "config.json"), encoding="utf-8"))
    eos_ids = config["eos_token_id"] if isinstance(config["eos_token_id"], list) else [config["eos_token_id"]]
    results = {}

    # Held-out and validation perplexity.
    with open(os.path.join(args.data, "heldout.jsonl"), encoding="utf-8") as f:
        heldout_meta = [json.loads(line) for line in f][:len(heldout_docs)]
    out = {"definition": "per held-out document: ids = <s> + tokens(text) (tokenizer with special "
                         "tokens: BOS, no EOS), one sequence from a fresh state; every position "
                         "t >= 1 adds -log p(ids[t] | ids[<t]); perplexity = exp(total / "
                         "positions). fla float32, fused_recurrent, bf16 weights from the export.",
           "documents": []}
    for name, docs in (("heldout", heldout_docs), ("valid", valid_docs)):
        sums, counts = document_nll(model, docs, device)
        out[name] = {"documents": len(docs), "positions": sum(counts), "nll_sum": sum(sums),
                     "mean_nll": sum(sums) / sum(counts),
                     "perplexity": math.exp(sum(sums) / sum(counts))}
        if name == "heldout":
            for meta, s, c in zip(heldout_meta, sums, counts):
                out["documents"].append({"doc": meta["doc"], "book": meta["book"],
                                         "chapter": meta["chapter"], "positions": c,
                                         "nll_sum": s, "perplexity": math.exp(s / c)})
            if not args.eval_max_tokens:
                chars = sum(len(m["text"]) for m in heldout_meta)
                out[name]["characters"] = chars
                out[name]["bits_per_character"] = sum(sums) / math.log(2) / chars
    write_json(os.path.join(eval_dir, "heldout.json"), out)
    results["heldout_perplexity"] = out["heldout"]["perplexity"]
    results["valid_perplexity"] = out["valid"]["perplexity"]
    log({"event": "heldout", **{k: out[k] for k in ("heldout", "valid")}},
        f"float32 held-out perplexity {out['heldout']['perplexity']:.3f} over "
        f"{out['heldout']['positions']} positions; validation {out['valid']['perplexity']:.3f}")

    # The excerpt, position by position.
    excerpt = json.load(open(os.path.join(args.data, "excerpt.json"), encoding="utf-8"))
    ids = excerpt["ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.as_tensor(ids, device=device)[None]).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    fla_lp = logp[:-1].gather(1, torch.as_tensor(ids[1:], device=device)[:, None])[:, 0].tolist()
    top = logp[:-1].topk(2, -1)
    record = {"definition": "logprobs[t-1] = log p(ids[t] | ids[<t]) for t = 1 .. len(ids)-1, "
                            "fla float32 (fused_recurrent) on the exported bf16 weights",
              "doc": excerpt["doc"], "text": excerpt["text"], "ids": ids, "logprobs": fla_lp,
              "argmax": top.indices[:, 0].tolist(),
              "top2_margin": (top.values[:, 0] - top.values[:, 1]).tolist(),
              "nll_sum": -sum(fla_lp), "perplexity": math.exp(-sum(fla_lp) / len(fla_lp))}
    write_json(os.path.join(eval_dir, "excerpt.json"), record)
    results["excerpt_perplexity"] = record["perplexity"]
    log({"event": "excerpt", "tokens": len(ids), "perplexity": record["perplexity"]},
        f"excerpt: {len(ids)} tokens, perplexity {record['perplexity']:.3f}")

    # Greedy continuations by fla in float32.
    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    greedy = {"definition": f"ids = tokenizer(prompt) with <s>; then up to {args.new_tokens} "
                            "argmax tokens, fla float32 (fused_recurrent), the whole sequence "
                            "re-run each step; EOS allowed, generation stops after it",
              "new_tokens": args.new_tokens, "eos_ids": eos_ids, "prompts": []}
    for prompt in PROMPTS[:args.prompts]:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=True).ids
        seq, margins = list(prompt_ids), []
        with torch.no_grad():
            for _ in range(args.new_tokens):
                last = model(input_ids=torch.as_tensor(seq, device=device)[None]).logits[0, -1]
                lp = torch.log_softmax(last.double(), -1)
                top = lp.topk(2)
                seq.append(int(top.indices[0]))
                margins.append(float(top.values[0] - top.values[1]))
                if seq[-1] in eos_ids:
                    break
        new = seq[len(prompt_ids):]
        greedy["prompts"].append({
            "prompt": prompt, "prompt_ids": prompt_ids, "ids": new,
            "text": tokenizer.decode(new, skip_special_tokens=True),
            "full_text": tokenizer.decode(seq, skip_special_tokens=True),
            "margins": margins, "min_margin": min(margins) if margins else None})
    write_json(os.path.join(eval_dir, "greedy.json"), greedy)
    log({"event": "greedy"}, "greedy: " + " | ".join(
        repr(p["full_text"][:80]) for p in greedy["prompts"][:2]))

    # Illustrative samples and the human-readable page.
    lines = [f"# Samples from {args.name}", "",
             f"Held-out perplexity (float32): {results['heldout_perplexity']:.3f}", "",
             "## Greedy (the test's reference; fla float32)", ""]
    for p in greedy["prompts"]:
        lines += [f"**{p['prompt']}**{p['full_text'][len(p['prompt']):]}", "",
                  f"(min top-1/top-2 log-prob margin {p['min_margin']:.4f})", ""]
    lines += ["## Sampled (temperature 0.8, top-k 40, torch seed 0; illustrative)", ""]
    torch.manual_seed(0)
    for prompt in PROMPTS[:args.prompts]:
        for _ in range(2):
            seq = tokenizer.encode(prompt, add_special_tokens=True).ids
            with torch.no_grad():
                for _ in range(args.new_tokens * 2):
                    last = model(input_ids=torch.as_tensor(seq, device=device)[None]).logits[0, -1]
                    values, indices = (last.float() / 0.8).topk(40)
                    choice = torch.multinomial(torch.softmax(values, -1), 1)
                    seq.append(int(indices[choice]))
                    if seq[-1] in eos_ids:
                        break
            lines += ["> " + tokenizer.decode(seq, skip_special_tokens=True).replace("\n", "\n> "), ""]
    with open(os.path.join(eval_dir, "samples.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")

    # fla against the independent float64 implementation, with both gate-norm readings.
    if not args.skip_reference:
        tensors = load_file(os.path.join(folder, "model.safetensors"))
        check = {"note": "hgrn2_reference.py in float64 on the exported weights; 'fla': q scaled "
                         "by dk^-0.5 and gate-norm eps 1e-5 (what fla computes); 'spec': "
                         "shared/HGRN2.md as written (no scale, gate-norm eps = norm_eps)"}
        for mode in ("fla", "spec"):
            ref = ReferenceHGRN2(tensors, config, gate_norm=mode, device=device)
            ref_lp = ref.log_probs(ids)
            diffs = [abs(a - b) for a, b in zip(ref_lp, fla_lp)]
            o_ms = [min(v) for v in ref.o_mean_square]
            entry = {"excerpt_logprobs": ref_lp, "max_abs_logprob_diff_vs_fla": max(diffs),
                     "mean_abs_logprob_diff_vs_fla": sum(diffs) / len(diffs),
                     "excerpt_perplexity": math.exp(-sum(ref_lp) / len(ref_lp)),
                     "min_mean_square_o_per_layer": o_ms,
                     "greedy_equal_to_fla": []}
            entry["greedy_ids"] = []
            for p in greedy["prompts"]:
                ref_ids = ref.greedy(p["prompt_ids"], args.new_tokens, eos_ids)
                entry["greedy_ids"].append(ref_ids)
                entry["greedy_equal_to_fla"].append(ref_ids == p["ids"])
            check[mode] = entry
            log({"event": "reference", "mode": mode,
                 "max_abs_logprob_diff_vs_fla": entry["max_abs_logprob_diff_vs_fla"],
                 "greedy_equal_to_fla": entry["greedy_equal_to_fla"]},
                f"float64 reference ({mode} gate norm) vs fla float32: max |d log p| "
                f"{entry['max_abs_logprob_diff_vs_fla']:.2e}, excerpt perplexity "
                f"{entry['excerpt_perplexity']:.3f}, greedy equal {entry['greedy_equal_to_fla']}")
        write_json(os.path.join(eval_dir, "reference_check.json"), check)
        results["reference_max_abs_logprob_diff"] = {
            m: check[m]["max_abs_logprob_diff_vs_fla"] for m in ("fla", "spec")}
    return results


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    os.makedirs(args.out, exist_ok=True)
    log = Log(os.path.join(args.out, "train_log.jsonl"))
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device (use --device cpu for the smoke test)")
    if device == "cpu":
        import cpu_shims
        cpu_shims.install()
    config, model, best, summary, valid_docs, heldout_docs = train(args, device, log)
    write_json(os.path.join(args.out, "metrics.json"), summary)
    folder, files = export(model, best, args)
    summary["export"] = {"folder": "model", "files": files}
    write_json(os.path.join(args.out, "metrics.json"), summary)
    log({"event": "export", "files": files},
        f"exported {folder}: {sum(files.values()) / 2**20:.2f} MiB")
    del model
    try:
        summary["eval"] = evaluate(folder, args, device, valid_docs, heldout_docs, log)
    except Exception:  # keep the model and the training record whatever the evaluation does
        summary["eval_error"] = traceback.format_exc()
        print(summary["eval_error"], flush=True)
    summary["total_seconds"] = elapsed()
    write_json(os.path.join(args.out, "metrics.json"), summary)
    print(f"[{elapsed():6.1f}s] done: {json.dumps(summary.get('eval', {}))}", flush=True)
    return 1 if "eval_error" in summary else 0


if __name__ == "__main__":
    sys.exit(main())
