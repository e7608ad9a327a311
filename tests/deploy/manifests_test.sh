#!/usr/bin/env bash
# Every overlay in deploy/k8s renders with kubectl kustomize and validates offline
# (validate_manifests.py says what is checked), and the Operator's PrometheusRule equals the plain
# rules file it is generated from.
set -uo pipefail
# shellcheck source=tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
need_tools kubectl python
"$kubectl" version --client | head -2
"$python" "$root/deploy/prometheus/make-prometheusrule.py" --check || exit 1
exec "$python" "$root/tests/deploy/validate_manifests.py" "$kubectl"
