//! The report: a summary table on stdout and, with `--json`, a JSON document.
//!
//! JSON keys (all counts are of the measured window unless named `_total` or under `warmup`):
//! `target`, `users`, `model` ("open"/"closed"), `pacing`, `think_ms`, `warmup_s`, `duration_s`,
//! `requests` (sent in the window, answered or not), `requests_total` (sent, warm-up included),
//! `responses`, `rps` (requests / duration_s), `in_flight_at_end` and `in_flight_note`,
//! `latency_ms` {`avg`, `p50`, `p90`, `p99`, `p999`, `max`, `samples`}, `latency_from`,
//! `service_latency_ms` (the same, counted from the send: without the user's wait behind a slow
//! answer),
//! `status` {`2xx`, `3xx`, `4xx`, `5xx`}, `errors` {`connect`, `timeout`, `io`, `status_4xx`,
//! `status_429`, `status_5xx`, `status_503`, `total`} (4xx counts 429 too, 5xx counts 503 too;
//! `connect` counts failed connection attempts, which users repeat with a 50 ms to 2 s back-off),
//! `cache` {`hit`, `miss`, `other`}, `cache_hit_ratio` (hit / answers carrying `X-Cache`, or
//! null), `unsent_retried`, `connections` {`opened`, `peak`}, `warmup` {`requests`, `responses`,
//! `errors`}, `server_metrics` (the server's request counter before and after, or null),
//! `generator` {`cpu_s`, `cpu_cores`, `peak_rss_mb`, `elapsed_s`},
//! `response_body_bytes` (bytes of the answers' bodies) and `response_body_mb_per_s`
//! (those bytes / duration_s, in 10^6 bytes per second).
//!
//! Keys are only ever added: `tests/json_report.rs` holds the set.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::Pacing;
use crate::engine::{Config, Event, Outcome};

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) target: String,
    pub(crate) users: usize,
    pub(crate) model: &'static str,
    pub(crate) pacing: &'static str,
    pub(crate) think_ms: f64,
    pub(crate) warmup_s: f64,
    pub(crate) duration_s: f64,
    pub(crate) requests: u64,
    pub(crate) requests_total: u64,
    pub(crate) responses: u64,
    pub(crate) rps: f64,
    pub(crate) in_flight_at_end: u64,
    pub(crate) in_flight_note: &'static str,
    pub(crate) latency_ms: Latency,
    pub(crate) latency_from: &'static str,
    pub(crate) service_latency_ms: Latency,
    pub(crate) status: Statuses,
    pub(crate) errors: Errors,
    pub(crate) cache: Cache,
    pub(crate) cache_hit_ratio: Option<f64>,
    pub(crate) unsent_retried: u64,
    pub(crate) connections: Connections,
    pub(crate) warmup: Warmup,
    pub(crate) server_metrics: Option<ServerMetrics>,
    pub(crate) generator: Generator,
    pub(crate) response_body_bytes: u64,
    pub(crate) response_body_mb_per_s: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Latency {
    pub(crate) avg: f64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
    pub(crate) samples: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Statuses {
    #[serde(rename = "2xx")]
    pub(crate) s2xx: u64,
    #[serde(rename = "3xx")]
    pub(crate) s3xx: u64,
    #[serde(rename = "4xx")]
    pub(crate) s4xx: u64,
    #[serde(rename = "5xx")]
    pub(crate) s5xx: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Errors {
    pub(crate) connect: u64,
    pub(crate) timeout: u64,
    pub(crate) io: u64,
    pub(crate) status_4xx: u64,
    pub(crate) status_429: u64,
    pub(crate) status_5xx: u64,
    pub(crate) status_503: u64,
    pub(crate) total: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Cache {
    pub(crate) hit: u64,
    pub(crate) miss: u64,
    pub(crate) other: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Connections {
    pub(crate) opened: u64,
    pub(crate) peak: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Warmup {
    pub(crate) requests: u64,
    pub(crate) responses: u64,
    pub(crate) errors: u64,
}

/// The server's own request counter, read from its `/metrics` before and after the run.
#[derive(Debug, Serialize)]
pub(crate) struct ServerMetrics {
    pub(crate) metric: String,
    pub(crate) before: u64,
    pub(crate) after: u64,
    /// after - before: what the server counted during the run.
    pub(crate) delta: u64,
    /// (requests_total - delta) / delta, in percent.
    pub(crate) difference_percent: Option<f64>,
}

/// The generator's own resource use, from /proc (Linux).
#[derive(Debug, Serialize, Default)]
pub(crate) struct Generator {
    pub(crate) cpu_s: Option<f64>,
    /// cpu_s / elapsed_s: average number of cores busy.
    pub(crate) cpu_cores: Option<f64>,
    pub(crate) peak_rss_mb: Option<f64>,
    pub(crate) elapsed_s: f64,
}

impl Generator {
    pub(crate) fn measure(elapsed_s: f64) -> Self {
        // utime and stime, fields 14 and 15 of /proc/self/stat, in USER_HZ (100 per second on Linux);
        // the command name (field 2) is skipped up to its closing parenthesis, as it may hold spaces.
        let cpu_s = std::fs::read_to_string("/proc/self/stat").ok().and_then(|stat| {
            let after_name = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        });
        let peak_rss_mb = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
        });
        Generator { cpu_s, cpu_cores: cpu_s.map(|cpu| cpu / elapsed_s.max(1e-9)), peak_rss_mb, elapsed_s }
    }
}

impl Latency {
    fn from_micros(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let empty = histogram.is_empty();
        let quantile = |q: f64| if empty { 0.0 } else { ms(histogram.value_at_quantile(q)) };
        Latency {
            avg: if empty { 0.0 } else { histogram.mean() / 1000.0 },
            p50: quantile(0.5),
            p90: quantile(0.9),
            p99: quantile(0.99),
            p999: quantile(0.999),
            max: if empty { 0.0 } else { ms(histogram.max()) },
            samples: histogram.len(),
        }
    }
}

impl Report {
    pub(crate) fn new(
        target: String,
        config: &Config,
        outcome: &Outcome,
        server_metrics: Option<ServerMetrics>,
        generator: Generator,
    ) -> Self {
        let window = &outcome.window;
        let duration_s = config.duration.as_secs_f64();
        let requests = window.requests();
        let (hit, miss, other) =
            (window.get(Event::CacheHit), window.get(Event::CacheMiss), window.get(Event::CacheOther));
        let closed_loop = config.think.is_zero();
        Report {
            target,
            users: config.users,
            model: if closed_loop { "closed" } else { "open" },
            pacing: match (closed_loop, config.pacing) {
                (true, _) => "closed-loop",
                (false, Pacing::Schedule) => "schedule",
                (false, Pacing::AfterResponse) => "response",
            },
            think_ms: config.think.as_secs_f64() * 1000.0,
            warmup_s: config.warmup.as_secs_f64(),
            duration_s,
            requests,
            requests_total: outcome.requests_total(),
            responses: window.get(Event::Answered),
            rps: requests as f64 / duration_s,
            in_flight_at_end: outcome.window.get(Event::InFlightAtEnd) + outcome.warmup.get(Event::InFlightAtEnd),
            in_flight_note: "sent but unanswered when the grace period after the end ran out: \
                             counted in requests and requests_total, in no latency and no error",
            latency_ms: Latency::from_micros(&outcome.latency_us),
            service_latency_ms: Latency::from_micros(&outcome.service_latency_us),
            latency_from: if closed_loop || config.pacing == Pacing::AfterResponse {
                "send"
            } else {
                "due time (coordinated-omission corrected)"
            },
            status: Statuses {
                s2xx: window.get(Event::Status2xx),
                s3xx: window.get(Event::Status3xx),
                s4xx: window.get(Event::Status4xx),
                s5xx: window.get(Event::Status5xx),
            },
            errors: Errors {
                connect: window.get(Event::ConnectError),
                timeout: window.get(Event::Timeout),
                io: window.get(Event::IoError),
                status_4xx: window.get(Event::Status4xx),
                status_429: window.get(Event::Status429),
                status_5xx: window.get(Event::Status5xx),
                status_503: window.get(Event::Status503),
                total: window.errors(),
            },
            cache: Cache { hit, miss, other },
            cache_hit_ratio: (hit + miss + other > 0).then(|| hit as f64 / (hit + miss + other) as f64),
            unsent_retried: window.get(Event::Unsent) + outcome.warmup.get(Event::Unsent),
            connections: Connections { opened: outcome.connections_opened, peak: outcome.connections_peak },
            warmup: Warmup {
                requests: outcome.warmup.requests(),
                responses: outcome.warmup.get(Event::Answered),
                errors: outcome.warmup.errors(),
            },
            server_metrics,
            generator,
            response_body_bytes: window.get(Event::BodyBytes),
            response_body_mb_per_s: window.get(Event::BodyBytes) as f64 / 1e6 / duration_s,
        }
    }

    /// The summary as an aligned two-column table.
    pub(crate) fn table(&self) -> String {
        let rows = self.rows();
        let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (name, value) in rows {
            out.push_str(&format!("{name:<width$}  {value}\n"));
        }
        out
    }

    /// The summary, row by row.
    pub(crate) fn rows(&self) -> Vec<(&'static str, String)> {
        let percent = |part: u64| {
            if self.requests == 0 {
                String::new()
            } else {
                format!(" ({:.2} %)", part as f64 * 100.0 / self.requests as f64)
            }
        };
        let latency = &self.latency_ms;
        let errors = &self.errors;
        let mut rows: Vec<(&'static str, String)> = vec![
            ("target", self.target.clone()),
            ("users", self.users.to_string()),
            ("model", format!("{} ({}), think {} ms", self.model, self.pacing, self.think_ms)),
            ("warm-up / measured", format!("{} s / {} s", self.warmup_s, self.duration_s)),
            ("requests (measured)", self.requests.to_string()),
            ("requests_total", self.requests_total.to_string()),
            ("responses", self.responses.to_string()),
            ("throughput", format!("{:.1} req/s", self.rps)),
            ("in flight at end", format!("{}{}", self.in_flight_at_end, percent(self.in_flight_at_end))),
            ("latency avg", format!("{:.3} ms", latency.avg)),
            ("latency p50", format!("{:.3} ms", latency.p50)),
            ("latency p90", format!("{:.3} ms", latency.p90)),
            ("latency p99", format!("{:.3} ms", latency.p99)),
            ("latency p99.9", format!("{:.3} ms", latency.p999)),
            ("latency max", format!("{:.3} ms", latency.max)),
            ("latency counted from", self.latency_from.to_owned()),
            (
                "from send p50/p99/max",
                format!(
                    "{:.3} / {:.3} / {:.3} ms",
                    self.service_latency_ms.p50, self.service_latency_ms.p99, self.service_latency_ms.max
                ),
            ),
            (
                "status 2xx/3xx/4xx/5xx",
                format!("{} / {} / {} / {}", self.status.s2xx, self.status.s3xx, self.status.s4xx, self.status.s5xx),
            ),
            ("errors connect", errors.connect.to_string()),
            ("errors timeout", format!("{}{}", errors.timeout, percent(errors.timeout))),
            ("errors io", errors.io.to_string()),
            ("errors 4xx (429)", format!("{} ({})", errors.status_4xx, errors.status_429)),
            ("errors 5xx (503)", format!("{} ({})", errors.status_5xx, errors.status_503)),
            ("errors total", format!("{}{}", errors.total, percent(errors.total))),
            (
                "cache hit ratio",
                match self.cache_hit_ratio {
                    Some(ratio) => format!(
                        "{:.2} % (hit {}, miss {}, other {})",
                        ratio * 100.0,
                        self.cache.hit,
                        self.cache.miss,
                        self.cache.other
                    ),
                    None => "n/a (no X-Cache header)".to_owned(),
                },
            ),
            ("connections opened / peak", format!("{} / {}", self.connections.opened, self.connections.peak)),
            (
                "response bodies",
                format!("{:.1} MB ({:.2} MB/s)", self.response_body_bytes as f64 / 1e6, self.response_body_mb_per_s),
            ),
        ];
        if let Some(server) = &self.server_metrics {
            let difference = server.difference_percent.map_or("n/a".to_owned(), |d| format!("{d:+.3} %"));
            rows.push(("server count (delta)", format!("{} ({difference} vs requests_total)", server.delta)));
        }
        let generator = &self.generator;
        if let (Some(cpu), Some(cores)) = (generator.cpu_s, generator.cpu_cores) {
            rows.push(("generator CPU", format!("{cpu:.1} s in {:.1} s ({cores:.2} cores)", generator.elapsed_s)));
        }
        if let Some(rss) = generator.peak_rss_mb {
            rows.push(("generator peak RSS", format!("{rss:.0} MiB")));
        }
        rows
    }
}
