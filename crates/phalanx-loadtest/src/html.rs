//! The HTML report (`--html FILE`): one self-contained page, charts as inline SVG (plotters'
//! SVG backend), no script, style sheet, font or image fetched from anywhere.
//!
//! It holds the run's parameters and summary table, the latency percentiles (p50, p90, p99,
//! p99.9) and the throughput and errors interval by interval over the measured window, the
//! latency histogram of the whole window, and the server's `/status` before and after the run.
//! A short script at the end checks that every chart drew its data (each data line or bar, in
//! its series' colour, has a non-empty bounding box) and writes the result into the page
//! (`#render-check`), which the crate's browser test reads back.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::engine::{Event, Series};
use crate::report::Report;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 360;

/// Series colours (also the key the render check looks for).
const BLUE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const ORANGE: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const GREEN: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const RED: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// The server's `/status` as read before or after the run.
#[derive(Debug, Clone)]
pub(crate) enum ServerStatus {
    /// Its JSON (or its text, when it was not JSON).
    Read(String),
    /// Why it could not be read.
    Unavailable(String),
}

impl ServerStatus {
    /// Pretty-printed when the body is JSON.
    pub(crate) fn from_body(body: &[u8]) -> Self {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(value) => ServerStatus::Read(serde_json::to_string_pretty(&value).unwrap_or_default()),
            Err(_) => ServerStatus::Read(String::from_utf8_lossy(body).into_owned()),
        }
    }
}

/// Everything the page is made of.
#[derive(Debug)]
pub(crate) struct HtmlReport<'a> {
    pub(crate) report: &'a Report,
    pub(crate) series: &'a Series,
    /// The measured window's latencies (µs), as in the report.
    pub(crate) latency_us: &'a Histogram<u64>,
    pub(crate) status_before: ServerStatus,
    pub(crate) status_after: ServerStatus,
    /// The command line, for the record.
    pub(crate) command_line: String,
    /// The mix: its file, or a description of the default one.
    pub(crate) mix: String,
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn hex(color: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", color.0, color.1, color.2)
}

/// One chart: its SVG, the series (label, colour) it draws, and a note.
struct Chart {
    id: &'static str,
    title: &'static str,
    note: String,
    svg: String,
    series: Vec<(&'static str, RGBColor)>,
}

impl Chart {
    fn render(&self, out: &mut String) {
        let colors: Vec<String> = self.series.iter().map(|(_, color)| hex(*color)).collect();
        let _ = write!(
            out,
            "<figure class=\"chart\" id=\"{}\" data-series-colors=\"{}\">\n<figcaption>{}</figcaption>\n",
            self.id,
            colors.join(" "),
            escape(self.title)
        );
        out.push_str(&self.svg);
        out.push_str("\n<div class=\"legend\">");
        for (label, color) in &self.series {
            let _ = write!(out, "<span><i style=\"background:{}\"></i>{}</span>", hex(*color), escape(label));
        }
        let _ = write!(out, "</div>\n<p class=\"note\">{}</p>\n</figure>\n", escape(&self.note));
    }
}

/// Seconds since the start of the measured window, at the middle of interval `index`.
fn interval_midpoint(series: &Series, index: usize) -> f64 {
    (index as f64 + 0.5) * series.interval.as_secs_f64()
}

fn window_seconds(series: &Series) -> f64 {
    (series.points.len() as f64 * series.interval.as_secs_f64()).max(1e-3)
}

fn latency_chart(series: &Series) -> Result<String, Box<dyn std::error::Error>> {
    let quantiles = [0.5, 0.9, 0.99, 0.999];
    let lines: Vec<Vec<(f64, f64)>> = quantiles
        .iter()
        .map(|&q| {
            series
                .points
                .iter()
                .enumerate()
                .filter(|(_, point)| !point.latency_us.is_empty())
                .map(|(i, point)| (interval_midpoint(series, i), point.latency_us.value_at_quantile(q) as f64 / 1000.0))
                .collect()
        })
        .collect();
    let values = lines.iter().flatten().map(|&(_, y)| y);
    let low = values.clone().fold(f64::INFINITY, f64::min);
    let high = values.fold(0.0, f64::max);
    let (low, high) = if low.is_finite() { (low.max(0.001) / 1.5, high.max(0.001) * 1.5) } else { (0.1, 10.0) };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..window_seconds(series), (low..high).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("seconds into the measured window")
            .y_desc("latency (ms, log scale)")
            .y_labels(8)
            .y_label_formatter(&|ms| format_ms(*ms))
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()?;
        for (line, color) in lines.into_iter().zip([BLUE, ORANGE, GREEN, RED]) {
            chart.draw_series(LineSeries::new(line, color.stroke_width(2)))?;
        }
        root.present()?;
    }
    Ok(svg)
}

fn throughput_chart(series: &Series) -> Result<String, Box<dyn std::error::Error>> {
    let seconds = series.interval.as_secs_f64();
    let per_second = |event: fn(&crate::engine::Tally) -> u64| -> Vec<(f64, f64)> {
        series
            .points
            .iter()
            .enumerate()
            .map(|(i, point)| (interval_midpoint(series, i), event(&point.tally) as f64 / seconds))
            .collect()
    };
    let sent = per_second(|tally| tally.requests());
    let answered = per_second(|tally| tally.get(Event::Answered));
    let errors = per_second(|tally| tally.errors());
    let high = sent.iter().chain(&answered).chain(&errors).map(|&(_, y)| y).fold(0.0, f64::max).max(1.0) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..window_seconds(series), 0.0..high)?;
        chart
            .configure_mesh()
            .x_desc("seconds into the measured window")
            .y_desc("per second")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()?;
        for (line, color) in [(sent, BLUE), (answered, GREEN), (errors, RED)] {
            chart.draw_series(LineSeries::new(line, color.stroke_width(2)))?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// Bins of the latency histogram: ten per decade of milliseconds, (low, high, count).
fn histogram_bins(latency_us: &Histogram<u64>) -> Vec<(f64, f64, u64)> {
    if latency_us.is_empty() {
        return Vec::new();
    }
    const PER_DECADE: f64 = 10.0;
    let bin_of = |micros: u64| ((micros.max(1) as f64).log10() * PER_DECADE).floor() as i64;
    let first = bin_of(latency_us.min());
    let last = bin_of(latency_us.max());
    let mut counts = vec![0u64; usize::try_from(last - first + 1).unwrap_or(0)];
    for value in latency_us.iter_recorded() {
        let bin = usize::try_from(bin_of(value.value_iterated_to()) - first).unwrap_or(0);
        if let Some(count) = counts.get_mut(bin) {
            *count += value.count_at_value();
        }
    }
    let edge = |bin: i64| 10f64.powf(bin as f64 / PER_DECADE) / 1000.0;
    counts
        .into_iter()
        .enumerate()
        .map(|(i, count)| (edge(first + i as i64), edge(first + i as i64 + 1), count))
        .collect()
}

fn histogram_chart(latency_us: &Histogram<u64>) -> Result<String, Box<dyn std::error::Error>> {
    let bins = histogram_bins(latency_us);
    let (low, high) = match (bins.first(), bins.last()) {
        (Some(first), Some(last)) => (first.0, last.1),
        _ => (0.1, 10.0),
    };
    let top = bins.iter().map(|bin| bin.2).max().unwrap_or(1).max(1) as f64 * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d((low..high).log_scale(), 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_desc("requests")
            .x_label_formatter(&|ms| format_ms(*ms))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(WHITE.mix(0.0))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()?;
        chart.draw_series(
            bins.iter()
                .filter(|bin| bin.2 > 0)
                .map(|&(from, to, count)| Rectangle::new([(from, 0.0), (to, count as f64)], BLUE.filled())),
        )?;
        root.present()?;
    }
    Ok(svg)
}

/// `0.25`, `3`, `1200` (ms) on an axis.
fn format_ms(ms: f64) -> String {
    if ms >= 10.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.3}").trim_end_matches('0').to_owned()
    }
}

fn chart_or_error(result: Result<String, Box<dyn std::error::Error>>) -> String {
    result.unwrap_or_else(|error| {
        format!("<p class=\"error\">the chart could not be drawn: {}</p>", escape(&error.to_string()))
    })
}

const STYLE: &str = "
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1000px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; }
td, th { padding: 2px 12px 2px 0; text-align: left; vertical-align: top; }
td:first-child { color: #555; white-space: nowrap; }
code, pre { font: 13px/1.4 ui-monospace, monospace; }
pre { background: #f6f8fa; padding: 0.8em; overflow: auto; max-height: 480px; }
figure { margin: 1.5em 0; }
figcaption { font-weight: 600; margin-bottom: 0.3em; }
figure svg { max-width: 100%; height: auto; }
.legend span { margin-right: 1.5em; }
.legend i { display: inline-block; width: 14px; height: 4px; margin-right: 6px; vertical-align: middle; }
.note { color: #555; font-size: 0.9em; }
.status { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
.status > div { min-width: 0; }
.status h3 { font-size: 1em; margin: 0.5em 0; }
#render-check { color: #888; font-size: 0.85em; }
";

/// Counts, per chart, the drawn elements in its series' colours; writes the result into
/// `#render-check` (`data-status` ok or failed).
const RENDER_CHECK: &str = "
(function () {
  var figures = document.querySelectorAll('figure.chart');
  var drawn = 0, elements = 0;
  figures.forEach(function (figure) {
    var colors = (figure.getAttribute('data-series-colors') || '').toUpperCase().split(' ');
    var count = 0;
    figure.querySelectorAll('svg polyline, svg path, svg rect').forEach(function (el) {
      var color = (el.getAttribute('stroke') || '').toUpperCase();
      var fill = (el.getAttribute('fill') || '').toUpperCase();
      if (colors.indexOf(color) < 0 && colors.indexOf(fill) < 0) return;
      var box = el.getBBox();
      if (box.width > 0 || box.height > 0) count++;
    });
    figure.setAttribute('data-drawn-elements', String(count));
    elements += count;
    if (count > 0) drawn++;
  });
  var check = document.getElementById('render-check');
  check.setAttribute('data-charts', String(figures.length));
  check.setAttribute('data-drawn', String(drawn));
  check.setAttribute('data-status', figures.length > 0 && drawn === figures.length ? 'ok' : 'failed');
  check.textContent = 'Render check: ' + drawn + ' of ' + figures.length + ' charts drew their data (' + elements + ' elements).';
})();
";

impl HtmlReport<'_> {
    /// The whole page.
    pub(crate) fn render(&self) -> String {
        let report = self.report;
        let interval = self.series.interval;
        let interval_text = if interval.as_millis().is_multiple_of(1000) {
            format!("{} s", interval.as_secs())
        } else {
            format!("{} ms", interval.as_millis())
        };
        let charts = [
            Chart {
                id: "latency-over-time",
                title: "Latency percentiles over time",
                note: format!(
                    "Per {interval_text} interval, of the requests sent in it and answered; latency counted from the {} \
                     (two significant digits).",
                    report.latency_from
                ),
                svg: chart_or_error(latency_chart(self.series)),
                series: vec![("p50", BLUE), ("p90", ORANGE), ("p99", GREEN), ("p99.9", RED)],
            },
            Chart {
                id: "throughput-over-time",
                title: "Throughput and errors over time",
                note: format!(
                    "Per second, averaged over each {interval_text} interval, by the instant each request was sent. \
                     Errors: connection failures, timeouts, I/O errors, 4xx and 5xx answers."
                ),
                svg: chart_or_error(throughput_chart(self.series)),
                series: vec![("requests sent", BLUE), ("answered", GREEN), ("errors", RED)],
            },
            Chart {
                id: "latency-histogram",
                title: "Latency histogram",
                note: format!(
                    "All {} latencies of the measured window, ten bins per decade.",
                    report.latency_ms.samples
                ),
                svg: chart_or_error(histogram_chart(self.latency_us)),
                series: vec![("requests per bin", BLUE)],
            },
        ];

        let mut out = String::with_capacity(256 * 1024);
        out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        let _ = writeln!(out, "<title>Load test of {}</title>", escape(&report.target));
        let _ = writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>");
        let _ = writeln!(out, "<h1>Load test of {}</h1>", escape(&report.target));
        let _ = writeln!(
            out,
            "<p>{} users, {} model ({}), {:.0} req/s, p99 {:.2} ms, {} errors. Made by phalanx-loadtest {}.</p>",
            report.users,
            report.model,
            report.pacing,
            report.rps,
            report.latency_ms.p99,
            report.errors.total,
            env!("CARGO_PKG_VERSION")
        );

        out.push_str("<h2>Parameters</h2>\n<table>\n");
        let parameters = [
            ("command line", self.command_line.clone()),
            ("target", report.target.clone()),
            ("users", report.users.to_string()),
            ("model", format!("{} ({}), mean think time {} ms", report.model, report.pacing, report.think_ms)),
            ("warm-up / measured", format!("{} s / {} s", report.warmup_s, report.duration_s)),
            ("mix", self.mix.clone()),
            ("series interval", interval_text.clone()),
        ];
        for (name, value) in parameters {
            let _ = writeln!(out, "<tr><td>{}</td><td><code>{}</code></td></tr>", escape(name), escape(&value));
        }
        out.push_str("</table>\n<h2>Summary</h2>\n<table>\n");
        for (name, value) in report.rows() {
            let _ = writeln!(out, "<tr><td>{}</td><td>{}</td></tr>", escape(name), escape(&value));
        }
        out.push_str("</table>\n<h2>Charts</h2>\n");
        for chart in &charts {
            chart.render(&mut out);
        }

        out.push_str("<h2>Server status</h2>\n<p class=\"note\">The server's <code>/status</code> JSON, read before and after the run.</p>\n<div class=\"status\">\n");
        for (title, status) in [("Before", &self.status_before), ("After", &self.status_after)] {
            let body = match status {
                ServerStatus::Read(text) => format!("<pre>{}</pre>", escape(text)),
                ServerStatus::Unavailable(why) => format!("<p class=\"note\">not read: {}</p>", escape(why)),
            };
            let _ = writeln!(out, "<div><h3>{title}</h3>{body}</div>");
        }
        out.push_str("</div>\n<p id=\"render-check\" data-status=\"pending\">Render check: not run (no script).</p>\n");
        let _ = writeln!(out, "<script>{RENDER_CHECK}</script>\n</body>\n</html>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for &value in values {
            histogram.record(value).unwrap();
        }
        histogram
    }

    #[test]
    fn histogram_bins_cover_every_latency_ten_per_decade() {
        let latencies = histogram(&[1_000, 1_000, 1_100, 10_000, 95_000]);
        let bins = histogram_bins(&latencies);
        assert_eq!(bins.iter().map(|bin| bin.2).sum::<u64>(), 5);
        // 1 ms up to 100 ms: two decades.
        assert_eq!(bins.len(), 20);
        assert!((bins[0].0 - 1.0).abs() < 1e-9, "{bins:?}");
        assert_eq!(bins[0].2, 3, "1.0, 1.0 and 1.1 ms share the first bin");
        assert!(histogram_bins(&histogram(&[])).is_empty());
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(format_ms(0.25), "0.25");
        assert_eq!(format_ms(2.5), "2.5");
        assert_eq!(format_ms(1200.0), "1200");
    }
}
