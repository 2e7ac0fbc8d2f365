//! Phalanx admission.
