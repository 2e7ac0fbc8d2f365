//! Phalanx cache.
