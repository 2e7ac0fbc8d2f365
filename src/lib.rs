//! Phalanx facade.
pub use phalanx_core as core;
