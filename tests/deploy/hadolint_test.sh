#!/usr/bin/env bash
# hadolint on the Dockerfile (rules it ignores are named, with the reason, beside the line), and
# the scripts that build the image parse.
set -uo pipefail
# shellcheck source=tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
need_tools hadolint
"$hadolint" --version
failures=0
check() {
  if [[ $2 -eq 0 ]]; then echo "ok: $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi
}
"$hadolint" --failure-threshold info "$root/Dockerfile"
check "hadolint Dockerfile (no finding at level info or above)" $?
bash -n "$root/scripts/build-image" && bash -n "$root/scripts/stage-image" &&
  bash -n "$root/tests/deploy/image_test.sh"
check "scripts/build-image, scripts/stage-image and tests/deploy/image_test.sh parse" $?
grep -qx 'build' "$root/.dockerignore" && grep -qx '.git' "$root/.dockerignore"
check ".dockerignore keeps build/ and .git out of the build context" $?
echo "$((3 - failures)) passed, $failures failed"
exit $((failures > 0))
