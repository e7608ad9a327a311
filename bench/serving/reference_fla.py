"""The reference for docs/performance.md: fla + Hugging Face transformers on the GPU, HGRN2 1.3B
shape, bf16, random weights, the same request shape as the serving benchmark.

For each batch size B: B prompts of PROMPT random ids prefilled in one forward call (its time is
the reference's time to first token for a static batch), then OUTPUT greedy decode steps with the
recurrent state cache (past_key_values), each one forward call of B tokens, timed with CUDA
events after a warm-up. Reports decode tokens/s (B / step time), prefill time, and the whole
request's generated tokens/s (B * OUTPUT over prefill + decode), which is what a static-batch
server built on this code could at best serve.

  PYTHONPATH=<fla wheels> python3 bench/serving/reference_fla.py --batches 1,16,64,256 --json ref.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,16,64,256")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--output", type=int, default=512, help="decode steps per batch")
    parser.add_argument("--timed-steps", type=int, default=32,
                        help="decode steps timed for the per-step rate (after 4 warm-up steps)")
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    import fla  # noqa: F401  (registers the model classes)
    from fla.models import HGRN2Config, HGRN2ForCausalLM

    torch.manual_seed(0)
    # fla's HGRN2 1.3B: D 2048, 24 layers, expand_ratio (dk) 128 -> 16 heads, V 32000.
    config = HGRN2Config(hidden_size=2048, num_hidden_layers=24, expand_ratio=128, vocab_size=32000)
    model = HGRN2ForCausalLM(config).to(device="cuda", dtype=torch.bfloat16).eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"fla {fla.__version__}, torch {torch.__version__}, HGRN2 {params / 1e9:.3f}B parameters, bf16",
          flush=True)

    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        ids = torch.randint(3, config.vocab_size, (batch, args.prompt), device="cuda")
        with torch.inference_mode():
            # Warm-up: Triton compiles and tunes fla's kernels for this shape.
            out = model(input_ids=ids, use_cache=True)
            cache = out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            for _ in range(4):
                out = model(input_ids=token, past_key_values=cache, use_cache=True)
                token = out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()

            # The per-step rate.
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(args.timed_steps):
                out = model(input_ids=token, past_key_values=cache, use_cache=True)
                token = out.logits[:, -1].argmax(-1, keepdim=True)
            end.record()
            torch.cuda.synchronize()
            step_ms = start.elapsed_time(end) / args.timed_steps

            # A whole static batch: prefill, then OUTPUT tokens (the first from the prefill).
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(input_ids=ids, use_cache=True)
            cache = out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            prefill_s = time.perf_counter() - t0
            for _ in range(args.output - 1):
                out = model(input_ids=token, past_key_values=cache, use_cache=True)
                token = out.logits[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()
            total_s = time.perf_counter() - t0
        row = {
            "batch": batch,
            "decode_ms_per_step": step_ms,
            "decode_tokens_per_s": batch / (step_ms / 1e3),
            "prefill_ms": prefill_s * 1e3,
            "request_generated_tokens_per_s": batch * args.output / total_s,
            "request_seconds": total_s,
        }
        rows.append(row)
        print(f"B={batch:4d}  decode {step_ms:8.3f} ms/step {row['decode_tokens_per_s']:10.1f} tok/s   "
              f"prefill {batch}x{args.prompt} {row['prefill_ms']:8.2f} ms   "
              f"whole batch {args.output} tokens {total_s:7.2f} s "
              f"{row['request_generated_tokens_per_s']:10.1f} tok/s", flush=True)
        del cache, out
        torch.cuda.empty_cache()
        # Written after each batch size, so a run stopped by the caller's time limit keeps the rows
        # it finished.
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"fla": fla.__version__, "torch": torch.__version__, "prompt": args.prompt,
                           "output": args.output, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
