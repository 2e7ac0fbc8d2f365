//! The acceptance figures of deploy/hpa: deploy/k8s/hpa.yaml on the measured pod.

use phalanx_hpa::inputs::{cases, read_pod};
use phalanx_hpa::sim::{reaction, replay, reversals, Pipeline};
use phalanx_hpa::spec::{adapter_rate_window, Hpa, Metric};

fn repo(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn needed_replicas_are_ready_within_30s_of_a_3x_spike_and_scale_down_does_not_flap() {
    let hpa = Hpa::from_yaml(&repo("deploy/k8s/hpa.yaml")).unwrap();
    let (pod, mut pipe, base, p99_target) = read_pod(&repo("deploy/hpa/pod.csv")).unwrap();
    for m in &hpa.metrics {
        if let Metric::Pods { name, .. } = m {
            pipe.rate_window_s =
                adapter_rate_window(&repo("deploy/k8s/prometheus-adapter-rules.yaml"), name).unwrap().unwrap();
        }
    }
    for case in cases(base) {
        for phase in 0..15 {
            let p = Pipeline { sync_phase_s: phase as f64, ..pipe.clone() };
            let load = |t: f64| (case.load)(t);
            let rows = replay(&hpa, &pod, &p, &load, 900.0, case.duration);
            let r = reaction(&rows, case.event_at, p99_target);
            let after =
                r.needed_ready_after_s.unwrap_or_else(|| panic!("{}: never covered (phase {phase})", case.name));
            if case.name.starts_with("spike") {
                assert!(after <= 30.0, "{}: needed replicas ready after {after} s (phase {phase})", case.name);
            }
            if case.name == "drop-to-10pct" {
                // Down only: no replica count goes up again while the load stays low.
                assert_eq!(reversals(&rows), 0, "scale-down flapped (phase {phase})");
                let last = rows.last().unwrap();
                assert_eq!(last.desired, hpa.min_replicas.max(last.needed), "scale-down did not finish");
            }
        }
    }
}
