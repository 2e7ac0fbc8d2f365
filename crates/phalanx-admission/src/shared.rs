//! The state every clone of the service shares: the limit, the in-flight counts, the priority
//! queue, and the RAII [`AdmissionPermit`] that gives a slot back.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::Mutex;
use phalanx_core::Priority;
use tokio::{sync::oneshot, time::Instant};

use crate::{config::ClassPolicy, limit::Limiter, metrics::Instruments};

const CLASSES: usize = 5;

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShedReason {
    /// Its class's queue (or the total queue) was full, or a higher class took its place.
    QueueFull,
    /// It waited in the queue until its class's deadline.
    Deadline,
    /// Its class had used up its share of the limit, and it could not wait for it.
    Share,
}

impl ShedReason {
    /// Every reason.
    pub const ALL: [ShedReason; 3] = [ShedReason::QueueFull, ShedReason::Deadline, ShedReason::Share];

    /// The metric label: `queue_full`, `deadline`, `share`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ShedReason::QueueFull => "queue_full",
            ShedReason::Deadline => "deadline",
            ShedReason::Share => "share",
        }
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            ShedReason::QueueFull => 0,
            ShedReason::Deadline => 1,
            ShedReason::Share => 2,
        }
    }
}

struct Waiter {
    id: u64,
    grant: oneshot::Sender<AdmissionPermit>,
}

struct State {
    limiter: Limiter,
    limit: usize,
    in_flight: usize,
    class_in_flight: [usize; CLASSES],
    queues: [VecDeque<Waiter>; CLASSES],
    queued: usize,
    next_id: u64,
}

impl State {
    fn class_limit(&self, policy: &ClassPolicy) -> usize {
        class_limit(self.limit, policy.share)
    }

    fn has_room(&self, class: usize, policy: &ClassPolicy) -> bool {
        self.in_flight < self.limit && self.class_in_flight[class] < self.class_limit(policy)
    }

    fn take_slot(&mut self, class: usize) {
        self.in_flight += 1;
        self.class_in_flight[class] += 1;
        self.limiter.observe_in_flight(self.in_flight);
    }
}

/// The share of `limit` a class may hold: at least one, so no class is locked out entirely.
pub(crate) fn class_limit(limit: usize, share: f64) -> usize {
    ((limit as f64 * share).floor() as usize).max(1)
}

/// Counters read by `/status`, kept outside the lock.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) admitted: [AtomicU64; CLASSES],
    pub(crate) shed: [[AtomicU64; 3]; CLASSES],
}

pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    /// Whether latency samples can move the limit (else they are not taken).
    pub(crate) adaptive: bool,
    pub(crate) policies: [ClassPolicy; CLASSES],
    pub(crate) max_queued_total: usize,
    pub(crate) retry_after: Duration,
    pub(crate) counters: Counters,
    pub(crate) instruments: Instruments,
    state: Mutex<State>,
}

/// What became of a request on arrival.
pub(crate) enum Admission {
    /// Admitted at once.
    Now(AdmissionPermit),
    /// Waiting; the receiver gets the permit, or closes when the waiter is evicted.
    Queued(QueueTicket, oneshot::Receiver<AdmissionPermit>),
    /// Refused.
    Shed(ShedReason),
}

/// A snapshot of one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassSnapshot {
    /// The class.
    pub priority: Priority,
    /// Its admitted requests not yet finished.
    pub in_flight: usize,
    /// The part of the limit it may use.
    pub limit: usize,
    /// Its requests waiting.
    pub queued: usize,
}

/// A snapshot of a limiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The whole concurrency limit.
    pub limit: usize,
    /// Admitted requests not yet finished.
    pub in_flight: usize,
    /// Requests waiting.
    pub queued: usize,
    /// Per class, highest first.
    pub classes: [ClassSnapshot; CLASSES],
}

impl Shared {
    pub(crate) fn new(
        name: Arc<str>,
        limiter: Limiter,
        policies: [ClassPolicy; CLASSES],
        max_queued_total: usize,
        retry_after: Duration,
        instruments: Instruments,
    ) -> Self {
        let limit = limiter.limit();
        Shared {
            name,
            adaptive: limiter.is_adaptive(),
            policies,
            max_queued_total,
            retry_after,
            counters: Counters::default(),
            instruments,
            state: Mutex::new(State {
                limiter,
                limit,
                in_flight: 0,
                class_in_flight: [0; CLASSES],
                queues: Default::default(),
                queued: 0,
                next_id: 0,
            }),
        }
    }

    /// Admit, queue or shed a request of this class.
    pub(crate) fn admit(self: &Arc<Self>, priority: Priority) -> Admission {
        let class = priority.index();
        let policy = &self.policies[class];
        let mut state = self.state.lock();
        // Waiters of this class come first (FIFO); waiters of higher classes still queued are
        // blocked by their own share, so they do not stand in the way.
        if state.queues[class].is_empty() && state.has_room(class, policy) {
            state.take_slot(class);
            drop(state);
            self.counters.admitted[class].fetch_add(1, Ordering::Relaxed);
            return Admission::Now(AdmissionPermit { shared: self.clone(), class });
        }
        let share_bound = state.in_flight < state.limit;
        if policy.max_queue == 0 || policy.queue_timeout.is_zero() {
            return Admission::Shed(if share_bound { ShedReason::Share } else { ShedReason::QueueFull });
        }
        if state.queues[class].len() >= policy.max_queue {
            return Admission::Shed(ShedReason::QueueFull);
        }
        if self.max_queued_total > 0 && state.queued >= self.max_queued_total {
            // Make room by evicting the newest waiter of the lowest class below this one; its
            // closed channel tells it that it was shed.
            let victim = (class + 1..CLASSES).rev().find(|&c| !state.queues[c].is_empty());
            match victim {
                Some(c) => {
                    state.queues[c].pop_back();
                    state.queued -= 1;
                }
                None => return Admission::Shed(ShedReason::QueueFull),
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        let (tx, rx) = oneshot::channel();
        state.queues[class].push_back(Waiter { id, grant: tx });
        state.queued += 1;
        drop(state);
        Admission::Queued(QueueTicket { shared: Some(self.clone()), class, id }, rx)
    }

    /// Record the latency of an admitted request; the limit may move.
    pub(crate) fn sample(self: &Arc<Self>, rtt: Duration, dropped: bool) {
        let mut state = self.state.lock();
        let in_flight = state.in_flight;
        let Some(limit) = state.limiter.sample(Instant::now(), rtt, in_flight, dropped) else {
            return;
        };
        let grew = limit > state.limit;
        state.limit = limit;
        if grew {
            let granted = self.grant(&mut state);
            drop(state);
            self.deliver(granted);
        }
    }

    fn release(self: &Arc<Self>, class: usize) {
        let mut state = self.state.lock();
        state.in_flight -= 1;
        state.class_in_flight[class] -= 1;
        let granted = self.grant(&mut state);
        drop(state);
        self.deliver(granted);
    }

    /// Hand free slots to waiters: higher classes first, FIFO within a class, each class up to
    /// its share. A class held back by its share does not hold back the classes below it.
    fn grant(&self, state: &mut State) -> Vec<(usize, Waiter)> {
        let mut granted = Vec::new();
        if state.queued == 0 {
            return granted;
        }
        for class in 0..CLASSES {
            if state.in_flight >= state.limit {
                break;
            }
            while !state.queues[class].is_empty() && state.has_room(class, &self.policies[class]) {
                let waiter = state.queues[class].pop_front().expect("checked non-empty");
                state.queued -= 1;
                state.take_slot(class);
                granted.push((class, waiter));
            }
        }
        granted
    }

    /// Send the permits outside the lock; a waiter that went away meanwhile returns its permit,
    /// whose drop passes the slot on.
    fn deliver(self: &Arc<Self>, granted: Vec<(usize, Waiter)>) {
        for (class, waiter) in granted {
            let permit = AdmissionPermit { shared: self.clone(), class };
            if waiter.grant.send(permit).is_ok() {
                self.counters.admitted[class].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Take a waiter out of its queue (deadline or cancellation). `Some(reason)` when it was
    /// still waiting, `None` when it was granted or evicted meanwhile.
    fn withdraw(&self, class: usize, id: u64) -> Option<ShedReason> {
        let mut state = self.state.lock();
        let queue = &mut state.queues[class];
        let pos = queue.iter().position(|w| w.id == id)?;
        queue.remove(pos);
        state.queued -= 1;
        // Waiting while the limit had room means the class's share was what held it back.
        Some(if state.in_flight < state.limit { ShedReason::Share } else { ShedReason::Deadline })
    }

    /// Count a shed request.
    pub(crate) fn record_shed(&self, priority: Priority, reason: ShedReason) {
        self.counters.shed[priority.index()][reason.index()].fetch_add(1, Ordering::Relaxed);
        self.instruments.shed(priority, reason);
    }

    pub(crate) fn shed_count(&self, priority: Priority, reason: ShedReason) -> u64 {
        self.counters.shed[priority.index()][reason.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = self.state.lock();
        let classes = Priority::ALL.map(|priority| {
            let c = priority.index();
            ClassSnapshot {
                priority,
                in_flight: state.class_in_flight[c],
                limit: state.class_limit(&self.policies[c]),
                queued: state.queues[c].len(),
            }
        });
        Snapshot { limit: state.limit, in_flight: state.in_flight, queued: state.queued, classes }
    }
}

/// One admitted request's slot, held by its response body ([`crate::AdmissionBody`]); dropping
/// it gives the slot back and admits the next waiter.
pub struct AdmissionPermit {
    shared: Arc<Shared>,
    class: usize,
}

impl AdmissionPermit {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl std::fmt::Debug for AdmissionPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionPermit").field("limiter", &self.shared.name).field("class", &self.class).finish()
    }
}

impl phalanx_core::BodyGuard for AdmissionPermit {}

impl Drop for AdmissionPermit {
    fn drop(&mut self) {
        self.shared.release(self.class);
    }
}

/// A place in the queue; dropping it while still queued (a cancelled request) leaves the queue.
pub(crate) struct QueueTicket {
    shared: Option<Arc<Shared>>,
    class: usize,
    id: u64,
}

impl QueueTicket {
    /// Leave the queue now; `Some(reason)` when still waiting, `None` when granted or evicted.
    pub(crate) fn withdraw(&mut self) -> Option<ShedReason> {
        self.shared.take().and_then(|shared| shared.withdraw(self.class, self.id))
    }

    /// The permit arrived: nothing to withdraw.
    pub(crate) fn disarm(&mut self) {
        self.shared = None;
    }
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        self.withdraw();
    }
}
