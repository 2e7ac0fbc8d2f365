//! Phalanx breaker.
