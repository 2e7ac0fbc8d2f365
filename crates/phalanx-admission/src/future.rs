//! [`ResponseFuture`]: waits for a slot, calls the inner service, or answers 503 when the
//! request is shed.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::{Request, Response, StatusCode};
use phalanx_core::{problem::types, GuardedBody, LayerBody, Priority, Problem};
use pin_project_lite::pin_project;
use tokio::{
    sync::oneshot,
    time::{Instant, Sleep},
};
use tower_service::Service;

use crate::{
    body::AdmissionBody,
    shared::{AdmissionPermit, QueueTicket, Shared, ShedReason},
};

pin_project! {
    /// The response future of [`crate::AdmissionService`]: waits for a slot, calls the inner
    /// service, or answers 503 when the request is shed.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        priority: Priority,
    }
}

pin_project! {
    #[project = StateProj]
    pub(crate) enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Waiting {
            // Boxed: only waiting requests pay for the timer; the admitted path stays small.
            sleep: Pin<Box<Sleep>>,
            grant: oneshot::Receiver<AdmissionPermit>,
            ticket: QueueTicket,
            pending: Option<(S, Request<ReqBody>)>,
            shared: Arc<Shared>,
        },
        Running {
            #[pin]
            fut: S::Future,
            permit: Option<AdmissionPermit>,
            started: Option<Instant>,
        },
        Shed {
            reason: ShedReason,
            shared: Arc<Shared>,
        },
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn new(state: State<S, ReqBody>, priority: Priority) -> Self {
        ResponseFuture { state, priority }
    }
}

impl<S, ReqBody> std::fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").field("priority", &self.priority).finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<AdmissionBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            let priority = *this.priority;
            match this.state.project() {
                StateProj::Waiting { sleep, grant, ticket, pending, shared } => {
                    let permit = match Pin::new(&mut *grant).poll(cx) {
                        Poll::Ready(Ok(permit)) => {
                            ticket.disarm();
                            permit
                        }
                        Poll::Ready(Err(_)) => {
                            // Evicted by a higher class while the total queue was full.
                            ticket.disarm();
                            let next = shed(shared, priority, ShedReason::QueueFull);
                            self.as_mut().project().state.set(next);
                            continue;
                        }
                        Poll::Pending => {
                            ready!(sleep.as_mut().poll(cx));
                            match ticket.withdraw() {
                                Some(reason) => {
                                    let next = shed(shared, priority, reason);
                                    self.as_mut().project().state.set(next);
                                    continue;
                                }
                                // Granted (or evicted) between the two polls.
                                None => match grant.try_recv() {
                                    Ok(permit) => permit,
                                    // Taken from the queue, the permit on its way: it wakes us.
                                    Err(oneshot::error::TryRecvError::Empty) => return Poll::Pending,
                                    Err(oneshot::error::TryRecvError::Closed) => {
                                        let next = shed(shared, priority, ShedReason::QueueFull);
                                        self.as_mut().project().state.set(next);
                                        continue;
                                    }
                                },
                            }
                        }
                    };
                    let (mut inner, req) = pending.take().expect("a waiting request is admitted once");
                    let started = shared.adaptive.then(Instant::now);
                    let fut = inner.call(req);
                    self.as_mut().project().state.set(State::Running { fut, permit: Some(permit), started });
                }
                StateProj::Running { fut, permit, started } => {
                    let result = ready!(fut.poll(cx));
                    let permit = permit.take();
                    if let (Some(started), Some(permit)) = (*started, &permit) {
                        let dropped = match &result {
                            Ok(res) => {
                                matches!(res.status(), StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT)
                            }
                            Err(_) => true,
                        };
                        permit.shared().sample(started.elapsed(), dropped);
                    }
                    return Poll::Ready(
                        result.map(|res| res.map(|body| GuardedBody::new(LayerBody::inner(body), permit))),
                    );
                }
                StateProj::Shed { reason, shared } => {
                    return Poll::Ready(Ok(shed_response(shared, priority, *reason)));
                }
            }
        }
    }
}

fn shed<S, ReqBody>(shared: &Arc<Shared>, priority: Priority, reason: ShedReason) -> State<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    shared.record_shed(priority, reason);
    State::Shed { reason, shared: shared.clone() }
}

fn shed_response<B>(shared: &Shared, priority: Priority, reason: ShedReason) -> Response<AdmissionBody<B>> {
    let detail = match reason {
        ShedReason::QueueFull => "the server is at capacity and the queue for this priority is full",
        ShedReason::Deadline => "the server is at capacity and the request waited too long for a slot",
        ShedReason::Share => "requests of this priority are using their whole share of the server's capacity",
    };
    let mut response = Problem::unavailable(types::OVERLOADED, shared.retry_after)
        .with_title("Server overloaded")
        .with_detail(detail)
        .with_member("priority", priority.as_str())
        .with_member("reason", reason.as_str())
        .into_response()
        .map(|body| GuardedBody::new(body, None));
    response.extensions_mut().insert(phalanx_core::problem::LoadShed);
    response
}
