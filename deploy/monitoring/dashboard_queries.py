"""Turns every query of grafana-dashboard.json into a recording rule so that promtool parses it.

Grafana variables are replaced by what they expand to ($namespace, $pod → .*).
Usage: dashboard_queries.py grafana-dashboard.json > rules.yaml
"""
import json
import sys

import yaml

dashboard = json.load(open(sys.argv[1]))
rules = []
for panel in dashboard["panels"]:
    for target in panel["targets"]:
        expr = target["expr"].replace("$namespace", ".*").replace("$pod", ".*")
        if "$" in expr:
            sys.exit(f"{panel['title']}: unknown variable in {expr!r}")
        rules.append({"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": expr})
yaml.safe_dump({"groups": [{"name": "grafana-dashboard", "rules": rules}]}, sys.stdout, sort_keys=False, width=1000)
