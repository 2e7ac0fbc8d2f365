"""Writes grafana-dashboard.json (run from the repository root; the JSON is committed)."""
import json

SEL = 'otel_scope_name="phalanx",namespace=~"$namespace",pod=~"$pod"'
APP = SEL + ',http_route!~"/metrics|/status|/healthz|/readyz"'
panels = []


def panel(title, exprs, unit, x, y, w=12, h=8, kind="timeseries", legend=None):
    targets = []
    for i, e in enumerate(exprs):
        expr, fmt = e if isinstance(e, tuple) else (e, "")
        targets.append({"refId": chr(65 + i), "expr": expr, "legendFormat": fmt,
                        "datasource": {"type": "prometheus", "uid": "${datasource}"}})
    panels.append({
        "id": len(panels) + 1, "type": kind, "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "right"}} if kind == "timeseries" else {},
        "targets": targets,
    })


panel("Request rate by route", [(f"sum by (http_route) (rate(http_server_request_duration_seconds_count{{{SEL}}}[1m]))", "{{http_route}}")], "reqps", 0, 0)
panel("Latency p50 / p90 / p99 by route", [
    (f"histogram_quantile({q}, sum by (http_route, le) (rate(http_server_request_duration_seconds_bucket{{{APP}}}[1m])))", f"p{int(q * 100)} {{{{http_route}}}}")
    for q in (0.5, 0.9, 0.99)
] + [(f"sum(rate(http_server_request_duration_seconds_sum{{{APP}}}[1m])) / sum(rate(http_server_request_duration_seconds_count{{{APP}}}[1m]))", "avg (target 200 ms)")], "s", 12, 0)
panel("Error and shed rates", [
    (f'sum(rate(http_server_request_duration_seconds_count{{{SEL},http_response_status_code=~"5.."}}[1m])) / sum(rate(http_server_request_duration_seconds_count{{{SEL}}}[1m]))', "5xx"),
    (f'sum(rate(http_server_request_duration_seconds_count{{{SEL},http_response_status_code="429"}}[1m])) / sum(rate(http_server_request_duration_seconds_count{{{SEL}}}[1m]))', "429"),
    (f"sum by (priority, reason) (rate(phalanx_admission_shed_total{{{SEL}}}[1m])) / scalar(sum(rate(http_server_request_duration_seconds_count{{{SEL}}}[1m])))", "shed {{priority}} {{reason}}"),
], "percentunit", 0, 8)
panel("Cache hit ratio by level (target 85 %)", [
    (f'sum by (level) (rate(phalanx_cache_lookups_total{{{SEL},result=~"hit|stale|coalesced"}}[5m])) / sum by (level) (rate(phalanx_cache_lookups_total{{{SEL}}}[5m]))', "{{level}}"),
], "percentunit", 12, 8)
panel("Rate-limit decisions", [
    (f"sum by (policy, outcome) (rate(phalanx_ratelimit_decisions_total{{{SEL}}}[1m]))", "{{policy}} {{outcome}}"),
], "reqps", 0, 16)
panel("Breaker states (0 closed, 1 open, 2 half-open, 3 forced open)", [
    (f"max by (breaker) (phalanx_breaker_state{{{SEL}}})", "{{breaker}}"),
    (f'sum by (breaker) (rate(phalanx_breaker_calls_total{{{SEL},outcome="rejected"}}[1m]))', "rejected/s {{breaker}}"),
], "short", 12, 16)
panel("Pool utilization", [
    (f"max by (pool) (phalanx_pool_utilization{{{SEL}}})", "{{pool}} max"),
    (f"avg by (pool) (phalanx_pool_utilization{{{SEL}}})", "{{pool}} avg"),
], "percentunit", 0, 24)
panel("Pool acquire wait", [
    (f"histogram_quantile(0.99, sum by (pool, le) (rate(phalanx_pool_acquire_duration_seconds_bucket{{{SEL}}}[1m])))", "p99 {{pool}}"),
    (f"sum by (pool) (rate(phalanx_pool_acquire_duration_seconds_sum{{{SEL}}}[1m])) / sum by (pool) (rate(phalanx_pool_acquire_duration_seconds_count{{{SEL}}}[1m]))", "avg {{pool}}"),
], "s", 12, 24)
panel("Admission: in flight, limit, queued", [
    (f"sum by (limiter) (phalanx_admission_in_flight{{{SEL}}})", "in flight {{limiter}}"),
    (f"sum by (limiter) (phalanx_admission_queued{{{SEL}}})", "queued {{limiter}}"),
    (f'max by (limiter) (phalanx_admission_limit{{{SEL},priority="critical"}})', "limit {{limiter}}"),
], "short", 0, 32)
panel("Replicas: HPA desired / current, pods serving", [
    ('kube_horizontalpodautoscaler_status_desired_replicas{horizontalpodautoscaler="phalanx-demo",namespace=~"$namespace"}', "desired"),
    ('kube_horizontalpodautoscaler_status_current_replicas{horizontalpodautoscaler="phalanx-demo",namespace=~"$namespace"}', "current"),
    (f"count(count by (pod) (http_server_active_requests{{{SEL}}}))", "pods reporting"),
    (f"sum(rate(http_server_request_duration_seconds_count{{{SEL}}}[1m])) / count(count by (pod) (http_server_active_requests{{{SEL}}}))", "req/s per pod"),
], "short", 12, 32)

dashboard = {
    "title": "Phalanx demo",
    "uid": "phalanx-demo",
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "time": {"from": "now-1h", "to": "now"},
    "refresh": "10s",
    "tags": ["phalanx"],
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
        {"name": "namespace", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": "label_values(http_server_active_requests, namespace)", "includeAll": True, "allValue": ".*", "multi": True},
        {"name": "pod", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": 'label_values(http_server_active_requests{namespace=~"$namespace"}, pod)', "includeAll": True, "allValue": ".*", "multi": True},
    ]},
    "panels": panels,
}
with open("deploy/monitoring/grafana-dashboard.json", "w") as f:
    json.dump(dashboard, f, indent=2)
    f.write("\n")
