//! RFC 9457 `application/problem+json` rejections.
//!
//! Every Phalanx layer refuses with one of these: a status, a stable `type` URI naming the
//! kind of refusal, a human title and detail, and `Retry-After` where waiting helps.

use std::{borrow::Cow, time::Duration};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::LayerBody;

/// A response extension on a refusal that sheds load (an admission shed): the request was not
/// served because the server chose to do less, not because the route failed. A circuit breaker
/// ignores such answers, so shedding on one class of a route (its writes, say) cannot open the
/// route's breaker for every other request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadShed;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// `type` URIs of the refusals Phalanx layers make.
pub mod types {
    /// A rate limit was exceeded.
    pub const RATE_LIMITED: &str = "urn:phalanx:problem:rate-limited";
    /// The admission limiter shed the request (queue full or deadline passed).
    pub const OVERLOADED: &str = "urn:phalanx:problem:overloaded";
    /// A circuit breaker is open.
    pub const CIRCUIT_OPEN: &str = "urn:phalanx:problem:circuit-open";
    /// No pooled connection could be had in time.
    pub const POOL_EXHAUSTED: &str = "urn:phalanx:problem:pool-exhausted";
    /// A dependency (database, cache, upstream) is unavailable.
    pub const DEPENDENCY_UNAVAILABLE: &str = "urn:phalanx:problem:dependency-unavailable";
    /// The cache holds no entry and the request said `only-if-cached`.
    pub const NOT_CACHED: &str = "urn:phalanx:problem:not-cached";
}

/// A problem details document (RFC 9457), turned into a response by [`Problem::into_response`].
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    type_uri: Cow<'static, str>,
    title: Cow<'static, str>,
    detail: Option<String>,
    retry_after: Option<Duration>,
    members: serde_json::Map<String, serde_json::Value>,
    headers: HeaderMap,
}

impl Problem {
    /// A problem of this status, `type` `about:blank` and the status's reason as title.
    pub fn new(status: StatusCode) -> Self {
        Problem {
            status,
            type_uri: Cow::Borrowed("about:blank"),
            title: Cow::Borrowed(status.canonical_reason().unwrap_or("Error")),
            detail: None,
            retry_after: None,
            members: serde_json::Map::new(),
            headers: HeaderMap::new(),
        }
    }

    /// 429 Too Many Requests, typed [`types::RATE_LIMITED`].
    pub fn rate_limited(retry_after: Duration) -> Self {
        Problem::new(StatusCode::TOO_MANY_REQUESTS).with_type(types::RATE_LIMITED).with_retry_after(retry_after)
    }

    /// 503 Service Unavailable of the given type, with `Retry-After`.
    pub fn unavailable(type_uri: &'static str, retry_after: Duration) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE).with_type(type_uri).with_retry_after(retry_after)
    }

    /// Set the `type` URI.
    pub fn with_type(mut self, type_uri: impl Into<Cow<'static, str>>) -> Self {
        self.type_uri = type_uri.into();
        self
    }

    /// Set the title.
    pub fn with_title(mut self, title: impl Into<Cow<'static, str>>) -> Self {
        self.title = title.into();
        self
    }

    /// Set the detail: what happened to this request.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Add `Retry-After` (whole seconds, rounded up, at least 1) and a `retry_after` member.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Add an extension member to the document.
    pub fn with_member(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.members.insert(key.into(), value.into());
        self
    }

    /// Add a response header (e.g. the `RateLimit` fields).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `type` URI.
    pub fn type_uri(&self) -> &str {
        &self.type_uri
    }

    /// The JSON document.
    pub fn to_json(&self) -> Bytes {
        let mut doc = serde_json::Map::with_capacity(5 + self.members.len());
        doc.insert("type".into(), self.type_uri.as_ref().into());
        doc.insert("title".into(), self.title.as_ref().into());
        doc.insert("status".into(), self.status.as_u16().into());
        if let Some(detail) = &self.detail {
            doc.insert("detail".into(), detail.as_str().into());
        }
        if let Some(after) = self.retry_after {
            doc.insert("retry_after".into(), retry_after_secs(after).into());
        }
        for (k, v) in &self.members {
            doc.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Bytes::from(serde_json::to_vec(&doc).expect("a JSON map always serializes"))
    }

    /// The response, in a [`LayerBody`] over any inner body type.
    pub fn into_response<B>(self) -> Response<LayerBody<B>> {
        let body = self.to_json();
        let mut res = Response::new(LayerBody::full(body));
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(after)));
        }
        for (name, value) in self.headers.iter() {
            headers.append(name.clone(), value.clone());
        }
        res
    }
}

impl axum::response::IntoResponse for Problem {
    fn into_response(self) -> axum::response::Response {
        Problem::into_response::<axum::body::Body>(self).map(axum::body::Body::new)
    }
}

/// Whole seconds for `Retry-After`: rounded up, never 0 (a 0 invites an immediate retry storm).
pub fn retry_after_secs(after: Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};

    #[tokio::test]
    async fn rate_limited_problem_has_type_status_and_retry_after() {
        let res: Response<LayerBody<Empty<Bytes>>> = Problem::rate_limited(Duration::from_millis(1500))
            .with_detail("quota per-client exhausted")
            .with_member("policy", "per-client")
            .into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["type"], types::RATE_LIMITED);
        assert_eq!(doc["status"], 429);
        assert_eq!(doc["title"], "Too Many Requests");
        assert_eq!(doc["detail"], "quota per-client exhausted");
        assert_eq!(doc["retry_after"], 2);
        assert_eq!(doc["policy"], "per-client");
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::from_millis(3001)), 4);
    }

    #[tokio::test]
    async fn axum_into_response_keeps_the_document() {
        let res = axum::response::IntoResponse::into_response(Problem::unavailable(
            types::POOL_EXHAUSTED,
            Duration::from_secs(1),
        ));
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(std::str::from_utf8(&body).unwrap().contains(types::POOL_EXHAUSTED));
    }
}
