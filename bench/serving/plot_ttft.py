"""Time to first token of several bench/serving/run-on-device.sh serve runs side by side (for
example one server flag against another): ttft.md, a table per load, and ttft-cdf.png, the
distribution of each load's time to first token per run.

  python3 bench/serving/plot_ttft.py OUT_DIR LABEL=RESULTS_DIR [LABEL=RESULTS_DIR ...]

Loads: each closed-loop level (loadgen-c*.json), each burst (loadgen-burst*.json) and the Poisson
run (loadgen-poisson.json); the per-call samples are the reports' ttft_samples_s.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys


def loads(results: str) -> dict[str, dict]:
    out = {}
    for path in sorted(glob.glob(os.path.join(results, "loadgen-*.json"))):
        name = re.search(r"loadgen-(.+)\.json", os.path.basename(path)).group(1)
        if not re.fullmatch(r"c\d+|burst\d+|poisson", name):
            continue
        with open(path) as f:
            out[name] = json.load(f)
    return out


def title(name: str, report: dict) -> str:
    if name.startswith("burst"):
        return f"a burst of {name[5:]} calls"
    if name == "poisson":
        return f"Poisson, {report['config']['rate']} req/s"
    streams = int(name[1:])
    return f"{streams} stream{'s' if streams > 1 else ''}, closed loop"


def ms(summary: dict, q: str) -> str:
    return f"{summary[q] * 1e3:.1f}" if summary.get("count") else "—"


def main() -> int:
    out, runs = sys.argv[1], [arg.split("=", 1) for arg in sys.argv[2:]]
    if not runs or any(len(r) != 2 for r in runs):
        print(__doc__, file=sys.stderr)
        return 2
    data = {label: loads(path) for label, path in runs}
    names = sorted({n for d in data.values() for n in d},
                   key=lambda n: (n == "poisson", n.startswith("burst"), int(re.sub(r"\D", "", n) or 0)))
    lines = []
    for name in names:
        any_report = next(d[name] for d in data.values() if name in d)
        lines += [f"**{title(name, any_report)}**", "",
                  "| run | tok/s | TTFT p50 / p90 / p99 (ms) | ITL p50 / p99 (ms) | calls |",
                  "| --- | --- | --- | --- | --- |"]
        for label, _ in runs:
            r = data[label].get(name)
            if r is None:
                continue
            t, i = r["ttft_s"], r["itl_s"]
            lines.append(f"| {label} | {r['generated_tokens_per_s']:,.0f} | {ms(t, 'p50')} / "
                         f"{ms(t, 'p90')} / {ms(t, 'p99')} | {ms(i, 'p50')} / {ms(i, 'p99')} | "
                         f"{r['completed']} |")
        lines.append("")
    table = "\n".join(lines)
    with open(os.path.join(out, "ttft.md"), "w") as f:
        f.write(table)
    print(table)

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: no plot")
        return 0
    from matplotlib.ticker import NullFormatter
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        spread = []
        for label, _ in runs:
            r = data[label].get(name)
            if r is None or not r.get("ttft_samples_s"):
                continue
            xs = sorted(x * 1e3 for x in r["ttft_samples_s"])
            spread += [xs[0], xs[-1]]
            ax.plot(xs, [(k + 1) / len(xs) for k in range(len(xs))], label=label)
        if spread and max(spread) > 20 * min(spread):  # log only where it spans decades
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("time to first token (ms)")
        ax.set_title(title(name, next(d[name] for d in data.values() if name in d)), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.axhline(0.99, color="gray", lw=0.6, ls=":")
    axes[0][0].set_ylabel("fraction of calls")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ttft-cdf.png"), dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
