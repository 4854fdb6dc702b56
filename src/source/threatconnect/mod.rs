//! ThreatConnect V3 indicators: HMAC auth, skip-free paging, and the ECS mapping of Elastic's
//! `ti_threatconnect` pipeline.

pub mod auth;
pub mod backfill;
pub mod client;
pub mod config;
pub mod ecs;
pub mod sweep;
