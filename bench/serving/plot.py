"""Tables and plots of one bench/serving/run-on-device.sh run: summary.md (the tables of
docs/performance.md) and serving-throughput.png, serving-latency.png.

  python3 bench/serving/plot.py RESULTS_DIR OUT_DIR
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys


def load(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ms(summary: dict, key: str) -> float:
    return summary[key] * 1e3 if summary and summary.get("count", 0) else float("nan")


def main() -> int:
    results, out = sys.argv[1], sys.argv[2]
    served = {}
    for path in glob.glob(os.path.join(results, "loadgen-c*.json")):
        data = load(path)
        if data:
            served[int(re.search(r"loadgen-c(\d+)\.json", path).group(1))] = data
    poisson = load(os.path.join(results, "loadgen-poisson.json"))
    engine = {}
    for path in glob.glob(os.path.join(results, "engine-b*.json")):
        data = load(path)
        if data and "scenario_mixed" in data:
            engine[int(re.search(r"engine-b(\d+)\.json", path).group(1))] = data["scenario_mixed"]
    decode = (load(os.path.join(results, "engine-decode-b256.json")) or {}).get("scenario_decode")
    tables = load(os.path.join(results, "engine-tables.json")) or {}
    limits = {row["batch"]: row for row in tables.get("decode", [])}
    reference = {row["batch"]: row for row in (load(os.path.join(results, "reference.json")) or {}).get("rows", [])}

    lines = []
    with open(os.path.join(results, "machine.txt")) as f:
        lines += ["```", f.read().strip(), "```", ""]
    lines += [
        "| concurrency | served tok/s | requests/s | TTFT p50 / p99 (ms) | ITL p50 / p99 (ms) | "
        "engine alone tok/s | served / engine | fla + HF tok/s (decode) | served / fla | "
        "decode limit tok/s | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in sorted(served):
        s = served[c]
        tok = s["generated_tokens_per_s"]
        eng = engine.get(c, {}).get("output_tokens_per_s")
        ref = reference.get(c, {}).get("decode_tokens_per_s")
        lim = limits.get(c)
        limit_tok = c / (lim["limit_ms"] / 1e3) if lim and lim.get("limit_ms") else None
        errors = sum(s["errors"].values()) if isinstance(s["errors"], dict) else s["errors"]
        lines.append(
            f"| {c} | {tok:,.0f} | {s['requests_per_s']:.2f} | "
            f"{ms(s['ttft_s'], 'p50'):.1f} / {ms(s['ttft_s'], 'p99'):.1f} | "
            f"{ms(s['itl_s'], 'p50'):.2f} / {ms(s['itl_s'], 'p99'):.2f} | "
            + (f"{eng:,.0f} | {tok / eng:.1%}" if eng else "— | —") + " | "
            + (f"{ref:,.0f} | {tok / ref:.1f}×" if ref else "— | —") + " | "
            + (f"{limit_tok:,.0f}" if limit_tok else "—") + f" | {errors} |")
    if poisson:
        p = poisson
        lines += ["", f"Poisson arrivals at {p['config']['rate']}/s (at most {p['config']['concurrency']} "
                  f"in flight): {p['requests_per_s']:.2f} requests/s, {p['generated_tokens_per_s']:,.0f} "
                  f"tok/s, TTFT p50 {ms(p['ttft_s'], 'p50'):.1f} ms p99 {ms(p['ttft_s'], 'p99'):.1f} ms, "
                  f"ITL p50 {ms(p['itl_s'], 'p50'):.2f} ms p99 {ms(p['itl_s'], 'p99'):.2f} ms, "
                  f"end to end p50 {ms(p['e2e_s'], 'p50') / 1e3:.2f} s."]
    if decode:
        lines += ["", f"Engine alone, scheduled decode at B={decode['batch']}: "
                  f"{decode['engine_tokens_per_s']:,.0f} tok/s, a plain decode loop "
                  f"{decode['direct_tokens_per_s']:,.0f} tok/s ({decode['ratio']:.1%})."]
    if tables.get("decode"):
        lines += ["", "| B | decode ms/step | tok/s | with sampling | limit ms | % of limit |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for row in tables["decode"]:
            lines.append(f"| {row['batch']} | {row['ms_per_step']:.3f} | {row['tokens_per_s']:,.0f} | "
                         f"{row['tokens_per_s_with_sampling']:,.0f} | {row['limit_ms']:.3f} | "
                         f"{row['fraction_of_limit']:.1%} |")
    if tables.get("prefill"):
        lines += ["", "| prefill | ms | tok/s | % of limit |", "| --- | --- | --- | --- |"]
        for row in tables["prefill"]:
            lines.append(f"| {row['shape']} | {row['ms']:.2f} | {row['tokens_per_s']:,.0f} | "
                         f"{row['fraction_of_limit']:.1%} |")
    if reference:
        lines += ["", "| fla + HF, B | decode ms/step | decode tok/s | prefill B×128 ms | whole batch tok/s |",
                  "| --- | --- | --- | --- | --- |"]
        for b in sorted(reference):
            r = reference[b]
            lines.append(f"| {b} | {r['decode_ms_per_step']:.2f} | {r['decode_tokens_per_s']:,.0f} | "
                         f"{r['prefill_ms']:.1f} | {r['request_generated_tokens_per_s']:,.0f} |")
    summary = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary)
    print(summary)

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: no plots")
        return 0
    cs = sorted(served)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(cs, [served[c]["generated_tokens_per_s"] for c in cs], "o-", label="hgrn2-server (gRPC, loadgen)")
    if engine:
        bs = sorted(engine)
        ax.plot(bs, [engine[b]["output_tokens_per_s"] for b in bs], "s--", label="engine alone (same mix)")
    if limits:
        bs = sorted(limits)
        ax.plot(bs, [b / (limits[b]["limit_ms"] / 1e3) for b in bs], ":", color="gray",
                label="decode bandwidth limit")
    if reference:
        bs = sorted(reference)
        ax.plot(bs, [reference[b]["decode_tokens_per_s"] for b in bs], "^-", label="fla + HF (decode only)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent streams (batch)")
    ax.set_ylabel("generated tokens/s")
    ax.set_title("HGRN2 1.3B shape, bf16, 128-token prompts, 128-512 generated")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "serving-throughput.png"), dpi=120)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label, style in [("ttft_s", "time to first token", "o-"), ("itl_s", "inter-token latency", "s-")]:
        for q, dash in [("p50", ""), ("p99", "--")]:
            ax.plot(cs, [ms(served[c][key], q) for c in cs], style[0] + (dash or "-"), label=f"{label} {q}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("ms")
    ax.set_title("hgrn2-server latency over gRPC (loopback)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "serving-latency.png"), dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
