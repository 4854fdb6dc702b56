//! ThreatConnect V3 indicators: HMAC auth, skip-free paging, and the ECS mapping of Elastic's
//! `ti_threatconnect` pipeline.

pub mod auth;
pub mod backfill;
pub mod client;
pub mod config;
pub mod ecs;
pub mod sweep;

use std::sync::Arc;

use crate::http::HttpClient;
use crate::ingest::{EcsEvent, MapOptions};
use crate::source::registry::Platform;

/// The ThreatConnect platform, as registered in [`crate::source::registry`].
#[derive(Debug)]
pub struct ThreatConnect;

impl Platform for ThreatConnect {
    const INPUT_TYPE: &'static str = "ti_threatconnect";
    const NAME: &'static str = "threatconnect";
    const DEFAULT_DATASET: &'static str = config::DEFAULT_DATASET;
    type Config = config::ThreatConnectConfig;
    type Source = client::ThreatConnectSource;

    fn build(config: Arc<Self::Config>, http: HttpClient) -> Self::Source {
        client::ThreatConnectSource::new(config, http)
    }
    fn map(raw: &str, options: &MapOptions) -> EcsEvent {
        ecs::map_indicator(raw, options)
    }
}
