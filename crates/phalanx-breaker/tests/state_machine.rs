//! One test per rule of the state machine, on paused time.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Barrier, Mutex,
    },
    time::Duration,
};

use phalanx_breaker::{Backoff, BreakerConfig, CallOutcome, CancelledAs, CircuitBreaker, State, StateTransition};
use tokio::time::{advance, sleep};

fn breaker(config: BreakerConfig) -> CircuitBreaker {
    CircuitBreaker::new("test", config).unwrap()
}

/// Opens on one failure, for `wait`, then admits `probes` probes.
fn one_strike(probes: u32, wait: Duration) -> BreakerConfig {
    BreakerConfig::default()
        .with_count_window(1)
        .with_minimum_number_of_calls(1)
        .with_permitted_calls_in_half_open(probes)
        .with_wait_in_open(wait)
}

fn record(b: &CircuitBreaker, outcome: CallOutcome, times: usize) {
    for _ in 0..times {
        b.try_acquire().expect("breaker admits the call").record(outcome);
    }
}

/// A call that takes `took` on the (paused) clock.
async fn timed_call(b: &CircuitBreaker, outcome: CallOutcome, took: Duration) {
    let permit = b.try_acquire().expect("breaker admits the call");
    sleep(took).await;
    permit.record(outcome);
}

#[tokio::test(start_paused = true)]
async fn rates_are_not_judged_before_the_minimum_number_of_calls() {
    let b = breaker(BreakerConfig::default().with_count_window(10).with_minimum_number_of_calls(5));
    record(&b, CallOutcome::Failure, 4);
    // Every call failed, but only 4 calls.
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().failure_rate, None);
    record(&b, CallOutcome::Failure, 1);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.snapshot().failure_rate, Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn minimum_calls_is_capped_at_a_count_window_size() {
    let b = breaker(BreakerConfig::default().with_count_window(3).with_minimum_number_of_calls(100));
    record(&b, CallOutcome::Failure, 3);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_threshold_is_inclusive() {
    let config =
        BreakerConfig::default().with_count_window(4).with_minimum_number_of_calls(4).with_failure_rate_threshold(0.5);

    let below = breaker(config.clone());
    record(&below, CallOutcome::Success, 3);
    record(&below, CallOutcome::Failure, 1);
    assert_eq!(below.state(), State::Closed, "25 % < 50 %");

    let at = breaker(config);
    record(&at, CallOutcome::Success, 2);
    record(&at, CallOutcome::Failure, 2);
    assert_eq!(at.state(), State::Open, "exactly 50 % trips");
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_threshold_is_inclusive() {
    let config = BreakerConfig::default()
        .with_count_window(4)
        .with_minimum_number_of_calls(4)
        .with_slow_call_rate_threshold(0.5)
        .with_slow_call_duration(Duration::from_millis(100));

    let below = breaker(config.clone());
    timed_call(&below, CallOutcome::Success, Duration::from_millis(150)).await;
    for _ in 0..3 {
        timed_call(&below, CallOutcome::Success, Duration::from_millis(10)).await;
    }
    assert_eq!(below.state(), State::Closed, "25 % slow < 50 %");

    let at = breaker(config);
    for _ in 0..2 {
        timed_call(&at, CallOutcome::Success, Duration::from_millis(150)).await;
        timed_call(&at, CallOutcome::Success, Duration::from_millis(10)).await;
    }
    assert_eq!(at.state(), State::Open, "exactly 50 % slow trips");
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_breaker_though_every_call_succeeds() {
    let b = breaker(
        BreakerConfig::default()
            .with_count_window(5)
            .with_minimum_number_of_calls(5)
            .with_slow_call_rate_threshold(1.0)
            .with_slow_call_duration(Duration::from_millis(200)),
    );
    // A call of exactly the slow-call duration is not slow (Resilience4j: longer than).
    for _ in 0..5 {
        timed_call(&b, CallOutcome::Success, Duration::from_millis(200)).await;
    }
    assert_eq!(b.state(), State::Closed);
    for _ in 0..5 {
        timed_call(&b, CallOutcome::Success, Duration::from_millis(201)).await;
    }
    assert_eq!(b.state(), State::Open);
    let snapshot = b.snapshot();
    assert_eq!(snapshot.failure_rate, Some(0.0));
    assert_eq!(snapshot.slow_call_rate, Some(1.0));
    assert_eq!(snapshot.calls.slow_success, 5);
    assert_eq!(snapshot.calls.failure + snapshot.calls.slow_failure, 0);
}

#[tokio::test(start_paused = true)]
async fn open_refuses_with_the_rest_of_the_wait_then_admits_probes() {
    let b = breaker(
        BreakerConfig::default()
            .with_count_window(2)
            .with_minimum_number_of_calls(2)
            .with_wait_in_open(Duration::from_secs(10))
            .with_permitted_calls_in_half_open(2),
    );
    record(&b, CallOutcome::Failure, 2);
    let refused = b.try_acquire().unwrap_err();
    assert_eq!(refused.state, State::Open);
    assert_eq!(refused.retry_after, Duration::from_secs(10));
    advance(Duration::from_secs(4)).await;
    assert_eq!(b.try_acquire().unwrap_err().retry_after, Duration::from_secs(6));
    advance(Duration::from_secs(6)).await;
    assert_eq!(b.state(), State::HalfOpen);
    record(&b, CallOutcome::Success, 2);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.snapshot().buffered_calls, 0, "closing starts a fresh window");
    assert_eq!(b.call_counts().rejected, 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_probe_set_reopens() {
    let b = breaker(
        BreakerConfig::default()
            .with_count_window(2)
            .with_minimum_number_of_calls(2)
            .with_wait_in_open(Duration::from_secs(1))
            .with_permitted_calls_in_half_open(4),
    );
    record(&b, CallOutcome::Failure, 2);
    advance(Duration::from_secs(1)).await;
    let probes: Vec<_> = (0..4).map(|_| b.try_acquire().unwrap()).collect();
    assert_eq!(b.try_acquire().unwrap_err().state, State::HalfOpen);
    let mut probes = probes.into_iter();
    probes.next().unwrap().failure();
    probes.next().unwrap().failure();
    probes.next().unwrap().success();
    assert_eq!(b.state(), State::HalfOpen, "judged only when every probe has finished");
    probes.next().unwrap().success();
    assert_eq!(b.state(), State::Open, "50 % of probes failed");
}

#[test]
fn half_open_admits_exactly_n_probes_among_many_concurrent_callers() {
    const PROBES: u32 = 7;
    const THREADS: usize = 16;
    const TRIES: usize = 500;
    for round in 0..20 {
        let b = breaker(one_strike(PROBES, Duration::from_millis(1)));
        record(&b, CallOutcome::Failure, 1);
        std::thread::sleep(Duration::from_millis(2));
        // Every thread races to leave open and take probes, holding what it gets.
        let start = Arc::new(Barrier::new(THREADS));
        let admitted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (b, start, admitted, held) = (b.clone(), start.clone(), admitted.clone(), held.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..TRIES {
                        if let Ok(permit) = b.try_acquire() {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            held.lock().unwrap().push(permit);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::SeqCst), PROBES as usize, "round {round}");
        assert_eq!(b.state(), State::HalfOpen);
        for permit in held.lock().unwrap().drain(..) {
            permit.success();
        }
        assert_eq!(b.state(), State::Closed, "round {round}");
    }
}

#[tokio::test(start_paused = true)]
async fn exponential_backoff_grows_per_reopening_up_to_the_cap_and_restarts_after_a_close() {
    let b = breaker(one_strike(1, Duration::from_secs(1)).with_backoff(Backoff::Exponential {
        multiplier: 2.0,
        max_wait: Duration::from_secs(5),
        jitter: 0.0,
    }));
    record(&b, CallOutcome::Failure, 1);
    let mut waits = Vec::new();
    for _ in 0..5 {
        let wait = b.try_acquire().unwrap_err().retry_after;
        waits.push(wait);
        advance(wait).await;
        record(&b, CallOutcome::Failure, 1); // the probe fails: reopen
    }
    let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![1, 2, 4, 5, 5]);

    advance(Duration::from_secs(5)).await;
    record(&b, CallOutcome::Success, 1);
    assert_eq!(b.state(), State::Closed);
    record(&b, CallOutcome::Failure, 1);
    assert_eq!(b.try_acquire().unwrap_err().retry_after, Duration::from_secs(1), "a close restarts the backoff");
}

#[tokio::test(start_paused = true)]
async fn exponential_backoff_jitter_stays_within_its_spread() {
    let b = breaker(one_strike(1, Duration::from_secs(10)).with_backoff(Backoff::Exponential {
        multiplier: 1.0,
        max_wait: Duration::from_secs(10),
        jitter: 0.5,
    }));
    let mut distinct = std::collections::HashSet::new();
    record(&b, CallOutcome::Failure, 1);
    for _ in 0..20 {
        let wait = b.try_acquire().unwrap_err().retry_after;
        assert!(wait >= Duration::from_secs(5) && wait <= Duration::from_secs(15), "{wait:?}");
        distinct.insert(wait.as_millis());
        advance(wait).await;
        record(&b, CallOutcome::Failure, 1);
    }
    assert!(distinct.len() > 10, "jitter spreads the waits: {distinct:?}");
}

#[tokio::test(start_paused = true)]
async fn calls_older_than_a_time_window_no_longer_count() {
    let config = BreakerConfig::default()
        .with_time_window(Duration::from_secs(10))
        .with_minimum_number_of_calls(6)
        .with_failure_rate_threshold(0.55);
    let run = |gap: Duration| {
        let b = breaker(config.clone());
        async move {
            record(&b, CallOutcome::Failure, 3);
            advance(gap).await;
            record(&b, CallOutcome::Success, 4);
            record(&b, CallOutcome::Failure, 2);
            b
        }
    };
    // Within the window: 5 failures of 9 calls (55.6 %).
    let within = run(Duration::from_secs(5)).await;
    assert_eq!(within.state(), State::Open);
    // Eleven seconds later the first three failures have left: 2 of 6.
    let after = run(Duration::from_secs(11)).await;
    assert_eq!(after.state(), State::Closed);
    let snapshot = after.snapshot();
    assert_eq!((snapshot.buffered_calls, snapshot.failed_calls), (6, 2));
    advance(Duration::from_secs(10)).await;
    assert_eq!(after.snapshot().buffered_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn forced_open_refuses_until_reset_and_disabled_admits_without_judging() {
    let b = breaker(BreakerConfig::default().with_count_window(2).with_minimum_number_of_calls(2));
    b.force_open();
    let refused = b.try_acquire().unwrap_err();
    assert_eq!(refused.state, State::ForcedOpen);
    advance(Duration::from_secs(3600)).await;
    assert_eq!(b.state(), State::ForcedOpen, "no wait ends a forced open");

    b.disable();
    record(&b, CallOutcome::Failure, 10);
    assert_eq!(b.state(), State::Disabled, "failures do not trip a disabled breaker");
    assert_eq!(b.call_counts().failure, 10);

    b.reset();
    assert_eq!(b.state(), State::Closed);
    record(&b, CallOutcome::Failure, 2);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_are_not_judged_and_give_back_a_probe() {
    let b = breaker(
        BreakerConfig::default()
            .with_count_window(2)
            .with_minimum_number_of_calls(2)
            .with_permitted_calls_in_half_open(1)
            .with_wait_in_open(Duration::from_secs(1)),
    );
    record(&b, CallOutcome::Ignored, 10);
    assert_eq!(b.snapshot().buffered_calls, 0);
    record(&b, CallOutcome::Failure, 2);
    advance(Duration::from_secs(1)).await;
    let probe = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    probe.ignore();
    b.try_acquire().expect("the ignored probe's slot is free again").success();
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_counts_as_configured() {
    let failing = breaker(BreakerConfig::default().with_count_window(1).with_minimum_number_of_calls(1));
    drop(failing.try_acquire().unwrap());
    assert_eq!(failing.state(), State::Open, "cancelled counts as a failure by default");

    let ignoring = breaker(
        BreakerConfig::default()
            .with_count_window(1)
            .with_minimum_number_of_calls(1)
            .with_cancelled(CancelledAs::Ignored),
    );
    drop(ignoring.try_acquire().unwrap());
    assert_eq!(ignoring.state(), State::Closed);
    assert_eq!(ignoring.call_counts().ignored, 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_admitted_before_a_transition_is_counted_but_not_judged_after_it() {
    let b = breaker(
        BreakerConfig::default()
            .with_count_window(2)
            .with_minimum_number_of_calls(2)
            .with_permitted_calls_in_half_open(1)
            .with_wait_in_open(Duration::from_secs(1)),
    );
    let late = b.try_acquire().unwrap();
    record(&b, CallOutcome::Failure, 2);
    advance(Duration::from_secs(1)).await;
    assert_eq!(b.state(), State::HalfOpen);
    late.failure(); // admitted while closed: must not decide the half-open test
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.call_counts().failure, 3);
    record(&b, CallOutcome::Success, 1);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn listeners_see_every_transition_in_order() {
    let b = breaker(one_strike(1, Duration::from_secs(2)));
    let seen: Arc<Mutex<Vec<StateTransition>>> = Arc::default();
    let sink = seen.clone();
    b.on_state_change(move |t| sink.lock().unwrap().push(t.clone()));
    record(&b, CallOutcome::Failure, 1);
    advance(Duration::from_secs(2)).await;
    record(&b, CallOutcome::Success, 1);
    b.force_open();
    let seen = seen.lock().unwrap();
    let pairs: Vec<(State, State)> = seen.iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        pairs,
        vec![
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed),
            (State::Closed, State::ForcedOpen)
        ]
    );
    assert_eq!(seen[0].open_for, Some(Duration::from_secs(2)));
    assert_eq!(&*seen[0].breaker, "test");
}

#[tokio::test(start_paused = true)]
async fn call_runs_closures_and_refuses_without_running_when_open() {
    let b = breaker(BreakerConfig::default().with_count_window(1).with_minimum_number_of_calls(1));
    let ran = AtomicUsize::new(0);
    let r: Result<(), _> = b
        .call(|| async {
            ran.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>("boom")
        })
        .await;
    assert!(matches!(r, Err(phalanx_breaker::BreakerError::Inner("boom"))));
    let r = b
        .call(|| async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, &str>(())
        })
        .await;
    assert!(matches!(r, Err(phalanx_breaker::BreakerError::Rejected(_))));
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn hung_probes_reopen_after_the_max_wait_in_half_open() {
    let b = breaker(one_strike(2, Duration::from_secs(1)).with_max_wait_in_half_open(Some(Duration::from_secs(10))));
    record(&b, CallOutcome::Failure, 1);
    advance(Duration::from_secs(1)).await;
    let hung: Vec<_> = (0..2).map(|_| b.try_acquire().unwrap()).collect();
    advance(Duration::from_secs(9)).await;
    assert_eq!(b.try_acquire().unwrap_err().state, State::HalfOpen, "still waiting for the probes");
    advance(Duration::from_secs(1)).await;
    let refused = b.try_acquire().unwrap_err();
    assert_eq!(refused.state, State::Open, "the probes hung: reopened");
    assert_eq!(refused.retry_after, Duration::from_secs(1));
    for permit in hung {
        permit.success(); // too late to decide anything
    }
    assert_eq!(b.state(), State::Open);
    advance(Duration::from_secs(1)).await;
    record(&b, CallOutcome::Success, 2);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn without_a_max_wait_half_open_waits_for_its_probes() {
    let b = breaker(
        one_strike(1, Duration::from_secs(1)).with_slow_call_duration(Duration::from_secs(7200)), // the probe is not slow
    );
    record(&b, CallOutcome::Failure, 1);
    advance(Duration::from_secs(1)).await;
    let probe = b.try_acquire().unwrap();
    advance(Duration::from_secs(3600)).await;
    assert_eq!(b.try_acquire().unwrap_err().state, State::HalfOpen);
    probe.success();
    assert_eq!(b.state(), State::Closed);
}
