//! axum's extractors with their rejections turned into problem+json, so that every refusal
//! of the demo has one shape.

use axum::{
    extract::{
        rejection::JsonRejection, rejection::PathRejection, rejection::QueryRejection, FromRequest, FromRequestParts,
        Request,
    },
    http::{request::Parts, StatusCode},
    response::{IntoResponse, Response},
};
use phalanx::core::Problem;
use serde::de::DeserializeOwned;

/// Longest detail taken from a rejection: it quotes the client's own input, which may be long.
const MAX_DETAIL: usize = 300;

fn refusal(status: StatusCode, title: &'static str, detail: String) -> Response {
    let mut detail = detail;
    if detail.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
    }
    IntoResponse::into_response(Problem::new(status).with_title(title).with_detail(detail))
}

/// `axum::Json`, refusing with problem+json.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(e @ JsonRejection::MissingJsonContentType(_)) => {
                Err(refusal(e.status(), "Unsupported media type", e.body_text()))
            }
            Err(e) => Err(refusal(e.status(), "Invalid JSON body", e.body_text())),
        }
    }
}

/// `axum::extract::Path`, refusing with problem+json.
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(e @ PathRejection::FailedToDeserializePathParams(_)) => {
                Err(refusal(e.status(), "Invalid path parameter", e.body_text()))
            }
            // The route has no such parameter: a server fault, whose text stays in the logs.
            Err(e) => {
                tracing::error!(error = %e.body_text(), "path extraction failed");
                Err(refusal(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", "the route is misconfigured".into()))
            }
        }
    }
}

/// `axum::extract::Query`, refusing with problem+json.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(e @ QueryRejection::FailedToDeserializeQueryString(_)) => {
                Err(refusal(e.status(), "Invalid query string", e.body_text()))
            }
            Err(e) => Err(refusal(e.status(), "Invalid query string", e.body_text())),
        }
    }
}

/// The answer to a path no route matches.
pub(crate) async fn not_found() -> Response {
    refusal(StatusCode::NOT_FOUND, "Not Found", "no such resource".into())
}

/// The answer to a method the route does not serve.
pub(crate) async fn method_not_allowed() -> Response {
    refusal(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed", "the resource does not serve this method".into())
}
