//! The registration API through which layers add sections to the `/status` report.
//!
//! One way for every layer: each layer, cache and pool *is* a [`StatusSource`] (a cheap clone of
//! its shared state), registered with `registry.register(layer.clone())` under its own section
//! name, or with [`StatusRegistry::register_as`] under another (two caches in one service). The
//! metrics crate's `/status` handler reads the registry.

use std::sync::Arc;

use parking_lot::RwLock;

/// A section of the `/status` report.
pub trait StatusSource: Send + Sync + 'static {
    /// The section's key in the report (`cache`, `admission`, `pools`, ...).
    fn name(&self) -> &str;

    /// The section's current figures.
    fn report(&self) -> serde_json::Value;

    /// Targets this section can judge (e.g. cache hit ratio ≥ 85 %).
    fn targets(&self) -> Vec<TargetCheck> {
        Vec::new()
    }
}

/// One target and whether it is met now.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TargetCheck {
    /// What is measured (`avg_latency_ms`, `cache_hit_ratio`).
    pub name: String,
    /// The target as text (`< 200`, `>= 0.85`).
    pub target: String,
    /// The current value, when there is one.
    pub value: Option<f64>,
    /// Whether the target is met; `None` when there is not enough data to say.
    pub met: Option<bool>,
}

impl TargetCheck {
    /// A check that `value` is below `limit`.
    pub fn below(name: impl Into<String>, value: Option<f64>, limit: f64) -> Self {
        TargetCheck { name: name.into(), target: format!("< {limit}"), value, met: value.map(|v| v < limit) }
    }

    /// A check that `value` is at least `floor`.
    pub fn at_least(name: impl Into<String>, value: Option<f64>, floor: f64) -> Self {
        TargetCheck { name: name.into(), target: format!(">= {floor}"), value, met: value.map(|v| v >= floor) }
    }

    /// A check that `value` is at most `ceiling`.
    pub fn at_most(name: impl Into<String>, value: Option<f64>, ceiling: f64) -> Self {
        TargetCheck { name: name.into(), target: format!("<= {ceiling}"), value, met: value.map(|v| v <= ceiling) }
    }
}

/// The sections registered for `/status`. Cheap to clone; clones share the list.
#[derive(Clone, Default)]
pub struct StatusRegistry {
    sources: Arc<RwLock<Vec<Arc<dyn StatusSource>>>>,
}

impl std::fmt::Debug for StatusRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.sources.read().iter().map(|s| s.name().to_owned()).collect();
        f.debug_struct("StatusRegistry").field("sections", &names).finish()
    }
}

impl StatusRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a section; a later section of the same name replaces the earlier one.
    pub fn register(&self, source: impl StatusSource) {
        let source: Arc<dyn StatusSource> = Arc::new(source);
        let mut sources = self.sources.write();
        sources.retain(|s| s.name() != source.name());
        sources.push(source);
    }

    /// Add a section under `name` instead of the source's own (a second cache, a named pool).
    pub fn register_as(&self, name: impl Into<String>, source: impl StatusSource) {
        self.register(Renamed { name: name.into(), source });
    }

    /// Every section's name and report, in registration order.
    pub fn sections(&self) -> Vec<(String, serde_json::Value)> {
        let sources: Vec<_> = self.sources.read().clone();
        sources.iter().map(|s| (s.name().to_owned(), s.report())).collect()
    }

    /// Every section's targets.
    pub fn targets(&self) -> Vec<TargetCheck> {
        let sources: Vec<_> = self.sources.read().clone();
        sources.iter().flat_map(|s| s.targets()).collect()
    }
}

struct Renamed<S> {
    name: String,
    source: S,
}

impl<S: StatusSource> StatusSource for Renamed<S> {
    fn name(&self) -> &str {
        &self.name
    }
    fn report(&self) -> serde_json::Value {
        self.source.report()
    }
    fn targets(&self) -> Vec<TargetCheck> {
        self.source.targets()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, f64);
    impl StatusSource for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn report(&self) -> serde_json::Value {
            serde_json::json!({ "value": self.1 })
        }
        fn targets(&self) -> Vec<TargetCheck> {
            vec![TargetCheck::at_least("ratio", Some(self.1), 0.85)]
        }
    }

    #[test]
    fn registry_lists_sections_replaces_by_name_and_judges_targets() {
        let reg = StatusRegistry::new();
        reg.register(Fixed("cache", 0.5));
        reg.register(Fixed("pools", 0.9));
        reg.register(Fixed("cache", 0.9));
        reg.register_as("row_cache", Fixed("cache", 0.95));
        let names: Vec<String> = reg.sections().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["pools", "cache", "row_cache"]);
        assert_eq!(reg.sections()[2].1["value"], 0.95);
        assert!(reg.targets().iter().all(|t| t.met == Some(true)));
        assert_eq!(TargetCheck::below("avg", Some(250.0), 200.0).met, Some(false));
        assert_eq!(TargetCheck::below("avg", None, 200.0).met, None);
    }
}
