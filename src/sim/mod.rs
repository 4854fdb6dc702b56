//! Simulators of the threat-intelligence platforms ti-sidecar reads from, so that the product can
//! be tried without an account and integration tests can exercise real failure modes.

pub mod faults;
pub mod page;
pub mod threatconnect;
pub mod threatq;
pub mod values;
