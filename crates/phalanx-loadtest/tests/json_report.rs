//! The JSON report keeps its keys: scripts and committed results read them.

mod common;

use std::collections::BTreeSet;

/// Every key path of a JSON document (`a`, `a.b`, …); object keys only.
fn key_paths(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let serde_json::Value::Object(map) = value {
        for (key, value) in map {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            key_paths(value, &path, out);
            out.insert(path);
        }
    }
}

/// The keys of the report as the load generator wrote them before it became this crate (the
/// set of `results/chaos/steady.json`), each with its nested keys.
const KEYS: &[&str] = &[
    "target",
    "users",
    "model",
    "pacing",
    "think_ms",
    "warmup_s",
    "duration_s",
    "requests",
    "requests_total",
    "responses",
    "rps",
    "in_flight_at_end",
    "in_flight_note",
    "latency_ms",
    "latency_ms.avg",
    "latency_ms.p50",
    "latency_ms.p90",
    "latency_ms.p99",
    "latency_ms.p999",
    "latency_ms.max",
    "latency_ms.samples",
    "latency_from",
    "service_latency_ms",
    "service_latency_ms.avg",
    "service_latency_ms.p50",
    "service_latency_ms.p90",
    "service_latency_ms.p99",
    "service_latency_ms.p999",
    "service_latency_ms.max",
    "service_latency_ms.samples",
    "status",
    "status.2xx",
    "status.3xx",
    "status.4xx",
    "status.5xx",
    "errors",
    "errors.connect",
    "errors.timeout",
    "errors.io",
    "errors.status_4xx",
    "errors.status_429",
    "errors.status_5xx",
    "errors.status_503",
    "errors.total",
    "cache",
    "cache.hit",
    "cache.miss",
    "cache.other",
    "cache_hit_ratio",
    "unsent_retried",
    "connections",
    "connections.opened",
    "connections.peak",
    "warmup",
    "warmup.requests",
    "warmup.responses",
    "warmup.errors",
    "server_metrics",
    "server_metrics.metric",
    "server_metrics.before",
    "server_metrics.after",
    "server_metrics.delta",
    "server_metrics.difference_percent",
    "generator",
    "generator.cpu_s",
    "generator.cpu_cores",
    "generator.peak_rss_mb",
    "generator.elapsed_s",
];

/// Keys added since, each for a reason (MB/s of the payload-size runs).
const ADDED: &[&str] = &["response_body_bytes", "response_body_mb_per_s"];

#[test]
fn the_listed_keys_are_those_of_a_committed_report() {
    let committed = include_str!("../../../results/chaos/steady.json");
    let mut keys = BTreeSet::new();
    key_paths(&serde_json::from_str(committed).unwrap(), "", &mut keys);
    let listed: BTreeSet<String> = KEYS.iter().map(|key| key.to_string()).collect();
    assert_eq!(keys, listed);
}

#[test]
fn the_json_report_has_every_key_it_always_had_and_only_the_added_ones_besides() {
    let service = common::start_service();
    let dir = common::scratch("json_report");
    let path = dir.join("report.json");
    let output = common::run_loadtest(&service, &["--quiet".as_ref(), "--json".as_ref(), path.as_os_str()]);

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut keys = BTreeSet::new();
    key_paths(&report, "", &mut keys);
    let expected: BTreeSet<String> = KEYS.iter().chain(ADDED).map(|key| key.to_string()).collect();
    let missing: Vec<_> = expected.difference(&keys).collect();
    let unexpected: Vec<_> = keys.difference(&expected).collect();
    assert!(missing.is_empty() && unexpected.is_empty(), "missing {missing:?}, not listed {unexpected:?}");

    // The figures are the run's: answers arrived, the server's count matches, bodies were read.
    assert!(report["responses"].as_u64().unwrap() > 100, "{report:#}");
    assert_eq!(report["server_metrics"]["delta"], report["requests_total"], "{report:#}");
    assert!(report["errors"]["status_429"].as_u64().unwrap() > 0, "ids ending in 7 answer 429");
    assert!(report["response_body_bytes"].as_u64().unwrap() >= 1024 * 100, "{report:#}");
    // --quiet: the table on stdout, nothing on stderr.
    assert!(String::from_utf8_lossy(&output.stdout).contains("latency p99"));
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}
