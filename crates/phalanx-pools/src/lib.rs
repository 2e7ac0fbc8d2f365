//! Phalanx pools.
