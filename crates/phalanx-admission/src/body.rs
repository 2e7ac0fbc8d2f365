//! The response body that holds the admission permit until the body is done.

use phalanx_core::{GuardedBody, LayerBody};

use crate::AdmissionPermit;

/// The response body of [`crate::AdmissionService`]: the inner body, or a shed answer's problem
/// document ([`LayerBody`]), holding the request's [`AdmissionPermit`] until the body yields its
/// last frame, fails, or is dropped (a streaming body, a client that went away), so a slow
/// stream counts as in flight for as long as it lasts. [`GuardedBody::holds_guard`] tells
/// whether the slot is still held.
pub type AdmissionBody<B> = GuardedBody<LayerBody<B>, AdmissionPermit>;
