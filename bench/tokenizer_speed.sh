#!/usr/bin/env bash
# Encoding speed of each tokenizer kind on ~1 MB of English text (median of 5 runs, MB/s).
# Usage: bench/tokenizer_speed.sh [BUILD_DIR]
# The text is Debian's license texts (/usr/share/common-licenses, ~300 kB of English prose),
# repeated to 1,000,000 bytes and cut at a line end; only Encode is timed (hgrn2-tokenize --time).
set -euo pipefail
build=${1:-build}
data=tests/data/tokenizers
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
while (($(stat -c %s "$scratch/all" 2>/dev/null || echo 0) < 1000000)); do
  cat /usr/share/common-licenses/* >>"$scratch/all"
done
head -c 1000000 "$scratch/all" | sed '$d' >"$scratch/english.txt"
mkdir -p "$scratch/sp" && cp "$data/llama-sp/tokenizer.model" "$scratch/sp/"
bytes=$(stat -c %s "$scratch/english.txt")
printf '%-44s %10s %10s\n' tokenizer ids MB/s
for entry in "llama-sp:$data/llama-sp" "llama-sp tokenizer.model:$scratch/sp" \
             "llama-legacy:$data/llama-legacy" "bytelevel:$data/bytelevel" \
             "bytelevel-split:$data/bytelevel-split"; do
  name=${entry%%:*}; dir=${entry#*:}
  speeds=()
  for _ in 1 2 3 4 5; do
    line=$("$build/bin/hgrn2-tokenize" --tokenizer "$dir" --time <"$scratch/english.txt" 2>&1 >/dev/null)
    speeds+=("$(sed -E 's/.*: ([0-9.]+) MB\/s.*/\1/' <<<"$line")")
    ids=$(sed -E 's/.*<-> ([0-9]+) ids.*/\1/' <<<"$line")
  done
  printf '%-44s %10s %10s\n' "$name ($bytes bytes)" "$ids" "$(printf '%s\n' "${speeds[@]}" | sort -g | sed -n 3p)"
done
