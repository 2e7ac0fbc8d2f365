//! The replay's inputs: the pod file (measured figures and the latency curve) and the traces.

use crate::sim::{CurvePoint, Pipeline, PodModel};

/// Reads the pod file (`deploy/hpa/pod.csv`): `key = value` lines for the scalars, then `rps,mean_ms,p99_ms` rows.
/// Returns the pod, the pipeline, the base load and the p99 target.
pub fn read_pod(text: &str) -> Result<(PodModel, Pipeline, f64, f64), String> {
    let mut kv = std::collections::HashMap::new();
    let mut curve = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some((k, v)) = line.split_once('=') {
            let v: f64 = v.trim().parse().map_err(|_| format!("bad number in {line:?}"))?;
            kv.insert(k.trim().to_string(), v);
        } else if line.starts_with("rps") {
            continue;
        } else {
            let f: Vec<f64> = line
                .split(',')
                .map(|x| x.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("bad curve row {line:?}"))?;
            if f.len() != 3 {
                return Err(format!("curve row needs rps,mean_ms,p99_ms: {line:?}"));
            }
            curve.push(CurvePoint { rps: f[0], mean_ms: f[1], p99_ms: f[2] });
        }
    }
    curve.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    if curve.len() < 2 {
        return Err("the latency curve needs at least two rows".into());
    }
    let get = |k: &str| kv.get(k).copied().ok_or(format!("missing {k}"));
    let defaults = Pipeline::default();
    let pipe = Pipeline {
        scrape_interval_s: kv.get("scrape_interval_s").copied().unwrap_or(defaults.scrape_interval_s),
        rate_window_s: kv.get("rate_window_s").copied().unwrap_or(defaults.rate_window_s),
        adapter_delay_s: kv.get("adapter_delay_s").copied().unwrap_or(defaults.adapter_delay_s),
        resource_resolution_s: kv.get("resource_resolution_s").copied().unwrap_or(defaults.resource_resolution_s),
        sync_period_s: 15.0,
        sync_phase_s: 0.0,
    };
    let pod = PodModel {
        capacity_rps: get("capacity_rps")?,
        curve,
        cpu_per_request: get("cpu_per_request")?,
        cpu_idle: get("cpu_idle")?,
        cpu_request: get("cpu_request")?,
        cpu_cap: get("cpu_cap")?,
        container_start_s: get("container_start_s")?,
        start_to_ready_s: get("start_to_ready_s")?,
        readiness_period_s: get("readiness_period_s")?,
        endpoints_delay_s: get("endpoints_delay_s")?,
    };
    Ok((pod, pipe, get("base_rps")?, get("p99_target_ms")?))
}

/// A standard load trace.
pub struct Case {
    /// Short name (file names).
    pub name: &'static str,
    /// What the trace does.
    pub about: &'static str,
    /// Load in req/s at t seconds.
    pub load: Box<dyn Fn(f64) -> f64>,
    /// When the load changes (the reaction is measured from here).
    pub event_at: f64,
    /// Replay length, seconds.
    pub duration: f64,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("about", &self.about)
            .field("event_at", &self.event_at)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

/// The four traces of the report at base load `base`: 3× spike, ramp, spike during a
/// scale-down, drop to 10 %.
pub fn cases(base: f64) -> Vec<Case> {
    vec![
        Case {
            name: "spike-3x",
            about: "3× step at t = 60 s",
            load: Box::new(move |t| if t < 60.0 { base } else { 3.0 * base }),
            event_at: 60.0,
            duration: 600.0,
        },
        Case {
            name: "ramp",
            about: "1× → 3× linearly over 300 s from t = 60 s",
            load: Box::new(move |t| base * (1.0 + 2.0 * ((t - 60.0) / 300.0).clamp(0.0, 1.0))),
            event_at: 60.0,
            duration: 900.0,
        },
        Case {
            name: "spike-during-scale-down",
            about: "3× until t = 60 s, 1× (scale-down under way), 3× again at t = 420 s",
            load: Box::new(move |t| if !(60.0..420.0).contains(&t) { 3.0 * base } else { base }),
            event_at: 420.0,
            duration: 900.0,
        },
        Case {
            name: "drop-to-10pct",
            about: "1× until t = 60 s, then 10 %",
            load: Box::new(move |t| if t < 60.0 { base } else { 0.1 * base }),
            event_at: 60.0,
            duration: 1200.0,
        },
    ]
}
