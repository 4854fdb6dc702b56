//! ThreatQuotient indicators: OAuth2 client credentials, cursorMark paging, and the ECS mapping
//! of Elastic's `ti_threatq` pipeline.

pub mod client;
pub mod config;
pub mod ecs;

use std::sync::Arc;

use crate::http::HttpClient;
use crate::ingest::{EcsEvent, MapOptions};
use crate::source::registry::Platform;

/// The ThreatQ platform, as registered in [`crate::source::registry`].
#[derive(Debug)]
pub struct ThreatQ;

impl Platform for ThreatQ {
    const INPUT_TYPE: &'static str = "ti_threatq";
    const NAME: &'static str = "threatq";
    const DEFAULT_DATASET: &'static str = config::DEFAULT_DATASET;
    type Config = config::ThreatQConfig;
    type Source = client::ThreatQSource;

    fn build(config: Arc<Self::Config>, http: HttpClient) -> Self::Source {
        client::ThreatQSource::new(config, http)
    }
    fn map(raw: &str, options: &MapOptions) -> EcsEvent {
        ecs::map_indicator(raw, options)
    }
}
