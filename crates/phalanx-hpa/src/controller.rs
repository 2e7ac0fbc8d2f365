//! The HPA controller's decision per sync, as `pkg/controller/podautoscaler` computes it:
//! the replica calculator (per metric, with tolerance, missing and unready pods) and the
//! normalization (stabilization windows, scaling policies, selectPolicy, min/max).

use crate::spec::{Hpa, Metric, PolicyType, ScalingRules, SelectPolicy, DEFAULT_DOWNSCALE_STABILIZATION_S};

/// The controller's default tolerance (`--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;
/// `--horizontal-pod-autoscaler-cpu-initialization-period`.
pub const CPU_INITIALIZATION_PERIOD_S: f64 = 300.0;
/// `--horizontal-pod-autoscaler-initial-readiness-delay`.
pub const INITIAL_READINESS_DELAY_S: f64 = 30.0;

/// A pod as the controller sees it through the API and the metrics APIs.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    /// Phase `Pending` (containers not started yet).
    pub pending: bool,
    /// Has a deletion timestamp (terminating).
    pub deleting: bool,
    /// `status.startTime` (acknowledged by the kubelet), seconds.
    pub start_time: f64,
    /// The Ready condition and its `lastTransitionTime`.
    pub ready: bool,
    /// When the Ready condition last changed.
    pub ready_transition: f64,
    /// The sample of each metric of the HPA, in the order of `Hpa::metrics`: `None` = missing.
    pub samples: Vec<Option<Sample>>,
}

/// One metric sample of one pod.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The value: a custom metric's value, or CPU in cores.
    pub value: f64,
    /// When the sample's window ended.
    pub timestamp: f64,
    /// The window the sample averages over (resource metrics), seconds.
    pub window: f64,
}

/// Replicas proposed by one metric, with the usage ratio behind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proposal {
    /// Proposed replicas.
    pub replicas: i32,
    /// The raw usage ratio (metric / target over the pods with samples).
    pub ratio: f64,
}

fn ratio_of(values: &[(f64, f64)], target: f64) -> f64 {
    // (value, per-pod target denominator); for CPU the denominator is the request.
    let total: f64 = values.iter().map(|v| v.0).sum();
    let denom: f64 = values.iter().map(|v| v.1).sum();
    total / (denom * target)
}

/// `GetResourceReplicas` / `calcPlainMetricReplicas`: the replicas one metric asks for.
///
/// `request` is the pod's CPU request in cores (CPU), or 1 for a plain metric whose `target`
/// is the average value. Returns `None` when no pod has a sample (the controller errors).
pub fn metric_replicas(
    current: i32,
    pods: &[PodView],
    index: usize,
    metric: &Metric,
    request: f64,
    now: f64,
    tolerance: f64,
) -> Option<Proposal> {
    let (cpu, target, denom) = match metric {
        Metric::Pods { target, .. } => (false, *target, 1.0),
        Metric::Cpu { target_utilization } => (true, *target_utilization as f64 / 100.0, request),
    };
    let mut ready_values = Vec::new();
    let mut unready = 0usize;
    let mut missing = 0usize;
    for pod in pods {
        if pod.deleting {
            continue;
        }
        if pod.pending {
            unready += 1;
            continue;
        }
        let Some(sample) = pod.samples[index] else {
            missing += 1;
            continue;
        };
        if cpu {
            let unready_now = if pod.start_time + CPU_INITIALIZATION_PERIOD_S > now {
                !pod.ready || sample.timestamp < pod.ready_transition + sample.window
            } else {
                !pod.ready && pod.start_time + INITIAL_READINESS_DELAY_S > pod.ready_transition
            };
            if unready_now {
                unready += 1;
                continue;
            }
        }
        ready_values.push((sample.value, denom));
    }
    if ready_values.is_empty() {
        return None;
    }
    let ratio = ratio_of(&ready_values, target);
    let scale_up_with_unready = unready > 0 && ratio > 1.0;
    if !scale_up_with_unready && missing == 0 {
        if (1.0 - ratio).abs() <= tolerance {
            return Some(Proposal { replicas: current, ratio });
        }
        return Some(Proposal { replicas: (ratio * ready_values.len() as f64).ceil() as i32, ratio });
    }
    let mut values = ready_values;
    if missing > 0 {
        if ratio < 1.0 {
            // On a scale-down a pod without metrics counts as using the target (CPU: at least
            // 100 % of its request).
            let fallback = if cpu { target.max(1.0) } else { target };
            values.extend(std::iter::repeat_n((fallback * denom, denom), missing));
        } else if ratio > 1.0 {
            values.extend(std::iter::repeat_n((0.0, denom), missing));
        }
    }
    if scale_up_with_unready {
        values.extend(std::iter::repeat_n((0.0, denom), unready));
    }
    let new_ratio = ratio_of(&values, target);
    if (1.0 - new_ratio).abs() <= tolerance || (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0) {
        return Some(Proposal { replicas: current, ratio });
    }
    let replicas = (new_ratio * values.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Some(Proposal { replicas: current, ratio });
    }
    Some(Proposal { replicas, ratio })
}

#[derive(Debug, Clone, Copy)]
struct Recommendation {
    replicas: i32,
    at: f64,
}

#[derive(Debug, Clone, Copy)]
struct ScaleEvent {
    change: i32,
    at: f64,
    outdated: bool,
}

/// The outcome of one sync.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The replicas the controller writes to the scale subresource.
    pub replicas: i32,
    /// Max over the metrics before normalization (`None` when no metric was available).
    pub metric_replicas: Option<i32>,
    /// What limited the result.
    pub reason: &'static str,
}

/// The controller's memory for one HPA: past recommendations and scale events.
#[derive(Debug, Clone)]
pub struct Controller {
    hpa: Hpa,
    tolerance: f64,
    recommendations: Vec<Recommendation>,
    up_events: Vec<ScaleEvent>,
    down_events: Vec<ScaleEvent>,
}

fn change_in_period(events: &[ScaleEvent], period: i32, now: f64) -> i32 {
    let cutoff = now - period as f64;
    events.iter().filter(|e| e.at > cutoff).map(|e| e.change).sum()
}

/// `calculateScaleUpLimitWithScalingRules`.
fn scale_up_limit(current: i32, up: &[ScaleEvent], down: &[ScaleEvent], rules: &ScalingRules, now: f64) -> i32 {
    let (mut result, pick): (i32, fn(i32, i32) -> i32) = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => (i32::MAX, std::cmp::min),
        SelectPolicy::Max => (i32::MIN, std::cmp::max),
    };
    for p in &rules.policies {
        let start =
            current - change_in_period(up, p.period_seconds, now) + change_in_period(down, p.period_seconds, now);
        let proposed = match p.kind {
            PolicyType::Pods => start.saturating_add(p.value),
            PolicyType::Percent => (start as f64 * (1.0 + p.value as f64 / 100.0)).ceil().min(i32::MAX as f64) as i32,
        };
        result = pick(result, proposed);
    }
    result
}

/// `calculateScaleDownLimitWithBehaviors`.
fn scale_down_limit(current: i32, up: &[ScaleEvent], down: &[ScaleEvent], rules: &ScalingRules, now: f64) -> i32 {
    let (mut result, pick): (i32, fn(i32, i32) -> i32) = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => (i32::MIN, std::cmp::max),
        SelectPolicy::Max => (i32::MAX, std::cmp::min),
    };
    for p in &rules.policies {
        let start =
            current - change_in_period(up, p.period_seconds, now) + change_in_period(down, p.period_seconds, now);
        let proposed = match p.kind {
            PolicyType::Pods => start - p.value,
            PolicyType::Percent => (start as f64 * (1.0 - p.value as f64 / 100.0)) as i32,
        };
        result = pick(result, proposed);
    }
    result
}

impl Controller {
    /// A controller for `hpa` with the default tolerance.
    pub fn new(hpa: Hpa) -> Self {
        Self::with_tolerance(hpa, TOLERANCE)
    }

    /// A controller with another `--horizontal-pod-autoscaler-tolerance`.
    pub fn with_tolerance(hpa: Hpa, tolerance: f64) -> Self {
        Self { hpa, tolerance, recommendations: Vec::new(), up_events: Vec::new(), down_events: Vec::new() }
    }

    /// The HPA this controller runs.
    pub fn hpa(&self) -> &Hpa {
        &self.hpa
    }

    /// `reconcileAutoscaler` for one sync at `now`: `current` is the scale's spec replicas.
    pub fn sync(&mut self, now: f64, current: i32, pods: &[PodView], cpu_request: f64) -> Decision {
        let hpa = self.hpa.clone();
        if current > hpa.max_replicas {
            return self.rescale(now, current, hpa.max_replicas, None, "TooManyReplicas");
        }
        if current < hpa.min_replicas {
            return self.rescale(now, current, hpa.min_replicas, None, "TooFewReplicas");
        }
        let mut best: Option<i32> = None;
        let mut failed = false;
        for (i, m) in hpa.metrics.iter().enumerate() {
            match metric_replicas(current, pods, i, m, cpu_request, now, self.tolerance) {
                Some(p) => best = Some(best.map_or(p.replicas, |b| b.max(p.replicas))),
                None => failed = true,
            }
        }
        let Some(mut proposed) = best else {
            // No metric at all: the controller keeps the scale as it is.
            return Decision { replicas: current, metric_replicas: None, reason: "FailedGetMetrics" };
        };
        // With some metric invalid, the controller never scales down on the others.
        if failed && proposed < current {
            proposed = current;
        }
        let (replicas, reason) = match &hpa.behavior {
            Some((up, down)) => self.normalize_with_behaviors(now, current, proposed, up, down),
            None => self.normalize_legacy(now, current, proposed),
        };
        self.rescale(now, current, replicas, Some(proposed), reason)
    }

    fn rescale(&mut self, now: f64, current: i32, desired: i32, metric: Option<i32>, reason: &'static str) -> Decision {
        if desired != current {
            self.store_event(now, current, desired);
        }
        Decision { replicas: desired, metric_replicas: metric, reason }
    }

    fn longest_period(rules: &ScalingRules) -> i32 {
        rules.policies.iter().map(|p| p.period_seconds).max().unwrap_or(0)
    }

    /// `storeScaleEvent`: events older than the longest policy period are reused.
    fn store_event(&mut self, now: f64, prev: i32, new: i32) {
        let Some((up, down)) = &self.hpa.behavior else { return };
        let (events, longest) = if new > prev {
            (&mut self.up_events, Self::longest_period(up))
        } else {
            (&mut self.down_events, Self::longest_period(down))
        };
        for e in events.iter_mut() {
            if e.at < now - longest as f64 {
                e.outdated = true;
            }
        }
        let event = ScaleEvent { change: (new - prev).abs(), at: now, outdated: false };
        match events.iter_mut().find(|e| e.outdated) {
            Some(slot) => *slot = event,
            None => events.push(event),
        }
    }

    /// `stabilizeRecommendationWithBehaviors` then `convertDesiredReplicasWithBehaviorRate`.
    fn normalize_with_behaviors(
        &mut self,
        now: f64,
        current: i32,
        desired: i32,
        up: &ScalingRules,
        down: &ScalingRules,
    ) -> (i32, &'static str) {
        let up_cutoff = now - up.stabilization_window_seconds as f64;
        let down_cutoff = now - down.stabilization_window_seconds as f64;
        let mut up_rec = desired;
        let mut down_rec = desired;
        let mut old = None;
        for (i, r) in self.recommendations.iter().enumerate() {
            if r.at > up_cutoff {
                up_rec = up_rec.min(r.replicas);
            }
            if r.at > down_cutoff {
                down_rec = down_rec.max(r.replicas);
            }
            if r.at < up_cutoff && r.at < down_cutoff {
                old = Some(i);
            }
        }
        let mut stabilized = current;
        if stabilized < up_rec {
            stabilized = up_rec;
        }
        if stabilized > down_rec {
            stabilized = down_rec;
        }
        let rec = Recommendation { replicas: desired, at: now };
        match old {
            Some(i) => self.recommendations[i] = rec,
            None => self.recommendations.push(rec),
        }
        let mut reason = if stabilized != desired { "ScaleDownStabilized" } else { "DesiredWithinRange" };
        if stabilized > current {
            let limit = scale_up_limit(current, &self.up_events, &self.down_events, up, now).max(current);
            let (max_allowed, why) = if self.hpa.max_replicas > limit {
                (limit, "ScaleUpLimit")
            } else {
                (self.hpa.max_replicas, "TooManyReplicas")
            };
            if stabilized > max_allowed {
                return (max_allowed, why);
            }
        } else if stabilized < current {
            let limit = scale_down_limit(current, &self.up_events, &self.down_events, down, now).min(current);
            let (min_allowed, why) = if self.hpa.min_replicas < limit {
                (limit, "ScaleDownLimit")
            } else {
                (self.hpa.min_replicas, "TooFewReplicas")
            };
            if stabilized < min_allowed {
                return (min_allowed, why);
            }
        } else if stabilized == current && stabilized != desired {
            reason = "ScaleDownStabilized";
        }
        (stabilized, reason)
    }

    /// `stabilizeRecommendation` then `convertDesiredReplicasWithRules` (no `behavior`).
    fn normalize_legacy(&mut self, now: f64, current: i32, desired: i32) -> (i32, &'static str) {
        let cutoff = now - DEFAULT_DOWNSCALE_STABILIZATION_S as f64;
        let mut max_rec = desired;
        let mut old = None;
        for (i, r) in self.recommendations.iter().enumerate() {
            if r.at < cutoff {
                old = Some(i);
            } else if r.replicas > max_rec {
                max_rec = r.replicas;
            }
        }
        let rec = Recommendation { replicas: desired, at: now };
        match old {
            Some(i) => self.recommendations[i] = rec,
            None => self.recommendations.push(rec),
        }
        let scale_up_limit = (2 * current).max(4);
        let max_allowed = self.hpa.max_replicas.min(scale_up_limit);
        if max_rec < self.hpa.min_replicas {
            (self.hpa.min_replicas, "TooFewReplicas")
        } else if max_rec > max_allowed {
            (max_allowed, if max_allowed == scale_up_limit { "ScaleUpLimit" } else { "TooManyReplicas" })
        } else {
            (max_rec, "DesiredWithinRange")
        }
    }
}

/// Helpers to build pod views for examples and tests.
pub mod tests_support {
    use super::{PodView, Sample};

    /// `n` ready, long-running pods whose only metric reads `value`.
    pub fn steady_pods(n: usize, value: f64) -> Vec<PodView> {
        (0..n)
            .map(|_| PodView {
                pending: false,
                deleting: false,
                start_time: -10_000.0,
                ready: true,
                ready_transition: -9_000.0,
                samples: vec![Some(Sample { value, timestamp: 0.0, window: 15.0 })],
            })
            .collect()
    }
}
