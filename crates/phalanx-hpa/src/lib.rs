#![doc = include_str!("../README.md")]

pub mod controller;
pub mod inputs;
pub mod report;
pub mod sim;
pub mod spec;
