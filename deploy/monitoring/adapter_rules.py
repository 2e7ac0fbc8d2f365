"""Turns prometheus-adapter rules into a Prometheus rules file for `promtool check rules`.

Each rule's metricsQuery template is filled the way the adapter fills it for a pod query:
<<.Series>> with the series name, <<.LabelMatchers>> with namespace and pod matchers,
<<.GroupBy>> with `pod`. Usage: adapter_rules.py prometheus-adapter-rules.yaml > rules.yaml
"""
import re
import sys

import yaml

doc = yaml.safe_load(open(sys.argv[1]))
config = yaml.safe_load(doc["data"]["config.yaml"])
rules = []
for i, rule in enumerate(config["rules"]):
    series = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"]).group(1)
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", 'namespace="default",pod=~"phalanx-demo-.*"')
        .replace("<<.GroupBy>>", "pod")
    )
    if "<<" in query:
        sys.exit(f"rule {i}: unknown template field in {query!r}")
    name = rule["name"]["as"]
    rules.append({"record": f"adapter:{name}", "expr": query})
yaml.safe_dump({"groups": [{"name": "prometheus-adapter", "rules": rules}]}, sys.stdout, sort_keys=False)
