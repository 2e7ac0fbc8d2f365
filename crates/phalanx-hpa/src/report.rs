//! The replay's outputs: a Markdown table and an SVG plot per trace.

use crate::sim::Row;
use std::fmt::Write as _;

/// A plotted line: name, colour, value of a row.
type Series = (&'static str, &'static str, fn(&Row) -> f64);

/// An SVG of one replay: load, replicas (needed, desired, ready) and p99 over time.
pub fn svg(title: &str, rows: &[Row], p99_target_ms: f64) -> String {
    let (w, h) = (960.0, 640.0);
    let (left, right) = (70.0, 20.0);
    let panel_h = 160.0;
    let tops = [40.0, 250.0, 460.0];
    let t_max = rows.last().map_or(1.0, |r| r.t).max(1.0);
    let x = |t: f64| left + (w - left - right) * t / t_max;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="20" font-size="15" font-weight="bold">{title}</text>
"##
    );
    let load_max = rows.iter().map(|r| r.load).fold(1.0, f64::max) * 1.1;
    let rep_max = rows.iter().map(|r| r.desired.max(r.needed).max(r.ready)).max().unwrap_or(1) as f64 * 1.15;
    let finite_p99 = |r: &Row| if r.p99_ms.is_finite() { r.p99_ms } else { 10_000.0 };
    let lat_max = rows.iter().map(finite_p99).fold(p99_target_ms * 1.5, f64::max) * 1.1;
    let panels: [(&str, f64, &[Series]); 3] = [
        ("load (req/s)", load_max, &[("load", "#1f77b4", |r| r.load)]),
        (
            "replicas",
            rep_max,
            &[
                ("needed", "#999999", |r| r.needed as f64),
                ("desired (HPA)", "#d62728", |r| r.desired as f64),
                ("ready", "#2ca02c", |r| r.ready as f64),
            ],
        ),
        (
            "p99 latency (ms) and shed",
            lat_max,
            &[
                ("p99", "#9467bd", |r| if r.p99_ms.is_finite() { r.p99_ms } else { 10_000.0 }),
                ("shed (%)", "#ff7f0e", |r| r.shed * 100.0),
            ],
        ),
    ];
    for (i, (label, max, series)) in panels.iter().enumerate() {
        let top = tops[i];
        let y = |v: f64| top + panel_h - panel_h * (v / max).min(1.0);
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="{top}" width="{}" height="{panel_h}" fill="none" stroke="#ccc"/>"##,
            w - left - right
        );
        let _ = writeln!(s, r##"<text x="{left}" y="{}" fill="#333">{label}</text>"##, top - 6.0);
        for k in 0..=4 {
            let v = max * k as f64 / 4.0;
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" text-anchor="end" fill="#666">{}</text>"##,
                left - 6.0,
                y(v) + 4.0,
                fmt_num(v)
            );
        }
        if i == 2 {
            let _ = writeln!(
                s,
                r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#9467bd" stroke-dasharray="4 3"/>"##,
                w - right,
                y = y(p99_target_ms)
            );
        }
        for (j, (name, color, f)) in series.iter().enumerate() {
            let mut d = String::new();
            for (k, r) in rows.iter().enumerate() {
                let _ = write!(d, "{}{:.1},{:.1}", if k == 0 { "M" } else { " L" }, x(r.t), y(f(r)));
            }
            let dash = if *name == "needed" { r#" stroke-dasharray="6 3""# } else { "" };
            let _ = writeln!(s, r##"<path d="{d}" fill="none" stroke="{color}" stroke-width="1.6"{dash}/>"##);
            let lx = w - right - 150.0;
            let ly = top + 14.0 + 14.0 * j as f64;
            let _ = writeln!(
                s,
                r##"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{name}</text>"##,
                lx + 18.0,
                lx + 22.0,
                ly + 4.0
            );
        }
    }
    let axis_y = tops[2] + panel_h + 18.0;
    let step = if t_max > 900.0 { 120.0 } else { 60.0 };
    let mut t = 0.0;
    while t <= t_max {
        let _ = writeln!(s, r##"<text x="{:.1}" y="{axis_y}" text-anchor="middle" fill="#666">{t}s</text>"##, x(t));
        t += step;
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_num(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Rows every `step` seconds, plus every second where the replica counts change, as a
/// Markdown table.
pub fn table(rows: &[Row], step: f64) -> String {
    let mut s = String::from("| t (s) | load (req/s) | needed | desired | ready | p99 (ms) | shed |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    let mut prev: Option<&Row> = None;
    for r in rows {
        let changed = prev.is_some_and(|p| p.desired != r.desired || p.ready != r.ready || p.needed != r.needed);
        if r.t % step == 0.0 || changed {
            let p99 = if r.p99_ms.is_finite() { format!("{:.1}", r.p99_ms) } else { "∞".into() };
            let _ = writeln!(
                s,
                "| {} | {:.0} | {} | {} | {} | {p99} | {:.1} % |",
                r.t,
                r.load,
                r.needed,
                r.desired,
                r.ready,
                r.shed * 100.0
            );
        }
        prev = Some(r);
    }
    s
}
