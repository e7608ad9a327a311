#!/usr/bin/env bash
# Regenerate the golden fixtures on the GPU machine (see tools/golden/README.md).
#
#   bash tools/golden/run-on-device.sh [extra make_fixtures.py args]
#
# Run from the repository root with the fla wheels in .gpu-bundle/wheels/. Installs them into a
# temporary folder (pip --no-deps --target, no network), runs make_fixtures.py for every preset on
# the GPU (one process per preset, in parallel; PRESETS="a b" picks some; each is stopped after
# GOLDEN_TIMEOUT seconds, default 420, so the packing always happens), and packs the fixture folders into $OUT/golden.tar.gz (split into
# golden.tar.gz.part-NN when over 15 MiB: the device tool brings back files of 16 MiB at most;
# rejoin with `cat golden.tar.gz.part-* > golden.tar.gz`). Without $OUT, writes to
# .gpu-bundle/golden-run/. Prints a summary table last. Not part of CI.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WHEELS=${WHEELS:-$ROOT/.gpu-bundle/wheels}
DEST=${OUT:-$ROOT/.gpu-bundle/golden-run}
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1

main() {
    local site work rc
    site=$(mktemp -d /tmp/fla-site.XXXXXX)
    work=$(mktemp -d /tmp/golden.XXXXXX)
    echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
    nvidia-smi -L 2>&1 || true
    python3 --version
    ls -l "$WHEELS"/*.whl || { echo "no wheels in $WHEELS"; return 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl \
        || { echo "pip install of the fla wheels failed"; return 2; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    export FLA_WHEELS_DIR="$WHEELS"
    python3 - <<'EOF' || { echo "importing fla failed"; return 2; }
import fla, torch, triton, transformers, einops
print(f"fla {fla.__version__} from {fla.__file__}")
print(f"torch {torch.__version__}, triton {triton.__version__}, transformers {transformers.__version__}, "
      f"einops {einops.__version__}, cuda available {torch.cuda.is_available()}")
from fla.models import HGRN2Config, HGRN2ForCausalLM  # noqa: F401
EOF
    # One process per preset, all at once: most of the time is Triton compiling and autotuning
    # fla's kernels for each new shape (~100-150 s per preset when run one after another).
    local presets pids p r presets_arr
    presets=${PRESETS:-$(python3 "$ROOT/tools/golden/make_fixtures.py" --list | cut -d' ' -f1)}
    read -r -a presets_arr <<< "$(echo $presets)"
    mkdir -p "$work/golden" "$work/logs"
    pids=()
    for p in $presets; do
        OMP_NUM_THREADS=2 timeout "${GOLDEN_TIMEOUT:-420}" \
            python3 "$ROOT/tools/golden/make_fixtures.py" --out "$work/golden" --preset "$p" --no-summary "$@" \
            > "$work/logs/$p.log" 2>&1 &
        pids+=($!)
    done
    rc=0
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { r=$?; echo "== preset ${presets_arr[$i]:-#$i} exited with $r"; rc=1; }
    done
    for p in $presets; do
        echo "---------- $p"
        grep -v "Loading weights" "$work/logs/$p.log"
        [ -f "$work/golden/$p/golden.json" ] || { echo "   (no golden.json: incomplete, removed)"; rm -rf "$work/golden/$p"; }
    done
    python3 "$ROOT/tools/golden/make_fixtures.py" --out "$work/golden" --summarize --preset $presets > /dev/null || rc=1
    echo "== make_fixtures.py runs: exit code $rc"
    if [ -d "$work/golden" ]; then
        tar -C "$work" -czf "$DEST/golden.tar.gz" golden
        local size
        size=$(stat -c %s "$DEST/golden.tar.gz")
        echo "== golden.tar.gz: $size bytes, sha256 $(sha256sum "$DEST/golden.tar.gz" | cut -c1-16)"
        if [ "$size" -gt $((15 * 1024 * 1024)) ]; then
            (cd "$DEST" && split -b 15M -d -a 2 golden.tar.gz golden.tar.gz.part- && rm golden.tar.gz)
            echo "== split into: $(cd "$DEST" && ls golden.tar.gz.part-* | tr '\n' ' ')(cat them in order)"
        fi
        cp "$work/golden/SUMMARY.txt" "$DEST/SUMMARY.txt" 2>/dev/null || true
        echo
        echo "== SUMMARY"
        cat "$work/golden/SUMMARY.txt" 2>/dev/null || echo "(no SUMMARY.txt)"
    fi
    rm -rf "$site" "$work"
    return $rc
}

main "$@" 2>&1 | tee "$DEST/log.txt"
exit "${PIPESTATUS[0]}"
