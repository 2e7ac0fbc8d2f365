//! Priority and tier classification, put into the request extensions by [`ClassifyLayer`].
//!
//! Precedence, lowest first: the defaults; a path-prefix rule; the matched route's rule; the
//! API-key table for the tier (only keys in the table count); the priority header; finally a
//! custom closure, which sees the result so far and may change it.
//!
//! The priority header may always **lower** a request's priority. It raises it only for a
//! client that holds a known API key whose tier allows it
//! ([`ClassifierBuilder::tier_max_header_priority`]), and then no higher than that tier's cap.
//! [`ClassifierBuilder::max_header_priority`] lets every client raise up to a cap; it trusts
//! the client and is off by default.

use std::{
    collections::HashMap,
    sync::Arc,
    task::{Context, Poll},
};

use axum::extract::MatchedPath;
use http::{header::HeaderName, Extensions, HeaderMap, Method, Request, Uri};
use tower_layer::Layer;
use tower_service::Service;

use crate::{ClientKeyResolver, Priority, Tier};

/// The classification of a request, one extension: the layers read it through [`Priority::of`]
/// and [`Tier::of`], and a handler through `Extension<Classification>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Classification {
    /// The request's priority class.
    pub priority: Priority,
    /// The client's tier.
    pub tier: Tier,
}

/// What a custom classification closure sees of a request.
#[derive(Debug)]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (principal, matched path, ...).
    pub extensions: &'a Extensions,
}

type CustomFn = dyn Fn(&RequestView<'_>, &mut Classification) + Send + Sync;

struct Rules {
    default: Classification,
    priority_header: Option<HeaderName>,
    max_header_priority: Option<Priority>,
    tier_max_header_priority: HashMap<Tier, Priority>,
    routes: HashMap<String, Priority>,
    prefixes: Vec<(String, Priority)>,
    api_key_header: Option<HeaderName>,
    api_keys: HashMap<String, Tier>,
    custom: Option<Arc<CustomFn>>,
    client_key: Option<ClientKeyResolver>,
}

/// Classifies requests. Cheap to clone.
#[derive(Clone)]
pub struct Classifier {
    rules: Arc<Rules>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("default", &self.rules.default)
            .field("priority_header", &self.rules.priority_header)
            .field("routes", &self.rules.routes.len())
            .field("api_keys", &self.rules.api_keys.len())
            .finish()
    }
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::builder().build()
    }
}

/// Builder of a [`Classifier`], with consuming setters.
pub struct ClassifierBuilder {
    rules: Rules,
}

impl std::fmt::Debug for ClassifierBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifierBuilder").finish_non_exhaustive()
    }
}

impl ClassifierBuilder {
    /// The priority of a request no rule matches (default `normal`).
    pub fn default_priority(mut self, p: Priority) -> Self {
        self.rules.default.priority = p;
        self
    }

    /// The tier of a client no rule matches (default `standard`).
    pub fn default_tier(mut self, t: Tier) -> Self {
        self.rules.default.tier = t;
        self
    }

    /// Read the priority from this header (`critical`, `high`, ...). Unknown values are ignored.
    ///
    /// # Panics
    /// On an invalid header name: a programming error, caught at start-up.
    pub fn priority_header(mut self, name: &str) -> Self {
        self.rules.priority_header = Some(HeaderName::try_from(name).expect("valid priority header name"));
        self
    }

    /// Let **every** client raise its priority through the header, up to `p`. This trusts the
    /// client (anyone can send the header); off by default, when the header only lowers.
    pub fn max_header_priority(mut self, p: Priority) -> Self {
        self.rules.max_header_priority = Some(p);
        self
    }

    /// Let clients whose known API key maps to `tier` raise their priority through the header,
    /// up to `p`. Other clients may only lower theirs.
    pub fn tier_max_header_priority(mut self, tier: Tier, p: Priority) -> Self {
        self.rules.tier_max_header_priority.insert(tier, p);
        self
    }

    /// Give requests whose matched route template is `route` (axum's `MatchedPath`) this priority.
    pub fn route_priority(mut self, route: impl Into<String>, p: Priority) -> Self {
        self.rules.routes.insert(route.into(), p);
        self
    }

    /// Give requests whose path starts with `prefix` this priority (works before routing too).
    pub fn path_prefix_priority(mut self, prefix: impl Into<String>, p: Priority) -> Self {
        self.rules.prefixes.push((prefix.into(), p));
        // Longest prefix wins.
        self.rules.prefixes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        self
    }

    /// Map an API key, read from `header`, to a tier.
    ///
    /// # Panics
    /// On an invalid header name.
    pub fn api_key_tier(mut self, header: &str, key: impl Into<String>, tier: Tier) -> Self {
        self.rules.api_key_header = Some(HeaderName::try_from(header).expect("valid API key header name"));
        self.rules.api_keys.insert(key.into(), tier);
        self
    }

    /// A closure that sees the classification so far and may change it.
    pub fn custom<F>(mut self, f: F) -> Self
    where
        F: Fn(&RequestView<'_>, &mut Classification) + Send + Sync + 'static,
    {
        self.rules.custom = Some(Arc::new(f));
        self
    }

    /// Also resolve the [`crate::ClientKey`] once and insert it into the extensions, so the layers
    /// below read it instead of resolving it again.
    pub fn client_key(mut self, resolver: ClientKeyResolver) -> Self {
        self.rules.client_key = Some(resolver);
        self
    }

    /// Build the classifier.
    pub fn build(self) -> Classifier {
        Classifier { rules: Arc::new(self.rules) }
    }
}

impl Classifier {
    /// A builder with the defaults `normal` / `standard` and no rules.
    pub fn builder() -> ClassifierBuilder {
        ClassifierBuilder {
            rules: Rules {
                default: Classification::default(),
                priority_header: None,
                max_header_priority: None,
                tier_max_header_priority: HashMap::new(),
                routes: HashMap::new(),
                prefixes: Vec::new(),
                api_key_header: None,
                api_keys: HashMap::new(),
                custom: None,
                client_key: None,
            },
        }
    }

    /// Classify a request by its parts.
    pub fn classify(&self, method: &Method, uri: &Uri, headers: &HeaderMap, extensions: &Extensions) -> Classification {
        let rules = &*self.rules;
        let mut c = rules.default;
        if let Some((_, p)) = rules.prefixes.iter().find(|(prefix, _)| uri.path().starts_with(prefix.as_str())) {
            c.priority = *p;
        }
        if !rules.routes.is_empty() {
            if let Some(p) = extensions.get::<MatchedPath>().and_then(|m| rules.routes.get(m.as_str())) {
                c.priority = *p;
            }
        }
        let mut keyed_tier = None;
        if let Some(name) = &rules.api_key_header {
            if let Some(t) = headers.get(name).and_then(|v| v.to_str().ok()).and_then(|k| rules.api_keys.get(k)) {
                c.tier = *t;
                keyed_tier = Some(*t);
            }
        }
        if let Some(name) = &rules.priority_header {
            let asked = headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<Priority>().ok());
            if let Some(asked) = asked {
                // Only a known key's tier (never the default tier) may allow a raise.
                let tier_cap = keyed_tier.and_then(|t| rules.tier_max_header_priority.get(&t).copied());
                let cap = tier_cap.max(rules.max_header_priority).map_or(c.priority, |cap| cap.max(c.priority));
                c.priority = asked.min(cap);
            }
        }
        if let Some(custom) = &rules.custom {
            custom(&RequestView { method, uri, headers, extensions }, &mut c);
        }
        c
    }

    /// Classify a request and insert its [`Classification`] (and the [`crate::ClientKey`], when
    /// configured) into its extensions. One insert for both classes: each insert is a box.
    pub fn apply<B>(&self, req: &mut Request<B>) -> Classification {
        let c = self.classify(req.method(), req.uri(), req.headers(), req.extensions());
        let key = self.rules.client_key.as_ref().map(|r| r.resolve(req));
        let ext = req.extensions_mut();
        ext.insert(c);
        if let Some(key) = key {
            ext.insert(key);
        }
        c
    }
}

/// Layer that classifies every request (see [`Classifier`]).
#[derive(Debug, Clone, Default)]
pub struct ClassifyLayer {
    classifier: Classifier,
}

impl ClassifyLayer {
    /// Classify with this classifier.
    pub fn new(classifier: Classifier) -> Self {
        ClassifyLayer { classifier }
    }
}

impl<S> Layer<S> for ClassifyLayer {
    type Service = ClassifyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClassifyService { inner, classifier: self.classifier.clone() }
    }
}

/// Service of [`ClassifyLayer`].
#[derive(Debug, Clone)]
pub struct ClassifyService<S> {
    inner: S,
    classifier: Classifier,
}

impl<S, B> Service<Request<B>> for ClassifyService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        self.classifier.apply(&mut req);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{routing::get, Router};
    use tower::ServiceExt;

    fn classifier() -> Classifier {
        Classifier::builder()
            .priority_header("x-priority")
            .route_priority("/admin/{id}", Priority::Critical)
            .path_prefix_priority("/batch", Priority::Background)
            .api_key_tier("x-api-key", "gold", Tier::Premium)
            .api_key_tier("x-api-key", "tin", Tier::Basic)
            .tier_max_header_priority(Tier::Premium, Priority::High)
            .build()
    }

    async fn classify(uri: &str, headers: &[(&str, &str)]) -> Classification {
        let app = Router::new()
            .route("/admin/{id}", get(|c: axum::Extension<Classification>| async move { format!("{:?}", c.0) }))
            .route("/items", get(|c: axum::Extension<Classification>| async move { format!("{:?}", c.0) }))
            .route("/batch/job", get(|c: axum::Extension<Classification>| async move { format!("{:?}", c.0) }))
            .layer(ClassifyLayer::new(classifier()));
        let mut req = Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = app.oneshot(req.body(axum::body::Body::empty()).unwrap()).await.unwrap();
        let bytes = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let priority = Priority::ALL.into_iter().find(|p| text.contains(&format!("{p:?}"))).unwrap();
        let tier = Tier::ALL.into_iter().find(|t| text.contains(&format!("{t:?}"))).unwrap();
        Classification { priority, tier }
    }

    #[tokio::test]
    async fn route_rules_apply_to_the_matched_template() {
        assert_eq!(classify("/admin/7", &[]).await.priority, Priority::Critical);
        assert_eq!(classify("/items", &[]).await.priority, Priority::Normal);
        assert_eq!(classify("/batch/job", &[]).await.priority, Priority::Background);
    }

    #[tokio::test]
    async fn header_priority_may_always_lower_but_raise_only_with_a_keyed_tier() {
        // No key, an unknown key, or a key whose tier allows no raise: the header only lowers.
        for key in [None, Some("made-up"), Some("tin")] {
            let mut headers = vec![("x-priority", "high")];
            headers.extend(key.map(|k| ("x-api-key", k)));
            assert_eq!(classify("/items", &headers).await.priority, Priority::Normal, "{key:?}");
            headers[0].1 = "critical";
            assert_eq!(classify("/items", &headers).await.priority, Priority::Normal, "{key:?}");
        }
        assert_eq!(classify("/items", &[("x-priority", "low")]).await.priority, Priority::Low);
        assert_eq!(classify("/admin/1", &[("x-priority", "critical")]).await.priority, Priority::Critical);
        assert_eq!(classify("/admin/1", &[("x-priority", "background")]).await.priority, Priority::Background);
        assert_eq!(classify("/items", &[("x-priority", "bogus")]).await.priority, Priority::Normal);
        // A premium key may raise, up to its tier's cap.
        let gold = |p| [("x-priority", p), ("x-api-key", "gold")];
        assert_eq!(classify("/items", &gold("high")).await.priority, Priority::High);
        assert_eq!(classify("/items", &gold("critical")).await.priority, Priority::High);
        assert_eq!(classify("/items", &gold("low")).await.priority, Priority::Low);
    }

    #[test]
    fn max_header_priority_is_an_explicit_opt_in_for_everyone() {
        let c = Classifier::builder().priority_header("x-priority").max_header_priority(Priority::High).build();
        let mut headers = HeaderMap::new();
        headers.insert("x-priority", "critical".parse().unwrap());
        let got = c.classify(&Method::GET, &Uri::from_static("/x"), &headers, &Extensions::new());
        assert_eq!(got.priority, Priority::High);
        // Off by default: the same request keeps its class.
        let c = Classifier::builder().priority_header("x-priority").build();
        let got = c.classify(&Method::GET, &Uri::from_static("/x"), &headers, &Extensions::new());
        assert_eq!(got.priority, Priority::Normal);
    }

    #[tokio::test]
    async fn api_key_table_sets_the_tier() {
        assert_eq!(classify("/items", &[("x-api-key", "gold")]).await.tier, Tier::Premium);
        assert_eq!(classify("/items", &[("x-api-key", "lead")]).await.tier, Tier::Standard);
    }

    #[test]
    fn custom_closure_sees_and_changes_the_result() {
        let c = Classifier::builder()
            .custom(|view, c| {
                if view.method == Method::DELETE {
                    c.priority = Priority::Low;
                    c.tier = Tier::Throttled;
                }
            })
            .build();
        let got = c.classify(&Method::DELETE, &Uri::from_static("/x"), &HeaderMap::new(), &Extensions::new());
        assert_eq!(got, Classification { priority: Priority::Low, tier: Tier::Throttled });
    }
}
