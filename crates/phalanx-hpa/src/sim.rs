//! The cluster around the controller: pods that start, turn ready and drain, a load balancer
//! that spreads the load over the ready pods, and the metrics pipeline (Prometheus scrapes,
//! the adapter's rate window and delay, metrics-server's resolution) between them and the HPA.

use crate::controller::{Controller, PodView, Sample};
use crate::spec::{Hpa, Metric};

/// One point of the measured latency-vs-load curve of a single pod.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Offered load on the pod, requests per second.
    pub rps: f64,
    /// Mean latency at that load, ms.
    pub mean_ms: f64,
    /// p99 latency at that load, ms.
    pub p99_ms: f64,
}

/// What one pod can do, as measured.
#[derive(Debug, Clone)]
pub struct PodModel {
    /// The highest rate at which the pod meets the latency targets.
    pub capacity_rps: f64,
    /// Latency vs load, sorted by `rps`; beyond the last point the pod sheds the excess.
    pub curve: Vec<CurvePoint>,
    /// CPU seconds per request.
    pub cpu_per_request: f64,
    /// CPU in cores at idle.
    pub cpu_idle: f64,
    /// The container's CPU request (cores), the base of the utilization target.
    pub cpu_request: f64,
    /// The most CPU a pod gets (cores).
    pub cpu_cap: f64,
    /// Allowance from pod creation to process start: scheduling, image present, container start.
    pub container_start_s: f64,
    /// Measured: process start to `/readyz` 200 (migrations, warm-up).
    pub start_to_ready_s: f64,
    /// The readiness probe period: the kubelet sees ready at its next probe.
    pub readiness_period_s: f64,
    /// Ready condition to traffic: endpoints and the load balancer's view.
    pub endpoints_delay_s: f64,
}

impl PodModel {
    /// Latency (mean, p99) and the shed fraction at `rps` per pod.
    pub fn at(&self, rps: f64) -> (f64, f64, f64) {
        let c = &self.curve;
        let last = c[c.len() - 1];
        if rps >= last.rps {
            let shed = if rps > 0.0 { 1.0 - last.rps / rps } else { 0.0 };
            return (last.mean_ms, last.p99_ms, shed.max(0.0));
        }
        if rps <= c[0].rps {
            return (c[0].mean_ms, c[0].p99_ms, 0.0);
        }
        let i = c.iter().position(|p| p.rps > rps).unwrap_or(c.len() - 1);
        let (a, b) = (c[i - 1], c[i]);
        let f = (rps - a.rps) / (b.rps - a.rps);
        (a.mean_ms + f * (b.mean_ms - a.mean_ms), a.p99_ms + f * (b.p99_ms - a.p99_ms), 0.0)
    }
}

/// The metrics pipeline and the controller's schedule.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Prometheus scrape interval of the pods.
    pub scrape_interval_s: f64,
    /// The `rate(...[w])` window of the adapter rule for rate metrics.
    pub rate_window_s: f64,
    /// From a scrape to the value the custom metrics API returns.
    pub adapter_delay_s: f64,
    /// metrics-server's resolution (its scrape of the kubelets and the CPU window).
    pub resource_resolution_s: f64,
    /// `--horizontal-pod-autoscaler-sync-period`.
    pub sync_period_s: f64,
    /// Offset of the first sync.
    pub sync_phase_s: f64,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self {
            scrape_interval_s: 5.0,
            rate_window_s: 20.0,
            adapter_delay_s: 2.0,
            resource_resolution_s: 15.0,
            sync_period_s: 15.0,
            sync_phase_s: 0.0,
        }
    }
}

#[derive(Debug, Clone)]
struct Pod {
    created: f64,
    process_start: f64,
    ready_at: f64,
    serving_at: f64,
    deleted: bool,
    scrape_offset: f64,
    served: f64,
    in_flight: f64,
    scrapes: Vec<(f64, f64, f64)>,
    cpu_seconds: Vec<f64>,
    cpu_sample: Option<Sample>,
}

/// One second of a replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Seconds since the trace began.
    pub t: f64,
    /// Offered load, req/s.
    pub load: f64,
    /// Replicas the load needs at the measured capacity.
    pub needed: i32,
    /// The scale's spec replicas (the HPA's output).
    pub desired: i32,
    /// Pods receiving traffic.
    pub ready: i32,
    /// p99 latency the pods see, ms (infinite with no ready pod).
    pub p99_ms: f64,
    /// Fraction of the load shed.
    pub shed: f64,
}

/// A load trace: req/s at a time.
pub trait Trace {
    /// The offered load at `t` seconds.
    fn load(&self, t: f64) -> f64;
}

impl<F: Fn(f64) -> f64> Trace for F {
    fn load(&self, t: f64) -> f64 {
        self(t)
    }
}

/// Replays `trace` for `duration_s` seconds, after `warmup_s` seconds at the trace's initial
/// load so that the controller starts in its steady state.
pub fn replay(
    hpa: &Hpa,
    pod: &PodModel,
    pipe: &Pipeline,
    trace: &dyn Trace,
    warmup_s: f64,
    duration_s: f64,
) -> Vec<Row> {
    let mut ctl = Controller::new(hpa.clone());
    let mut pods: Vec<Pod> = Vec::new();
    let mut next_id = 0u64;
    let new_pod = |created: f64, id: u64, ready_now: bool| {
        let process_start = if ready_now { created } else { created + pod.container_start_s };
        let raw_ready = process_start + pod.start_to_ready_s;
        // The kubelet probes every period from container start; ready shows at the first
        // probe at or after the process is ready.
        let probes = ((raw_ready - process_start) / pod.readiness_period_s).ceil();
        let ready_at = if ready_now { created } else { process_start + probes * pod.readiness_period_s };
        Pod {
            created,
            process_start,
            ready_at,
            serving_at: if ready_now { created } else { ready_at + pod.endpoints_delay_s },
            deleted: false,
            // Spread scrapes over the interval the way Prometheus hashes targets.
            scrape_offset: (id as f64 * 0.618_034 * pipe.scrape_interval_s) % pipe.scrape_interval_s,
            served: 0.0,
            in_flight: 0.0,
            scrapes: Vec::new(),
            cpu_seconds: Vec::new(),
            cpu_sample: None,
        }
    };
    let start = -warmup_s - 1000.0;
    for _ in 0..hpa.min_replicas {
        pods.push(new_pod(start, next_id, true));
        next_id += 1;
    }
    let mut spec = hpa.min_replicas;
    let dt = 1.0;
    let mut t = -warmup_s;
    let mut rows = Vec::new();
    while t < duration_s {
        let load = trace.load(t.max(0.0));
        // The load balancer spreads the load evenly over the pods that receive traffic.
        let serving: Vec<usize> = (0..pods.len()).filter(|&i| !pods[i].deleted && t >= pods[i].serving_at).collect();
        let per_pod = if serving.is_empty() { 0.0 } else { load / serving.len() as f64 };
        let (mean_ms, p99_ms, shed) =
            if serving.is_empty() { (f64::INFINITY, f64::INFINITY, 1.0) } else { pod.at(per_pod) };
        for (i, p) in pods.iter_mut().enumerate() {
            let rate = if serving.contains(&i) { per_pod } else { 0.0 };
            if p.deleted || t < p.process_start {
                continue;
            }
            p.served += rate * dt;
            p.in_flight = rate * (1.0 - shed) * mean_ms / 1000.0;
            let cpu = (pod.cpu_idle + rate * (1.0 - shed) * pod.cpu_per_request).min(pod.cpu_cap);
            p.cpu_seconds.push(cpu);
            // Prometheus scrape.
            let phase = (t - p.scrape_offset).rem_euclid(pipe.scrape_interval_s);
            if phase < dt {
                p.scrapes.push((t, p.served, p.in_flight));
            }
            // metrics-server: the kubelet's CPU average over the last resolution window.
            if (t - p.process_start) >= pipe.resource_resolution_s && t.rem_euclid(pipe.resource_resolution_s) < dt {
                let n = (pipe.resource_resolution_s / dt) as usize;
                let tail = &p.cpu_seconds[p.cpu_seconds.len().saturating_sub(n)..];
                let avg = tail.iter().sum::<f64>() / tail.len() as f64;
                p.cpu_sample = Some(Sample { value: avg, timestamp: t, window: pipe.resource_resolution_s });
            }
        }
        // The controller's sync.
        if (t - pipe.sync_phase_s).rem_euclid(pipe.sync_period_s) < dt {
            let views: Vec<PodView> = pods
                .iter()
                .filter(|p| !p.deleted)
                .map(|p| PodView {
                    pending: t < p.process_start,
                    deleting: false,
                    start_time: p.created,
                    ready: t >= p.ready_at,
                    ready_transition: if t >= p.ready_at { p.ready_at } else { p.created },
                    samples: hpa.metrics.iter().map(|m| sample_for(m, p, t, pipe)).collect(),
                })
                .collect();
            let d = ctl.sync(t, spec, &views, pod.cpu_request);
            if d.replicas > spec {
                for _ in spec..d.replicas {
                    pods.push(new_pod(t, next_id, false));
                    next_id += 1;
                }
            } else if d.replicas < spec {
                remove_pods(&mut pods, (spec - d.replicas) as usize, t);
            }
            spec = d.replicas;
        }
        if t >= 0.0 {
            rows.push(Row {
                t,
                load,
                needed: (load / pod.capacity_rps).ceil().max(1.0) as i32,
                desired: spec,
                ready: serving.len() as i32,
                p99_ms,
                shed,
            });
        }
        // Keep the per-pod history bounded.
        for p in pods.iter_mut() {
            let keep_from = t - 600.0;
            p.scrapes.retain(|s| s.0 >= keep_from);
            if p.cpu_seconds.len() > 120 {
                p.cpu_seconds.drain(..p.cpu_seconds.len() - 120);
            }
        }
        pods.retain(|p| !p.deleted);
        t += dt;
    }
    rows
}

/// The ReplicaSet controller's choice on scale-down: pending before started, not ready before
/// ready, then the most recently ready first.
fn remove_pods(pods: &mut [Pod], n: usize, t: f64) {
    let mut order: Vec<usize> = (0..pods.len()).filter(|&i| !pods[i].deleted).collect();
    order.sort_by(|&a, &b| {
        let rank = |p: &Pod| (t >= p.process_start, t >= p.ready_at);
        rank(&pods[a]).cmp(&rank(&pods[b])).then(pods[b].ready_at.total_cmp(&pods[a].ready_at))
    });
    for &i in order.iter().take(n) {
        pods[i].deleted = true;
    }
}

fn sample_for(metric: &Metric, p: &Pod, now: f64, pipe: &Pipeline) -> Option<Sample> {
    match metric {
        Metric::Cpu { .. } => p.cpu_sample,
        Metric::Pods { name, .. } => {
            let visible_until = now - pipe.adapter_delay_s;
            if name.contains("active_requests") {
                // A gauge: the last scrape (within Prometheus' 5 min staleness).
                let s = p.scrapes.iter().rev().find(|s| s.0 <= visible_until && s.0 > visible_until - 300.0)?;
                Some(Sample { value: s.2, timestamp: s.0, window: 0.0 })
            } else {
                // A rate over the adapter's window: needs two scrapes inside it.
                let inside: Vec<_> = p
                    .scrapes
                    .iter()
                    .filter(|s| s.0 <= visible_until && s.0 > visible_until - pipe.rate_window_s)
                    .collect();
                let (first, last) = (inside.first()?, inside.last()?);
                if last.0 <= first.0 {
                    return None;
                }
                Some(Sample {
                    value: (last.1 - first.1) / (last.0 - first.0),
                    timestamp: last.0,
                    window: pipe.rate_window_s,
                })
            }
        }
    }
}

/// What a replay shows after a change of load at `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reaction {
    /// Seconds from `at` until the ready pods cover what the load needs (and keep covering it
    /// for the rest of the replay); `None` if never.
    pub needed_ready_after_s: Option<f64>,
    /// Worst p99 after `at`, ms.
    pub peak_p99_ms: f64,
    /// Seconds after `at` with p99 above `p99_target_ms` or shedding.
    pub over_target_s: f64,
    /// Requests shed after `at`.
    pub shed_requests: f64,
}

/// Measures the reaction to the change of load at `at`.
pub fn reaction(rows: &[Row], at: f64, p99_target_ms: f64) -> Reaction {
    let after: Vec<&Row> = rows.iter().filter(|r| r.t >= at).collect();
    let mut covered_since = None;
    for r in &after {
        if r.ready >= r.needed {
            covered_since.get_or_insert(r.t);
        } else {
            covered_since = None;
        }
    }
    Reaction {
        needed_ready_after_s: covered_since.map(|c| c - at),
        peak_p99_ms: after.iter().map(|r| r.p99_ms).fold(0.0, f64::max),
        over_target_s: after.iter().filter(|r| r.p99_ms > p99_target_ms || r.shed > 0.0).count() as f64,
        shed_requests: after.iter().map(|r| r.load * r.shed).sum(),
    }
}

/// Direction changes of the spec replicas (up then down or down then up) in `rows`.
pub fn reversals(rows: &[Row]) -> usize {
    let mut last_dir = 0i32;
    let mut n = 0;
    for w in rows.windows(2) {
        let d = (w[1].desired - w[0].desired).signum();
        if d != 0 {
            if last_dir != 0 && d != last_dir {
                n += 1;
            }
            last_dir = d;
        }
    }
    n
}
