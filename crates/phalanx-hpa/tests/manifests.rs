//! The Kubernetes manifests agree with the demo's configuration: grace period, drain delay,
//! probes, ports, PDB and HPA target.

use serde_yaml::Value;
use std::path::PathBuf;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

fn yaml(path: &str) -> Value {
    yaml_docs(path).remove(0)
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    })
}

fn int(v: &Value, path: &str) -> i64 {
    at(v, path).as_i64().unwrap_or_else(|| panic!("{path} is not an integer: {:?}", at(v, path)))
}

fn demo_toml() -> toml::Table {
    std::fs::read_to_string(repo("examples/demo/demo.toml")).unwrap().parse().unwrap()
}

fn configmap_toml() -> toml::Table {
    let cm = yaml("deploy/k8s/configmap.yaml");
    cm["data"]["phalanx.toml"].as_str().unwrap().parse().unwrap()
}

/// A duration of the in-cluster configuration in milliseconds, or the demo's default where the
/// ConfigMap leaves it out.
fn config_ms(key: &str) -> i64 {
    let text = match configmap_toml().get(key).and_then(|v| v.as_str().map(str::to_owned)) {
        Some(v) => v,
        None => demo_toml()[key].as_str().unwrap_or_else(|| panic!("{key} is not a duration string")).to_owned(),
    };
    let duration = phalanx_core::duration::parse(&text).unwrap_or_else(|e| panic!("{key} = {text:?}: {e}"));
    i64::try_from(duration.as_millis()).unwrap()
}

fn container() -> Value {
    at(&yaml("deploy/k8s/deployment.yaml"), "spec.template.spec.containers.0").clone()
}

#[test]
fn grace_period_covers_drain_and_shutdown() {
    let deploy = yaml("deploy/k8s/deployment.yaml");
    let grace = int(&deploy, "spec.template.spec.terminationGracePeriodSeconds") * 1000;
    let (drain, shutdown) = (config_ms("drain_delay"), config_ms("shutdown_timeout"));
    // SIGKILL must not come before the drain delay and the shutdown timeout are both over,
    // with a margin for the process to exit.
    assert!(grace >= drain + shutdown + 5_000, "grace {grace} ms < drain {drain} + shutdown {shutdown} + 5 s");
}

#[test]
fn readiness_turns_off_before_the_listener_closes() {
    let c = container();
    assert_eq!(at(&c, "readinessProbe.httpGet.path").as_str(), Some("/readyz"));
    let period = int(&c, "readinessProbe.periodSeconds");
    let failures = int(&c, "readinessProbe.failureThreshold");
    // /readyz is 503 from SIGTERM on; the kubelet sees it within period × failureThreshold,
    // the endpoints and the load balancer within about 2 s more. All before drain_delay ends.
    let drain = config_ms("drain_delay");
    assert!(
        (period * failures + 2) * 1000 <= drain,
        "readiness {period} s × {failures} + 2 s propagation is longer than drain_delay {drain} ms"
    );
    assert_eq!(at(&c, "livenessProbe.httpGet.path").as_str(), Some("/healthz"));
    // Liveness must not kill a pod that is draining: its window exceeds the shutdown.
    let live = int(&c, "livenessProbe.periodSeconds") * int(&c, "livenessProbe.failureThreshold");
    assert!(live >= 10, "liveness window {live} s is too tight");
}

#[test]
fn startup_probe_allows_the_measured_start_time() {
    let c = container();
    let budget = int(&c, "startupProbe.periodSeconds") * int(&c, "startupProbe.failureThreshold");
    let pod = std::fs::read_to_string(repo("deploy/hpa/pod.csv")).unwrap();
    let start: f64 = pod
        .lines()
        .find_map(|l| {
            l.strip_prefix("start_to_ready_s").map(|v| v.trim_start_matches([' ', '=']).trim().parse().unwrap())
        })
        .unwrap();
    assert!(budget as f64 >= 4.0 * start, "startup probe budget {budget} s < 4 × measured start {start} s");
}

#[test]
fn ports_and_bind_agree() {
    let c = container();
    let port = at(&c, "ports")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some("http"))
        .map(|p| p["containerPort"].as_i64().unwrap())
        .unwrap();
    let bind_env = at(&c, "env")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some("BIND"))
        .and_then(|e| e["value"].as_str())
        .unwrap()
        .to_owned();
    assert!(bind_env.ends_with(&format!(":{port}")), "BIND {bind_env} vs containerPort {port}");
    let bind_cm = configmap_toml()["bind"].as_str().unwrap().to_owned();
    assert!(bind_cm.ends_with(&format!(":{port}")), "configmap bind {bind_cm} vs containerPort {port}");
    let svc = yaml_docs("deploy/k8s/service.yaml");
    for s in &svc {
        assert_eq!(at(s, "spec.ports.0.targetPort").as_str(), Some("http"));
    }
}

#[test]
fn pdb_and_rollout_keep_capacity() {
    let deploy = yaml("deploy/k8s/deployment.yaml");
    let pdb = yaml("deploy/k8s/pdb.yaml");
    let hpa = yaml("deploy/k8s/hpa.yaml");
    let labels = at(&deploy, "spec.template.metadata.labels");
    assert_eq!(at(&pdb, "spec.selector.matchLabels"), labels, "the PDB selects the Deployment's pods");
    let min = int(&hpa, "spec.minReplicas");
    let max_unavailable = int(&pdb, "spec.maxUnavailable");
    assert!(max_unavailable >= 1 && max_unavailable < min, "PDB maxUnavailable {max_unavailable} vs minReplicas {min}");
    assert_eq!(int(&deploy, "spec.strategy.rollingUpdate.maxUnavailable"), 0, "a rollout never lowers capacity");
    assert_eq!(at(&hpa, "spec.scaleTargetRef.name"), at(&deploy, "metadata.name"));
}

#[test]
fn configmap_keys_exist_in_the_demo_configuration() {
    // The demo refuses unknown keys at start-up: every key of the in-cluster file must be one
    // the demo's own file has (two levels deep; maps of names below that are data).
    let demo = demo_toml();
    for (k, v) in &configmap_toml() {
        let d = demo.get(k).unwrap_or_else(|| panic!("configmap key {k} is not in demo.toml"));
        if let (Some(t), Some(dt)) = (v.as_table(), d.as_table()) {
            for k2 in t.keys() {
                assert!(
                    dt.contains_key(k2) || k == "admission" || k == "pools",
                    "configmap key {k}.{k2} is not in demo.toml"
                );
            }
        }
    }
}

#[test]
fn the_hpa_manifest_parses_into_the_model() {
    let text = std::fs::read_to_string(repo("deploy/k8s/hpa.yaml")).unwrap();
    let hpa = phalanx_hpa::spec::Hpa::from_yaml(&text).unwrap();
    assert!(hpa.behavior.is_some());
    assert!(!hpa.metrics.is_empty());
}

fn quantity(v: &Value) -> f64 {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a quantity: {other:?}"),
    };
    phalanx_hpa::spec::parse_quantity(&s).unwrap()
}

#[test]
fn vpa_recommends_only_and_its_bounds_hold_the_deployment_requests() {
    let vpa = yaml("deploy/k8s/vpa.yaml");
    let deploy = yaml("deploy/k8s/deployment.yaml");
    assert_eq!(at(&vpa, "spec.updatePolicy.updateMode").as_str(), Some("Off"), "Auto would fight the HPA on CPU");
    assert_eq!(at(&vpa, "spec.targetRef.name"), at(&deploy, "metadata.name"));
    let policy = at(&vpa, "spec.resourcePolicy.containerPolicies.0");
    let c = container();
    assert_eq!(policy["containerName"], c["name"]);
    for res in ["cpu", "memory"] {
        let req = quantity(at(&c, &format!("resources.requests.{res}")));
        let min = quantity(&policy["minAllowed"][res]);
        let max = quantity(&policy["maxAllowed"][res]);
        assert!(min <= req && req <= max, "{res}: request {req} outside the VPA bounds {min}..{max}");
    }
    let limit = quantity(at(&c, "resources.limits.memory"));
    assert!(quantity(&policy["maxAllowed"]["memory"]) <= limit, "the VPA may recommend more memory than the limit");
}

#[test]
fn keda_alternative_scales_like_the_hpa() {
    let keda = yaml("deploy/k8s/alternatives/keda-scaledobject.yaml");
    let hpa = yaml("deploy/k8s/hpa.yaml");
    assert_eq!(at(&keda, "spec.minReplicaCount"), at(&hpa, "spec.minReplicas"));
    assert_eq!(at(&keda, "spec.maxReplicaCount"), at(&hpa, "spec.maxReplicas"));
    assert_eq!(at(&keda, "spec.advanced.horizontalPodAutoscalerConfig.behavior"), at(&hpa, "spec.behavior"));
    let target = quantity(at(&hpa, "spec.metrics.0.pods.target.averageValue"));
    let threshold = quantity(at(&keda, "spec.triggers.0.metadata.threshold"));
    assert_eq!(threshold, target, "the KEDA rate trigger and the HPA target differ");
    // The rate window of the KEDA query is the adapter's.
    let adapter = std::fs::read_to_string(repo("deploy/k8s/prometheus-adapter-rules.yaml")).unwrap();
    let window = phalanx_hpa::spec::adapter_rate_window(&adapter, "http_server_requests_per_second").unwrap().unwrap();
    let query = at(&keda, "spec.triggers.0.metadata.query").as_str().unwrap();
    assert!(query.contains(&format!("[{}s]", window as i64)), "{query} vs the adapter's {window} s window");
}
