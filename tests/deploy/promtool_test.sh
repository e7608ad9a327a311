#!/usr/bin/env bash
# promtool (Debian's prometheus package) on deploy/prometheus: the alert rules parse, their unit
# tests pass (alerts_test.yml: each alert fires on a sick series, not on a healthy one), and the
# scrape config is valid.
# Debian builds Prometheus without Kubernetes service discovery, so its promtool cannot parse
# kubernetes_sd_configs: that key alone is replaced with a static target in a copy, and the rest of
# the file (relabelling, rule_files) is checked as written.
set -uo pipefail
# shellcheck source=tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
need_tools promtool python
"$promtool" --version 2>&1 | head -1
failures=0
check() {
  if [[ $2 -eq 0 ]]; then echo "ok: $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi
}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

"$promtool" check rules "$root/deploy/prometheus/hgrn2-alerts.rules.yml"
check "promtool check rules deploy/prometheus/hgrn2-alerts.rules.yml" $?
"$promtool" test rules "$root/tests/deploy/alerts_test.yml"
check "promtool test rules tests/deploy/alerts_test.yml" $?

cp "$root/deploy/prometheus/hgrn2-alerts.rules.yml" "$scratch/"
"$python" - "$root/deploy/prometheus/prometheus.yml" "$scratch/prometheus.yml" <<'PY'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
replaced = 0
for job in config["scrape_configs"]:
    if job.pop("kubernetes_sd_configs", None) is not None:
        job["static_configs"] = [{"targets": ["127.0.0.1:9400"]}]
        replaced += 1
assert replaced, "no kubernetes_sd_configs in prometheus.yml"
yaml.safe_dump(config, open(sys.argv[2], "w"))
PY
check "prometheus.yml discovers pods through kubernetes_sd_configs" $?
"$promtool" check config "$scratch/prometheus.yml"
check "promtool check config deploy/prometheus/prometheus.yml (kubernetes_sd_configs as a static target)" $?

echo "$((4 - failures)) passed, $failures failed"
exit $((failures > 0))
