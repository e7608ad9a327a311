#!/usr/bin/env bash
# Trains the demo model on the GPU machine (see tools/train/README.md).
#
#   bash tools/train/run-on-device.sh
#
# Run from the repository root with the fla wheels in .gpu-bundle/wheels/ and prepare_data.py's
# output in .gpu-bundle/train/. Installs the wheels into a temporary folder (pip --no-deps
# --target, no network), then trains the configurations in RUNS at the same time, one process
# each (a model this small leaves the GPU mostly idle, and most of the first minutes are Triton
# compiling fla's kernels, on the CPU). Each process stops training MINUTES after it started and
# is killed RUN_TIMEOUT seconds after it started, so the packing always happens. The run with the
# lowest validation loss is the result (one whose evaluation did not finish only if none did).
# EXTRA_ARGS are added to every run's train.py arguments (tools/train/smoke-test uses them).
#
# Writes to $OUT (or .gpu-bundle/train-run/ without $OUT):
#   hgrn2-demo.tar.gz   hgrn2-demo/: the chosen run's model/ (config.json, model.safetensors,
#                       tokenizer files), eval/, train_log.jsonl, metrics.json, log.txt; and
#                       runs/NAME/ for every run: its log.txt, train_log.jsonl, metrics.json and
#                       eval/ (no weights). Split into hgrn2-demo.tar.gz.part-NN when over 15 MiB
#                       (cat them in order).
#   log.txt             everything printed, SUMMARY.txt the table of runs.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WHEELS=${WHEELS:-$ROOT/.gpu-bundle/wheels}
DATA=${DATA:-$ROOT/.gpu-bundle/train}
DEST=${OUT:-$ROOT/.gpu-bundle/train-run}
MINUTES=${MINUTES:-5}
RUN_TIMEOUT=${RUN_TIMEOUT:-450}
# name|train.py arguments. All: seq 1024, batch 16, lr 2e-3, warm-up 100, weight decay 0.1, V 8192.
RUNS=${RUNS:-"d256-l6-drop1-ep20|--hidden-size 256 --layers 6 --dropout 0.1 --epochs 20
d256-l6-drop2-ep40|--hidden-size 256 --layers 6 --dropout 0.2 --epochs 40
d384-l4-drop2-ep40|--hidden-size 384 --layers 4 --dropout 0.2 --epochs 40
d256-l6-conv4-drop2-ep40|--hidden-size 256 --layers 6 --conv-size 4 --dropout 0.2 --epochs 40
d256-l6-drop2-ep40-fp32|--hidden-size 256 --layers 6 --dropout 0.2 --epochs 40 --precision fp32"}
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1

main() {
    local site work
    site=$(mktemp -d /tmp/fla-site.XXXXXX)
    work=$(mktemp -d /tmp/train.XXXXXX)
    echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
    nvidia-smi -L 2>&1 || true
    python3 --version
    ls -l "$WHEELS"/*.whl || { echo "no wheels in $WHEELS"; return 2; }
    [ -f "$DATA/tokens.npz" ] || { echo "no $DATA/tokens.npz: run tools/train/prepare_data.py first"; return 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl \
        || { echo "pip install of the fla wheels failed"; return 2; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    python3 - <<'EOF' || { echo "importing fla failed"; return 2; }
import fla, torch, triton, transformers, tokenizers, safetensors, numpy
print(f"fla {fla.__version__} from {fla.__file__}")
print(f"torch {torch.__version__}, triton {triton.__version__}, transformers {transformers.__version__}, "
      f"tokenizers {tokenizers.__version__}, numpy {numpy.__version__}, cuda available {torch.cuda.is_available()}")
from fla.models import HGRN2Config, HGRN2ForCausalLM  # noqa: F401
EOF
    mkdir -p "$work/runs"
    local names=() pids=() name args line
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        name=${line%%|*}
        args=${line#*|}
        mkdir -p "$work/runs/$name"
        # shellcheck disable=SC2086
        OMP_NUM_THREADS=2 timeout -k 10 "$RUN_TIMEOUT" \
            python3 "$ROOT/tools/train/train.py" --data "$DATA" --out "$work/runs/$name" \
            --name "$name" --minutes "$MINUTES" $args ${EXTRA_ARGS:-} > "$work/runs/$name/log.txt" 2>&1 &
        pids+=($!)
        names+=("$name")
        echo "== started $name (pid $!): $args"
    done <<< "$RUNS"
    local i rc=0
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { echo "== ${names[$i]} exited with $?"; rc=1; }
    done
    for name in "${names[@]}"; do
        echo "---------- $name"
        grep -v "Loading weights\|Writing model shards" "$work/runs/$name/log.txt" | tail -n 60
    done

    # Choose the run with the lowest validation loss among those that exported and evaluated.
    local best
    best=$(python3 - "$work/runs" <<'EOF'
import json, math, os, sys
root = sys.argv[1]
rows, best = [], None
for name in sorted(os.listdir(root)):
    path = os.path.join(root, name, "metrics.json")
    m = json.load(open(path)) if os.path.exists(path) else {}
    ev = m.get("eval", {})
    ok = os.path.exists(os.path.join(root, name, "model", "model.safetensors")) and "heldout_perplexity" in ev
    v = m.get("best_valid_loss")
    ref = ev.get("reference_max_abs_logprob_diff", {})
    rows.append(f"{name:26s} {m.get('parameters', 0) / 1e6:6.2f}M steps {m.get('steps', '-'):>5} "
                f"best epoch {m.get('best_epoch') or 0:5.1f} valid ppl {math.exp(v) if v else float('nan'):8.3f} "
                f"held-out ppl {ev.get('heldout_perplexity', float('nan')):8.3f} "
                f"ref|fla {ref.get('fla', float('nan')):.1e} ref|spec {ref.get('spec', float('nan')):.1e} "
                f"{m.get('stop_reason', 'no metrics')}{'' if ok else ' (incomplete)'}")
    has_model = os.path.exists(os.path.join(root, name, "model", "model.safetensors"))
    if has_model and v is not None:
        key = (not ok, v)  # complete runs first, then by validation loss
        if best is None or key < best[0]:
            best = (key, name)
with open(os.path.join(root, "SUMMARY.txt"), "w") as f:
    f.write("\n".join(rows) + "\n" + f"chosen: {best[1] if best else 'none'}\n")
print(best[1] if best else "")
EOF
)
    echo "== SUMMARY"
    cat "$work/runs/SUMMARY.txt"
    cp "$work/runs/SUMMARY.txt" "$DEST/SUMMARY.txt"

    local pack="$work/pack/hgrn2-demo"
    mkdir -p "$pack/runs"
    for name in "${names[@]}"; do
        mkdir -p "$pack/runs/$name"
        (cd "$work/runs/$name" && cp -r log.txt train_log.jsonl metrics.json eval "$pack/runs/$name/" 2>/dev/null)
    done
    cp "$work/runs/SUMMARY.txt" "$pack/"
    if [ -n "$best" ]; then
        (cd "$work/runs/$best" && cp -r model eval train_log.jsonl metrics.json log.txt "$pack/")
        echo "$best" > "$pack/CHOSEN"
        cp "$DATA/manifest.json" "$pack/data-manifest.json"
    else
        echo "== no run finished with a model"
        rc=1
    fi
    tar -C "$work/pack" -czf "$DEST/hgrn2-demo.tar.gz" hgrn2-demo
    local size
    size=$(stat -c %s "$DEST/hgrn2-demo.tar.gz")
    echo "== hgrn2-demo.tar.gz: $size bytes, sha256 $(sha256sum "$DEST/hgrn2-demo.tar.gz" | cut -c1-16)"
    if [ "$size" -gt $((15 * 1024 * 1024)) ]; then
        (cd "$DEST" && split -b 15M -d -a 2 hgrn2-demo.tar.gz hgrn2-demo.tar.gz.part- && rm hgrn2-demo.tar.gz)
        echo "== split into: $(cd "$DEST" && ls hgrn2-demo.tar.gz.part-* | tr '\n' ' ')(cat them in order)"
    fi
    rm -rf "$site" "$work"
    return $rc
}

main "$@" 2>&1 | tee "$DEST/log.txt"
exit "${PIPESTATUS[0]}"
