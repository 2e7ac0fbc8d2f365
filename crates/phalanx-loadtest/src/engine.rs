//! The engine: one task per user, each owning one HTTP/1.1 keep-alive connection.
//!
//! Counting (so that `requests_total` can be matched against a server's own count):
//! - a request is *sent* when it is handed to its connection (`try_send_request`); when the
//!   connection gives it back unwritten (it closed first), it is counted `unsent` and not sent;
//! - a request belongs to the warm-up or to the measured window by the instant it was sent;
//! - at the end no request is sent any more; answers to requests still in flight are awaited for
//!   the grace period, and those still unanswered then are counted `in_flight_at_end`: they
//!   stay in `requests` and `requests_total` (they were sent), but in no latency and no error.
//!
//! Latency (coordinated omission): with `--pacing schedule` (the default open model) each user
//! has its own schedule of due times, one exponential think time apart, kept whatever the answer
//! times are; a request sent late because the previous answer was slow has its latency counted
//! from its due time, not from when it could finally be sent (intended-start accounting, as in
//! wrk2, rather than HdrHistogram's `record_correct` back-filling). Closed-loop stress (think 0)
//! and `--pacing response` count from the send, having no schedule to be late against.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{CONNECTION, HOST};
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, Instant};

use crate::cli::Pacing;
use crate::mix::Mix;
use crate::progress::{Progress, Snapshot};

/// Largest latency the histogram holds: one hour, in microseconds.
const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Histograms are sharded by user so that recording rarely waits on a lock.
const HISTOGRAM_SHARDS: usize = 32;
/// The per-interval histograms (smaller: two significant digits, up to a minute) are sharded
/// by user too, over fewer shards, so that a long run keeps their memory small.
const SERIES_SHARDS: usize = 8;
/// Largest latency the per-interval histograms hold: one minute, in microseconds (slower
/// answers count as one minute there; the run's own histograms keep their exact value).
const SERIES_LATENCY_MAX_US: u64 = 60_000_000;
/// At most this many intervals in a run's series.
const MAX_INTERVALS: u32 = 300;
/// How often the progress bar is redrawn.
const BAR_TICK: Duration = Duration::from_millis(250);
const CONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where the users send their requests.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    /// The `Host` header: the base URL's authority.
    pub(crate) host: HeaderValue,
    /// The base URL's path, without a trailing slash, put before every request path.
    pub(crate) prefix: String,
}

impl Target {
    /// Parses `http://host[:port][/prefix]` and resolves the host once.
    pub(crate) async fn resolve(base_url: &str) -> Result<Self, String> {
        let uri: Uri = base_url.parse().map_err(|e| format!("bad base URL {base_url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(format!("scheme {other}: only http:// is supported")),
            None => return Err(format!("base URL {base_url:?} needs http://")),
        }
        let authority = uri.authority().ok_or_else(|| format!("base URL {base_url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        Ok(Target {
            addr,
            host: HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// How the users behave.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) users: usize,
    /// Mean think time; zero is the closed-loop stress mode.
    pub(crate) think: Duration,
    pub(crate) pacing: Pacing,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) ramp: Duration,
    pub(crate) timeout: Duration,
    pub(crate) grace: Duration,
    pub(crate) mix: Mix,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// When set, each user sends this header with `user-<n>` (a client-chosen id: a server
    /// that keys limits on it trusts the client; the demo does not read it).
    pub(crate) client_id_header: Option<HeaderName>,
    /// Users connect from this many loopback addresses (127.1.0.1, 127.1.0.2, …), user `n`
    /// from address `n % source_ips`; 0: the address the OS picks.
    pub(crate) source_ips: usize,
    /// API keys the users send, user `n` key `n % len`, in `api_key_header`.
    pub(crate) api_keys: Vec<HeaderValue>,
    pub(crate) api_key_header: HeaderName,
    /// Sent in `api_key_header` on requests with an unsafe method (PUT, POST, …).
    pub(crate) write_key: Option<HeaderValue>,
    pub(crate) seed: u64,
    /// Progress line interval on stderr; zero for none.
    pub(crate) progress: Duration,
}

/// What is counted, per phase (warm-up or measured window).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    /// Handed to the connection.
    Sent,
    /// Handed to the connection but given back unwritten: not a sent request.
    Unsent,
    /// Answered (any status), body read to the end.
    Answered,
    Status2xx,
    Status3xx,
    /// Every 4xx, 429 included.
    Status4xx,
    Status429,
    /// Every 5xx, 503 included.
    Status5xx,
    Status503,
    /// A connection could not be opened (refused, timed out), or gave back the same request twice.
    ConnectError,
    /// No full answer within `--timeout`.
    Timeout,
    /// The connection failed while the request was out (reset, closed, unparsable answer).
    IoError,
    /// Still unanswered when the grace period after the end ran out.
    InFlightAtEnd,
    /// `X-Cache: HIT…` or `STALE…` (answered from the cache).
    CacheHit,
    /// `X-Cache: MISS…`.
    CacheMiss,
    /// Any other `X-Cache` value (BYPASS, EXPIRED, …).
    CacheOther,
    /// Bytes of the answers' bodies (added by the count, not by one).
    BodyBytes,
}

const EVENT_COUNT: usize = Event::BodyBytes as usize + 1;

/// Live counters of one phase.
#[derive(Debug)]
struct Counters([AtomicU64; EVENT_COUNT]);

impl Counters {
    fn new() -> Self {
        Counters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
    fn add_n(&self, event: Event, n: u64) {
        self.0[event as usize].fetch_add(n, Ordering::Relaxed);
    }
    fn tally(&self) -> Tally {
        Tally(std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed)))
    }
}

/// A snapshot of one phase's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally([u64; EVENT_COUNT]);

impl Tally {
    pub(crate) fn get(&self, event: Event) -> u64 {
        self.0[event as usize]
    }
    /// Requests really sent: handed to a connection and not given back.
    pub(crate) fn requests(&self) -> u64 {
        self.get(Event::Sent) - self.get(Event::Unsent)
    }
    pub(crate) fn plus(&self, other: &Tally) -> Tally {
        Tally(std::array::from_fn(|i| self.0[i] + other.0[i]))
    }
    pub(crate) fn errors(&self) -> u64 {
        self.get(Event::ConnectError)
            + self.get(Event::Timeout)
            + self.get(Event::IoError)
            + self.get(Event::Status4xx)
            + self.get(Event::Status5xx)
    }
}

/// The phase boundaries, fixed at the start.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    measure_start: Instant,
    end: Instant,
    /// End of the grace period: in-flight requests are given up.
    hard_stop: Instant,
}

/// State shared by all users.
#[derive(Debug)]
struct Shared {
    warmup: Counters,
    window: Counters,
    histograms: Vec<Mutex<Latencies>>,
    /// Counters of each interval of the measured window.
    interval_counts: Vec<Counters>,
    series: Vec<Mutex<SeriesShard>>,
    /// Length of one interval of the series.
    interval: Duration,
    connections_opened: AtomicU64,
    connections_open: AtomicU64,
    connections_peak: AtomicU64,
}

/// One shard of the latencies behind the series and the progress bar.
#[derive(Debug)]
struct SeriesShard {
    /// Warm-up latencies, for the progress bar only.
    warmup: Histogram<u32>,
    /// One histogram per interval of the measured window, made at its first answer.
    intervals: Vec<Option<Histogram<u32>>>,
}

/// Where one request's events are counted: its phase, and its interval in the measured window.
struct Recorder<'a> {
    phase: &'a Counters,
    interval: Option<(usize, &'a Counters)>,
}

impl Recorder<'_> {
    fn add(&self, event: Event) {
        self.add_n(event, 1);
    }
    fn add_n(&self, event: Event, n: u64) {
        self.phase.add_n(event, n);
        if let Some((_, counters)) = self.interval {
            counters.add_n(event, n);
        }
    }
}

impl Shared {
    /// The counters of the phase `at` falls in, and of its interval when measured.
    fn phase(&self, at: Instant, clock: &Clock) -> Recorder<'_> {
        if at < clock.measure_start {
            Recorder { phase: &self.warmup, interval: None }
        } else {
            let index = self.interval_index(at, clock);
            Recorder { phase: &self.window, interval: Some((index, &self.interval_counts[index])) }
        }
    }

    /// The interval of the measured window that `at` (at or after its start) falls in.
    fn interval_index(&self, at: Instant, clock: &Clock) -> usize {
        let offset = at.saturating_duration_since(clock.measure_start).as_nanos() / self.interval.as_nanos().max(1);
        usize::try_from(offset).unwrap_or(usize::MAX).min(self.interval_counts.len() - 1)
    }

    fn connection_opened(&self) {
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
        let open = self.connections_open.fetch_add(1, Ordering::Relaxed) + 1;
        self.connections_peak.fetch_max(open, Ordering::Relaxed);
    }

    fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Latency histograms (µs) of the requests sent in the measured window and answered.
#[derive(Debug)]
struct Latencies {
    /// From the due time in the open model (coordinated-omission corrected), else from the send.
    corrected: Histogram<u64>,
    /// From the send: the server's and the network's share alone.
    from_send: Histogram<u64>,
}

impl Latencies {
    fn new() -> Self {
        Latencies { corrected: new_histogram(), from_send: new_histogram() }
    }
}

/// What a run measured.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) warmup: Tally,
    pub(crate) window: Tally,
    /// Latencies (µs) of the requests sent in the measured window and answered, counted from
    /// the due time in the open model (coordinated-omission corrected), else from the send.
    pub(crate) latency_us: Histogram<u64>,
    /// The same latencies counted from the send.
    pub(crate) service_latency_us: Histogram<u64>,
    pub(crate) connections_opened: u64,
    pub(crate) connections_peak: u64,
    /// From the first user's start to the last user's exit.
    pub(crate) elapsed: Duration,
    pub(crate) series: Series,
}

impl Outcome {
    /// Every request sent, warm-up included.
    pub(crate) fn requests_total(&self) -> u64 {
        self.warmup.requests() + self.window.requests()
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

fn new_series_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, SERIES_LATENCY_MAX_US, 2).expect("valid histogram bounds")
}

/// The interval of a run's series: at most `MAX_INTERVALS` of them, one second each when the
/// run is long enough, else a tenth of the run.
pub(crate) fn series_interval(duration: Duration) -> Duration {
    let shortest = (duration / 10).clamp(Duration::from_millis(1), Duration::from_secs(1));
    let interval = (duration / MAX_INTERVALS).max(shortest);
    // Whole seconds (or milliseconds under one) read better on a time axis.
    if interval >= Duration::from_secs(1) {
        Duration::from_secs(interval.as_secs_f64().ceil() as u64)
    } else {
        Duration::from_millis((interval.as_secs_f64() * 1e3).ceil() as u64)
    }
}

/// The measured window, interval by interval (each request in the interval it was sent in,
/// the rule that puts it in the window).
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) interval: Duration,
    pub(crate) points: Vec<Point>,
}

/// One interval of the series.
#[derive(Debug)]
pub(crate) struct Point {
    pub(crate) tally: Tally,
    /// Latencies (µs) of the interval's answered requests, counted as `Outcome::latency_us`,
    /// at two significant digits.
    pub(crate) latency_us: Histogram<u32>,
}

/// Runs the users for warm-up + duration, then waits out the grace period.
pub(crate) async fn run(config: Arc<Config>, target: Arc<Target>, bar: Progress) -> Outcome {
    let start = Instant::now();
    let measure_start = start + config.warmup;
    let end = measure_start + config.duration;
    let clock = Clock { start, measure_start, end, hard_stop: end + config.grace };
    let interval = series_interval(config.duration);
    let intervals = usize::try_from(config.duration.as_nanos().div_ceil(interval.as_nanos()).max(1))
        .expect("at most MAX_INTERVALS intervals");
    let shared = Arc::new(Shared {
        warmup: Counters::new(),
        window: Counters::new(),
        histograms: (0..HISTOGRAM_SHARDS).map(|_| Mutex::new(Latencies::new())).collect(),
        interval_counts: (0..intervals).map(|_| Counters::new()).collect(),
        series: (0..SERIES_SHARDS)
            .map(|_| Mutex::new(SeriesShard { warmup: new_series_histogram(), intervals: vec![None; intervals] }))
            .collect(),
        interval,
        connections_opened: AtomicU64::new(0),
        connections_open: AtomicU64::new(0),
        connections_peak: AtomicU64::new(0),
    });

    let progress = (!config.progress.is_zero() || bar.is_visible())
        .then(|| tokio::spawn(report_progress(shared.clone(), clock, config.progress, bar.clone())));
    let mut users = JoinSet::new();
    for index in 0..config.users {
        users.spawn(user(index, config.clone(), target.clone(), shared.clone(), clock));
    }
    while let Some(joined) = users.join_next().await {
        if let Err(error) = joined {
            eprintln!("a user task failed: {error}");
        }
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    bar.finish();

    let mut latencies = Latencies::new();
    for shard in &shared.histograms {
        let shard = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        latencies.corrected.add(&shard.corrected).expect("histograms with equal bounds add up");
        latencies.from_send.add(&shard.from_send).expect("histograms with equal bounds add up");
    }
    let elapsed = start.elapsed();
    let mut points: Vec<Point> = shared
        .interval_counts
        .iter()
        .map(|counts| Point { tally: counts.tally(), latency_us: new_series_histogram() })
        .collect();
    for shard in &shared.series {
        let shard = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (point, histogram) in points.iter_mut().zip(&shard.intervals) {
            if let Some(histogram) = histogram {
                point.latency_us.add(histogram).expect("histograms with equal bounds add up");
            }
        }
    }
    Outcome {
        warmup: shared.warmup.tally(),
        window: shared.window.tally(),
        latency_us: latencies.corrected,
        service_latency_us: latencies.from_send,
        connections_opened: shared.connections_opened.load(Ordering::Relaxed),
        connections_peak: shared.connections_peak.load(Ordering::Relaxed),
        elapsed,
        series: Series { interval: shared.interval, points },
    }
}

/// Keeps the progress bar up to date and prints one line per `every` (zero: none): phase, open
/// connections, request and answer rates, errors.
async fn report_progress(shared: Arc<Shared>, clock: Clock, every: Duration, bar: Progress) {
    let tick = if bar.is_visible() { BAR_TICK } else { every };
    let mut ticker = tokio::time::interval_at(clock.start + tick, tick);
    let mut last_line = (clock.start, Tally::default());
    // The bar's rate is over the last second or so.
    let mut recent: std::collections::VecDeque<(Instant, u64)> = std::collections::VecDeque::new();
    let mut so_far = LatencySoFar::new();
    loop {
        let now = ticker.tick().await;
        let total = shared.warmup.tally().plus(&shared.window.tally());
        let phase = if now < clock.measure_start {
            "warm-up"
        } else if now < clock.end {
            "measure"
        } else {
            "grace"
        };
        if !every.is_zero() && now.duration_since(last_line.0) + tick / 2 >= every {
            let seconds = now.duration_since(last_line.0).as_secs_f64();
            let rate = |event: Event| (total.get(event) - last_line.1.get(event)) as f64 / seconds;
            bar.line(format!(
                "[{:>6.1}s] {phase:<7} connections {:>6}  sent/s {:>8.0}  answered/s {:>8.0}  errors {}",
                (now - clock.start).as_secs_f64(),
                shared.connections_open.load(Ordering::Relaxed),
                rate(Event::Sent) - rate(Event::Unsent),
                rate(Event::Answered),
                total.errors(),
            ));
            last_line = (now, total);
        }
        if bar.is_visible() {
            recent.push_back((now, total.requests()));
            while recent.len() > 2 && now.duration_since(recent[1].0) >= Duration::from_secs(1) {
                recent.pop_front();
            }
            let (first_at, first) = recent[0];
            let span = now.duration_since(first_at).as_secs_f64();
            let rate = if span > 0.0 { (total.requests() - first) as f64 / span } else { 0.0 };
            bar.update(&Snapshot {
                phase,
                elapsed: now.duration_since(clock.start),
                total: clock.end.duration_since(clock.start),
                rate,
                errors: total.errors(),
                p99_ms: so_far.p99(&shared, now, &clock).map(|micros| micros as f64 / 1000.0),
            });
        }
    }
}

/// The p99 latency so far, for the progress bar: the warm-up's while it lasts, then the
/// measured window's, merging each interval into a running histogram once it is two intervals
/// old (an answer later than that is left out of the bar, not of the report).
struct LatencySoFar {
    merged: Histogram<u32>,
    merged_intervals: usize,
}

impl LatencySoFar {
    fn new() -> Self {
        LatencySoFar { merged: new_series_histogram(), merged_intervals: 0 }
    }

    fn p99(&mut self, shared: &Shared, now: Instant, clock: &Clock) -> Option<u64> {
        let mut current = new_series_histogram();
        if now < clock.measure_start {
            for shard in &shared.series {
                let shard = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                current.add(&shard.warmup).ok()?;
            }
        } else {
            let now_index = shared.interval_index(now, clock);
            let settled = now_index.saturating_sub(1);
            for shard in &shared.series {
                let shard = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                for histogram in shard.intervals[self.merged_intervals..settled].iter().flatten() {
                    self.merged.add(histogram).ok()?;
                }
                for histogram in shard.intervals[settled.max(self.merged_intervals)..=now_index].iter().flatten() {
                    current.add(histogram).ok()?;
                }
            }
            self.merged_intervals = self.merged_intervals.max(settled);
            current.add(&self.merged).ok()?;
        }
        (!current.is_empty()).then(|| current.value_at_quantile(0.99))
    }
}

/// One user's HTTP/1.1 connection; the connection future is driven by the user's own task.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Connection<TokioIo<TcpStream>, Full<Bytes>>,
    /// The connection future has completed: the connection is gone.
    closed: bool,
}

/// How one request ended.
enum Exchange {
    Answered {
        status: u16,
        cache: Option<Event>,
        keep_alive: bool,
        /// Bytes of the body.
        bytes: u64,
    },
    /// The connection closed before the request was written.
    Unsent,
    Failed,
    DeadlinePassed,
}

/// The most loopback source addresses a run may use (127.1.0.1 up to 127.255.255.254).
pub(crate) const MAX_SOURCE_IPS: usize = (255 << 16) - 2;

/// The `k`-th loopback source address: 127.1.0.1, 127.1.0.2, …
pub(crate) fn source_ip(k: usize) -> IpAddr {
    let k = u32::try_from(k % MAX_SOURCE_IPS).expect("bounded above");
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 1)) + k))
}

/// Who one user is to the server: its source address and the headers that identify it.
#[derive(Debug, Clone, Default)]
pub(crate) struct UserIdentity {
    pub(crate) source: Option<IpAddr>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) write: Option<(HeaderName, HeaderValue)>,
}

impl UserIdentity {
    pub(crate) fn of(config: &Config, index: usize) -> Self {
        let mut headers = Vec::new();
        if let Some(name) = &config.client_id_header {
            let id = HeaderValue::from_str(&format!("user-{index}")).expect("digits make a valid header value");
            headers.push((name.clone(), id));
        }
        if !config.api_keys.is_empty() {
            headers.push((config.api_key_header.clone(), config.api_keys[index % config.api_keys.len()].clone()));
        }
        UserIdentity {
            source: (config.source_ips > 0).then(|| source_ip(index % config.source_ips)),
            headers,
            write: config.write_key.clone().map(|key| (config.api_key_header.clone(), key)),
        }
    }
}

async fn connect(target: &Target, source: Option<IpAddr>) -> Result<Conn, Box<dyn std::error::Error + Send + Sync>> {
    let stream = match source {
        Some(ip) => {
            let socket = if ip.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(target.addr).await?
        }
        None => TcpStream::connect(target.addr).await?,
    };
    stream.set_nodelay(true)?;
    let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    Ok(Conn { sender, driver, closed: false })
}

fn cache_event(value: &HeaderValue) -> Event {
    let value = value.as_bytes();
    let starts = |prefix: &[u8]| value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix);
    if starts(b"HIT") || starts(b"STALE") {
        Event::CacheHit
    } else if starts(b"MISS") {
        Event::CacheMiss
    } else {
        Event::CacheOther
    }
}

impl Conn {
    /// Waits until `until` while watching the idle connection; false when it closed meanwhile.
    async fn idle_until(&mut self, until: Instant) -> bool {
        if self.closed || self.sender.is_closed() {
            return false;
        }
        tokio::select! {
            _ = sleep_until(until) => true,
            _ = &mut self.driver => {
                self.closed = true;
                false
            }
        }
    }

    /// Sends one request and reads its answer to the end, or gives up at `deadline`.
    async fn exchange(&mut self, request: Request<Full<Bytes>>, deadline: Instant) -> Exchange {
        let response = self.sender.try_send_request(request);
        let answer = async move {
            let response = match response.await {
                Ok(response) => response,
                Err(mut error) => {
                    return if error.take_message().is_some() { Exchange::Unsent } else { Exchange::Failed }
                }
            };
            let status = response.status().as_u16();
            let cache = response.headers().get("x-cache").map(cache_event);
            let keep_alive = !response
                .headers()
                .get(CONNECTION)
                .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
            let mut body = response.into_body();
            let mut bytes = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => bytes += frame.data_ref().map_or(0, |data| data.len() as u64),
                    Err(_) => return Exchange::Failed,
                }
            }
            Exchange::Answered { status, cache, keep_alive, bytes }
        };
        tokio::pin!(answer);
        let expiry = sleep_until(deadline);
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                biased;
                outcome = &mut answer => return outcome,
                _ = &mut self.driver, if !self.closed => self.closed = true,
                _ = &mut expiry => return Exchange::DeadlinePassed,
            }
        }
    }
}

/// Draws an exponentially distributed think time of the given mean.
fn think_time<R: Rng + ?Sized>(rng: &mut R, mean: Duration) -> Duration {
    let uniform: f64 = rng.random();
    mean.mul_f64(-(1.0 - uniform).ln())
}

/// Builds the next request of a user from the mix.
fn next_request(
    config: &Config,
    target: &Target,
    rng: &mut SmallRng,
    index: usize,
    identity: &UserIdentity,
) -> Request<Full<Bytes>> {
    let drawn = config.mix.draw(rng, index);
    let mut request = Request::new(Full::new(drawn.body));
    *request.method_mut() = drawn.method;
    let path_and_query = format!("{}{}", target.prefix, drawn.path);
    *request.uri_mut() = path_and_query.parse().unwrap_or_else(|_| Uri::from_static("/"));
    let headers = request.headers_mut();
    headers.insert(HOST, target.host.clone());
    for (name, value) in drawn.headers.iter().chain(&config.headers).chain(&identity.headers) {
        headers.insert(name.clone(), value.clone());
    }
    if !request.method().is_safe() {
        if let Some((name, key)) = &identity.write {
            request.headers_mut().insert(name.clone(), key.clone());
        }
    }
    request
}

/// One user: connect, then request / think until the end.
async fn user(index: usize, config: Arc<Config>, target: Arc<Target>, shared: Arc<Shared>, clock: Clock) {
    let mut rng = SmallRng::seed_from_u64(config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64);
    let histogram = &shared.histograms[index % HISTOGRAM_SHARDS];
    let series = &shared.series[index % SERIES_SHARDS];
    let identity = UserIdentity::of(&config, index);
    let closed_loop = config.think.is_zero();
    let start = clock.start + config.ramp.mul_f64(index as f64 / config.users as f64);
    let mut due = start;
    let mut conn: Option<Conn> = None;
    let mut backoff = CONNECT_BACKOFF_MIN;
    let mut retrying_unsent = false;
    let drop_conn = |conn: &mut Option<Conn>| {
        if conn.take().is_some() {
            shared.connection_closed();
        }
    };

    loop {
        // A think time may reach past the end: the user then stops at the end, not at its due time.
        let wake = due.min(clock.end);
        let still_open = match conn.as_mut() {
            Some(open) => open.idle_until(wake).await,
            None => {
                sleep_until(wake).await;
                true
            }
        };
        if !still_open {
            // Closed while idle (e.g. the server's keep-alive timeout): wait out the rest of the
            // think time without it, and reconnect when the next request is due.
            drop_conn(&mut conn);
            continue;
        }
        if Instant::now() >= clock.end {
            break;
        }
        if conn.is_none() {
            let attempt = Instant::now();
            match timeout(config.timeout, connect(&target, identity.source)).await {
                Ok(Ok(opened)) => {
                    shared.connection_opened();
                    conn = Some(opened);
                    backoff = CONNECT_BACKOFF_MIN;
                }
                _ => {
                    // The due request is dropped; the schedule restarts after a jittered back-off,
                    // so that a refusing server is not hammered and no burst follows its return.
                    shared.phase(attempt, &clock).add(Event::ConnectError);
                    let pause = backoff.mul_f64(rng.random_range(0.5..1.5));
                    backoff = (backoff * 2).min(CONNECT_BACKOFF_MAX);
                    retrying_unsent = false;
                    due = Instant::now() + pause;
                    continue;
                }
            }
        }
        let open = conn.as_mut().expect("connected above");
        let request = next_request(&config, &target, &mut rng, index, &identity);
        let sent_at = Instant::now();
        if sent_at >= clock.end {
            break;
        }
        let phase = shared.phase(sent_at, &clock);
        phase.add(Event::Sent);
        let timeout_at = sent_at + config.timeout;
        match open.exchange(request, timeout_at.min(clock.hard_stop)).await {
            Exchange::Answered { status, cache, keep_alive, bytes } => {
                let answered_at = Instant::now();
                phase.add(Event::Answered);
                phase.add_n(Event::BodyBytes, bytes);
                phase.add(match status {
                    200..=299 => Event::Status2xx,
                    300..=399 => Event::Status3xx,
                    400..=499 => Event::Status4xx,
                    _ => Event::Status5xx,
                });
                match status {
                    429 => phase.add(Event::Status429),
                    503 => phase.add(Event::Status503),
                    _ => {}
                }
                if let Some(cache) = cache {
                    phase.add(cache);
                }
                let from = if config.pacing == Pacing::Schedule && !closed_loop { due.min(sent_at) } else { sent_at };
                let micros = |since: Instant| {
                    u64::try_from(answered_at.duration_since(since).as_micros())
                        .unwrap_or(u64::MAX)
                        .clamp(1, LATENCY_MAX_US)
                };
                if let Some((interval, _)) = phase.interval {
                    {
                        let mut latencies = histogram.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                        latencies.corrected.saturating_record(micros(from));
                        latencies.from_send.saturating_record(micros(sent_at));
                    }
                    let mut series = series.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    series.intervals[interval].get_or_insert_with(new_series_histogram).saturating_record(micros(from));
                } else {
                    let mut series = series.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    series.warmup.saturating_record(micros(from));
                }
                if !keep_alive {
                    drop_conn(&mut conn);
                }
            }
            Exchange::Unsent => {
                phase.add(Event::Unsent);
                drop_conn(&mut conn);
                // Most likely the server closed the idle connection just now: send the same due
                // request once more on a fresh connection.
                if !retrying_unsent {
                    retrying_unsent = true;
                    continue;
                }
                phase.add(Event::ConnectError);
            }
            Exchange::Failed => {
                phase.add(Event::IoError);
                drop_conn(&mut conn);
            }
            Exchange::DeadlinePassed => {
                phase.add(if timeout_at <= clock.hard_stop { Event::Timeout } else { Event::InFlightAtEnd });
                drop_conn(&mut conn);
            }
        }
        retrying_unsent = false;
        due = if closed_loop {
            Instant::now()
        } else {
            match config.pacing {
                Pacing::Schedule => due + think_time(&mut rng, config.think),
                Pacing::AfterResponse => Instant::now() + think_time(&mut rng, config.think),
            }
        };
    }
    drop_conn(&mut conn);
}

/// Reads the server's Prometheus text at `target` (its path is the metrics URL's, e.g. the
/// demo admin listener's `/metrics`) and adds up its request counter, leaving out the series of
/// the `/metrics` route itself (so that reading it does not change the count being compared).
pub(crate) async fn server_request_count(target: &Target, metric: &str, limit: Duration) -> Result<u64, String> {
    let body = fetch(target, limit).await?;
    let text = String::from_utf8_lossy(&body);
    match sum_counter(&text, metric) {
        Some(count) => Ok(count),
        // A fresh server has served nothing yet: a Prometheus exposition without the series is 0.
        None if text.lines().any(|l| l.starts_with("# TYPE ")) => Ok(0),
        None => Err(format!("/metrics has no {metric} series")),
    }
}

/// GETs the path of `target` on a connection of its own and returns the body of a 2xx answer.
pub(crate) async fn fetch(target: &Target, limit: Duration) -> Result<Bytes, String> {
    let fetch = async {
        let mut conn = connect(target, None).await.map_err(|e| format!("cannot connect: {e}"))?;
        let request = Request::get(if target.prefix.is_empty() { "/".to_owned() } else { target.prefix.clone() })
            .header(HOST, target.host.clone())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = conn.sender.send_request(request);
        let driver = async {
            let _ = (&mut conn.driver).await;
            // Keep the answer's future alive after the connection is done with it.
            std::future::pending::<()>().await
        };
        let body = tokio::select! {
            response = async {
                let response = response.await.map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("GET {} answered {}", target.prefix, response.status()));
                }
                response.into_body().collect().await.map(|body| body.to_bytes()).map_err(|e| e.to_string())
            } => response?,
            _ = driver => unreachable!("the driver future never completes"),
        };
        Ok::<_, String>(body)
    };
    timeout(limit, fetch).await.map_err(|_| format!("GET {} timed out", target.prefix))?
}

/// Adds up the samples of `metric` in a Prometheus text exposition, skipping `/metrics` series.
pub(crate) fn sum_counter(text: &str, metric: &str) -> Option<u64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else { continue };
        let value = if let Some(labelled) = rest.strip_prefix('{') {
            let Some(close) = labelled.rfind('}') else { continue };
            if labelled[..close].contains("\"/metrics\"") {
                total.get_or_insert(0);
                continue;
            }
            &labelled[close + 1..]
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue; // another metric whose name starts alike
        };
        if let Some(Ok(count)) = value.split_whitespace().next().map(str::parse::<f64>) {
            *total.get_or_insert(0) += count as u64;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mix::{Defaults, Mix};
    use axum::extract::Path;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::Router;

    /// Requests the server saw arrive, by a middleware before any handler.
    #[derive(Clone, Default)]
    struct Seen(Arc<AtomicU64>);

    /// A server counting every request that arrives; `/items/{id}` answers after `delay(id)`,
    /// with a status and an `X-Cache` header that depend on the id.
    async fn counting_server(delay: fn(u64) -> Duration) -> (SocketAddr, Seen) {
        let seen = Seen::default();
        let app = Router::new()
            .route(
                "/items/{id}",
                get(move |Path(id): Path<u64>| async move {
                    tokio::time::sleep(delay(id)).await;
                    let status = match id % 10 {
                        7 => StatusCode::TOO_MANY_REQUESTS,
                        8 => StatusCode::SERVICE_UNAVAILABLE,
                        _ => StatusCode::OK,
                    };
                    (status, [("x-cache", if id % 2 == 0 { "HIT" } else { "MISS" })], "item").into_response()
                })
                .put(|| async { "stored" }),
            )
            .layer(axum::middleware::from_fn_with_state(
                seen.clone(),
                |axum::extract::State(seen): axum::extract::State<Seen>,
                 request: axum::extract::Request,
                 next: axum::middleware::Next| async move {
                    seen.0.fetch_add(1, Ordering::SeqCst);
                    next.run(request).await
                },
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, seen)
    }

    fn config(users: usize, think: Duration, mix: &str) -> Config {
        Config {
            users,
            think,
            pacing: Pacing::Schedule,
            warmup: Duration::from_millis(500),
            duration: Duration::from_millis(1500),
            ramp: Duration::from_millis(300),
            timeout: Duration::from_secs(5),
            grace: Duration::from_secs(2),
            mix: Mix::parse(mix, false, Defaults { ids: 100, zipf: 1.0 }).unwrap(),
            headers: Vec::new(),
            client_id_header: None,
            source_ips: 0,
            api_keys: Vec::new(),
            api_key_header: HeaderName::from_static("x-api-key"),
            write_key: None,
            seed: 5,
            progress: Duration::ZERO,
        }
    }

    fn target(addr: SocketAddr) -> Arc<Target> {
        Arc::new(Target { addr, host: HeaderValue::from_static("test"), prefix: String::new() })
    }

    const ITEMS_AND_PUTS: &str = r#"
        [[request]]
        weight = 9
        path = "/items/{id}"
        [[request]]
        weight = 1
        method = "PUT"
        path = "/items/{id}"
        body = "{}"
    "#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_sent_request_is_counted_and_matches_the_server_count() {
        let (addr, seen) = counting_server(|_| Duration::ZERO).await;
        let outcome =
            run(Arc::new(config(50, Duration::from_millis(20), ITEMS_AND_PUTS)), target(addr), Progress::hidden())
                .await;

        let total = outcome.requests_total();
        assert_eq!(total, seen.0.load(Ordering::SeqCst), "requests_total must equal the server's count");
        assert!(outcome.warmup.requests() > 100 && outcome.window.requests() > 500, "{outcome:?}");
        let window = outcome.window;
        assert_eq!(window.get(Event::InFlightAtEnd), 0);
        assert_eq!(window.get(Event::Answered), window.requests());
        assert_eq!(window.get(Event::Timeout) + window.get(Event::IoError) + window.get(Event::ConnectError), 0);
        assert_eq!(outcome.latency_us.len(), window.get(Event::Answered));
        assert_eq!(outcome.service_latency_us.len(), window.get(Event::Answered));
        assert!(outcome.service_latency_us.max() <= outcome.latency_us.max(), "the due time is never after the send");
        assert!(window.get(Event::Status429) > 0 && window.get(Event::Status503) > 0);
        assert_eq!(window.get(Event::Status4xx), window.get(Event::Status429));
        assert_eq!(window.get(Event::Status5xx), window.get(Event::Status503));
        assert!(window.get(Event::CacheHit) > 0 && window.get(Event::CacheMiss) > 0);
        assert_eq!(outcome.connections_opened, 50, "one keep-alive connection per user");
        // The series splits the window: 1.5 s in 150 ms intervals, every request and latency in one.
        let series = &outcome.series;
        assert_eq!((series.interval, series.points.len()), (Duration::from_millis(150), 10));
        let sum = |f: fn(&Point) -> u64| series.points.iter().map(f).sum::<u64>();
        assert_eq!(sum(|point| point.tally.requests()), window.requests());
        assert_eq!(sum(|point| point.tally.get(Event::Answered)), window.get(Event::Answered));
        assert_eq!(sum(|point| point.tally.errors()), window.errors());
        assert_eq!(sum(|point| point.latency_us.len()), outcome.latency_us.len());
        assert_eq!(sum(|point| point.tally.get(Event::BodyBytes)), window.get(Event::BodyBytes));
        // Bodies are "item" (4 bytes) or "stored" (6).
        let (bytes, answered) = (window.get(Event::BodyBytes), window.get(Event::Answered));
        assert!(4 * answered < bytes && bytes < 6 * answered, "{bytes} bytes in {answered} answers");
        assert!(series.points.iter().all(|point| point.tally.requests() > 0), "users send all along");
    }

    #[test]
    fn series_intervals_are_a_second_up_to_300_of_them() {
        assert_eq!(series_interval(Duration::from_secs(60)), Duration::from_secs(1));
        assert_eq!(series_interval(Duration::from_secs(15)), Duration::from_secs(1));
        assert_eq!(series_interval(Duration::from_secs(600)), Duration::from_secs(2));
        assert_eq!(series_interval(Duration::from_secs(3600)), Duration::from_secs(12));
        assert_eq!(series_interval(Duration::from_secs(3)), Duration::from_millis(300));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn users_stop_at_the_end_even_when_their_think_time_reaches_past_it() {
        let (addr, seen) = counting_server(|_| Duration::ZERO).await;
        // A mean think time of 60 s puts nearly every second request far past the 2 s run.
        let outcome =
            run(Arc::new(config(20, Duration::from_secs(60), ITEMS_AND_PUTS)), target(addr), Progress::hidden()).await;
        assert_eq!(outcome.requests_total(), seen.0.load(Ordering::SeqCst));
        assert!(outcome.warmup.requests() >= 20, "every user sends its first request at its start");
        assert!(outcome.elapsed < Duration::from_millis(2400), "took {:?}", outcome.elapsed);
    }

    /// A bare HTTP/1.1 server that closes every connection idle for 30 ms, counting requests.
    async fn impatient_server() -> (SocketAddr, Seen) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let seen = Seen::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counter = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        match timeout(Duration::from_millis(30), socket.read(&mut chunk)).await {
                            Ok(Ok(read)) if read > 0 => buffer.extend_from_slice(&chunk[..read]),
                            _ => return, // idle too long, or closed by the client
                        }
                        // The test's mix sends GETs only: a request ends at its blank line.
                        while let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                            buffer.drain(..end + 4);
                            counter.0.fetch_add(1, Ordering::SeqCst);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if socket.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_closed_while_idle_are_reopened_when_the_next_request_is_due() {
        let (addr, seen) = impatient_server().await;
        let mut config = config(10, Duration::from_millis(100), "[[request]]\npath = \"/items/{id}\"");
        config.warmup = Duration::ZERO;
        config.ramp = Duration::ZERO;
        let outcome = run(Arc::new(config), target(addr), Progress::hidden()).await;

        let window = outcome.window;
        // A request written just as the server gives up on the idle connection is lost with it
        // (the keep-alive race): sent, never counted by the server, and counted as an io error.
        // So can one sent to a server task starved past the grace period on a busy machine.
        let lost = window.get(Event::IoError) + window.get(Event::InFlightAtEnd);
        let seen = seen.0.load(Ordering::SeqCst);
        assert!(seen <= outcome.requests_total() && outcome.requests_total() <= seen + lost, "{seen}: {window:?}");
        assert!(lost * 10 <= window.requests(), "{window:?}");
        assert_eq!(window.get(Event::ConnectError), 0, "{window:?}");
        assert_eq!(window.get(Event::Answered) + lost, window.requests());
        assert!(outcome.connections_opened > 50, "{}", outcome.connections_opened);
        // 10 users, 100 ms mean think time, 1.5 s: about 150 requests. Reconnecting at once on
        // each close (30 ms) instead of at the due time would send three times as many.
        assert!((100..250).contains(&window.requests()), "{window:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_stress_keeps_one_connection_per_user() {
        let (addr, seen) = counting_server(|_| Duration::ZERO).await;
        let outcome = run(Arc::new(config(20, Duration::ZERO, ITEMS_AND_PUTS)), target(addr), Progress::hidden()).await;
        assert_eq!(outcome.requests_total(), seen.0.load(Ordering::SeqCst));
        assert!(outcome.window.requests() > 1000, "{outcome:?}");
        assert_eq!(outcome.connections_opened, 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unanswered_requests_at_the_end_are_counted_apart_and_slow_ones_time_out() {
        // Id 1 answers after 3 s: sent during the run it times out (timeout 300 ms); the ones
        // sent less than 300 ms before the end are still out when the 100 ms grace runs out.
        let (addr, seen) = counting_server(|id| if id == 1 { Duration::from_secs(3) } else { Duration::ZERO }).await;
        let mut config = config(
            40,
            Duration::from_millis(50),
            r#"[[request]]
            path = "/items/{id}"
            id = { min = 1, max = 1 }"#,
        );
        config.timeout = Duration::from_millis(300);
        config.grace = Duration::from_millis(100);
        let outcome = run(Arc::new(config), target(addr), Progress::hidden()).await;

        assert_eq!(outcome.requests_total(), seen.0.load(Ordering::SeqCst));
        let window = outcome.window;
        assert!(window.get(Event::Timeout) > 0, "{window:?}");
        assert!(window.get(Event::InFlightAtEnd) > 0, "{window:?}");
        assert_eq!(window.get(Event::Answered), 0);
        assert_eq!(window.requests(), window.get(Event::Timeout) + window.get(Event::InFlightAtEnd));
        assert!(outcome.connections_opened > 40, "timed-out connections are replaced");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connection_failures_are_counted_as_connect_errors() {
        // Bind then drop a listener: its port now refuses connections.
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let mut config = config(5, Duration::from_millis(10), ITEMS_AND_PUTS);
        config.warmup = Duration::ZERO;
        config.duration = Duration::from_millis(500);
        let outcome = run(Arc::new(config), target(addr), Progress::hidden()).await;
        assert_eq!(outcome.requests_total(), 0);
        assert!(outcome.window.get(Event::ConnectError) >= 5, "{:?}", outcome.window);
    }

    #[test]
    fn server_counts_add_up_without_the_metrics_route() {
        let text = "\
# HELP http_server_request_duration_seconds Duration
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{http_route=\"/items/{id}\",le=\"0.005\"} 10
http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/items/{id}\"} 1200
http_server_request_duration_seconds_count{http_request_method=\"PUT\",http_route=\"/items/{id}\"} 30
http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/metrics\"} 4
http_server_request_duration_seconds_count_other 99
";
        assert_eq!(sum_counter(text, "http_server_request_duration_seconds_count"), Some(1230));
        assert_eq!(sum_counter("nothing 1\n", "http_server_request_duration_seconds_count"), None);
    }

    #[test]
    fn requests_carry_host_prefix_extra_headers_and_the_user_id() {
        let mut config = config(1, Duration::ZERO, ITEMS_AND_PUTS);
        config.headers = vec![(HeaderName::from_static("authorization"), HeaderValue::from_static("Bearer t"))];
        let target = Target {
            addr: "127.0.0.1:1".parse().unwrap(),
            host: HeaderValue::from_static("shop.test:8080"),
            prefix: "/api".to_owned(),
        };
        config.client_id_header = Some(HeaderName::from_static("x-client-id"));
        config.api_keys = vec![HeaderValue::from_static("k-a"), HeaderValue::from_static("k-b")];
        config.write_key = Some(HeaderValue::from_static("k-write"));
        let identity = UserIdentity::of(&config, 7);
        let mut rng = SmallRng::seed_from_u64(1);
        let requests: Vec<_> = (0..50).map(|_| next_request(&config, &target, &mut rng, 7, &identity)).collect();
        for request in &requests {
            assert!(request.uri().path().starts_with("/api/items/"), "{}", request.uri());
            assert_eq!(request.headers()[HOST], "shop.test:8080");
            assert_eq!(request.headers()["authorization"], "Bearer t");
            assert_eq!(request.headers()["x-client-id"], "user-7");
            let key = if request.method() == http::Method::PUT { "k-write" } else { "k-b" };
            assert_eq!(request.headers()["x-api-key"], key);
        }
        assert!(requests.iter().any(|request| request.method() == http::Method::PUT));
    }

    #[test]
    fn users_are_spread_over_loopback_sources_and_keys() {
        let mut config = config(10, Duration::ZERO, ITEMS_AND_PUTS);
        assert_eq!(UserIdentity::of(&config, 3).source, None, "0 source addresses: the OS picks");
        assert!(UserIdentity::of(&config, 3).headers.is_empty(), "no client-chosen id by default");
        config.source_ips = 4;
        let sources: Vec<_> = (0..8).map(|n| UserIdentity::of(&config, n).source.unwrap().to_string()).collect();
        assert_eq!(sources[..4], ["127.1.0.1", "127.1.0.2", "127.1.0.3", "127.1.0.4"]);
        assert_eq!(sources[4], "127.1.0.1");
        assert!(source_ip(MAX_SOURCE_IPS - 1).is_loopback());
        assert_eq!(source_ip(MAX_SOURCE_IPS - 1).to_string(), "127.255.255.254");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_user_connects_from_its_own_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/items/{id}",
            axum::routing::get(|axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>| async move {
                peer.ip().to_string()
            }),
        );
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap()
        });
        for k in [0, 41] {
            let mut conn = connect(&target(addr), Some(source_ip(k))).await.unwrap();
            let request = Request::get("/items/1").header(HOST, "t").body(Full::new(Bytes::new())).unwrap();
            let response = conn.sender.send_request(request);
            let body = tokio::select! {
                response = response => response.unwrap().into_body().collect().await.unwrap().to_bytes(),
                _ = &mut conn.driver => panic!("the connection closed"),
            };
            assert_eq!(std::str::from_utf8(&body).unwrap(), source_ip(k).to_string());
        }
    }

    #[test]
    fn x_cache_values_are_classified() {
        assert!(matches!(cache_event(&HeaderValue::from_static("HIT")), Event::CacheHit));
        assert!(matches!(cache_event(&HeaderValue::from_static("stale")), Event::CacheHit));
        assert!(matches!(cache_event(&HeaderValue::from_static("MISS")), Event::CacheMiss));
        assert!(matches!(cache_event(&HeaderValue::from_static("BYPASS")), Event::CacheOther));
    }
}
