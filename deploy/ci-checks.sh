#!/usr/bin/env bash
# Validates deploy/ without a cluster: the Kubernetes manifests against the API schemas of a
# pinned Kubernetes version, the PromQL of the prometheus-adapter rules and of the alert rules
# (promtool check rules), the alert rules' unit tests on samples scraped from a live demo
# (promtool test rules), and the load balancer configs (nginx -t, haproxy -c).
# Installs what it needs (pip, apt-get) only when it is missing. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=1.33.0
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0

need_apt() {
    local missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
    done
    if ((${#missing[@]})); then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
}
need_apt promtool:prometheus nginx:nginx haproxy:haproxy
if ! command -v kubernetes-validate >/dev/null 2>&1; then
    python3 -m pip install -q "$KUBERNETES_VALIDATE"
fi

echo "== kubernetes-validate $K8S_VERSION (strict)"
kubernetes-validate --quiet --strict -k "$K8S_VERSION" deploy/k8s/*.yaml

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== promtool check rules: prometheus-adapter queries"
# The adapter's metricsQuery templates become recording rules with the template filled in the
# way the adapter fills it for one pod, so promtool parses the PromQL the HPA will get.
python3 deploy/monitoring/adapter_rules.py deploy/k8s/prometheus-adapter-rules.yaml >"$tmp/adapter-rules.yaml"
promtool check rules "$tmp/adapter-rules.yaml"

echo "== promtool check rules: alert rules"
promtool check rules deploy/monitoring/alerts.yaml

echo "== promtool test rules: alerts on samples scraped from the demo"
bash deploy/monitoring/test-alerts.sh

echo "== grafana dashboard: every query parses"
python3 deploy/monitoring/dashboard_queries.py deploy/monitoring/grafana-dashboard.json >"$tmp/dashboard-rules.yaml"
promtool check rules "$tmp/dashboard-rules.yaml"

echo "== load balancer configs"
nginx -t -q -c "$PWD/deploy/lb/nginx.conf"
haproxy -c -q -f deploy/lb/haproxy.cfg
echo "deploy checks passed"
