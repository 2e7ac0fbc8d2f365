//! Phalanx ratelimit.
