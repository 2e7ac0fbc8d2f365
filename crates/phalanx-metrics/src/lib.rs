//! Phalanx metrics.
