"""Builds a `promtool test rules` file from two scrapes of a live demo's /metrics.

The series keep the exact names and label sets the demo exports; counters grow at the rate
seen between the two scrapes. One test checks that the healthy service fires nothing; the
others change only the values of live series (or add the one a rare event creates, with the
labels the code gives it) and check that the matching alert fires with the right labels.
It first checks that every metric and label the rules and the dashboard use exists on /metrics.

Usage: alert_tests.py before.prom after.prom seconds_between alerts.yaml dashboard.json > test.yaml
"""
import json
import re
import sys

import yaml

before_path, after_path, gap, rules_path, dashboard_path = sys.argv[1:6]
gap = float(gap)
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(path):
    types, samples = {}, {}
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            sys.exit(f"unparsable exposition line: {line!r}")
        name, _, labels, value = m.groups()
        key = (name, tuple(LABEL.findall(labels or "")))
        samples[key] = float(value)
    return types, samples


types, before = parse(before_path)
_, after = parse(after_path)


def family(name):
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) in ("histogram", "counter"):
            return types[name[: -len(suffix)]]
    return types.get(name, "gauge")


# 1. Every metric and label used by the rules and the dashboard exists on /metrics.
live_names = {k[0] for k in after}
live_labels = {}
for name, labels in after:
    live_labels.setdefault(name, set()).update(l for l, _ in labels)
# Series that only appear once their event happened, with the labels the code gives them, and
# kube-state-metrics' series (not the demo's).
EVENT_SERIES = {
    "phalanx_admission_shed_total": {"limiter", "priority", "reason", "otel_scope_name", "otel_scope_version"},
    "phalanx_pool_acquire_timeouts_total": {"pool", "otel_scope_name", "otel_scope_version"},
}
exprs = []
for group in yaml.safe_load(open(rules_path))["groups"]:
    for rule in group["rules"]:
        exprs.append((rule.get("alert") or rule.get("record"), rule["expr"]))
dashboard = json.load(open(dashboard_path))
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        exprs.append((panel["title"], target["expr"]))
PROMQL_WORDS = {
    "sum", "rate", "irate", "max", "min", "avg", "by", "on", "or", "and", "unless", "without",
    "histogram_quantile", "count", "le", "increase", "clamp_min", "topk", "ignoring", "group_left",
    "bool", "offset", "label_replace", "vector", "time", "abs", "s", "m", "h",
}
all_labels = set().union(*live_labels.values(), *EVENT_SERIES.values())
problems = []
for where, expr in exprs:
    for name in set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*(?:\{|\[|\)|$|\s)", expr)):
        if name in PROMQL_WORDS or name in all_labels or name.startswith("kube_") or "_" not in name:
            continue
        labels = live_labels.get(name) or EVENT_SERIES.get(name)
        if labels is None:
            problems.append(f"{where}: metric {name} is not on /metrics")
            continue
        for sel in re.findall(name + r"\{([^}]*)\}", expr):
            for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", sel):
                # namespace, pod, job, instance: added by Prometheus' Kubernetes discovery.
                if label not in labels and label not in ("namespace", "pod", "job", "instance"):
                    problems.append(f"{where}: {name} has no label {label}")
if problems:
    sys.exit("\n".join(problems))

# 2. The promtool tests.
STEPS = 20


def series_text(name, labels):
    body = ",".join(f'{k}="{v}"' for k, v in labels)
    return f"{name}{{{body}}}"


def values(start, per_min):
    if per_min == 0:
        return f"{start:g}x{STEPS}"
    return f"{start:g}+{per_min:g}x{STEPS}"


def live_series():
    out = {}
    for key, v1 in after.items():
        name, labels = key
        if name == "target_info":
            continue
        v0 = before.get(key, 0.0)
        counter = family(name) in ("counter", "histogram")
        per_min = max(v1 - v0, 0.0) * 60.0 / gap if counter else 0.0
        out[key] = (v1, per_min)
    return out


def as_input(series):
    return [{"series": series_text(n, l), "values": values(v, r)} for (n, l), (v, r) in sorted(series.items())]


def find(series, name, **want):
    for key in series:
        if key[0] == name and all(dict(key[1]).get(k) == v for k, v in want.items()):
            return key
    sys.exit(f"no live series {name} {want}")


ALERTS = [n for n, _ in exprs if n and n.startswith("Phalanx")]
SUMMARY = {}
for group in yaml.safe_load(open(rules_path))["groups"]:
    for rule in group["rules"]:
        if "alert" in rule:
            SUMMARY[rule["alert"]] = rule["annotations"]["summary"]


def fired(alert, severity, **labels):
    """The expected alert: its labels, and its summary with the label templates filled in."""
    summary = SUMMARY[alert]
    for k, v in labels.items():
        summary = summary.replace("{{ $labels.%s }}" % k, v)
    return {"exp_labels": {"severity": severity, **labels}, "exp_annotations": {"summary": summary}}

tests = []
healthy = live_series()
tests.append({
    "name": "healthy demo: nothing fires",
    "interval": "1m",
    "input_series": as_input(healthy),
    "alert_rule_test": [{"eval_time": "19m", "alertname": a, "exp_alerts": []} for a in ALERTS],
})

# A breaker opens.
s = live_series()
key = find(s, "phalanx_breaker_state")
s[key] = (1.0, 0.0)
breaker = dict(key[1])["breaker"]
tests.append({
    "name": "an open breaker fires PhalanxBreakerOpen",
    "interval": "1m",
    "input_series": as_input(s),
    "alert_rule_test": [{
        "eval_time": "5m", "alertname": "PhalanxBreakerOpen",
        "exp_alerts": [fired("PhalanxBreakerOpen", "page", breaker=breaker)],
    }],
})

# Requests slow down: every new observation of /items/{id} takes 1-2.5 s.
s = live_series()
route = "/items/{id}"
count_key = find(s, "http_server_request_duration_seconds_count", http_route=route, http_response_status_code="200")
rate = 600.0
for key in list(s):
    name, labels = key
    d = dict(labels)
    if d.get("http_route") != route or d.get("http_response_status_code") != "200":
        continue
    if name.endswith("_bucket"):
        le = float("inf") if d["le"] == "+Inf" else float(d["le"])
        s[key] = (s[key][0], rate if le >= 2.5 else 0.0)
    elif name.endswith("_sum"):
        s[key] = (s[key][0], rate * 2.0)
    elif name.endswith("_count"):
        s[key] = (s[key][0], rate)
for key in list(s):
    d = dict(key[1])
    if key[0].startswith("http_server_request_duration") and (d.get("http_route") != route or d.get("http_response_status_code") != "200"):
        s[key] = (s[key][0], 0.0)
tests.append({
    "name": "slow requests fire the latency alerts",
    "interval": "1m",
    "input_series": as_input(s),
    "alert_rule_test": [
        {"eval_time": "12m", "alertname": "PhalanxLatencyAvgHigh", "exp_alerts": [fired("PhalanxLatencyAvgHigh", "page")]},
        {"eval_time": "12m", "alertname": "PhalanxLatencyP99High", "exp_alerts": [fired("PhalanxLatencyP99High", "page")]},
        {"eval_time": "12m", "alertname": "PhalanxErrorRateHigh", "exp_alerts": []},
    ],
})

# The admission limiter sheds 10 % of the requests, and 5 % end in 503.
s = live_series()
total_per_min = sum(r for (n, _), (_, r) in s.items() if n == "http_server_request_duration_seconds_count") or 600.0
scope = [("otel_scope_name", "phalanx"), ("otel_scope_version", dict(count_key[1])["otel_scope_version"])]
s[("phalanx_admission_shed_total", (("limiter", "items"), ("priority", "low"), ("reason", "queue_full")) + tuple(scope))] = (0.0, total_per_min * 0.1)
labels_503 = tuple((k, "503" if k == "http_response_status_code" else v) for k, v in count_key[1])
s[("http_server_request_duration_seconds_count", labels_503)] = (0.0, total_per_min * 0.05)
tests.append({
    "name": "shedding and 5xx fire their alerts",
    "interval": "1m",
    "input_series": as_input(s),
    "alert_rule_test": [
        {"eval_time": "12m", "alertname": "PhalanxShedRateHigh", "exp_alerts": [fired("PhalanxShedRateHigh", "page")]},
        {"eval_time": "12m", "alertname": "PhalanxErrorRateHigh", "exp_alerts": [fired("PhalanxErrorRateHigh", "page")]},
    ],
})

# The HTTP cache stops hitting; the pool fills up; Redis goes away for the limiter.
s = live_series()
for key in list(s):
    name, labels = key
    d = dict(labels)
    if name == "phalanx_cache_lookups_total" and d.get("level") == "http":
        s[key] = (s[key][0], 100.0 if d["result"] == "miss" else (10.0 if d["result"] == "hit" else 0.0))
    if name == "phalanx_pool_utilization":
        s[key] = (0.97, 0.0)
pool = dict(find(s, "phalanx_pool_utilization")[1])["pool"]
policy_key = find(s, "phalanx_ratelimit_decisions_total", outcome="allowed")
policy = dict(policy_key[1])["policy"]
fail_labels = tuple((k, "fail_open" if k == "outcome" else v) for k, v in policy_key[1])
s[("phalanx_ratelimit_decisions_total", fail_labels)] = (0.0, 50.0)
tests.append({
    "name": "cache misses, a full pool and a limiter without Redis fire their alerts",
    "interval": "1m",
    "input_series": as_input(s),
    "alert_rule_test": [
        {"eval_time": "19m", "alertname": "PhalanxCacheHitRatioLow", "exp_alerts": [fired("PhalanxCacheHitRatioLow", "ticket")]},
        {"eval_time": "19m", "alertname": "PhalanxPoolSaturated", "exp_alerts": [fired("PhalanxPoolSaturated", "ticket", pool=pool)]},
        {"eval_time": "19m", "alertname": "PhalanxRateLimitFailOpen", "exp_alerts": [fired("PhalanxRateLimitFailOpen", "ticket", policy=policy)]},
    ],
})

yaml.safe_dump({"rule_files": [rules_path], "evaluation_interval": "1m", "tests": tests}, sys.stdout, sort_keys=False, width=1000)
