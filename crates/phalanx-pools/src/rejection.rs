//! Why a handler got no connection: always a fast 503 with `Retry-After` and problem+json.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use phalanx_core::{problem::types, Problem};

/// The rejection of the `Db` and `Redis` extractors (features `db`, `redis`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolRejection {
    /// Every connection was in use for the whole acquire timeout (`POOL_EXHAUSTED`).
    #[error("pool `{pool}` exhausted: no connection within {} ms", waited.as_millis())]
    Exhausted {
        /// The pool's name.
        pool: String,
        /// How long the request waited.
        waited: Duration,
        /// When to try again.
        retry_after: Duration,
    },
    /// The dependency behind the pool is unreachable or failing (`DEPENDENCY_UNAVAILABLE`).
    #[error("pool `{pool}` unavailable: {detail}")]
    Unavailable {
        /// The pool's name.
        pool: String,
        /// What failed.
        detail: String,
        /// When to try again.
        retry_after: Duration,
    },
}

impl PoolRejection {
    /// The problem document sent to the client.
    pub fn to_problem(&self) -> Problem {
        match self {
            PoolRejection::Exhausted { pool, waited, retry_after } => {
                Problem::unavailable(types::POOL_EXHAUSTED, *retry_after)
                    .with_title("Connection pool exhausted")
                    .with_detail(format!("no `{pool}` connection became free within {} ms", waited.as_millis()))
                    .with_member("pool", pool.as_str())
            }
            PoolRejection::Unavailable { pool, retry_after, .. } => {
                // The underlying error stays in the logs: it may name hosts or credentials.
                Problem::unavailable(types::DEPENDENCY_UNAVAILABLE, *retry_after)
                    .with_title("Dependency unavailable")
                    .with_detail(format!("`{pool}` is unavailable"))
                    .with_member("pool", pool.as_str())
            }
        }
    }
}

impl IntoResponse for PoolRejection {
    fn into_response(self) -> Response {
        tracing::debug!(error = %self, "pool rejection");
        let exhausted = matches!(self, PoolRejection::Exhausted { .. });
        let mut response = IntoResponse::into_response(self.to_problem());
        if exhausted {
            // Every connection busy is load, not the dependency failing: a breaker around the
            // route ignores it (overload would otherwise open the breaker for every class).
            response.extensions_mut().insert(phalanx_core::problem::LoadShed);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exhausted_pool_is_load_shedding_and_an_unavailable_one_is_not() {
        let exhausted = PoolRejection::Exhausted {
            pool: "db".into(),
            waited: Duration::from_millis(500),
            retry_after: Duration::from_secs(1),
        };
        let response = exhausted.into_response();
        assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.extensions().get::<phalanx_core::problem::LoadShed>().is_some());
        let unavailable = PoolRejection::Unavailable {
            pool: "db".into(),
            detail: "refused".into(),
            retry_after: Duration::from_secs(1),
        };
        assert!(unavailable.into_response().extensions().get::<phalanx_core::problem::LoadShed>().is_none());
    }

    #[test]
    fn the_problem_body_carries_no_error_text_of_the_dependency() {
        let secret = "error connecting to redis://user:pw@10.1.2.3:6379: Connection refused (os error 111)";
        let rejection = PoolRejection::Unavailable {
            pool: "redis".into(),
            detail: secret.into(),
            retry_after: Duration::from_secs(1),
        };
        let body = String::from_utf8(rejection.to_problem().to_json().to_vec()).unwrap();
        for leak in ["10.1.2.3", "redis://", "pw", "refused", "os error"] {
            assert!(!body.contains(leak), "{leak:?} in {body}");
        }
        assert!(body.contains("\"pool\":\"redis\""), "{body}");
    }
}
