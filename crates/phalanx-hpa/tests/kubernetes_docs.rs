//! The controller model against the worked numbers of the Kubernetes documentation
//! ("Horizontal Pod Autoscaling": algorithm details, configurable scaling behavior).

use phalanx_hpa::controller::tests_support::steady_pods;
use phalanx_hpa::controller::{metric_replicas, Controller, PodView, Sample};
use phalanx_hpa::spec::{Hpa, Metric};

fn hpa(min: i32, max: i32, behavior: &str) -> Hpa {
    Hpa::from_yaml(&format!(
        "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
spec:
  minReplicas: {min}
  maxReplicas: {max}
  metrics:
    - type: Pods
      pods: {{ metric: {{ name: m }}, target: {{ type: AverageValue, averageValue: 100m }} }}
{behavior}"
    ))
    .unwrap()
}

/// Pods whose average makes the calculator ask for `want` replicas out of `n`.
fn pods_wanting(n: i32, want: i32) -> Vec<PodView> {
    steady_pods(n as usize, 0.1 * want as f64 / n as f64 * 0.999)
}

#[test]
fn ratio_doubles_and_halves() {
    // "if the current metric value is 200m, and the desired value is 100m, the number of
    // replicas will be doubled ... If the current value is instead 50m, you'll halve".
    let mut c = Controller::new(hpa(1, 100, ""));
    assert_eq!(c.sync(0.0, 4, &steady_pods(4, 0.2), 1.0).replicas, 8);
    let mut c = Controller::new(hpa(1, 100, ""));
    assert_eq!(c.sync(0.0, 4, &steady_pods(4, 0.05), 1.0).replicas, 2);
}

#[test]
fn tolerance_skips_ratios_close_to_one() {
    // "The control plane skips any scaling action if the ratio is sufficiently close to 1.0
    // (within a globally-configurable tolerance, 0.1 by default)."
    let mut c = Controller::new(hpa(1, 100, ""));
    assert_eq!(c.sync(0.0, 10, &steady_pods(10, 0.109), 1.0).replicas, 10);
    assert_eq!(c.sync(15.0, 10, &steady_pods(10, 0.092), 1.0).replicas, 10);
    let mut c = Controller::new(hpa(1, 100, ""));
    assert_eq!(c.sync(0.0, 10, &steady_pods(10, 0.112), 1.0).replicas, 12);
}

#[test]
fn scale_down_policies_pods_4_or_10_percent_per_minute() {
    // "if there are 80 replicas and the target has to be scaled down to 10 replicas then during
    // the first step 8 replicas will be reduced. In the next iteration when the number of
    // replicas is 72, 10% of the pods is 7.2 but the number is rounded up to 8 ... When the
    // number of replicas falls below 40 the first policy (Pods) is applied and 4 replicas will
    // be reduced at a time."
    let mut c = Controller::new(hpa(
        1,
        100,
        "  behavior:
    scaleDown:
      policies:
        - { type: Pods, value: 4, periodSeconds: 60 }
        - { type: Percent, value: 10, periodSeconds: 60 }
",
    ));
    let mut current = 80;
    let mut per_minute = vec![current];
    for sync in 0..(20 * 4) {
        let now = sync as f64 * 15.0;
        let next = c.sync(now, current, &pods_wanting(current, 10), 1.0).replicas;
        if sync % 4 != 0 {
            assert_eq!(next, current, "at most one step per 60 s period (t = {now})");
        }
        current = next;
        if sync % 4 == 0 {
            per_minute.push(current);
        }
    }
    assert_eq!(&per_minute[..4], &[80, 72, 64, 57]);
    for w in per_minute.windows(2).filter(|w| w[0] <= 40 && w[0] > 10) {
        assert!(w[0] - w[1] == 4 || w[1] == 10, "below 40 replicas the Pods policy applies: {w:?}");
    }
    assert_eq!(*per_minute.last().unwrap(), 10);
}

#[test]
fn default_scale_up_is_4_pods_or_100_percent_per_15s() {
    // "There are 2 policies where 4 pods or a 100% of the currently running replicas may at
    // most be added every 15 seconds till the HPA reaches its steady state."
    let mut c = Controller::new(hpa(1, 1000, "  behavior: {}\n"));
    let mut current = 1;
    let mut seen = vec![current];
    for sync in 0..5 {
        current = c.sync(sync as f64 * 15.0, current, &pods_wanting(current, 500), 1.0).replicas;
        seen.push(current);
    }
    assert_eq!(seen, [1, 5, 10, 20, 40, 80]);
}

#[test]
fn select_policy_min_limits_scale_down_to_5_pods() {
    // "To ensure that no more than 5 Pods are removed per minute, you can add a second
    // scale-down policy with a fixed size of 5, and set selectPolicy to minimum."
    let behavior = "  behavior:
    scaleDown:
      stabilizationWindowSeconds: 0
      selectPolicy: Min
      policies:
        - { type: Percent, value: 10, periodSeconds: 60 }
        - { type: Pods, value: 5, periodSeconds: 60 }
";
    let mut c = Controller::new(hpa(1, 1000, behavior));
    assert_eq!(c.sync(0.0, 100, &pods_wanting(100, 10), 1.0).replicas, 95);
    assert_eq!(c.sync(15.0, 95, &pods_wanting(95, 10), 1.0).replicas, 95);
    // Below 50 replicas 10 % is less than 5 pods.
    let mut c = Controller::new(hpa(1, 1000, behavior));
    assert_eq!(c.sync(0.0, 30, &pods_wanting(30, 10), 1.0).replicas, 27);
}

#[test]
fn disabled_scale_down_never_removes_pods() {
    // "selectPolicy: Disabled" in scaleDown: "disable scale down".
    let mut c = Controller::new(hpa(1, 100, "  behavior:\n    scaleDown:\n      selectPolicy: Disabled\n"));
    for sync in 0..100 {
        assert_eq!(c.sync(sync as f64 * 15.0, 20, &pods_wanting(20, 2), 1.0).replicas, 20);
    }
    // Scale-up still works.
    assert_eq!(c.sync(2000.0, 20, &pods_wanting(20, 30), 1.0).replicas, 30);
}

#[test]
fn stabilization_window_uses_the_highest_recommendation_of_the_window() {
    // "When the metrics indicate that the target should be scaled down the algorithm looks
    // into previously computed desired states, and uses the highest value from the specified
    // interval." (stabilizationWindowSeconds: 300)
    let mut c = Controller::new(hpa(1, 100, "  behavior:\n    scaleDown:\n      stabilizationWindowSeconds: 300\n"));
    for sync in -20..=0 {
        assert_eq!(c.sync(sync as f64 * 15.0, 10, &pods_wanting(10, 10), 1.0).replicas, 10);
    }
    let mut current = 10;
    let mut dropped_at = None;
    for sync in 1..=30 {
        let now = sync as f64 * 15.0;
        current = c.sync(now, current, &pods_wanting(current, 5), 1.0).replicas;
        if current == 5 && dropped_at.is_none() {
            dropped_at = Some(now);
        }
    }
    // The recommendation of 10 made at t = 0 leaves the window at t = 300.
    assert_eq!(dropped_at, Some(300.0));
}

#[test]
fn missing_metrics_count_as_zero_on_scale_up_and_as_target_on_scale_down() {
    // "If any pod is missing metrics ... assume those pods were consuming 100% of the desired
    // value in case of a scale down, and 0% in case of a scale up."
    let m = Metric::Pods { name: "m".into(), target: 1.0 };
    let mut pods = steady_pods(4, 2.0);
    pods[3].samples[0] = None;
    // 3 pods at 2× the target, one missing: ratio 2 → with the missing one at 0: 6/4 = 1.5 → 6.
    assert_eq!(metric_replicas(4, &pods, 0, &m, 1.0, 0.0, 0.1).unwrap().replicas, 6);
    let mut pods = steady_pods(4, 0.25);
    pods[3].samples[0] = None;
    // Scale-down: the missing pod at the target: (0.75 + 1) / 4 = 0.4375 → ceil(1.75) = 2.
    assert_eq!(metric_replicas(4, &pods, 0, &m, 1.0, 0.0, 0.1).unwrap().replicas, 2);
    // When the fallback flips the direction, nothing changes.
    let mut pods = steady_pods(2, 1.15);
    pods.extend(steady_pods(2, 0.0).into_iter().map(|mut p| {
        p.samples[0] = None;
        p
    }));
    assert_eq!(metric_replicas(4, &pods, 0, &m, 1.0, 0.0, 0.1).unwrap().replicas, 4);
}

#[test]
fn cpu_of_pods_in_initialization_is_ignored_and_counted_as_zero_on_scale_up() {
    // "the HorizontalPodAutoscaler ... set aside pods that are not yet ready; with CPU, pods
    // within the initialization period whose sample predates readiness are set aside".
    let m = Metric::Cpu { target_utilization: 50 };
    let old = |cpu: f64| PodView {
        pending: false,
        deleting: false,
        start_time: -10_000.0,
        ready: true,
        ready_transition: -9_000.0,
        samples: vec![Some(Sample { value: cpu, timestamp: 0.0, window: 15.0 })],
    };
    // 2 old pods at 100 % of a 1-core request (2× target) and one starting pod.
    let starting = PodView {
        pending: false,
        deleting: false,
        start_time: -20.0,
        ready: true,
        ready_transition: -5.0,
        // Its sample's window began before it turned ready: set aside.
        samples: vec![Some(Sample { value: 1.0, timestamp: 0.0, window: 15.0 })],
    };
    let pods = vec![old(1.0), old(1.0), starting.clone()];
    // Ratio 2 over the 2 counted pods, the starting one added at 0: 2/3 × 2 … = 4/3 → ceil(4) = 4.
    assert_eq!(metric_replicas(3, &pods, 0, &m, 1.0, 0.0, 0.1).unwrap().replicas, 4);
    // The same pod after a full window since readiness is counted.
    let mut counted = starting;
    counted.ready_transition = -30.0;
    let pods = vec![old(1.0), old(1.0), counted];
    assert_eq!(metric_replicas(3, &pods, 0, &m, 1.0, 0.0, 0.1).unwrap().replicas, 6);
}

#[test]
fn the_highest_proposal_over_metrics_wins() {
    // "the HorizontalPodAutoscaler will calculate proposed replica counts for each metric, and
    // then choose the one with the highest replica count."
    let hpa = Hpa::from_yaml(
        "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
spec:
  maxReplicas: 100
  metrics:
    - type: Pods
      pods: { metric: { name: a }, target: { type: AverageValue, averageValue: 10 } }
    - type: Resource
      resource: { name: cpu, target: { type: Utilization, averageUtilization: 50 } }
",
    )
    .unwrap();
    let pods: Vec<PodView> = steady_pods(4, 10.0 * 1.5)
        .into_iter()
        .map(|mut p| {
            p.samples.push(Some(Sample { value: 0.5 * 2.0, timestamp: 0.0, window: 15.0 }));
            p
        })
        .collect();
    // a: ratio 1.5 → 6; cpu: 100 % of 1 core vs 50 % → 8.
    assert_eq!(Controller::new(hpa).sync(0.0, 4, &pods, 1.0).replicas, 8);
}

#[test]
fn without_behavior_scale_up_is_limited_to_twice_or_four() {
    let mut c = Controller::new(hpa(1, 100, ""));
    assert_eq!(c.sync(0.0, 1, &pods_wanting(1, 50), 1.0).replicas, 4);
    assert_eq!(c.sync(15.0, 10, &pods_wanting(10, 50), 1.0).replicas, 20);
}

#[test]
fn min_and_max_bound_the_result() {
    let mut c = Controller::new(hpa(3, 12, "  behavior: {}\n"));
    assert_eq!(c.sync(0.0, 10, &pods_wanting(10, 50), 1.0).replicas, 12);
    let mut c = Controller::new(hpa(3, 12, "  behavior:\n    scaleDown: { stabilizationWindowSeconds: 0 }\n"));
    assert_eq!(c.sync(0.0, 10, &pods_wanting(10, 1), 1.0).replicas, 3);
}
