//! The command line (clap): `Args` as typed, `Options` as the run uses them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use http::{HeaderName, HeaderValue};

/// Pacing of a user's requests (see `--pacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Pacing {
    /// A user's requests are due one think time after the previous one was due, whatever the
    /// answer time (open model; latency is counted from the due time, which corrects
    /// coordinated omission).
    Schedule,
    /// Think time starts when the answer arrives (latency counted from the send).
    #[value(name = "response")]
    AfterResponse,
}

/// N concurrent users against BASE_URL (http://host:port[/prefix]).
///
/// Each user owns one keep-alive HTTP/1.1 connection and loops: request, think, request... over
/// a weighted request mix. Latencies go into an HdrHistogram, corrected for coordinated omission
/// in the open model. A progress bar is drawn on stderr when it is a terminal; the summary table
/// goes to stdout, the reports to the files of --json and --html.
#[derive(Debug, Parser)]
#[command(
    name = "phalanx-loadtest",
    version,
    after_help = "Durations: 1500ms, 1.5s, 2m, 1h, 250us, or a plain number of seconds."
)]
pub(crate) struct Args {
    /// The service under test: http://host:port[/prefix]
    #[arg(value_name = "BASE_URL")]
    base_url: String,
    /// Concurrent users
    #[arg(long, value_name = "N", default_value_t = 100)]
    users: usize,
    /// Mean think time, exponentially distributed; 0 is the closed-loop stress mode (each user
    /// sends as soon as answered)
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    think: Duration,
    /// Same as --think 0
    #[arg(long)]
    stress: bool,
    /// schedule: a user's requests are due one think time after the previous one was due,
    /// whatever the answer time (open model; latency is counted from the due time, which corrects
    /// coordinated omission); response: think time starts when the answer arrives (latency
    /// counted from the send)
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Pacing::Schedule, hide_possible_values = true)]
    pacing: Pacing,
    /// Measured time after the warm-up
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up, not measured
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    warmup: Duration,
    /// User starts are spread over this time [default: min(10s, warm-up)]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    ramp: Option<Duration>,
    /// Per-request timeout; the connection is then dropped and reopened
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// After the end, how long answers to in-flight requests are awaited [default: min(5s,
    /// timeout)]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    grace: Option<Duration>,
    /// Request mix (TOML, or JSON for *.json); crates/phalanx-loadtest/mixes/default.toml shows
    /// it. Default: 90% GET /items/{id}, 5% GET /items?page={page}&per_page=20, 5% PUT
    /// /items/{id} with a JSON body
    #[arg(long, value_name = "FILE")]
    mix: Option<PathBuf>,
    /// Ids of the default ranges are 1..=N (pages 1..=N/20)
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    ids: u64,
    /// Zipf exponent of the default ranges (0 = uniform)
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    zipf: f64,
    /// Add a header to every request (repeatable)
    #[arg(long = "header", value_name = "'K: V'", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Users connect from N loopback addresses, 127.1.0.1, 127.1.0.2, ... (user n from address
    /// n mod N), so a server that limits per peer IP sees N clients it can really tell apart.
    /// Default: one address per user when BASE_URL is an IPv4 loopback address, else 0 (the
    /// address the OS picks)
    #[arg(long, value_name = "N")]
    source_ips: Option<usize>,
    /// Users send API key K (repeatable: user n sends key n mod count), in --api-key-header; the
    /// demo's table has demo-premium-key, demo-basic-key, demo-throttled-key
    #[arg(long = "api-key", value_name = "K", value_parser = parse_header_value)]
    api_keys: Vec<HeaderValue>,
    /// Header of the API keys
    #[arg(long, value_name = "H", default_value = "x-api-key", value_parser = parse_header_name)]
    api_key_header: HeaderName,
    /// API key sent on PUT/POST/DELETE/PATCH requests (the demo's key with write permission)
    #[arg(long, value_name = "K", default_value = "demo-writer-key", value_parser = parse_header_value)]
    write_key: HeaderValue,
    /// Send no key on writes
    #[arg(long, conflicts_with = "write_key")]
    no_write_key: bool,
    /// Every user is the same client: --source-ips 1, no keys, no client id (wins over those)
    #[arg(long)]
    shared_client: bool,
    /// Also send an X-Client-ID of `user-` and the user's number (see --help)
    #[arg(
        long,
        help = "Also send X-Client-ID: user-<n>. A client-chosen id: a server that limits on it trusts its \
                clients (the demo ignores it)"
    )]
    client_id_per_user: bool,
    /// Header name of that id (implies --client-id-per-user) [default: x-client-id]
    #[arg(long, value_name = "H", value_parser = parse_header_name)]
    client_id_header: Option<HeaderName>,
    /// Where the server's Prometheus counter is read before and after the run [default:
    /// BASE_URL's host, port + 1, /metrics: the demo's admin listener]
    #[arg(long, value_name = "URL")]
    metrics_url: Option<String>,
    /// Where the server's /status JSON is read before and after the run, for the HTML report
    /// [default: BASE_URL's host, port + 1, /status]
    #[arg(long, value_name = "URL")]
    status_url: Option<String>,
    /// Write the report as JSON to FILE
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report (charts over time, histogram, the server's /status
    /// before and after) to FILE
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Random seed
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Runtime worker threads [default: number of CPUs]
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Print a progress line this often to stderr, 0 = never
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    progress: Duration,
    /// No progress bar and no progress lines (warnings and errors are still printed)
    #[arg(long, short)]
    quiet: bool,
    /// Do not read the server's /metrics and /status before and after the run
    #[arg(long)]
    no_server_metrics: bool,
}

/// Everything the command line sets, as the run uses it.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) base_url: String,
    pub(crate) users: usize,
    pub(crate) think: Duration,
    pub(crate) pacing: Pacing,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) ramp: Duration,
    pub(crate) timeout: Duration,
    pub(crate) grace: Duration,
    pub(crate) mix: Option<PathBuf>,
    pub(crate) ids: u64,
    pub(crate) zipf: f64,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) client_id_header: Option<HeaderName>,
    /// `None`: decided from the base URL (one per user on loopback).
    pub(crate) source_ips: Option<usize>,
    pub(crate) api_keys: Vec<HeaderValue>,
    pub(crate) api_key_header: HeaderName,
    pub(crate) write_key: Option<HeaderValue>,
    pub(crate) metrics_url: Option<String>,
    pub(crate) status_url: Option<String>,
    pub(crate) json: Option<PathBuf>,
    pub(crate) html: Option<PathBuf>,
    pub(crate) seed: u64,
    pub(crate) threads: Option<usize>,
    pub(crate) progress: Duration,
    pub(crate) quiet: bool,
    pub(crate) server_metrics: bool,
}

impl Args {
    /// Checks what clap cannot and settles the defaults that depend on other options.
    pub(crate) fn into_options(self) -> Result<Options, String> {
        if self.users == 0 {
            return Err("--users must be at least 1".to_owned());
        }
        if self.duration.is_zero() {
            return Err("--duration must be more than 0".to_owned());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be more than 0".to_owned());
        }
        if self.source_ips.is_some_and(|n| n > crate::engine::MAX_SOURCE_IPS) {
            return Err(format!("--source-ips must be at most {}", crate::engine::MAX_SOURCE_IPS));
        }
        if self.threads == Some(0) {
            return Err("--threads must be at least 1".to_owned());
        }
        let client_id_per_user = !self.shared_client && (self.client_id_per_user || self.client_id_header.is_some());
        let client_id_header = self.client_id_header.unwrap_or(HeaderName::from_static("x-client-id"));
        Ok(Options {
            base_url: self.base_url,
            users: self.users,
            think: if self.stress { Duration::ZERO } else { self.think },
            pacing: self.pacing,
            duration: self.duration,
            warmup: self.warmup,
            ramp: self.ramp.unwrap_or(self.warmup.min(Duration::from_secs(10))),
            timeout: self.timeout,
            grace: self.grace.unwrap_or(self.timeout.min(Duration::from_secs(5))),
            mix: self.mix,
            ids: self.ids,
            zipf: self.zipf,
            headers: self.headers,
            client_id_header: client_id_per_user.then_some(client_id_header),
            source_ips: if self.shared_client { Some(1) } else { self.source_ips },
            api_keys: if self.shared_client { Vec::new() } else { self.api_keys },
            api_key_header: self.api_key_header,
            write_key: (!self.no_write_key).then_some(self.write_key),
            metrics_url: self.metrics_url,
            status_url: self.status_url,
            json: self.json,
            html: self.html,
            seed: self.seed,
            threads: self.threads,
            progress: if self.quiet { Duration::ZERO } else { self.progress },
            quiet: self.quiet,
            server_metrics: !self.no_server_metrics,
        })
    }
}

/// Parses a duration such as `1s`, `250ms`, `1.5s`, `2m`, `100us`, `1h` or `3` (seconds).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("bad duration unit in {text:?} (use us, ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("bad duration {text:?}"))
}

fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text.split_once(':').ok_or_else(|| format!("header {text:?} is not 'Name: value'"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| format!("bad header name in {text:?}"))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| format!("bad header value in {text:?}"))?;
    Ok((name, value))
}

fn parse_header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.as_bytes()).map_err(|_| format!("bad header name {text:?}"))
}

fn parse_header_value(text: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(text).map_err(|_| format!("{text:?} is not a valid header value"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn run(args: &[&str]) -> Result<Options, String> {
        let args = Args::try_parse_from(std::iter::once("phalanx-loadtest").chain(args.iter().copied()))
            .map_err(|error| error.kind().to_string())?;
        args.into_options()
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn the_documented_command_line_parses() {
        let options = run(&[
            "--users",
            "10000",
            "--think",
            "1s",
            "--duration",
            "60s",
            "--warmup=20s",
            "--json",
            "report.json",
            "--html",
            "report.html",
            "--header",
            "Authorization: Bearer x",
            "--api-key",
            "demo-premium-key",
            "--source-ips",
            "100",
            "http://127.0.0.1:3000",
        ])
        .unwrap();
        assert_eq!(options.users, 10_000);
        assert_eq!(options.think, Duration::from_secs(1));
        assert_eq!(options.duration, Duration::from_secs(60));
        assert_eq!(options.warmup, Duration::from_secs(20));
        assert_eq!(options.ramp, Duration::from_secs(10), "ramp defaults to min(10s, warm-up)");
        assert_eq!(options.grace, Duration::from_secs(5));
        assert_eq!(options.json, Some(PathBuf::from("report.json")));
        assert_eq!(options.html, Some(PathBuf::from("report.html")));
        assert_eq!(options.headers[0].0, "authorization");
        assert_eq!(options.headers[0].1, "Bearer x");
        assert_eq!(options.api_keys, [HeaderValue::from_static("demo-premium-key")]);
        assert_eq!(options.source_ips, Some(100));
        assert_eq!(options.base_url, "http://127.0.0.1:3000");
        assert_eq!(run(&["--stress", "http://h"]).unwrap().think, Duration::ZERO);
        // No client-chosen id unless asked for; writes carry the demo's write key.
        let defaults = run(&["http://h"]).unwrap();
        assert_eq!(defaults.users, 100);
        assert_eq!((defaults.duration, defaults.warmup), (Duration::from_secs(60), Duration::from_secs(10)));
        assert_eq!((defaults.timeout, defaults.progress), (Duration::from_secs(10), Duration::from_secs(5)));
        assert_eq!(defaults.pacing, Pacing::Schedule);
        assert_eq!((defaults.ids, defaults.zipf, defaults.seed), (100_000, 1.0, 1));
        assert_eq!(defaults.client_id_header, None);
        assert_eq!(defaults.source_ips, None, "decided from the base URL");
        assert_eq!(defaults.write_key, Some(HeaderValue::from_static("demo-writer-key")));
        assert_eq!(defaults.api_key_header, "x-api-key");
        assert!(defaults.server_metrics && !defaults.quiet);
        assert_eq!(
            run(&["--client-id-per-user", "http://h"]).unwrap().client_id_header,
            Some(HeaderName::from_static("x-client-id"))
        );
        assert_eq!(
            run(&["--client-id-header", "x-user", "http://h"]).unwrap().client_id_header,
            Some(HeaderName::from_static("x-user")),
            "a header name implies --client-id-per-user"
        );
        let shared = run(&["--api-key", "k", "--client-id-per-user", "--shared-client", "http://h"]).unwrap();
        assert_eq!((shared.source_ips, shared.api_keys.len(), shared.client_id_header), (Some(1), 0, None));
        assert_eq!(run(&["--no-write-key", "http://h"]).unwrap().write_key, None);
        assert_eq!(run(&["--pacing", "response", "http://h"]).unwrap().pacing, Pacing::AfterResponse);
        let quiet = run(&["--quiet", "http://h"]).unwrap();
        assert!(quiet.quiet && quiet.progress.is_zero(), "--quiet also stops the progress lines");
        assert!(!run(&["--no-server-metrics", "http://h"]).unwrap().server_metrics);
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert!(run(&["--users", "10"]).is_err(), "no base URL");
        assert!(run(&["--users", "x", "http://h"]).is_err());
        assert!(run(&["--users", "0", "http://h"]).is_err());
        assert!(run(&["--duration", "0", "http://h"]).is_err());
        assert!(run(&["--threads", "0", "http://h"]).is_err());
        assert!(run(&["--frobnicate", "http://h"]).is_err());
        assert!(run(&["--header", "novalue", "http://h"]).is_err());
        assert!(run(&["--pacing", "sometimes", "http://h"]).is_err());
        assert!(run(&["http://a", "http://b"]).is_err());
        assert!(run(&["--source-ips", "99999999", "http://h"]).is_err());
        assert!(run(&["--api-key", "bad\nkey", "http://h"]).is_err());
        assert!(run(&["--write-key", "k", "--no-write-key", "http://h"]).is_err());
        assert_eq!(run(&["--help"]).unwrap_err(), clap::error::ErrorKind::DisplayHelp.to_string());
    }
}
