//! L2 in a build without the `redis` feature: a type with no values, so every `Option<L2>` is
//! `None` and the request path compiles to L1 only, unchanged.

use bytes::Bytes;

use super::wire::{StoreOp, StoreOutcome};

/// No failure can happen without an L2.
#[derive(Debug)]
pub(super) enum Failure {}

impl std::fmt::Display for Failure {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

/// An L2 that cannot exist.
pub(super) enum L2 {}

impl L2 {
    pub(super) async fn get(&self, _key: &str) -> Result<(Option<Bytes>, u64), Failure> {
        match *self {}
    }

    pub(super) async fn store_batch(&self, _ops: &[StoreOp], _node: &str) -> Result<Vec<StoreOutcome>, Failure> {
        match *self {}
    }

    pub(super) async fn remove(&self, _key: &str, _node: &str) -> Result<u64, Failure> {
        match *self {}
    }

    pub(super) async fn purge_tag(&self, _tag: &str, _node: &str) -> Result<(u64, u64), Failure> {
        match *self {}
    }

    pub(super) async fn increment(&self, _key: &str, _delta: i64) -> Result<i64, Failure> {
        match *self {}
    }
}
