#!/usr/bin/env python3
"""Every hgrn2_* metric that deploy/ refers to is one the server exports.

  check_metric_names.py SCRAPE    SCRAPE: the text of a live /metrics scrape of hgrn2-server

Looks at the Grafana dashboard's queries (deploy/grafana/hgrn2.json, which must parse), the alert
rules (deploy/prometheus/hgrn2-alerts.rules.yml), the Prometheus adapter's series
(deploy/prometheus-adapter/values.yaml) and the HPA's metrics (through the adapter's names).
Prints "ok:"/"FAIL:" lines and "N passed, N failed".
"""
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]

NAME = re.compile(r"\bhgrn2_[a-zA-Z0-9_]+")
passed = 0
failed = 0


def check(name, ok, detail=""):
    global passed, failed
    passed, failed = passed + bool(ok), failed + (not ok)
    print(f"{'ok' if ok else 'FAIL'}: {name}{': ' + detail if detail and not ok else ''}")


def scraped_names(text):
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def dashboard_exprs():
    dashboard = json.loads((ROOT / "deploy/grafana/hgrn2.json").read_text())
    exprs = []

    def walk(panels):
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if "expr" in t)
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            exprs.append(query)
    return exprs


def rule_exprs():
    groups = yaml.safe_load((ROOT / "deploy/prometheus/hgrn2-alerts.rules.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def adapter_exprs():
    values = yaml.safe_load((ROOT / "deploy/prometheus-adapter/values.yaml").read_text())
    return [rule["seriesQuery"] for rule in values["rules"]["custom"]]


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    exported = scraped_names(pathlib.Path(sys.argv[1]).read_text())
    check(f"the scrape has hgrn2_ metrics ({len([n for n in exported if n.startswith('hgrn2_')])} series names)",
          any(n.startswith("hgrn2_") for n in exported))
    try:
        sources = {"dashboard deploy/grafana/hgrn2.json": dashboard_exprs()}
        check("deploy/grafana/hgrn2.json parses, with queries", bool(sources["dashboard deploy/grafana/hgrn2.json"]))
    except (ValueError, KeyError) as e:
        check("deploy/grafana/hgrn2.json parses, with queries", False, str(e))
        sources = {}
    sources["alert rules deploy/prometheus/hgrn2-alerts.rules.yml"] = rule_exprs()
    sources["adapter rules deploy/prometheus-adapter/values.yaml"] = adapter_exprs()

    for source, exprs in sources.items():
        used = {name for expr in exprs for name in NAME.findall(expr)}
        unknown = sorted(used - exported)
        check(f"{source}: its {len(used)} metric names are exported", not unknown,
              "not in the scrape: " + ", ".join(unknown))
        print("   uses: " + ", ".join(sorted(used)))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
