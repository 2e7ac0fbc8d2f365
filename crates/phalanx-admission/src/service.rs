//! [`AdmissionService`]: decides on arrival whether a request is admitted, queued or shed.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use phalanx_core::Priority;
use tokio::time::Instant;
use tower_service::Service;

use crate::{
    body::AdmissionBody,
    future::{ResponseFuture, State},
    shared::{Admission, Shared},
};

/// The service of [`crate::AdmissionLayer`]. Every clone shares one limit and one queue.
pub struct AdmissionService<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
}

impl<S: Clone> Clone for AdmissionService<S> {
    fn clone(&self) -> Self {
        AdmissionService { inner: self.inner.clone(), shared: self.shared.clone() }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for AdmissionService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionService").field("inner", &self.inner).field("limiter", &self.shared.name).finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AdmissionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<AdmissionBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // No capacity is reserved here: axum calls this on a different clone than the one it
        // calls, and a reservation held by an idle clone would leak.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let priority = Priority::of(req.extensions());
        let shared = &self.shared;
        let state = match shared.admit(priority) {
            Admission::Now(permit) => {
                let started = shared.adaptive.then(Instant::now);
                State::Running { fut: self.inner.call(req), permit: Some(permit), started }
            }
            Admission::Queued(ticket, grant) => {
                // Keep the service that was driven to readiness; leave a fresh clone behind.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                let deadline = Instant::now() + shared.policies[priority.index()].queue_timeout;
                State::Waiting {
                    sleep: Box::pin(tokio::time::sleep_until(deadline)),
                    grant,
                    ticket,
                    pending: Some((ready, req)),
                    shared: shared.clone(),
                }
            }
            Admission::Shed(reason) => {
                shared.record_shed(priority, reason);
                State::Shed { reason, shared: shared.clone() }
            }
        };
        ResponseFuture::new(state, priority)
    }
}
