//! `phalanx-hpa`: replays the standard load traces through deploy/k8s/hpa.yaml.
//!
//! ```text
//! cargo run -p phalanx-hpa -- --hpa deploy/k8s/hpa.yaml --pod deploy/hpa/pod.toml --out deploy/hpa
//! ```

use phalanx_hpa::report;
use phalanx_hpa::sim::{reaction, replay, reversals, CurvePoint, Pipeline, PodModel, Row};
use phalanx_hpa::spec::Hpa;
use std::fmt::Write as _;
use std::process::ExitCode;

struct Args {
    hpa: String,
    adapter: String,
    pod: String,
    out: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        hpa: "deploy/k8s/hpa.yaml".into(),
        adapter: "deploy/k8s/prometheus-adapter-rules.yaml".into(),
        pod: "deploy/hpa/pod.csv".into(),
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--hpa" => a.hpa = val()?,
            "--pod" => a.pod = val()?,
            "--adapter" => a.adapter = val()?,
            "--out" => a.out = Some(val()?),
            "-h" | "--help" => {
                return Err(
                    "usage: phalanx-hpa [--hpa deploy/k8s/hpa.yaml] [--adapter deploy/k8s/prometheus-adapter-rules.yaml] [--pod deploy/hpa/pod.csv] [--out DIR]".into()
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// The pod file: `key = value` lines for the scalars, then `rps,mean_ms,p99_ms` rows.
fn read_pod(text: &str) -> Result<(PodModel, Pipeline, f64, f64), String> {
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

struct Case {
    name: &'static str,
    about: &'static str,
    load: Box<dyn Fn(f64) -> f64>,
    event_at: f64,
    duration: f64,
}

fn cases(base: f64) -> Vec<Case> {
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

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phalanx-hpa: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let hpa_text = std::fs::read_to_string(&args.hpa).map_err(|e| format!("{}: {e}", args.hpa))?;
    let hpa = Hpa::from_yaml(&hpa_text).map_err(|e| format!("{}: {e}", args.hpa))?;
    let pod_text = std::fs::read_to_string(&args.pod).map_err(|e| format!("{}: {e}", args.pod))?;
    let (pod, mut pipe, base, p99_target) = read_pod(&pod_text).map_err(|e| format!("{}: {e}", args.pod))?;
    let adapter_text = std::fs::read_to_string(&args.adapter).map_err(|e| format!("{}: {e}", args.adapter))?;
    for m in &hpa.metrics {
        if let phalanx_hpa::spec::Metric::Pods { name, .. } = m {
            if let Some(w) = phalanx_hpa::spec::adapter_rate_window(&adapter_text, name)
                .map_err(|e| format!("{}: {e}", args.adapter))?
            {
                pipe.rate_window_s = w;
            }
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# HPA replay\n\nGenerated by `cargo run -p phalanx-hpa -- --hpa {} --pod {} --out <dir>`: do not edit.\n",
        args.hpa, args.pod
    );
    let _ = writeln!(
        md,
        "Pod: capacity {} req/s, container start {} s (allowance) + start-to-ready {} s (measured), readiness probe every {} s, endpoints {} s. \
         Pipeline: scrape every {} s, rate window {} s, adapter {} s, metrics-server {} s, HPA sync every {} s. Base load {} req/s.\n",
        pod.capacity_rps, pod.container_start_s, pod.start_to_ready_s, pod.readiness_period_s, pod.endpoints_delay_s,
        pipe.scrape_interval_s, pipe.rate_window_s, pipe.adapter_delay_s, pipe.resource_resolution_s, pipe.sync_period_s, base
    );
    let _ = writeln!(
        md,
        "| trace | needed replicas ready after (worst / best over the 15 sync phases) | peak p99 | s over {p99_target} ms or shedding | shed requests | replica direction changes |\n| --- | --- | --- | --- | --- | --- |"
    );
    let mut details = String::new();
    for case in cases(base) {
        let mut worst: Option<(f64, Vec<Row>)> = None;
        let mut best = f64::INFINITY;
        let mut never = false;
        let mut peak = 0.0f64;
        let mut over = 0.0f64;
        let mut shed = 0.0f64;
        let mut flips = 0usize;
        for phase in 0..15 {
            let p = Pipeline { sync_phase_s: phase as f64, ..pipe.clone() };
            let load = |t: f64| (case.load)(t);
            let rows = replay(&hpa, &pod, &p, &load, 900.0, case.duration);
            let r = reaction(&rows, case.event_at, p99_target);
            peak = peak.max(r.peak_p99_ms);
            over = over.max(r.over_target_s);
            shed = shed.max(r.shed_requests);
            flips = flips.max(reversals(&rows));
            match r.needed_ready_after_s {
                None => never = true,
                Some(s) => {
                    best = best.min(s);
                    if worst.as_ref().is_none_or(|w| s > w.0) {
                        worst = Some((s, rows));
                    }
                }
            }
        }
        let (worst_s, rows) = worst.ok_or(format!("{}: the replicas never cover the load", case.name))?;
        let _ = writeln!(
            md,
            "| {} ({}) | {}{} s / {} s | {:.1} ms | {} s | {:.0} | {} |",
            case.name,
            case.about,
            if never { "never in some phase; otherwise " } else { "" },
            worst_s,
            best,
            peak,
            over,
            shed,
            flips
        );
        if let Some(out) = &args.out {
            let svg = report::svg(&format!("{}: {}", case.name, case.about), &rows, p99_target);
            std::fs::write(format!("{out}/{}.svg", case.name), svg).map_err(|e| e.to_string())?;
        }
        let _ = writeln!(
            details,
            "\n## {} (worst sync phase)\n\n![{0}]({0}.svg)\n\n{}",
            case.name,
            report::table(&rows, 60.0)
        );
    }
    md.push_str(&details);
    match &args.out {
        Some(out) => std::fs::write(format!("{out}/report.md"), &md).map_err(|e| e.to_string())?,
        None => print!("{md}"),
    }
    Ok(())
}
