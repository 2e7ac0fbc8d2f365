//! Per-entry options: TTL and tags.

use std::{sync::Arc, time::Duration};

/// TTL and tags of one entry.
#[derive(Debug, Clone, Default)]
pub struct EntryOptions {
    pub(super) ttl: Option<Duration>,
    pub(super) tags: Vec<Arc<str>>,
}

impl EntryOptions {
    /// Default TTL, no tags.
    pub fn new() -> Self {
        Self::default()
    }

    /// This entry's TTL (instead of the cache's default).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Add a tag (surrogate key): [`super::TieredCache::invalidate_tag`] removes every entry
    /// carrying it.
    pub fn tag(mut self, tag: impl Into<Arc<str>>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Add several tags.
    pub fn tags<T: Into<Arc<str>>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }
}
