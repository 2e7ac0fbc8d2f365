//! Command line parsing (no parser crate: the options are few and flat).

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

pub(crate) const USAGE: &str = "\
Usage: loadtest [OPTIONS] BASE_URL

N concurrent users against BASE_URL (http://host:port[/prefix]). Each user owns one keep-alive
HTTP/1.1 connection and loops: request, think, request... over a weighted request mix.

Options:
  --users N              concurrent users (default 100)
  --think DUR            mean think time, exponentially distributed (default 1s);
                         0 is the closed-loop stress mode (each user sends as soon as answered)
  --stress               same as --think 0
  --pacing MODE          schedule (default): a user's requests are due one think time after the
                         previous one was due, whatever the answer time (open model; latency is
                         counted from the due time, which corrects coordinated omission);
                         response: think time starts when the answer arrives (latency counted
                         from the send)
  --duration DUR         measured time after the warm-up (default 60s)
  --warmup DUR           warm-up, not measured (default 10s)
  --ramp DUR             user starts are spread over this time (default min(10s, warm-up))
  --timeout DUR          per-request timeout; the connection is then dropped and reopened (default 10s)
  --grace DUR            after the end, how long answers to in-flight requests are awaited
                         (default min(5s, timeout))
  --mix FILE             request mix (TOML, or JSON for *.json); examples/loadtest/mix.toml shows it.
                         Default: 90% GET /items/{id}, 5% GET /items?page={page}&per_page=20,
                         5% PUT /items/{id} with a JSON body
  --ids N                ids of the default ranges are 1..=N (default 100000; pages 1..=N/20)
  --zipf S               Zipf exponent of the default ranges (default 1.0; 0 = uniform)
  --header 'K: V'        add a header to every request (repeatable)
  --source-ips N         users connect from N loopback addresses, 127.1.0.1, 127.1.0.2, ... (user
                         n from address n mod N), so a server that limits per peer IP sees N
                         clients it can really tell apart. Default: one address per user when
                         BASE_URL is an IPv4 loopback address, else 0 (the address the OS picks)
  --api-key K            users send API key K (repeatable: user n sends key n mod count), in
                         --api-key-header; the demo's table has demo-premium-key,
                         demo-basic-key, demo-throttled-key
  --api-key-header H     header of the API keys (default x-api-key)
  --write-key K          API key sent on PUT/POST/DELETE/PATCH requests (default
                         demo-writer-key, the demo's key with write permission)
  --no-write-key         send no key on writes
  --shared-client        every user is the same client: --source-ips 1, no keys
  --client-id-per-user   also send X-Client-ID: user-<n>. A client-chosen id: a server that
                         limits on it trusts its clients (the demo ignores it). Off by default
  --client-id-header H   header name of that id (implies --client-id-per-user)
  --metrics-url URL      where the server's Prometheus counter is read before and after the run
                         (default: BASE_URL's host, port + 1, /metrics: the demo's admin listener)
  --json FILE            write the report as JSON to FILE
  --seed N               random seed (default 1)
  --threads N            runtime worker threads (default: number of CPUs)
  --progress DUR         print a progress line this often to stderr, 0 = never (default 5s)
  --no-server-metrics    do not read the server's /metrics before and after the run
  -h, --help             this text

Durations: 1500ms, 1.5s, 2m, 1h, 250us, or a plain number of seconds.";

/// Pacing of a user's requests (see `--pacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pacing {
    /// Due times follow the user's own schedule; latency counts from the due time.
    Schedule,
    /// Think time starts at the answer.
    AfterResponse,
}

/// Everything the command line sets.
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
    pub(crate) json: Option<PathBuf>,
    pub(crate) seed: u64,
    pub(crate) threads: Option<usize>,
    pub(crate) progress: Duration,
    pub(crate) server_metrics: bool,
}

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Command {
    Run(Box<Options>),
    Help,
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

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("{flag}: bad number {text:?}"))
}

/// Parses the arguments after the program name.
pub(crate) fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut base_url = None;
    let mut users = 100;
    let mut think = Duration::from_secs(1);
    let mut pacing = Pacing::Schedule;
    let mut duration = Duration::from_secs(60);
    let mut warmup = Duration::from_secs(10);
    let mut ramp = None;
    let mut timeout = Duration::from_secs(10);
    let mut grace = None;
    let mut mix = None;
    let mut ids = 100_000;
    let mut zipf = 1.0;
    let mut headers = Vec::new();
    let mut client_id_per_user = false;
    let mut client_id_header = HeaderName::from_static("x-client-id");
    let mut source_ips = None;
    let mut api_keys = Vec::new();
    let mut api_key_header = HeaderName::from_static("x-api-key");
    let mut write_key = Some(HeaderValue::from_static("demo-writer-key"));
    let mut metrics_url = None;
    let header_value = |flag: &str, text: String| {
        HeaderValue::from_str(&text).map_err(|_| format!("{flag}: {text:?} is not a valid header value"))
    };
    let mut json = None;
    let mut seed = 1;
    let mut threads = None;
    let mut progress = Duration::from_secs(5);
    let mut server_metrics = true;

    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            match &inline {
                Some(value) => Ok(value.clone()),
                None => args.next().ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--users" => users = number(&flag, &value()?)?,
            "--think" => think = parse_duration(&value()?)?,
            "--stress" => think = Duration::ZERO,
            "--pacing" => {
                pacing = match value()?.as_str() {
                    "schedule" => Pacing::Schedule,
                    "response" => Pacing::AfterResponse,
                    other => return Err(format!("--pacing: {other:?} is not schedule or response")),
                }
            }
            "--duration" => duration = parse_duration(&value()?)?,
            "--warmup" => warmup = parse_duration(&value()?)?,
            "--ramp" => ramp = Some(parse_duration(&value()?)?),
            "--timeout" => timeout = parse_duration(&value()?)?,
            "--grace" => grace = Some(parse_duration(&value()?)?),
            "--mix" => mix = Some(PathBuf::from(value()?)),
            "--ids" => ids = number(&flag, &value()?)?,
            "--zipf" => zipf = number(&flag, &value()?)?,
            "--header" => headers.push(parse_header(&value()?)?),
            "--client-id-per-user" => client_id_per_user = true,
            "--shared-client" => {
                client_id_per_user = false;
                source_ips = Some(1);
                api_keys.clear();
            }
            "--source-ips" => source_ips = Some(number(&flag, &value()?)?),
            "--api-key" => api_keys.push(header_value(&flag, value()?)?),
            "--api-key-header" => {
                let name = value()?;
                api_key_header =
                    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name:?}"))?;
            }
            "--write-key" => write_key = Some(header_value(&flag, value()?)?),
            "--no-write-key" => write_key = None,
            "--metrics-url" => metrics_url = Some(value()?),
            "--client-id-header" => {
                let name = value()?;
                client_id_header =
                    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name:?}"))?;
                client_id_per_user = true;
            }
            "--json" => json = Some(PathBuf::from(value()?)),
            "--seed" => seed = number(&flag, &value()?)?,
            "--threads" => threads = Some(number(&flag, &value()?)?),
            "--progress" => progress = parse_duration(&value()?)?,
            "--no-server-metrics" => server_metrics = false,
            _ if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            _ => {
                if base_url.replace(arg.clone()).is_some() {
                    return Err(format!("more than one base URL ({arg})"));
                }
            }
        }
    }
    let base_url = base_url.ok_or("missing BASE_URL (e.g. http://127.0.0.1:3000)")?;
    if users == 0 {
        return Err("--users must be at least 1".to_owned());
    }
    if duration.is_zero() {
        return Err("--duration must be more than 0".to_owned());
    }
    if timeout.is_zero() {
        return Err("--timeout must be more than 0".to_owned());
    }
    if source_ips.is_some_and(|n| n > crate::engine::MAX_SOURCE_IPS) {
        return Err(format!("--source-ips must be at most {}", crate::engine::MAX_SOURCE_IPS));
    }
    if threads == Some(0) {
        return Err("--threads must be at least 1".to_owned());
    }
    Ok(Command::Run(Box::new(Options {
        base_url,
        users,
        think,
        pacing,
        duration,
        warmup,
        ramp: ramp.unwrap_or(warmup.min(Duration::from_secs(10))),
        timeout,
        grace: grace.unwrap_or(timeout.min(Duration::from_secs(5))),
        mix,
        ids,
        zipf,
        headers,
        client_id_header: client_id_per_user.then_some(client_id_header),
        source_ips,
        api_keys,
        api_key_header,
        write_key,
        metrics_url,
        json,
        seed,
        threads,
        progress,
        server_metrics,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse(args.iter().map(|arg| arg.to_string()))? {
            Command::Run(options) => Ok(*options),
            Command::Help => Err("help".to_owned()),
        }
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
        assert_eq!(options.headers[0].0, "authorization");
        assert_eq!(options.headers[0].1, "Bearer x");
        assert_eq!(options.api_keys, [HeaderValue::from_static("demo-premium-key")]);
        assert_eq!(options.source_ips, Some(100));
        assert_eq!(options.base_url, "http://127.0.0.1:3000");
        assert_eq!(run(&["--stress", "http://h"]).unwrap().think, Duration::ZERO);
        // No client-chosen id unless asked for; writes carry the demo's write key.
        let defaults = run(&["http://h"]).unwrap();
        assert_eq!(defaults.client_id_header, None);
        assert_eq!(defaults.source_ips, None, "decided from the base URL");
        assert_eq!(defaults.write_key, Some(HeaderValue::from_static("demo-writer-key")));
        assert_eq!(
            run(&["--client-id-per-user", "http://h"]).unwrap().client_id_header,
            Some(HeaderName::from_static("x-client-id"))
        );
        let shared = run(&["--api-key", "k", "--shared-client", "http://h"]).unwrap();
        assert_eq!((shared.source_ips, shared.api_keys.len()), (Some(1), 0));
        assert_eq!(run(&["--no-write-key", "http://h"]).unwrap().write_key, None);
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert!(run(&["--users", "10"]).is_err(), "no base URL");
        assert!(run(&["--users", "x", "http://h"]).is_err());
        assert!(run(&["--users", "0", "http://h"]).is_err());
        assert!(run(&["--frobnicate", "http://h"]).is_err());
        assert!(run(&["--header", "novalue", "http://h"]).is_err());
        assert!(run(&["--pacing", "sometimes", "http://h"]).is_err());
        assert!(run(&["http://a", "http://b"]).is_err());
        assert!(run(&["--source-ips", "99999999", "http://h"]).is_err());
        assert!(run(&["--api-key", "bad\nkey", "http://h"]).is_err());
        assert_eq!(run(&["--help"]).unwrap_err(), "help");
    }
}
