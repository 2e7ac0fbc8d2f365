//! Load generator: N concurrent users against a base URL.
//!
//! ```text
//! cargo run -p phalanx-loadtest --release -- --users 10000 --think 1s --duration 60s \
//!     [--warmup 10s] [--mix FILE] [--json report.json] [--html report.html] http://127.0.0.1:3000
//! ```
//!
//! Each user is one task owning one keep-alive HTTP/1.1 connection (hyper's connection-level
//! client over a TCP_NODELAY socket, driven by the user's task itself): it sends a request drawn
//! from a weighted mix, reads the answer, thinks (exponential, mean `--think`), and again, until
//! the warm-up and the measured duration are over. `--think 0` (or `--stress`) is the closed-loop
//! stress mode. Latencies go into an HdrHistogram, corrected for coordinated omission (see
//! `engine.rs`); `--help` lists every option, `mix.rs` the mix file format, `report.rs` the JSON
//! report, `html.rs` the HTML one, `progress.rs` the progress bar. The crate's README has more.

mod cli;
mod engine;
mod html;
mod mix;
mod progress;
mod report;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use cli::{Args, Options};
use engine::{Config, Target};
use html::{HtmlReport, ServerStatus};

// The generator shares the cores with the server it measures: a faster allocator leaves more of
// them to the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use mix::{Defaults, Mix};
use progress::Progress;
use report::{Generator, Report, ServerMetrics};

/// The server's request counter in its Prometheus exposition (`http.server.request.duration`).
const SERVER_COUNTER: &str = "http_server_request_duration_seconds_count";

fn main() -> ExitCode {
    let options = match Args::parse().into_options() {
        Ok(options) => options,
        Err(error) => Args::command().error(clap::error::ErrorKind::ValueValidation, error).exit(),
    };
    raise_open_file_limit(options.users);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = options.threads {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadtest: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadtest: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The demo serves `/metrics` and `/status` on its admin listener, the public port + 1 by
/// default: `path` there.
fn default_admin_url(base_url: &str, path: &str) -> Result<String, String> {
    let uri: http::Uri = base_url.parse().map_err(|e| format!("bad base URL {base_url:?}: {e}"))?;
    let authority = uri.authority().ok_or_else(|| format!("base URL {base_url:?} has no host"))?;
    let port = authority.port_u16().unwrap_or(80);
    let port = port.checked_add(1).ok_or("the base URL's port has no port + 1: give --metrics-url and --status-url")?;
    Ok(format!("http://{}:{port}{path}", authority.host()))
}

/// Reads the server's `/status` for the HTML report.
async fn server_status(target: Option<&Target>, limit: Duration) -> ServerStatus {
    match target {
        None => ServerStatus::Unavailable("--no-server-metrics".to_owned()),
        Some(target) => match engine::fetch(target, limit).await {
            Ok(body) => ServerStatus::from_body(&body),
            Err(error) => ServerStatus::Unavailable(error),
        },
    }
}

/// Every user holds a socket: lift the soft open-file limit to the hard one.
fn raise_open_file_limit(users: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < users as u64 + 64 => eprintln!(
            "loadtest: warning: the open-file limit is {limit}, too low for {users} users (raise `ulimit -Hn`)"
        ),
        Ok(_) => {}
        Err(error) => eprintln!("loadtest: warning: cannot raise the open-file limit: {error}"),
    }
}

async fn run(options: Options) -> Result<(), String> {
    let quiet = options.quiet;
    let defaults = Defaults { ids: options.ids, zipf: options.zipf };
    let mix = match &options.mix {
        Some(path) => Mix::from_file(path, defaults)?,
        None => Mix::default_mix(defaults)?,
    };
    let target = Arc::new(Target::resolve(&options.base_url).await?);
    let config = Arc::new(Config {
        users: options.users,
        think: options.think,
        pacing: options.pacing,
        warmup: options.warmup,
        duration: options.duration,
        ramp: options.ramp,
        timeout: options.timeout,
        grace: options.grace,
        mix,
        headers: options.headers.clone(),
        client_id_header: options.client_id_header.clone(),
        // One loopback address per user against a loopback server: as many clients as users,
        // each told apart by its peer address, which no request header can change.
        source_ips: options.source_ips.unwrap_or(match target.addr {
            std::net::SocketAddr::V4(v4) if v4.ip().is_loopback() => options.users.min(engine::MAX_SOURCE_IPS),
            _ => 0,
        }),
        api_keys: options.api_keys.clone(),
        api_key_header: options.api_key_header.clone(),
        write_key: options.write_key.clone(),
        seed: options.seed,
        progress: options.progress,
    });

    let metrics_url = match &options.metrics_url {
        Some(url) => url.clone(),
        None => default_admin_url(&options.base_url, "/metrics")?,
    };
    let metrics_target = if options.server_metrics { Some(Target::resolve(&metrics_url).await?) } else { None };
    let scrape_limit = Duration::from_secs(10);
    // /status only matters to the HTML report.
    let status_target = match (&options.html, options.server_metrics) {
        (Some(_), true) => Some(
            Target::resolve(&match &options.status_url {
                Some(url) => url.clone(),
                None => default_admin_url(&options.base_url, "/status")?,
            })
            .await?,
        ),
        _ => None,
    };
    let status_before = server_status(status_target.as_ref(), scrape_limit).await;
    let server_before = if let Some(metrics) = &metrics_target {
        match engine::server_request_count(metrics, SERVER_COUNTER, scrape_limit).await {
            Ok(count) => Some(count),
            Err(error) => {
                eprintln!("loadtest: no server count to compare with: {error}");
                None
            }
        }
    } else {
        None
    };
    if !quiet {
        eprintln!(
            "loadtest: {} users against {} ({}), warm-up {:?}, measuring {:?}",
            config.users,
            options.base_url,
            if config.think.is_zero() { "closed loop".to_owned() } else { format!("think {:?}", config.think) },
            config.warmup,
            config.duration,
        );
    }
    let outcome = engine::run(config.clone(), target.clone(), Progress::for_stderr(quiet)).await;

    let server_metrics = match (server_before, &metrics_target) {
        (Some(before), Some(metrics)) => {
            match engine::server_request_count(metrics, SERVER_COUNTER, scrape_limit).await {
                Ok(after) => {
                    let delta = after.saturating_sub(before);
                    let difference_percent =
                        (delta > 0).then(|| (outcome.requests_total() as f64 - delta as f64) * 100.0 / delta as f64);
                    Some(ServerMetrics { metric: SERVER_COUNTER.to_owned(), before, after, delta, difference_percent })
                }
                Err(error) => {
                    eprintln!("loadtest: cannot read the server count after the run: {error}");
                    None
                }
            }
        }
        _ => None,
    };
    let status_after = server_status(status_target.as_ref(), scrape_limit).await;
    let generator = Generator::measure(outcome.elapsed.as_secs_f64());
    let report = Report::new(options.base_url.clone(), &config, &outcome, server_metrics, generator);
    print!("{}", report.table());
    if let Some(path) = &options.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if !quiet {
            eprintln!("loadtest: report written to {}", path.display());
        }
    }
    if let Some(path) = &options.html {
        let page = HtmlReport {
            report: &report,
            series: &outcome.series,
            latency_us: &outcome.latency_us,
            status_before,
            status_after,
            command_line: command_line(),
            mix: match &options.mix {
                Some(path) => path.display().to_string(),
                None => {
                    "the default mix: 90 % GET /items/{id}, 5 % GET /items?page={page}&per_page=20, 5 % PUT /items/{id}"
                        .to_owned()
                }
            },
        }
        .render();
        std::fs::write(path, page).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if !quiet {
            eprintln!("loadtest: HTML report written to {}", path.display());
        }
    }
    Ok(())
}

/// The command line as typed, for the HTML report (arguments with spaces quoted).
fn command_line() -> String {
    let mut args = std::env::args();
    let program = args.next().map(|_| "phalanx-loadtest".to_owned()).unwrap_or_default();
    std::iter::once(program)
        .chain(args.map(|arg| {
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                format!("'{}'", arg.replace('\'', "'\\''"))
            } else {
                arg
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}
