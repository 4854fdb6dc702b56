//! ThreatQuotient indicators: OAuth2 client credentials, cursorMark paging, and the ECS mapping
//! of Elastic's `ti_threatq` pipeline.

pub mod client;
pub mod config;
pub mod ecs;
