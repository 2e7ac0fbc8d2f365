//! What a load carries from before it read its source to its store: [`LoadToken`], and the check
//! an L1 fill is held to.

/// Taken before a load reads its source, handed to the store of what it loaded: the store is
/// refused (in L1 and in L2) when the key or one of its tags was invalidated after the token
/// was taken, on this node or, through Redis, on any node. See
/// [`TieredCache::load_token`](super::TieredCache::load_token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadToken {
    /// This node's invalidation clock when the load began.
    pub(super) local: u64,
    /// A lower bound of the Redis invalidation epoch when the load began (the highest this
    /// node had seen): lower only refuses more.
    pub(super) remote: u64,
}

/// What a fill of L1 is checked against.
#[derive(Debug, Clone, Copy)]
pub(super) enum Check {
    /// A loaded value: refused after any invalidation of its names since this clock.
    Load(u64),
    /// A value read from L2 at `epoch`: refused after an invalidation since `since` that the
    /// read did not already see.
    Read { since: u64, epoch: u64 },
}
