//! ti-sidecar: pulls indicators of compromise from threat-intelligence platforms, maps them to
//! ECS exactly as Elastic's ingest pipelines do, and delivers them with durable cursors.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]
// Module docs are a map of the code, crate-private rooms included: they link to them on purpose
// (`cargo doc --document-private-items` renders those links).
#![allow(rustdoc::private_intra_doc_links)]

/// Messages of the Elastic Agent V2 component protocol, generated from `proto/`.
pub mod proto;

pub mod agent;
pub mod backoff;
pub mod config;
pub mod console;
#[cfg(feature = "harness")]
pub mod demo;
pub mod error;
pub mod fsutil;
#[cfg(feature = "harness")]
pub mod host;
pub mod http;
pub mod ingest;
pub mod pem;
pub mod pipeline;
pub mod policy;
pub mod poll;
pub mod redact;
pub mod runner;
pub mod signal;
#[cfg(feature = "harness")]
pub mod sim;
pub mod sink;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod text;
