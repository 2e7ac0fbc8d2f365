//! The [`Http`] extractor.

use std::convert::Infallible;

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;

use super::HttpClient;

/// The shared [`HttpClient`] from the axum state. Never rejects.
///
/// ```no_run
/// use phalanx_pools::Http;
///
/// async fn proxy(Http(client): Http) -> String {
///     match client.get("http://127.0.0.1:9000/quote").send().await {
///         Ok(res) => res.text().await.unwrap_or_default(),
///         Err(e) => format!("upstream failed: {e}"),
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Http(pub HttpClient);

impl std::ops::Deref for Http {
    type Target = HttpClient;
    fn deref(&self) -> &HttpClient {
        &self.0
    }
}

impl<S> FromRequestParts<S> for Http
where
    HttpClient: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Http(HttpClient::from_ref(state)))
    }
}
