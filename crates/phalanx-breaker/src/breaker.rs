//! The state machine.
//!
//! The state, a generation number and the half-open probe count share one atomic word, so a
//! closed-state admission is one atomic load and a half-open admission one compare-and-swap on
//! that word: exactly N probes get through however many callers race, and a caller holding a
//! stale view of an earlier half-open period cannot take a probe of a later one. Outcomes are
//! recorded in one short critical section (the sliding window and the counters); every
//! transition happens inside it and bumps the generation, so an outcome of a call admitted in
//! an earlier state is counted in the metrics but never judged against the new state.

use std::{
    fmt,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::HeaderValue;
use parking_lot::{Mutex, RwLock};
use phalanx_core::ConfigError;
use tokio::time::Instant;

use crate::{
    config::{BreakerConfig, CallOutcome, CancelledAs},
    window::{Totals, Window},
};

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum State {
    /// Calls pass; outcomes are recorded in the sliding window.
    Closed = 0,
    /// Calls are refused until the wait in open has passed.
    Open = 1,
    /// A fixed number of probe calls pass; their outcome closes or reopens the breaker.
    HalfOpen = 2,
    /// Calls are refused until the breaker is reset by hand.
    ForcedOpen = 3,
    /// Calls pass and nothing is judged, until the breaker is reset by hand.
    Disabled = 4,
}

impl State {
    /// The value of the `phalanx.breaker.state` gauge: 0 closed, 1 open, 2 half-open,
    /// 3 forced open, 4 disabled.
    pub fn as_gauge(self) -> u64 {
        self as u64
    }

    /// `closed`, `open`, `half_open`, `forced_open`, `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
        }
    }

    fn from_bits(bits: u64) -> State {
        match bits & STATE_MASK {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            _ => State::Disabled,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// The word: bits 0..8 state, 8..32 probes left in half-open, 32..64 generation.
const STATE_MASK: u64 = 0xff;
const PROBE_ONE: u64 = 1 << 8;
const PROBE_MASK: u64 = 0xff_ffff << 8;
const GEN_SHIFT: u32 = 32;

fn pack(generation: u64, probes: u32, state: State) -> u64 {
    (generation << GEN_SHIFT) | (u64::from(probes) << 8) | state as u64
}
fn generation(word: u64) -> u64 {
    word >> GEN_SHIFT
}
fn probes_left(word: u64) -> u64 {
    (word & PROBE_MASK) >> 8
}

/// How a call ended, as the `outcome` label of `phalanx.breaker.calls` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeLabel {
    /// A success within the slow-call duration.
    Success,
    /// A failure within the slow-call duration.
    Failure,
    /// A success that took longer than the slow-call duration.
    SlowSuccess,
    /// A failure that took longer than the slow-call duration.
    SlowFailure,
    /// Refused by the breaker.
    Rejected,
    /// Neither success nor failure by the outcome rule.
    Ignored,
}

impl OutcomeLabel {
    /// Every label, in the order of [`CallCounts`].
    pub const ALL: [OutcomeLabel; 6] = [
        OutcomeLabel::Success,
        OutcomeLabel::Failure,
        OutcomeLabel::SlowSuccess,
        OutcomeLabel::SlowFailure,
        OutcomeLabel::Rejected,
        OutcomeLabel::Ignored,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeLabel::Success => "success",
            OutcomeLabel::Failure => "failure",
            OutcomeLabel::SlowSuccess => "slow_success",
            OutcomeLabel::SlowFailure => "slow_failure",
            OutcomeLabel::Rejected => "rejected",
            OutcomeLabel::Ignored => "ignored",
        }
    }
}

/// Calls through a breaker since it was made, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallCounts {
    /// Successes within the slow-call duration.
    pub success: u64,
    /// Failures within the slow-call duration.
    pub failure: u64,
    /// Slow successes.
    pub slow_success: u64,
    /// Slow failures.
    pub slow_failure: u64,
    /// Calls refused.
    pub rejected: u64,
    /// Calls the outcome rule ignored.
    pub ignored: u64,
}

impl CallCounts {
    /// The count of one label.
    pub fn get(&self, label: OutcomeLabel) -> u64 {
        match label {
            OutcomeLabel::Success => self.success,
            OutcomeLabel::Failure => self.failure,
            OutcomeLabel::SlowSuccess => self.slow_success,
            OutcomeLabel::SlowFailure => self.slow_failure,
            OutcomeLabel::Rejected => self.rejected,
            OutcomeLabel::Ignored => self.ignored,
        }
    }
}

/// A change of state, given to the listeners registered with
/// [`CircuitBreaker::on_state_change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTransition {
    /// The breaker's name.
    pub breaker: Arc<str>,
    /// The state it left.
    pub from: State,
    /// The state it entered.
    pub to: State,
    /// For `Open`: how long it stays open.
    pub open_for: Option<Duration>,
}

pub(crate) type Listener = Arc<dyn Fn(&StateTransition) + Send + Sync>;

/// The breaker refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker '{breaker}' is {state}; retry after {retry_after:?}")]
pub struct CallNotPermitted {
    /// The breaker's name.
    pub breaker: Arc<str>,
    /// Its state when it refused (open, half-open with every probe taken, or forced open).
    pub state: State,
    /// How long until it may admit calls again: the rest of the wait in open.
    pub retry_after: Duration,
}

/// The error of [`CircuitBreaker::call`].
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker refused the call; the function was not run.
    #[error(transparent)]
    Rejected(CallNotPermitted),
    /// The call ran and failed.
    #[error("{0}")]
    Inner(E),
}

/// What a breaker looks like now: state, rates over the window and counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BreakerSnapshot {
    /// The breaker's name.
    pub name: String,
    /// The current state.
    pub state: State,
    /// Failure rate over the window, a fraction; `None` until it holds the minimum number of calls.
    pub failure_rate: Option<f64>,
    /// Slow-call rate over the window, a fraction; `None` until it holds the minimum number of calls.
    pub slow_call_rate: Option<f64>,
    /// Calls in the window (in half-open: probes finished so far).
    pub buffered_calls: u32,
    /// Failed calls in the window.
    pub failed_calls: u32,
    /// Slow calls in the window.
    pub slow_calls: u32,
    /// All calls since the breaker was made, by outcome.
    pub calls: CallCounts,
    /// In open: the rest of the wait.
    pub retry_after: Option<Duration>,
}

/// A circuit breaker. Cheap to clone; clones share the state.
///
/// ```
/// use phalanx_breaker::{BreakerConfig, CallOutcome, CircuitBreaker, State};
///
/// let breaker = CircuitBreaker::new("inventory", BreakerConfig::default().with_minimum_number_of_calls(2)).unwrap();
/// for _ in 0..2 {
///     breaker.try_acquire().unwrap().record(CallOutcome::Failure);
/// }
/// assert_eq!(breaker.state(), State::Open);
/// assert!(breaker.try_acquire().is_err());
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

struct Shared {
    name: Arc<str>,
    config: BreakerConfig,
    minimum_calls: u32,
    probes: u32,
    word: AtomicU64,
    /// Nanoseconds on the breaker's clock at which the current open period ends.
    open_until: AtomicU64,
    epoch: Instant,
    rejected: AtomicU64,
    rng: AtomicU64,
    inner: Mutex<Inner>,
    listeners: RwLock<Vec<Listener>>,
    /// The last problem document rendered for a refusal, by state and `Retry-After` seconds:
    /// while a breaker is open every request is refused, so the document is rendered about
    /// once a second instead of once a request.
    rejection: Mutex<Option<(State, u64, Bytes, HeaderValue)>>,
}

struct Inner {
    window: Window,
    half_open: Totals,
    consecutive_opens: u32,
    /// success, failure, slow_success, slow_failure, ignored.
    finished: [u64; 5],
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker").field("name", &self.shared.name).field("state", &self.peek_state()).finish()
    }
}

impl CircuitBreaker {
    /// A breaker in the closed state; fails if the configuration is invalid.
    pub fn new(name: impl Into<Arc<str>>, config: BreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::from_validated(name, config))
    }

    /// A breaker in the closed state; `config` has been validated.
    pub(crate) fn from_validated(name: impl Into<Arc<str>>, config: BreakerConfig) -> Self {
        let name = name.into();
        let epoch = Instant::now();
        let seed = Arc::as_ptr(&name) as *const u8 as u64
            ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        CircuitBreaker {
            shared: Arc::new(Shared {
                minimum_calls: config.effective_minimum_calls(),
                probes: config.permitted_calls_in_half_open,
                word: AtomicU64::new(pack(0, 0, State::Closed)),
                open_until: AtomicU64::new(0),
                epoch,
                rejected: AtomicU64::new(0),
                rng: AtomicU64::new(seed),
                inner: Mutex::new(Inner {
                    window: Window::new(config.sliding_window),
                    half_open: Totals::default(),
                    consecutive_opens: 0,
                    finished: [0; 5],
                }),
                listeners: RwLock::new(Vec::new()),
                rejection: Mutex::new(None),
                name,
                config,
            }),
        }
    }

    /// The breaker's name (a route template or an upstream `host:port`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.shared.name
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// Ask to make a call. The [`Permit`] records the outcome: call [`Permit::record`] (or
    /// [`Permit::success`], [`Permit::failure`]) when the call is done; dropping it unrecorded
    /// counts as [`BreakerConfig::cancelled`] says.
    pub fn try_acquire(&self) -> Result<Permit, CallNotPermitted> {
        let shared = &*self.shared;
        let mut word = shared.word.load(Ordering::Acquire);
        loop {
            match State::from_bits(word) {
                State::Closed | State::Disabled => return Ok(self.permit(word)),
                State::Open => {
                    let now = self.now_nanos();
                    let until = shared.open_until.load(Ordering::Acquire);
                    if now < until {
                        return Err(self.reject(State::Open, Duration::from_nanos(until - now)));
                    }
                    self.transition_from(word, State::HalfOpen);
                    word = shared.word.load(Ordering::Acquire);
                }
                State::HalfOpen => {
                    if probes_left(word) == 0 {
                        if self.now_nanos() >= shared.open_until.load(Ordering::Acquire) {
                            // The probes hung past max_wait_in_half_open: reopen.
                            self.transition_from(word, State::Open);
                            word = shared.word.load(Ordering::Acquire);
                            continue;
                        }
                        // Probes are in flight; their outcome comes soon.
                        return Err(self.reject(State::HalfOpen, Duration::from_secs(1)));
                    }
                    match shared.word.compare_exchange_weak(word, word - PROBE_ONE, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => return Ok(self.permit(word)),
                        Err(current) => word = current,
                    }
                }
                State::ForcedOpen => return Err(self.reject(State::ForcedOpen, shared.config.wait_in_open)),
            }
        }
    }

    /// Run `f` through the breaker: refused at once when it is open, otherwise run and
    /// recorded (`Err` a failure, `Ok` a success, slow when it took longer than the slow-call
    /// duration).
    pub async fn call<F, Fut, T, E>(&self, f: F) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire().map_err(BreakerError::Rejected)?;
        match f().await {
            Ok(value) => {
                permit.success();
                Ok(value)
            }
            Err(err) => {
                permit.failure();
                Err(BreakerError::Inner(err))
            }
        }
    }

    /// The current state. An open breaker whose wait has passed turns half-open here, as it
    /// would on the next call.
    pub fn state(&self) -> State {
        let word = self.shared.word.load(Ordering::Acquire);
        if State::from_bits(word) == State::Open && self.now_nanos() >= self.shared.open_until.load(Ordering::Acquire) {
            self.transition_from(word, State::HalfOpen);
            return self.peek_state();
        }
        State::from_bits(word)
    }

    fn peek_state(&self) -> State {
        State::from_bits(self.shared.word.load(Ordering::Acquire))
    }

    /// State, rates and counts.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let state = self.state();
        let now = self.now_nanos();
        let mut inner = self.shared.inner.lock();
        let totals = if state == State::HalfOpen { inner.half_open } else { inner.window.totals(now / 1_000_000_000) };
        let judged = if state == State::HalfOpen { self.shared.probes } else { self.shared.minimum_calls };
        let enough = totals.calls >= judged;
        let [success, failure, slow_success, slow_failure, ignored] = inner.finished;
        drop(inner);
        let until = self.shared.open_until.load(Ordering::Acquire);
        BreakerSnapshot {
            name: self.shared.name.to_string(),
            state,
            failure_rate: enough.then(|| totals.failure_rate()),
            slow_call_rate: enough.then(|| totals.slow_rate()),
            buffered_calls: totals.calls,
            failed_calls: totals.failed,
            slow_calls: totals.slow,
            calls: CallCounts {
                success,
                failure,
                slow_success,
                slow_failure,
                rejected: self.shared.rejected.load(Ordering::Relaxed),
                ignored,
            },
            retry_after: (state == State::Open).then(|| Duration::from_nanos(until.saturating_sub(now))),
        }
    }

    /// Calls since the breaker was made, by outcome.
    pub fn call_counts(&self) -> CallCounts {
        let [success, failure, slow_success, slow_failure, ignored] = self.shared.inner.lock().finished;
        CallCounts {
            success,
            failure,
            slow_success,
            slow_failure,
            rejected: self.shared.rejected.load(Ordering::Relaxed),
            ignored,
        }
    }

    /// Call `listener` on every change of state (after the change, outside the breaker's lock).
    pub fn on_state_change(&self, listener: impl Fn(&StateTransition) + Send + Sync + 'static) {
        self.shared.listeners.write().push(Arc::new(listener));
    }

    pub(crate) fn add_listener(&self, listener: Listener) {
        self.shared.listeners.write().push(listener);
    }

    /// Refuse every call until [`CircuitBreaker::reset`].
    pub fn force_open(&self) {
        self.transition_to(State::ForcedOpen);
    }

    /// Let every call through, judging nothing, until [`CircuitBreaker::reset`].
    pub fn disable(&self) {
        self.transition_to(State::Disabled);
    }

    /// Back to closed with an empty window and the backoff restarted.
    pub fn reset(&self) {
        self.transition_to(State::Closed);
    }

    /// Move to `state` now (open: for the wait the backoff gives; half-open: with a fresh set
    /// of probes; closed: with an empty window).
    pub fn transition_to(&self, state: State) {
        let transition = {
            let mut inner = self.shared.inner.lock();
            self.enter(&mut inner, state)
        };
        self.notify(transition);
    }

    /// The rendered refusal (document and `Retry-After` value) for this state and `Retry-After`,
    /// rendered by `render` when the cached one is for another.
    pub(crate) fn rejection(
        &self,
        state: State,
        retry_after_secs: u64,
        render: impl FnOnce() -> Bytes,
    ) -> (Bytes, HeaderValue) {
        let mut cached = self.shared.rejection.lock();
        match &*cached {
            Some((s, secs, body, header)) if *s == state && *secs == retry_after_secs => (body.clone(), header.clone()),
            _ => {
                let (body, header) = (render(), HeaderValue::from(retry_after_secs));
                *cached = Some((state, retry_after_secs, body.clone(), header.clone()));
                (body, header)
            }
        }
    }

    fn permit(&self, word: u64) -> Permit {
        Permit { breaker: self.clone(), word, start: Instant::now(), recorded: false }
    }

    fn reject(&self, state: State, retry_after: Duration) -> CallNotPermitted {
        self.shared.rejected.fetch_add(1, Ordering::Relaxed);
        CallNotPermitted { breaker: self.shared.name.clone(), state, retry_after }
    }

    fn now_nanos(&self) -> u64 {
        Instant::now().saturating_duration_since(self.shared.epoch).as_nanos() as u64
    }

    /// Move to `to` unless another caller changed the state (or took a probe) since `seen`.
    fn transition_from(&self, seen: u64, to: State) {
        let transition = {
            let mut inner = self.shared.inner.lock();
            if self.shared.word.load(Ordering::Acquire) != seen {
                return;
            }
            self.enter(&mut inner, to)
        };
        self.notify(transition);
    }

    /// Change state; the caller holds the lock (`inner`).
    fn enter(&self, inner: &mut Inner, to: State) -> StateTransition {
        let shared = &*self.shared;
        let old = shared.word.load(Ordering::Acquire);
        let mut probes = 0;
        let mut open_for = None;
        match to {
            State::Closed => {
                inner.window.clear();
                inner.consecutive_opens = 0;
            }
            State::Open => {
                let wait = shared.config.open_wait(inner.consecutive_opens, self.unit_random());
                inner.consecutive_opens = inner.consecutive_opens.saturating_add(1);
                let until = self.now_nanos().saturating_add(wait.as_nanos() as u64);
                shared.open_until.store(until, Ordering::Release);
                open_for = Some(wait);
            }
            State::HalfOpen => {
                inner.half_open = Totals::default();
                probes = shared.probes;
                // While half-open, `open_until` holds the deadline for hung probes.
                let deadline = match shared.config.max_wait_in_half_open {
                    None => u64::MAX,
                    Some(max_wait) => self.now_nanos().saturating_add(max_wait.as_nanos() as u64),
                };
                shared.open_until.store(deadline, Ordering::Release);
            }
            State::ForcedOpen | State::Disabled => {}
        }
        let next_generation = (generation(old) + 1) & 0xffff_ffff;
        shared.word.store(pack(next_generation, probes, to), Ordering::Release);
        StateTransition { breaker: shared.name.clone(), from: State::from_bits(old), to, open_for }
    }

    fn notify(&self, transition: StateTransition) {
        tracing::info!(
            breaker = %transition.breaker,
            from = transition.from.as_str(),
            to = transition.to.as_str(),
            open_for = ?transition.open_for,
            "circuit breaker state change"
        );
        let listeners: Vec<Listener> = self.shared.listeners.read().clone();
        for listener in listeners {
            listener(&transition);
        }
    }

    /// A uniform sample in [0, 1) for the jitter (splitmix64; no shared RNG on the hot path
    /// because only transitions to open use it).
    fn unit_random(&self) -> f64 {
        let mut z =
            self.shared.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn exceeded(&self, totals: Totals) -> bool {
        let config = &self.shared.config;
        totals.failure_rate() >= config.failure_rate_threshold || totals.slow_rate() >= config.slow_call_rate_threshold
    }

    fn on_finished(&self, admitted: u64, start: Instant, outcome: CallOutcome) {
        let end = Instant::now();
        let slow = end.saturating_duration_since(start) > self.shared.config.slow_call_duration;
        let (slot, failed) = match (outcome, slow) {
            (CallOutcome::Success, false) => (0, false),
            (CallOutcome::Failure, false) => (1, true),
            (CallOutcome::Success, true) => (2, false),
            (CallOutcome::Failure, true) => (3, true),
            (CallOutcome::Ignored, _) => (4, false),
        };
        let shared = &*self.shared;
        let transition = {
            let mut inner = shared.inner.lock();
            inner.finished[slot] += 1;
            // Transitions happen under this lock, so state and generation hold still here.
            let word = shared.word.load(Ordering::Acquire);
            if generation(word) != generation(admitted) {
                return; // admitted in an earlier state: counted, not judged
            }
            match (State::from_bits(word), outcome) {
                (State::HalfOpen, CallOutcome::Ignored) => {
                    // The probe told nothing; its slot goes to the next caller.
                    shared.word.fetch_add(PROBE_ONE, Ordering::AcqRel);
                    None
                }
                (State::Closed, CallOutcome::Success | CallOutcome::Failure) => {
                    let now_sec = end.saturating_duration_since(shared.epoch).as_secs();
                    inner.window.record(now_sec, failed, slow);
                    let totals = inner.window.totals(now_sec);
                    (totals.calls >= shared.minimum_calls && self.exceeded(totals))
                        .then(|| self.enter(&mut inner, State::Open))
                }
                (State::HalfOpen, CallOutcome::Success | CallOutcome::Failure) => {
                    inner.half_open.add(failed, slow);
                    let tally = inner.half_open;
                    (tally.calls >= shared.probes).then(|| {
                        let to = if self.exceeded(tally) { State::Open } else { State::Closed };
                        self.enter(&mut inner, to)
                    })
                }
                _ => None,
            }
        };
        if let Some(transition) = transition {
            self.notify(transition);
        }
    }
}

/// Leave to make a call through a breaker; records the call's outcome once.
///
/// Dropping it without recording counts as [`BreakerConfig::cancelled`] says (a failure by
/// default), so a call cancelled by an outer timeout is not lost.
#[must_use = "a permit records the outcome of a call; dropping it counts as a cancelled call"]
pub struct Permit {
    breaker: CircuitBreaker,
    word: u64,
    start: Instant,
    recorded: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.breaker.name())
            .field("state", &State::from_bits(self.word))
            .finish()
    }
}

impl Permit {
    /// Record the call's outcome; its duration is the time since the permit was given.
    pub fn record(mut self, outcome: CallOutcome) {
        self.recorded = true;
        self.breaker.on_finished(self.word, self.start, outcome);
    }

    /// Record a success.
    pub fn success(self) {
        self.record(CallOutcome::Success);
    }

    /// Record a failure.
    pub fn failure(self) {
        self.record(CallOutcome::Failure);
    }

    /// Record neither success nor failure.
    pub fn ignore(self) {
        self.record(CallOutcome::Ignored);
    }

    /// The state the call was admitted in (closed, half-open or disabled).
    pub fn admitted_in(&self) -> State {
        State::from_bits(self.word)
    }

    /// The breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.recorded {
            let outcome = match self.breaker.shared.config.cancelled {
                CancelledAs::Failure => CallOutcome::Failure,
                CancelledAs::Ignored => CallOutcome::Ignored,
            };
            self.breaker.on_finished(self.word, self.start, outcome);
        }
    }
}
