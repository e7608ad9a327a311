# Shared by the deploy checks (sourced): where the pinned tools are (scripts/install-deploy-tools)
# and what to do without them: fail in CI (CI=true), where install-deps has installed them, and
# skip (exit 77) on a developer's machine that has not.
# shellcheck shell=bash disable=SC2034  # (variables used by the tests that source this)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tools=${HGRN2_DEPLOY_TOOLS:-$root/.cache/deploy-tools}
[[ $tools == /* ]] || tools=$root/$tools
python=$tools/bin/python
kubectl=$tools/bin/kubectl
hadolint=$tools/bin/hadolint
promtool=${PROMTOOL:-$(command -v promtool || true)}

# need_tools NAME...: each of kubectl, hadolint, python (the environment's), promtool.
need_tools() {
  local name path missing=()
  for name in "$@"; do
    path=${!name}
    [[ -n $path && -x $path ]] || missing+=("$name")
  done
  ((${#missing[@]} == 0)) && return 0
  if [[ ${CI:-} == true ]]; then
    echo "FAIL: missing ${missing[*]} (scripts/install-deps installs them: scripts/install-deploy-tools, Debian prometheus)"
    echo "0 passed, 1 failed"
    exit 1
  fi
  echo "skipped: missing ${missing[*]}; run scripts/install-deploy-tools (and scripts/install-deps for promtool)"
  exit 77
}
