//! The background L2 writer: stores leave the request path through a bounded queue and are
//! sent in pipelined batches.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::sync::{atomic::Ordering, Weak};

use tokio::sync::mpsc;

use super::{
    shared::Shared,
    wire::{bucket, StoreOp, StoreOutcome, WriteMsg},
    CacheKey, CacheValue,
};
use crate::stats::bump;

/// Stores sent per pipelined round trip.
const WRITE_BATCH: usize = 64;

/// Drain the write queue: batches of stores, one pipelined round trip each, skipped (counted as
/// dropped) while the L2 circuit is open. Ends when the cache is dropped.
pub(super) async fn run_writer<K: CacheKey, V: CacheValue>(
    weak: Weak<Shared<K, V>>,
    mut queue: mpsc::Receiver<WriteMsg>,
) {
    let mut received = Vec::with_capacity(WRITE_BATCH);
    let mut stores = Vec::with_capacity(WRITE_BATCH);
    while queue.recv_many(&mut received, WRITE_BATCH).await > 0 {
        let Some(shared) = weak.upgrade() else { break };
        for msg in received.drain(..) {
            match msg {
                WriteMsg::Store(op) => stores.push(op),
                WriteMsg::Flush(done) => {
                    shared.write_stores(&mut stores).await;
                    let _ = done.send(());
                }
            }
        }
        shared.write_stores(&mut stores).await;
    }
}

impl<K: CacheKey, V: CacheValue> Shared<K, V> {
    /// Send queued stores (the writer's side).
    async fn write_stores(&self, stores: &mut Vec<StoreOp>) {
        if stores.is_empty() {
            return;
        }
        let Some(l2) = &self.l2 else { return };
        let Some(attempt) = self.circuit.try_acquire() else {
            self.counters.l2_writes_dropped.fetch_add(stores.len() as u64, Ordering::Relaxed);
            stores.clear();
            return;
        };
        match l2.store_batch(stores, &self.node_id).await {
            Ok(outcomes) => {
                attempt.success();
                for (op, outcome) in stores.iter().zip(outcomes) {
                    match outcome {
                        StoreOutcome::Refused => bump(&self.counters.stores_refused),
                        StoreOutcome::Written(0) => {}
                        StoreOutcome::Written(epoch) => {
                            self.note_epoch(epoch);
                            self.applied(bucket(b'k', &op.key) as usize, epoch);
                        }
                    }
                }
            }
            Err(e) => {
                attempt.failure();
                self.fallback("set", &e);
                self.counters.l2_writes_dropped.fetch_add(stores.len() as u64, Ordering::Relaxed);
            }
        }
        stores.clear();
    }
}
