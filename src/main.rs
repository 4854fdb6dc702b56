//! The `ti-sidecar` binary.
#![forbid(unsafe_code)]

fn main() {}
