//! Settings of a `ti_threatconnect` stream: exactly the integration's variable names and defaults
//! (API spec §8).

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::config::{HttpConfig, IocExpiration};

/// A validated ThreatConnect stream configuration.
#[derive(Debug, Clone)]
pub struct ThreatConnectConfig {
    /// `url`: the instance base URL, without trailing `/` (default `https://app.threatconnect.com`).
    pub url: Url,
    /// `access_id`: the API user's access id.
    pub access_id: String,
    /// `secret_key`: the API user's HMAC key. Never printed.
    pub secret_key: SecretString,
    /// `http_client_timeout` (default `2m`), `proxy_url`, `ssl`, `enable_request_tracer`.
    pub http: HttpConfig,
    /// `interval` (default `24h`): time between sweeps once caught up.
    pub interval: Duration,
    /// `initial_interval` (default `168h`): look-back on the first run.
    pub initial_interval: Duration,
    /// `batch_size` (default 2000, 1–10000): `resultLimit`.
    pub batch_size: u32,
    /// `tql`: extra TQL ANDed to the `lastModified` filter.
    pub tql: Option<String>,
    /// `include_attributes` (default false).
    pub include_attributes: bool,
    /// `include_group_assoc` (default false).
    pub include_group_assoc: bool,
    /// `include_group_assoc_attribs` (default false).
    pub include_group_assoc_attribs: bool,
    /// `include_indicator_assoc` (default false).
    pub include_indicator_assoc: bool,
    /// `ioc_expiration_duration` (default `90d`).
    pub ioc_expiration: Option<IocExpiration>,
    /// `tags` (default `forwarded`, `threatconnect-indicator`).
    pub tags: Vec<String>,
    /// `preserve_original_event` (default false): adds the tag `preserve_original_event`.
    pub preserve_original_event: bool,
}

impl ThreatConnectConfig {
    /// The event tags, as the integration builds them: `preserve_original_event` first when the
    /// option is on, then the user tags.
    pub fn event_tags(&self) -> Vec<String> {
        let mut tags = Vec::with_capacity(self.tags.len() + 1);
        if self.preserve_original_event {
            tags.push("preserve_original_event".to_owned());
        }
        tags.extend(self.tags.iter().cloned());
        tags
    }
}
